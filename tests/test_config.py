"""Scales and variants load into typed configs; bad values fail with the file and key named."""

import pytest

from csfgan.config import ConfigError, apply_variant, load_scale, load_variant


@pytest.mark.parametrize("name", ["smoke", "default", "paper"])
def test_every_scale_builds_every_variant(name):
    scale = load_scale(name)
    for variant in ("baseline", "sfm", "wld", "full"):
        cfg = apply_variant(scale, load_variant(variant))
        assert cfg.resolution == scale.resolution


def test_paper_scale_has_the_papers_values():
    cfg = apply_variant(load_scale("paper"), load_variant("full"))
    assert cfg.resolution == 256 and cfg.data.hole_fraction == 0.5
    assert (cfg.model.base_channels, cfg.model.max_channels) == (64, 512)
    assert cfg.model.sentence_fusion_layers == [2, 4] and cfg.model.word_fusion_layers == [6, 8]
    assert (cfg.loss.rec, cfg.loss.per, cfg.loss.tv, cfg.loss.edge, cfg.loss.gan) == (1.0, 0.5, 0.1, 0.5, 0.002)
    assert (cfg.train.lr, cfg.train.beta1, cfg.train.beta2) == (2e-4, 0.5, 0.999)
    assert cfg.text.max_words == 18 and cfg.text.embedding_dim == 300 and cfg.text.hidden_dim == 256


def test_variant_does_not_change_the_scale():
    scale = load_scale("smoke")
    before = list(scale.model.word_fusion_layers)
    apply_variant(scale, load_variant("baseline"))
    assert scale.model.word_fusion_layers == before


def test_unknown_scale_lists_known():
    with pytest.raises(ConfigError, match="unknown scale 'huge'.*default.*paper.*smoke"):
        load_scale("huge")


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  fusion_layers: [1]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: model: unknown key 'fusion_layers'"):
        load_variant(bad)


def test_negative_loss_weight_rejected(tmp_path):
    bad = tmp_path / "neg.yaml"
    bad.write_text("loss:\n  edge: -0.5\n")
    with pytest.raises(ConfigError, match="loss.edge must be >= 0"):
        apply_variant(load_scale("smoke"), load_variant(bad))


def test_wrong_type_named(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("resolution: big\n")
    with pytest.raises(ConfigError, match="resolution: expected"):
        load_scale(bad)


def test_fusion_layer_outside_generator(tmp_path):
    bad = tmp_path / "v.yaml"
    bad.write_text("model:\n  word_fusion_layers: [9]\n")
    with pytest.raises(ConfigError, match=r"word_fusion_layers \[9\] outside"):
        apply_variant(load_scale("smoke"), load_variant(bad))
    # Layer 1 is the input conv (the authors' numbering): nothing fuses there.
    bad.write_text("model:\n  sentence_fusion_layers: [1]\n")
    with pytest.raises(ConfigError, match=r"sentence_fusion_layers \[1\] outside the generator's fusable layers "
                                          r"2\.\.5 \(layer 1 is the input conv"):
        apply_variant(load_scale("smoke"), load_variant(bad))
