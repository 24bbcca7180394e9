"""Training runs, resumes to the same weights, and stops cleanly on a non-finite loss."""

import json

import pytest
import torch

import csfgan.losses
from csfgan.checkpoint import CheckpointError, load_checkpoint
from csfgan.train import GENERATOR_KIND, STATE_KIND, TrainingDiverged, train


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
                 "loss_g/gan_word", "loss_g/kl", "loss_g/total"):
        assert all(term in r for r in rows), term
    config = json.loads((run / "config.json").read_text())
    assert config["variant"] == "full" and config["config"]["resolution"] == 32
    assert config["perceptual_source"] == "damsm-image-encoder"  # no VGG16 weights on this machine
    ckpt = load_checkpoint(final, GENERATOR_KIND)
    assert ckpt["step"] == 4 and ckpt["vocab"][:2] == ["<pad>", "<unk>"]


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
    with pytest.raises(CheckpointError, match="already holds a finished run"):
        _train(smoke_pipeline, tmp_path / "run")


def test_resume_refuses_another_config(smoke_pipeline, tmp_path):
    _train(smoke_pipeline, tmp_path / "run", steps=2)
    with pytest.raises(CheckpointError, match="another config"):
        _train(smoke_pipeline, tmp_path / "run", overrides=["loss.edge=0.1"])


def test_non_finite_loss_stops_and_keeps_last_checkpoint(smoke_pipeline, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_l1 = csfgan.losses.reconstruction_loss

    def poisoned(real, fake):
        calls["n"] += 1
        value = real_l1(real, fake)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(csfgan.losses, "reconstruction_loss", poisoned)
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
