"""The generator's moving average (csfgan/ema.py), snapshots, and evaluating either set of weights."""

import json

import pytest
import torch
from torch import nn

from csfgan.checkpoint import CheckpointError, load_checkpoint
from csfgan.config import ConfigError, resolve_config
from csfgan.ema import GeneratorAverage
from csfgan.evaluate import InpaintingModel, evaluate
from csfgan.train import GENERATOR_KIND, STATE_KIND, snapshot_path, train

EMA = ["train.ema_half_life_images=16", "train.ema_rampup=0", "train.snapshot_every=2", "eval.weights=ema"]


def _constant(value: float) -> nn.Module:
    m = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        m[0].weight.fill_(value)
    return m


def test_half_life_in_images_halves_the_distance():
    """With the target held fixed, the average covers half the way after half_life images, whatever the batch."""
    for batch in (1, 4, 8):
        g = _constant(0.0)
        ema = GeneratorAverage(g, half_life_images=32, rampup=0)
        with torch.no_grad():
            g[0].weight.fill_(1.0)
        for step in range(32 // batch):
            ema.update(g, batch, (step + 1) * batch)
        assert ema.module[0].weight.item() == pytest.approx(0.5, abs=1e-6), batch
        for step in range(32 // batch):
            ema.update(g, batch, 32 + (step + 1) * batch)
        assert ema.module[0].weight.item() == pytest.approx(0.75, abs=1e-6), batch


def test_rampup_caps_the_half_life_early():
    ema = GeneratorAverage(_constant(0.0), half_life_images=10_000, rampup=0.05)
    # After 100 images the half-life is 5 images, so one step of 10 images keeps a quarter.
    assert ema.beta(10, 100) == pytest.approx(0.25)
    assert ema.beta(10, 10**7) == pytest.approx(0.5 ** (10 / 10_000))  # the cap has stopped mattering


def test_buffers_are_copied_not_averaged():
    g = _constant(0.0)
    ema = GeneratorAverage(g, half_life_images=1e9, rampup=0)
    g.train()
    g(torch.randn(16, 1) * 3 + 5)  # moves BatchNorm's running statistics
    ema.update(g, 16, 16)
    assert torch.equal(ema.module[1].running_mean, g[1].running_mean)
    assert ema.module[0].weight.item() == pytest.approx(0.0, abs=1e-6)  # barely moved at this half-life


def test_ema_weights_need_an_average():
    with pytest.raises(ConfigError, match="eval.weights 'ema' needs an average"):
        resolve_config("smoke", "full", ["eval.weights=ema"])
    with pytest.raises(ConfigError, match="eval.weights must be one of"):
        resolve_config("smoke", "full", ["eval.weights=best"])


def _train(pipe, out, overrides, **kw):
    return train(pipe["data"], pipe["text_encoder"], "full", "smoke", out, progress=False, overrides=overrides, **kw)


def test_ema_and_snapshots_resume_bit_exact(smoke_pipeline, tmp_path):
    straight = load_checkpoint(_train(smoke_pipeline, tmp_path / "a", EMA), GENERATOR_KIND)
    assert straight["ema"] == {"half_life_images": 16.0, "rampup": 0.0}
    moved = [k for k, v in straight["generator"].items()
             if v.is_floating_point() and not torch.equal(v, straight["generator_ema"][k])]
    assert moved, "the average equals the raw weights"
    for step in (2, 4):  # smoke: 4 steps
        snap = load_checkpoint(snapshot_path(tmp_path / "a", step), GENERATOR_KIND)
        assert snap["step"] == step and snap["generator_ema"] is not None
    _train(smoke_pipeline, tmp_path / "b", EMA, steps=1)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "state.pt", STATE_KIND)["generator_ema"] is not None
    resumed = load_checkpoint(_train(smoke_pipeline, tmp_path / "b", EMA), GENERATOR_KIND)
    for key, value in straight["generator_ema"].items():
        assert torch.equal(value, resumed["generator_ema"][key]), key


def test_evaluate_says_which_weights_and_checkpoint(smoke_pipeline, smoke_metric_nets, tmp_path):
    run = tmp_path / "run"
    _train(smoke_pipeline, run, EMA)
    assert InpaintingModel(run / "final.pt").weights == "ema"  # the run's eval.weights
    m_ema = evaluate(run, progress=False, split="val", save_images=False, **smoke_metric_nets)
    m_raw = evaluate(run, tmp_path / "raw.json", progress=False, split="val", save_images=False, weights="raw",
                     folder="eval_val_raw", **smoke_metric_nets)
    assert (m_ema["weights"], m_raw["weights"]) == ("ema", "raw")
    assert m_ema["ema"] == {"half_life_images": 16.0, "rampup": 0.0} and m_raw["ema"] is None
    assert m_ema["psnr"] != m_raw["psnr"]
    assert (run / "eval_val_raw" / "per_image.npz").is_file()
    snap = evaluate(run, tmp_path / "snap.json", progress=False, split="val", save_images=False,
                    checkpoint=snapshot_path(run, 2), folder="eval_snap", **smoke_metric_nets)
    assert snap["step"] == 2 and snap["checkpoint"] == "generator-step000002.pt"
    assert json.loads((tmp_path / "snap.json").read_text())["weights"] == "ema"


def test_evaluate_refuses_weights_or_checkpoints_that_are_not_there(smoke_pipeline, smoke_metric_nets, tmp_path):
    plain, other = tmp_path / "plain", tmp_path / "other"
    _train(smoke_pipeline, plain, [])
    _train(smoke_pipeline, other, ["loss.edge=0.3"])
    with pytest.raises(CheckpointError, match="holds no averaged generator"):
        evaluate(plain, progress=False, split="val", weights="ema", **smoke_metric_nets)
    with pytest.raises(CheckpointError, match=r"is not a checkpoint of .*plain.*loss.edge"):
        evaluate(plain, progress=False, split="val", checkpoint=other / "final.pt", **smoke_metric_nets)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        evaluate(plain, progress=False, split="val", checkpoint=snapshot_path(plain, 2), **smoke_metric_nets)
    assert not (plain / "metrics_val.json").exists()
