"""A run resumes only as itself: identity on resume, --restart, --on-mismatch, doable divergence
advice, and evaluation only on the data the run was trained on."""

import dataclasses
import json
import shlex
import shutil

import pytest
import torch

import csfgan.losses
from csfgan.checkpoint import CheckpointError, load_checkpoint
from csfgan.cli import main
from csfgan.train import GENERATOR_KIND, STATE_KIND, TrainingDiverged, train
from tests.helpers import poison_reconstruction_loss


def _train(pipe, out, **kw):
    return train(pipe["data"], pipe["text_encoder"], "full", "smoke", out, progress=False, **kw)


def _state_step(out):
    return load_checkpoint(out / "checkpoints" / "state.pt", STATE_KIND)["step"]


@pytest.fixture(scope="module")
def other_text_encoder(smoke_pipeline, tmp_path_factory):
    """A second DAMSM text encoder on the same data: same vocabulary, other weights."""
    from csfgan.config import load_scale
    from csfgan.damsm import pretrain_text

    path = tmp_path_factory.mktemp("te") / "other.pt"
    pretrain_text(smoke_pipeline["data"], load_scale("smoke"), path, seed=1, workers=1)
    return path


def test_another_seed_is_refused_naming_it(smoke_pipeline, tmp_path, capsys):
    out = tmp_path / "run"
    _train(smoke_pipeline, out, steps=2)
    before = (out / "checkpoints" / "state.pt").read_bytes()
    argv = ["train", "--data", str(smoke_pipeline["data"]), "--text-encoder", str(smoke_pipeline["text_encoder"]),
            "--variant", "full", "--scale", "smoke", "--seed", "7", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed: 0 -> 7" in err and "--restart" in err
    assert (out / "checkpoints" / "state.pt").read_bytes() == before  # nothing relabelled
    assert json.loads((out / "config.json").read_text())["seed"] == 0


def test_another_text_encoder_with_the_same_vocabulary_is_refused(smoke_pipeline, other_text_encoder, tmp_path):
    out = tmp_path / "run"
    _train(smoke_pipeline, out, steps=2)
    with pytest.raises(CheckpointError, match=r"text_encoder_sha256: [0-9a-f]{12} -> [0-9a-f]{12}"):
        train(smoke_pipeline["data"], other_text_encoder, "full", "smoke", out, progress=False)
    # The same bytes under another path are the same run: it resumes.
    copy = tmp_path / "moved.pt"
    shutil.copy(smoke_pipeline["text_encoder"], copy)
    train(smoke_pipeline["data"], copy, "full", "smoke", out, progress=False)
    assert load_checkpoint(out / "final.pt", GENERATOR_KIND)["step"] == 4


def test_every_differing_field_is_named(smoke_pipeline, tmp_path):
    out = tmp_path / "run"
    _train(smoke_pipeline, out, steps=2)
    with pytest.raises(CheckpointError) as err:
        _train(smoke_pipeline, out, seed=3, overrides=["loss.edge=0.3", "train.lr=1e-3"])
    message = str(err.value)
    for part in ("seed: 0 -> 3", "loss.edge: 0.5 -> 0.3", "train.lr: 0.0002 -> 0.001"):
        assert part in message, part


def test_restart_discards_and_says_so(smoke_pipeline, tmp_path, capsys):
    out = tmp_path / "run"
    _train(smoke_pipeline, out)
    (out / "metrics.json").write_text("{}")  # metrics of the old weights must go with them
    (out / "notes.txt").write_text("mine")  # not a run output: left alone
    capsys.readouterr()
    _train(smoke_pipeline, out, seed=7, restart=True)
    err = capsys.readouterr().err
    assert "--restart: discarding" in err and "final.pt" in err and "metrics.json" in err
    assert not (out / "metrics.json").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["seed"] == 7
    assert load_checkpoint(out / "final.pt", GENERATOR_KIND)["run"]["seed"] == 7
    assert [json.loads(r)["step"] for r in (out / "stats.jsonl").read_text().splitlines()] == [2, 4]


def test_on_mismatch_restart_restarts_only_a_differing_run(smoke_pipeline, tmp_path, capsys):
    straight = load_checkpoint(_train(smoke_pipeline, tmp_path / "a"), GENERATOR_KIND)
    out = tmp_path / "b"
    _train(smoke_pipeline, out, steps=1)
    capsys.readouterr()
    _train(smoke_pipeline, out, on_mismatch="restart")  # same identity: resumes
    assert "discarding" not in capsys.readouterr().err
    resumed = load_checkpoint(out / "final.pt", GENERATOR_KIND)
    assert all(torch.equal(v, resumed["generator"][k]) for k, v in straight["generator"].items())

    _train(smoke_pipeline, out, overrides=["loss.edge=0.3"], on_mismatch="restart")
    assert "--on-mismatch restart, the run differs (loss.edge" in capsys.readouterr().err
    assert load_checkpoint(out / "final.pt", GENERATOR_KIND)["run"]["config"]["loss"]["edge"] == 0.3


def test_a_finished_run_is_left_as_it_is(smoke_pipeline, tmp_path, capsys):
    out = tmp_path / "run"
    _train(smoke_pipeline, out)
    before = {p.name: p.read_bytes() for p in (out / "final.pt", out / "config.json", out / "stats.jsonl")}
    capsys.readouterr()
    _train(smoke_pipeline, out, on_mismatch="restart")
    assert "nothing to do" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "final.pt", out / "config.json", out / "stats.jsonl")} == before


def test_resume_keeps_one_stats_row_per_step(smoke_pipeline, tmp_path):
    """Rows logged after the last checkpoint (a kill) are trained again, not duplicated."""
    out = tmp_path / "run"
    _train(smoke_pipeline, out, steps=2)
    with open(out / "stats.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 4, "loss_d": 9.9}) + "\n" + '{"step": 5, "lo')  # killed mid-write
    _train(smoke_pipeline, out)
    rows = [json.loads(r) for r in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and rows[1]["loss_d"] != 9.9


def test_divergence_advice_is_a_command_that_works(smoke_pipeline, tmp_path, monkeypatch, capsys):
    real_l1 = poison_reconstruction_loss(monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="start it again: csfgan train") as err:
        _train(smoke_pipeline, out, overrides=["loss.edge=0.2"])
    assert _state_step(out) == 2  # the last good checkpoint is kept
    monkeypatch.setattr(csfgan.losses, "reconstruction_loss", real_l1)
    argv = shlex.split(str(err.value).split("start it again: ", 1)[1])
    assert argv[:2] == ["csfgan", "train"] and "train.lr=0.0001" in argv and "loss.edge=0.2" in argv
    assert main(argv[1:]) == 0
    ckpt = load_checkpoint(out / "final.pt", GENERATOR_KIND)
    assert ckpt["step"] == 4 and ckpt["run"]["config"]["train"]["lr"] == 1e-4
    assert ckpt["run"]["config"]["loss"]["edge"] == 0.2


def test_evaluate_refuses_data_prepared_again_differently(smoke_pipeline, tmp_path, capsys):
    from csfgan.config import load_scale
    from csfgan.data.synthetic import prepare_synthetic

    data = tmp_path / "synth-birds"
    shutil.copytree(smoke_pipeline["data"], data)
    out = tmp_path / "run"
    train(data, smoke_pipeline["text_encoder"], "full", "smoke", out, progress=False)
    # Prepared again at the same path with half the test images, the same vocabulary.
    shutil.rmtree(data)
    scale = load_scale("smoke")
    scale.data = dataclasses.replace(scale.data, images_per_class_test=1)
    prepare_synthetic("synth-birds", data, scale, workers=1)
    assert main(["evaluate", "--run", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not the prepared data" in err and "'test': 100" in err
    assert "'test': 50" in err and not (out / "metrics.json").exists()


def test_a_setting_added_to_csfgan_later_at_its_default_is_the_same_run():
    """Upgrading csfgan adds config keys (e.g. train.tf32): a run recorded before them, and the same run
    recorded now with them at their defaults, are one run; the key set otherwise is another."""
    from csfgan.config import load_scale, to_dict
    from csfgan.resume import identity_differences

    now = {"config": to_dict(load_scale("smoke")), "seed": 0}
    before = json.loads(json.dumps(now))
    del before["config"]["train"]["tf32"], before["config"]["train"]["deterministic"]
    assert identity_differences(before, now) == []
    changed = json.loads(json.dumps(now))
    changed["config"]["train"]["tf32"] = False
    assert identity_differences(before, changed) == ["train.tf32: (not recorded) -> False"]
    # A key the old run records is compared as always, whatever the default.
    assert identity_differences(now, changed) == ["train.tf32: True -> False"]


def test_a_training_log_with_a_byte_not_utf8_is_one_clear_error_on_resume_and_in_curves(tmp_path):
    """Resume and `csfgan curves` read stats.jsonl as text; a foreign byte was a UnicodeDecodeError."""
    from csfgan.plan import RunId
    from csfgan.report.curves import read_stats
    from csfgan.report.tables import ReportError
    from csfgan.resume import truncate_stats

    run = RunId("synth-birds", "full", 0)
    log = tmp_path / run.path / "stats.jsonl"
    log.parent.mkdir(parents=True)
    log.write_bytes(b'{"step": 1, "g": 1.0}\n{"step": 2, "g": 0.9\xff}\n{"step": 3, "g": 0.8}\n')
    before = log.read_bytes()
    with pytest.raises(CheckpointError, match=r"stats.jsonl:2: not UTF-8 text.*--restart"):
        truncate_stats(log, 2)
    with pytest.raises(ReportError, match=r"stats.jsonl:2: not UTF-8 text"):
        read_stats(run, tmp_path)
    assert log.read_bytes() == before  # nothing truncated or rewritten
