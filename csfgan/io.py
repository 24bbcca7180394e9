"""Atomic writers: a file (figure, table, JSON) is complete on disk, or absent."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from csfgan.errors import UserError

# A full disk or quota: the user frees space; a read-only or forbidden place: the user picks another.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, *NO_SPACE)


class OutputError(UserError, OSError):
    """An output could not be written (disk full, read-only, no permission); names the path."""

    def __init__(self, path: Path | str, exc: OSError):
        reason = exc.strerror or str(exc)
        advice = "free space on its disk" if exc.errno in NO_SPACE else "make its folder writable"
        super().__init__(f"cannot write {path}: {reason}; {advice} or choose another output path")
        self.errno = exc.errno


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an OSError of a full disk or an unwritable place, raised inside, into an OutputError naming
    ``path`` (whose partial file the caller removes as usual)."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, UserError) or exc.errno not in UNWRITABLE:
            raise
        raise OutputError(path, exc) from exc


def atomic_path(path: Path) -> tuple[Path, Callable[[], None]]:
    """A temporary sibling of ``path`` (same suffix) and a function that moves it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)

    def commit() -> None:
        os.replace(tmp, path)

    return Path(tmp), commit


def save_figure(fig, path: Path, dpi: int = 200) -> None:
    """Save a matplotlib figure to ``path`` (format from the suffix) atomically."""
    with writing(path):
        tmp, commit = atomic_path(Path(path))
        try:
            fig.savefig(tmp, dpi=dpi)
            commit()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def save_figure_formats(fig, stem: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.<format>`` for each format (atomically), then close it."""
    import matplotlib.pyplot as plt

    written = []
    try:
        for ext in formats:
            path = Path(f"{stem}.{ext}")
            save_figure(fig, path)
            written.append(path)
    finally:
        plt.close(fig)
    return written


def write_text(path: Path, text: str) -> None:
    with writing(path):
        tmp, commit = atomic_path(Path(path))
        try:
            tmp.write_text(text)
            commit()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    import json

    write_text(Path(path), json.dumps(obj, indent=2, sort_keys=True) + "\n")
