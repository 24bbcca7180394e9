"""Training runs, resumes to the same weights, and stops cleanly on a non-finite loss."""

import json

import pytest
import torch

from csfgan.checkpoint import CheckpointError, load_checkpoint
from csfgan.models.generator import GENERATOR_ARCHITECTURE
from csfgan.train import GENERATOR_KIND, STATE_KIND, TrainingDiverged, train
from tests.helpers import poison_reconstruction_loss


def _train(pipe, out, **kw):
    return train(pipe["data"], pipe["text_encoder"], "full", "smoke", out, progress=False, **kw)


def test_run_directory_contract(smoke_pipeline, tmp_path):
    final = _train(smoke_pipeline, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "provenance.json", "stats.jsonl", "log.txt", "checkpoints/state.pt"):
        assert (run / name).is_file(), name
    assert list((run / "samples").glob("step*.png"))
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for term in ("loss_d", "loss_g/rec", "loss_g/per", "loss_g/tv", "loss_g/edge", "loss_g/gan",
                 "loss_g/gan_word", "loss_g/match", "loss_g/total", "sentence_snr/2+3"):  # one CA shared by layers 2, 3
        assert all(term in r for r in rows), term
    assert not any("loss_g/kl" in r for r in rows)  # the CA KL term is off unless a variant sets loss.kl
    assert all(r["sentence_snr/2+3"] > 0 for r in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["variant"] == "full" and config["config"]["resolution"] == 32
    assert config["perceptual_source"] == "damsm-image-encoder"  # no VGG16 weights on this machine
    ckpt = load_checkpoint(final, GENERATOR_KIND)
    assert ckpt["step"] == 4 and ckpt["vocab"][:2] == ["<pad>", "<unk>"]
    assert ckpt["architecture"] == GENERATOR_ARCHITECTURE


def test_resume_gives_the_same_weights(smoke_pipeline, tmp_path):
    straight = load_checkpoint(_train(smoke_pipeline, tmp_path / "a"), GENERATOR_KIND)
    _train(smoke_pipeline, tmp_path / "b", steps=1)  # interrupted after 1 of 4 steps
    assert not (tmp_path / "b" / "final.pt").exists()
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "state.pt", STATE_KIND)["step"] == 1
    resumed = load_checkpoint(_train(smoke_pipeline, tmp_path / "b"), GENERATOR_KIND)
    assert resumed["step"] == 4
    for key, value in straight["generator"].items():
        assert torch.equal(value, resumed["generator"][key]), key


def test_finished_run_is_not_overwritten(smoke_pipeline, tmp_path):
    _train(smoke_pipeline, tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "state.pt").unlink()
    with pytest.raises(CheckpointError, match=r"final.pt belongs to another run .*loss.edge"):
        _train(smoke_pipeline, tmp_path / "run", overrides=["loss.edge=0.3"])


def test_checkpoints_of_the_old_generator_are_refused_naming_the_change(smoke_pipeline, tmp_path):
    """A v1 checkpoint (no ``architecture`` field) fails with the architecture change named, in
    evaluation/inpainting and in training resume, not with a list of mismatched tensors."""
    from csfgan.checkpoint import save_checkpoint
    from csfgan.evaluate import InpaintingModel

    final = _train(smoke_pipeline, tmp_path / "run", steps=4)
    for path in (final, tmp_path / "run" / "checkpoints" / "state.pt"):
        ckpt = load_checkpoint(path, GENERATOR_KIND if path == final else STATE_KIND)
        del ckpt["architecture"]
        save_checkpoint(ckpt, path)
    with pytest.raises(CheckpointError, match="v1 generator.*1×1 bottleneck.*Retrain"):
        InpaintingModel(final)
    # The v2 generator (before fidelity round three: prose order only, 4-channel stem) by its name.
    ckpt = load_checkpoint(final, GENERATOR_KIND)
    ckpt["architecture"] = "unet-v2"
    save_checkpoint(ckpt, final)
    with pytest.raises(CheckpointError, match="v2 generator.*prose block order.*unet-v3.*Retrain"):
        InpaintingModel(final)
    (tmp_path / "run" / "final.pt").unlink()
    with pytest.raises(CheckpointError, match="state.pt: holds the v1 generator"):
        _train(smoke_pipeline, tmp_path / "run")


def test_resume_refuses_another_config(smoke_pipeline, tmp_path):
    _train(smoke_pipeline, tmp_path / "run", steps=2)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        _train(smoke_pipeline, tmp_path / "run", overrides=["loss.edge=0.1"])


def test_non_finite_loss_stops_and_keeps_last_checkpoint(smoke_pipeline, tmp_path, monkeypatch):
    poison_reconstruction_loss(monkeypatch)
    with pytest.raises(TrainingDiverged, match=r"step 2: non-finite generator loss terms .*'rec'"):
        _train(smoke_pipeline, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "state.pt", STATE_KIND)
    assert state["step"] == 2  # the checkpoint at step 2 (checkpoint_every 2) survives
    assert not (tmp_path / "run" / "final.pt").exists()


def test_overrides_are_validated(smoke_pipeline, tmp_path):
    from csfgan.config import ConfigError

    with pytest.raises(ConfigError, match="loss.edge must be >= 0"):
        _train(smoke_pipeline, tmp_path / "run", overrides=["loss.edge=-1"])
    with pytest.raises(ConfigError, match="unknown section 'los'"):
        _train(smoke_pipeline, tmp_path / "run", overrides=["los.edge=1"])


def test_bf16_autocast_step_keeps_fp32_weights():
    """train.amp runs the convolutions in bf16 while parameters, gradients and Adam state stay fp32."""
    import dataclasses

    from csfgan.config import apply_variant, load_scale, load_variant
    from csfgan.losses import GeneratorLoss
    from csfgan.models.damsm import DamsmImageEncoder
    from csfgan.train import Models, training_precision, training_step

    cfg = apply_variant(load_scale("smoke"), load_variant("full"))
    cfg.train = dataclasses.replace(cfg.train, amp=True)
    torch.manual_seed(0)
    models = Models(cfg)
    damsm = DamsmImageEncoder(cfg.resolution, cfg.text.hidden_dim, cfg.text.damsm.image_channels).eval()
    loss_fn = GeneratorLoss(cfg, perceptual_fallback=damsm.requires_grad_(False).features, damsm_image=damsm)
    r, d, t = cfg.resolution, cfg.text.hidden_dim, 5
    real, mask = torch.rand(4, 3, r, r) * 2 - 1, torch.zeros(4, 1, r, r)
    mask[:, :, r // 4:3 * r // 4, r // 4:3 * r // 4] = 1
    words, sent, word_mask = torch.randn(4, d, t), torch.randn(4, d), torch.zeros(4, t, dtype=torch.bool)
    dtypes = []
    models.generator.to_rgb[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    opt_g = torch.optim.Adam(models.generator.parameters())
    opt_d = torch.optim.Adam(list(models.discriminator_parameters()))
    before = models.generator.to_rgb[0].weight.detach().clone()
    loss_d, terms = training_step(models, loss_fn, opt_g, opt_d, real, mask, words, sent, word_mask,
                                  amp=training_precision(cfg, torch.device("cpu")))
    assert dtypes == [torch.bfloat16]
    assert torch.isfinite(loss_d) and all(torch.isfinite(v) for v in terms.values())
    weight = models.generator.to_rgb[0].weight
    assert weight.dtype == torch.float32 and weight.grad.dtype == torch.float32
    assert not torch.equal(weight.detach(), before)
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt_g.state.values())


def test_variants_of_one_seed_see_the_same_batches(smoke_pipeline, tmp_path):
    """Common random numbers: baseline and full, seed 0, draw identical images, masks, captions and
    augmentations at every step (stats.jsonl's batch digests); another seed draws others."""
    def digests(variant, seed):
        out = tmp_path / f"{variant}{seed}"
        train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], variant, "smoke", out, seed=seed,
              progress=False)
        rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
        streams = json.loads((out / "config.json").read_text())["random_streams"]
        return [r["batch_sha256"] for r in rows], streams

    full, streams = digests("full", 0)
    baseline, _ = digests("baseline", 0)
    other, _ = digests("full", 1)
    assert len(full) == 2 and all(full)
    assert full == baseline
    assert not set(full) & set(other)
    assert streams["batches"] == 0 and "masks" in streams["shared_by_variants"]
