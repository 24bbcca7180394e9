"""--device on a machine with several GPUs, simulated: ``cuda`` claims a card no other csfgan process
holds (a workstation running two GPU jobs at once puts them on two cards), ``cuda:N`` is taken as named,
and torchrun ranks claim theirs the same way."""

import os
import subprocess
import sys
import types

import pytest
import torch

import csfgan.runtime as runtime
from csfgan.errors import UserError


@pytest.fixture
def three_gpus(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: types.SimpleNamespace(uuid=f"GPU-0000-{i}", name=f"card {i}"))
    monkeypatch.setattr(runtime, "_claimed", {})
    monkeypatch.setenv("CSFGAN_GPU_LOCKS", str(tmp_path / "locks"))
    return tmp_path / "locks"


def _hold(lock_dir, uuid):
    """Another process holding one card's lock until it is killed."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = str(lock_dir / f"gpu-{uuid}.lock")
    code = (f"import fcntl, os, sys, time\nfd = os.open({path!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_cuda_takes_the_first_card_no_other_process_holds(three_gpus):
    holders = [_hold(three_gpus, "GPU-0000-0")]
    try:
        assert runtime.resolve_device("cuda") == torch.device("cuda:1")
        assert runtime.resolve_device("auto") == torch.device("cuda:1")  # the same process keeps its card
        assert (three_gpus / "gpu-GPU-0000-1.lock").read_text() == f"pid {os.getpid()}\n"
        assert runtime.resolve_device("cuda:0") == torch.device("cuda:0")  # named: taken as asked
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()


def test_every_card_held_is_one_clear_error(three_gpus):
    holders = [_hold(three_gpus, f"GPU-0000-{i}") for i in range(3)]
    try:
        with pytest.raises(UserError, match=r"--device cuda: all 3 visible GPUs are held .* --device cuda:N"):
            runtime.resolve_device("cuda")
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
    assert runtime.resolve_device("cuda") == torch.device("cuda:0")  # a killed holder's lock is released


def test_one_visible_card_needs_no_claim(three_gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a Slurm job's own GPU
    assert runtime.resolve_device("cuda") == torch.device("cuda:0")
    assert not three_gpus.exists()


def test_torchrun_ranks_claim_cards_as_single_jobs_do(three_gpus, monkeypatch):
    """Two torchrun trainings on one workstation must not both take cuda:0 and cuda:1: a rank claims a free
    card (here cuda:0 is held by another job), and more ranks than cards is an error."""
    from csfgan import train

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(train.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(train.dist, "get_rank", lambda: 0)
    holder = _hold(three_gpus, "GPU-0000-0")
    try:
        assert train._distributed("cuda") == (0, 3, torch.device("cuda:1"))
    finally:
        holder.kill()
        holder.wait()
    assert chosen == [torch.device("cuda:1")]
    with pytest.raises(UserError, match="under torchrun each rank claims a GPU of its own"):
        train._distributed("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(UserError, match="torchrun runs 4 ranks but 3 GPU"):
        train._distributed("cuda")
