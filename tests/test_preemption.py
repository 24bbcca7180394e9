"""A training job stopped by a signal (Slurm's at the time limit, Snakemake's, Ctrl-C) saves its state
first and continues from it when run again, to the weights an uninterrupted run ends with; by time
as well, for kills no signal announces. Under torchrun every rank keeps its own random streams."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csfgan.checkpoint import load_checkpoint
from csfgan.signals import SaveClock, StopRequest, Terminated, deferred_stop, exit_status
from csfgan.train import GENERATOR_KIND, STATE_KIND, train

ROOT = Path(__file__).resolve().parent.parent
# Enough steps that the signal, sent once step 3 is logged, arrives long before the end.
LONG = ["train.steps=150", "train.checkpoint_every=1000", "train.sample_every=1000", "train.log_every=1"]


def _rows(run: Path) -> list[dict]:
    path = run / "stats.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def _kill_when_training(proc: subprocess.Popen, run: Path, sig: int, after_step: int = 3, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        rows = _rows(run)
        if rows and rows[-1]["step"] >= after_step:
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _assert_same_generator(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key, value in a["generator"].items():
        assert torch.equal(value, b["generator"][key]), key


def test_save_clock_and_stop_request():
    now = [0.0]
    clock = SaveClock(2, clock=lambda: now[0])
    assert not clock.due()
    now[0] = 119.0
    assert not clock.due()
    now[0] = 120.0
    assert clock.due()
    clock.saved()
    assert not clock.due()
    assert not SaveClock(0).due() and not SaveClock(None).due()
    with pytest.raises(ValueError):
        SaveClock(-1)
    request = StopRequest()
    request.stop()  # nothing asked: returns
    request.request(signal.SIGUSR1)
    with pytest.raises(Terminated) as caught:
        request.stop()
    assert exit_status(caught.value) == ("SIGUSR1", 128 + signal.SIGUSR1)


def test_a_signal_in_a_deferred_block_waits_for_the_step_and_a_second_ctrl_c_does_not():
    with deferred_stop() as request:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)  # the handler runs between bytecodes: nothing was raised
        assert request.signum == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # Slurm's and torchrun's copies of one stop: still waits
        time.sleep(0.01)
        assert request.signum == signal.SIGUSR1
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_sigterm_saves_the_state_and_the_next_call_ends_with_the_uninterrupted_weights(smoke_pipeline, tmp_path):
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "csfgan", "train", "--data", str(smoke_pipeline["data"]), "--text-encoder",
           str(smoke_pipeline["text_encoder"]), "--variant", "full", "--scale", "smoke", "--out", str(run),
           "--device", "cpu", "--threads", "1", "--save-every-minutes", "0"]
    for item in LONG:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, _, err = _kill_when_training(proc, run, signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM, err[-2000:]
    state = load_checkpoint(run / "checkpoints" / "state.pt", STATE_KIND)
    assert 3 <= state["step"] < 150, state["step"]  # saved at the signal, not at a checkpoint_every step
    assert f"state saved at step {state['step']}/150" in err and "stopped by SIGTERM" in err
    assert not (run / "final.pt").exists()
    assert [r["step"] for r in _rows(run)][-1] == state["step"]

    with _torch_threads(1):  # the killed process's count: CPU sums depend on it
        resumed = load_checkpoint(train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "full", "smoke",
                                        run, overrides=LONG, progress=False, device="cpu"), GENERATOR_KIND)
        straight = load_checkpoint(train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "full", "smoke",
                                         tmp_path / "straight", overrides=LONG, progress=False, device="cpu"),
                                   GENERATOR_KIND)
    _assert_same_generator(straight, resumed)
    assert [r["step"] for r in _rows(run)] == list(range(1, 151))  # no step logged twice or lost
    assert [r["batch_sha256"] for r in _rows(run)] == [r["batch_sha256"] for r in _rows(tmp_path / "straight")]


def test_state_is_saved_by_time_as_well(smoke_pipeline, tmp_path, monkeypatch):
    import csfgan.train as training

    saves = []
    real = training._save_state
    monkeypatch.setattr(training, "_save_state", lambda s: (saves.append(s.step), real(s)))
    few = ["train.steps=4", "train.checkpoint_every=1000", "train.sample_every=1000"]
    for minutes, out in ((0, "a"), (1e-9, "b")):
        saves.clear()
        train(smoke_pipeline["data"], smoke_pipeline["text_encoder"], "full", "smoke", tmp_path / out,
              overrides=few, progress=False, device="cpu", save_every_minutes=minutes)
        assert saves == ([4] if minutes == 0 else [1, 2, 3, 4])


def _torchrun(pipe, out: Path, port: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "csfgan", "train", "--data", str(pipe["data"]), "--text-encoder", str(pipe["text_encoder"]),
           "--variant", "full", "--scale", "smoke", "--out", str(out), "--device", "cpu", "--threads", "1",
           "--save-every-minutes", "0"]
    for item in extra:
        cmd += ["--set", item]
    return cmd


@pytest.mark.slow
def test_two_ranks_killed_and_resumed_equal_an_uninterrupted_two_rank_run(smoke_pipeline, tmp_path):
    steps = ["train.steps=40", "train.checkpoint_every=1000", "train.sample_every=1000", "train.log_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    straight = tmp_path / "straight"
    done = subprocess.run(_torchrun(smoke_pipeline, straight, 29517, steps), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun(smoke_pipeline, run, 29518, steps), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    rc, _, err = _kill_when_training(proc, run, signal.SIGTERM)
    assert rc != 0, "the run finished before the signal arrived"
    state = load_checkpoint(run / "checkpoints" / "state.pt", STATE_KIND)
    assert 3 <= state["step"] < 40, err[-3000:]
    assert len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["batch_rng"], state["ranks"][1]["batch_rng"])
    done = subprocess.run(_torchrun(smoke_pipeline, run, 29519, steps), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    a = load_checkpoint(straight / "final.pt", GENERATOR_KIND)
    b = load_checkpoint(run / "final.pt", GENERATOR_KIND)
    assert a["run"]["world_size"] == 2
    _assert_same_generator(a, b)
    rows_a, rows_b = _rows(straight), _rows(run)
    assert [r["step"] for r in rows_b] == list(range(1, 41))
    assert all(len(set(r["batch_sha256_ranks"])) == 2 for r in rows_a)  # the two ranks draw different batches
    assert [r["batch_sha256_ranks"] for r in rows_a] == [r["batch_sha256_ranks"] for r in rows_b]
    assert all(torch.isfinite(v).all() for v in a["generator"].values() if v.is_floating_point())


def _stopped_by_sigterm(args: list[str], out: Path, after_steps: int) -> str:
    """Run ``csfgan ARGS`` until it has trained ``after_steps`` steps, when it receives SIGTERM through
    the real handler (job_state's test hook): it must save its state beside ``out`` and exit 143."""
    from csfgan.job_state import STOP_AFTER_STEPS_ENV, state_path

    env = {**os.environ, STOP_AFTER_STEPS_ENV: str(after_steps), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "csfgan", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 143, done.stderr[-2000:]
    assert "state saved at" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert state_path(out).is_file() and not out.exists()
    return done.stderr


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_pretrain_text_stopped_mid_epoch_continues_to_the_uninterrupted_weights(smoke_pipeline, tmp_path, capsys):
    from csfgan.config import load_scale
    from csfgan.damsm import KIND as DAMSM_KIND
    from csfgan.damsm import pretrain_text
    from csfgan.job_state import state_path

    out = tmp_path / "text_encoder.pt"
    data = smoke_pipeline["data"]
    err = _stopped_by_sigterm(["pretrain-text", "--data", str(data), "--scale", "smoke", "--out", str(out),
                               "--seed", "0", "--threads", "1", "--device", "cpu"], out, after_steps=5)
    assert "state saved at epoch 1 step 5 in" in err, err  # five steps in, inside the first epoch
    pretrain_text(data, load_scale("smoke"), out, seed=0, workers=1)  # the same job, run again
    assert "resuming from" in capsys.readouterr().err
    assert not state_path(out).exists()  # written --out removes the state
    resumed, whole = load_checkpoint(out, DAMSM_KIND), load_checkpoint(smoke_pipeline["text_encoder"],
                                                                           DAMSM_KIND)
    _same_tensors(resumed["text_encoder"], whole["text_encoder"])  # the session fixture: never interrupted
    _same_tensors(resumed["image_encoder"], whole["image_encoder"])
    assert resumed["metrics"]["r_precision"] == whole["metrics"]["r_precision"]


@pytest.mark.slow
def test_the_feature_network_stopped_mid_pass_continues_to_the_uninterrupted_weights(smoke_pipeline,
                                                                                   smoke_metric_nets, tmp_path):
    from csfgan.config import load_scale
    from csfgan.job_state import state_path
    from csfgan.metrics.feature_net import KIND as FEATURE_KIND
    from csfgan.metrics.feature_net import train_feature_net

    out = tmp_path / "feature_net.pt"
    data = smoke_pipeline["data"]
    whole = load_checkpoint(smoke_metric_nets["feature_net"], FEATURE_KIND)
    # Both halves on the thread count the uninterrupted fixture trained with: a CPU's sums depend on it
    # (CI's CPU gave other weights with 2 threads before the stop and 1 after).
    threads = whole["metrics"]["threads"]
    _stopped_by_sigterm(["train-features", "--data", str(data), "--scale", "smoke", "--out", str(out),
                         "--seed", "0", "--threads", str(threads), "--device", "cpu"], out, after_steps=7)
    with _torch_threads(threads):
        train_feature_net(data, load_scale("smoke"), out, seed=0, progress=False)
    assert not state_path(out).exists()
    resumed = load_checkpoint(out, FEATURE_KIND)
    _same_tensors(resumed["state_dict"], whole["state_dict"])
    assert resumed["metrics"]["held_out_accuracy"] == whole["metrics"]["held_out_accuracy"]


_DIVERGE_ON_ONE_RANK = """
import os, sys
import torch
import torch.distributed as dist
from csfgan.step import _check_finite
from csfgan.train import TrainingDiverged

dist.init_process_group("gloo")
rank = dist.get_rank()
values = {"rec": torch.tensor(1.0), "adv": torch.tensor(float("nan") if rank == 1 else 0.5)}
_check_finite({"rec": torch.tensor(1.0)}, 1, "generator", world=2)  # every rank finite: no error
try:
    _check_finite(values, 2, "generator", world=2)
except TrainingDiverged as exc:
    print(f"rank {rank}: {exc}", flush=True)
    sys.exit(3)
print(f"rank {rank}: went on", flush=True)
"""


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    """Rank 1's NaN: both ranks raise at the same step (rank 0 names the other rank), none waits in an
    all-reduce for a partner that stopped."""
    script = tmp_path / "diverge.py"
    script.write_text(_DIVERGE_ON_ONE_RANK)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode != 0 and "went on" not in done.stdout, done.stdout + done.stderr[-2000:]
    assert "rank 0: step 2: a non-finite generator loss on another rank" in done.stdout, done.stdout
    assert "rank 1: step 2: non-finite generator loss terms {'adv': nan} on rank 1" in done.stdout, done.stdout
