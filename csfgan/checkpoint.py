"""Self-describing checkpoints, written atomically, with clear errors when they cannot be used."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from csfgan.errors import UserError

# What ``csfgan train`` writes: ``final.pt`` (the generator and all that evaluation and inpainting need) and
# ``checkpoints/state.pt`` (the resumable training state). Kept beside the checkpoint code, not in
# csfgan.train, so that evaluation and reporting can read a run without depending on the training loop.
GENERATOR_KIND = "csfgan-generator"
STATE_KIND = "csfgan-training-state"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to something else."""


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary sibling, then rename: the file is whole or absent.

    Only tensors and plain Python data (what ``weights_only`` loading accepts) may be stored.
    """
    from csfgan.io import atomic_path, writing

    path = Path(path)
    with writing(path):
        tmp, commit = atomic_path(path)
        try:
            # Through a Python file: a full disk then raises OSError (ENOSPC), not torch's RuntimeError.
            with open(tmp, "wb") as f:
                torch.save(obj, f)
            commit()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _unsafe_global(exc: BaseException) -> str | None:
    """The Python object a weights-only load refused to import (``posix.system``), if that is why it failed."""
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            return found.group(1).rstrip(".,;")
    return None


def describe_load_error(exc: BaseException) -> str:
    """One line on why ``torch.load(..., weights_only=True)`` failed (torch's own text runs to a page,
    and advises ``weights_only=False``, which is what must not happen)."""
    name = _unsafe_global(exc)
    if name is not None:
        return (f"it holds a Python object ({name}) besides tensors and plain data, which unpickling could "
                f"run as code; csfgan loads weights only and refused it")
    text = str(exc)
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first = detail.group(1) if detail else (text.strip().splitlines() or [""])[0].split(". ")[0]
    return f"{type(exc).__name__}: {first.strip()}"


def safe_torch_load(path: Path, error: type[Exception] = CheckpointError, remedy: str = "recreate it", *,
                    what: str = "checkpoint", map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``: a file that would run code is refused, never executed."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several unrelated types for a damaged or foreign file
        if _unsafe_global(exc) is not None:
            raise error(f"{path}: not loaded: {describe_load_error(exc)}: {remedy}") from exc
        raise error(f"{path}: not a readable {what} ({describe_load_error(exc)}); it may be truncated or "
                    f"not a torch file: {remedy}") from exc


def load_checkpoint(path: Path, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and check that it is a ``kind``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    obj = safe_torch_load(path, CheckpointError, "recreate it with csfgan", map_location=map_location)
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        found = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a {kind} checkpoint, found {found!r}")
    return obj
