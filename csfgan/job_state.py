"""The resumable state of a job with one output file: DAMSM pretraining and the feature network.

``csfgan pretrain-text`` and ``csfgan train-features`` each write one checkpoint. Their training state
lives beside it, in ``.<output name>.state.pt`` (:func:`state_path`): not a declared output, so
Snakemake does not delete it when a job fails; a job killed at its time limit leaves it, the
resubmitted job continues from it, and the job that writes the checkpoint removes it. It is saved
every ``--save-every-minutes`` of wall time and when SIGTERM, SIGUSR1 or Ctrl-C arrives, at the next
step boundary (:class:`StateSaver`), as ``csfgan train`` saves ``checkpoints/state.pt``.

A state records the identity of the job that wrote it (data, settings, seed, device type). One that
does not match this job, or cannot be read, is an intermediate file and not a result: it is deleted
with one line saying why, and the job starts from the beginning (:func:`load_state`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from csfgan.checkpoint import safe_torch_load, save_checkpoint
from csfgan.config import flatten
from csfgan.signals import SaveClock, StopRequest

# Testing hook: a job sends itself SIGTERM after this many of its own steps, so that a test stops it at
# a known step through the real signal path (handler, save at the boundary, exit 128 + 15).
STOP_AFTER_STEPS_ENV = "CSFGAN_TEST_SIGTERM_AFTER_STEPS"


class _Unusable(Exception):
    """A state file that cannot be read (only raised and caught here)."""


def state_path(out: Path) -> Path:
    """Where the job writing ``out`` keeps its resumable state: ``.<out name>.state.pt`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.state.pt"


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested dicts, lists, tuples) on the CPU: a CUDA job's files load on
    a machine without CUDA. CPU tensors are returned as they are, not copied."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        out = type(obj)((k, to_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's per-module versions, which load_state_dict reads
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def random_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """torch's global random streams: the CPU one (dropout and caption draws on CPU) and, on CUDA, the
    device's (dropout there)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_random_state(state: dict[str, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _show(key: str, value: Any) -> str:
    if isinstance(value, str) and key.endswith("sha256"):
        return value[:12]
    return repr(value)


def identity_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["seed: 0 -> 1", "text.damsm.lr: 0.001 -> 0.002"]``: every identity key that differs."""
    a, b = flatten(old), flatten(new)
    missing = "(not recorded)"
    return [f"{k}: {_show(k, a[k]) if k in a else missing} -> {_show(k, b[k]) if k in b else missing}"
            for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]


def save_state(path: Path, kind: str, identity: dict[str, Any], body: dict[str, Any]) -> float:
    """Write the state atomically (tensors on the CPU); returns the seconds it took."""
    started = time.perf_counter()
    save_checkpoint({"kind": kind, "identity": identity, **to_cpu(body)}, path)
    return time.perf_counter() - started


def load_state(path: Path, kind: str, identity: dict[str, Any], required: tuple[str, ...],
               command: str) -> dict[str, Any] | None:
    """The state saved at ``path`` if it is this job's (same ``kind`` and ``identity``, every ``required``
    key present), else None: a foreign, outdated or unreadable state is deleted, saying why in one line."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = safe_torch_load(path, _Unusable, "it is deleted", what="job state")
    except _Unusable as exc:
        return _discard(path, command, str(exc))
    found = state.get("kind") if isinstance(state, dict) else type(state).__name__
    if found != kind:
        return _discard(path, command, f"{path}: not a {kind} (kind {found!r})")
    diffs = identity_differences(state.get("identity") or {}, identity)
    if diffs:
        return _discard(path, command, f"{path} is the state of another job ({'; '.join(diffs)})")
    missing = [key for key in required if key not in state]
    if missing:
        return _discard(path, command, f"{path} was written by another version of csfgan (no {', '.join(missing)})")
    return state


def _discard(path: Path, command: str, why: str) -> None:
    print(f"csfgan {command}: {why}; deleting that state and starting from the beginning", file=sys.stderr,
          flush=True)
    path.unlink(missing_ok=True)
    return None


def _stop_after() -> int | None:
    text = os.environ.get(STOP_AFTER_STEPS_ENV, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        # Only tests set it; a typo there must not pass as "never".
        raise ValueError(f"{STOP_AFTER_STEPS_ENV}={text!r}: expected a number of steps") from None


class StateSaver:
    """What a training loop does at each step boundary: save the state when ``minutes`` of wall time have
    passed since the last save, or a signal has arrived; after a signal, stop (``StopRequest.stop``)."""

    def __init__(self, command: str, path: Path, minutes: float):
        self.command, self.path = command, Path(path)
        self.clock = SaveClock(minutes)
        self.stop_after = _stop_after()
        self.steps = 0  # steps this process has trained
        self.save_seconds: list[float] = []

    def step_done(self, stop: StopRequest, save: Callable[[], float], where: Callable[[], str]) -> None:
        """Call once a step is finished (all its state updated); ``save`` writes the state and returns its
        seconds, ``where`` says where the job stands ("epoch 2/3 step 5/18")."""
        self.steps += 1
        if self.steps == self.stop_after:
            signal.raise_signal(signal.SIGTERM)  # the handler runs before this returns
        if stop.requested or self.clock.due():
            self.save_seconds.append(save())
            self.clock.saved()
        if stop.requested:
            print(f"csfgan {self.command}: state saved at {where()} in {self.path} "
                  f"({self.save_seconds[-1]:.2f} s); the same command continues from there", file=sys.stderr,
                  flush=True)
            stop.stop()
