"""The same training command runs under torchrun: 2 CPU processes with the gloo backend."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from csfgan.checkpoint import load_checkpoint
from csfgan.train import GENERATOR_KIND


def test_torchrun_two_processes_gloo(smoke_pipeline, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "csfgan", "train", "--data", str(smoke_pipeline["data"]),
           "--text-encoder", str(smoke_pipeline["text_encoder"]), "--variant", "full", "--scale", "smoke",
           "--out", str(out), "--device", "cpu", "--threads", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(out / "final.pt", GENERATOR_KIND)
    assert ckpt["run"]["world_size"] == 2 and ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["generator"].values() if v.is_floating_point())
