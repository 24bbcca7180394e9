"""Atomic writers: a file (figure, table, JSON) is complete on disk, or absent."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from csfgan.errors import UserError

# Temporaries are ``.<name>.partial-XXXX`` (being written) and ``.<name>.old-XXXX`` (being replaced),
# beside the output ``<name>``: recognisable, so the next run holding the output's lock removes
# what a kill left behind. Before, files were ``.<name>.XXXXXXXX`` / ``.<stem>.XXXXXXXX<suffix>``.
_LEGACY = r"[a-z0-9_]{8}"


def current_umask() -> int:
    """The process umask, read without changing it (os.umask alone would race with other threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode(directory: bool) -> int:
    # What open()/mkdir() would give: mkstemp/mkdtemp make 0600/0700 whatever the umask, so a
    # result renamed into place would be unreadable to the group on shared storage.
    return (0o777 if directory else 0o666) & ~current_umask()

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, _mode(directory=False))
    finally:
        os.close(fd)

    def commit() -> None:
        os.replace(tmp, path)

    return Path(tmp), commit


def temporary_dir(dest: Path, kind: str = "partial") -> Path:
    """A fresh directory ``.<dest name>.<kind>-XXXX`` beside ``dest``, with the umask's permissions."""
    dest = Path(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{kind}-", dir=dest.parent))
    os.chmod(tmp, _mode(directory=True))
    return tmp


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder ``tmp`` to ``dest``; an existing ``dest`` is first moved aside (into a
    ``.<name>.old-*`` temporary, which :func:`remove_stale_temporaries` clears if a kill interrupts this)
    and then removed, so ``dest`` is at every moment either the old folder or the new one."""
    tmp, dest = Path(tmp), Path(dest)
    if not dest.exists():
        os.replace(tmp, dest)
        return
    trash = temporary_dir(dest, "old")
    os.replace(dest, trash / dest.name)
    os.replace(tmp, dest)
    shutil.rmtree(trash, ignore_errors=True)


def remove_stale_temporaries(directory: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporaries of ``names`` (every name when None) left in ``directory`` by a killed run.

    Only call this while holding the lock of the outputs concerned: a live writer's temporaries
    look the same.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    if names is None:
        pattern = re.compile(r"^\..+\.(?:partial|old)-.+$")
    else:
        alternatives = []
        for name in names:
            stem, suffix = Path(name).stem, Path(name).suffix
            alternatives.append(rf"{re.escape(name)}\.(?:(?:partial|old)-.+|{_LEGACY})")
            if suffix:
                alternatives.append(rf"{re.escape(stem)}\.{_LEGACY}{re.escape(suffix)}")
        pattern = re.compile(rf"^\.(?:{'|'.join(alternatives)})$")
    removed = []
    for entry in directory.iterdir():
        if pattern.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


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
