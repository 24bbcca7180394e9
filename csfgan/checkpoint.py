"""Self-describing checkpoints, written atomically, with clear errors when they cannot be used."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from csfgan.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to something else."""


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary sibling, then rename: the file is whole or absent."""
    from csfgan.io import writing

    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            # Through a Python file: a full disk then raises OSError (ENOSPC), not torch's RuntimeError.
            with open(tmp, "wb") as f:
                torch.save(obj, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_checkpoint(path: Path, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and check that it is a ``kind``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              f"it may be truncated: recreate it") from exc
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        found = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a {kind} checkpoint, found {found!r}")
    return obj
