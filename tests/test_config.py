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


@pytest.mark.parametrize(("content", "message"), [
    (b"name: full\ndescription: caf\xe9\n", r"v.yaml: not UTF-8 text \(byte 27: b'\\xe9'\); save it as UTF-8"),
    (b"name: full\nloss:\n  edge: 0.5\n  edge: 0.1\n", r"v.yaml: line 4: key 'edge' is given twice"),
])
def test_a_variant_file_not_utf8_or_with_a_key_twice_is_refused_through_the_cli(tmp_path, content, message, capsys):
    """The CLI read variant files with PyYAML's last-value-wins (the workflow refused them), and a
    non-UTF-8 byte was a traceback."""
    from csfgan.cli import main

    bad = tmp_path / "v.yaml"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_variant(bad)
    code = main(["train", "--data", str(tmp_path), "--text-encoder", "t.pt", "--variant", str(bad), "--scale", "smoke",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "v.yaml" in err, err
    assert not (tmp_path / "out").exists()


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


# ------------------------------------------------------------------ ranges of every numeric setting

import dataclasses  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from csfgan.config import RANGES, ScaleConfig, parse_overrides  # noqa: E402


def _numeric_keys(obj=None, prefix=""):
    obj = obj if obj is not None else ScaleConfig()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _numeric_keys(value, key + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "resolution":
            yield key, type(value)


def _bad_values(key, tp):
    """NaN, infinity, and the nearest values just outside the key's range."""
    r = RANGES[key]
    bad = [math.nan, math.inf, -math.inf]
    if r.low is not None:
        bad.append(r.low if r.low_open else (r.low - 1 if tp is int else r.low - 0.01))
    if r.high is not None:
        bad.append(r.high if r.high_open else r.high + 0.01)
    return bad


CASES = [(key, value) for key, tp in _numeric_keys() for value in _bad_values(key, tp)]


def _nested(key, value):
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def test_every_numeric_setting_has_a_range():
    assert {k for k, _ in _numeric_keys()} <= set(RANGES)


@pytest.mark.parametrize(("key", "value"), CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_bad_numeric_value_is_refused_naming_the_key(tmp_path, key, value):
    scale = tmp_path / "s.yaml"
    scale.write_text(yaml.safe_dump(_nested(key, value)))
    with pytest.raises(ConfigError, match=rf"{key.split('.')[-1]}"):
        load_scale(scale)
    with pytest.raises(ConfigError, match=rf"--set.*{key.split('.')[-1]}"):
        parse_overrides(load_scale("smoke"), [f"{key}={yaml.safe_dump(value).splitlines()[0]}"])
    if key.split(".")[0] in ("model", "loss"):
        variant = tmp_path / "v.yaml"
        variant.write_text(yaml.safe_dump(_nested(key, value)))
        with pytest.raises(ConfigError, match=rf"v.yaml.*{key.split('.')[-1]}"):
            load_variant(variant)


def test_plan_applies_every_table_variant_to_the_scale(tmp_path):
    import shutil

    from csfgan.config import VARIANTS_DIR
    from csfgan.plan import plan

    variants = tmp_path / "variants"
    shutil.copytree(VARIANTS_DIR, variants)
    (variants / "sfm.yaml").write_text((variants / "sfm.yaml").read_text() + "\nloss:\n  gan: .nan\n")
    config = {"scale": "smoke", "datasets": ["synth-birds"], "variants_dir": str(variants),
              "tables": str(Path(__file__).resolve().parent.parent / "experiments" / "tables.yaml")}
    with pytest.raises(ConfigError, match=r"sfm.yaml.*loss.gan must be >= 0 and finite, got nan"):
        plan(config)


def test_set_reaches_nested_keys_and_keeps_the_base():
    base = load_scale("smoke")
    cfg = parse_overrides(base, ["text.damsm.epochs=3", "train.steps=7"])
    assert (cfg.text.damsm.epochs, cfg.train.steps) == (3, 7)
    assert (base.text.damsm.epochs, base.train.steps) == (1, 4)


@pytest.mark.parametrize("item", ["train.steps", "train=3", "nope.x=1", "train.nope=1", "text.damsm=3",
                                  "train.steps=[1", "train.steps=abc"])
def test_malformed_overrides_are_one_line_errors(item):
    with pytest.raises(ConfigError) as err:
        parse_overrides(load_scale("smoke"), [item])
    assert "\n" not in str(err.value) and repr(item) in str(err.value)


def test_a_bare_name_is_a_name_even_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "smoke").write_text("resolution: 8\n")
    assert load_variant("full").name == "full"
    assert load_scale("smoke").resolution == 32
    with pytest.raises(ConfigError, match="no such variant file"):
        load_variant("./full")
