"""One process at a time per output: an exclusive ``flock`` on ``.<name>.lock`` beside the output.

The lock file holds the holder's pid, host and command, so a second process can say who has it.
The kernel drops the lock when its holder dies (even by SIGKILL), so a lock is never stale; the
holder removes the file when it is done. ``flock`` works across processes on one machine and on
NFSv4 and Lustre mounts that support locking.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from csfgan.errors import UserError


class OutputLocked(UserError, RuntimeError):
    """Another process is writing the same output."""


def lock_path(output: Path) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not yet written its pid"


@contextmanager
def output_lock(output: Path, command: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``output`` (a file or directory, existing or not) for the block.

    Raises :class:`OutputLocked` at once, naming the holder, if another process holds it.
    """
    path = lock_path(Path(output))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {path.parent} ({exc.strerror}): choose a writable output") from exc
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {path} ({exc.strerror}): choose a writable output") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputLocked(
                f"{output} is being written by another process ({holder}; lock {path}): wait for it to "
                f"finish, or stop it, then run this again"
            ) from None
        # The holder before us may have removed the file after we opened it: then we locked an
        # unlinked inode that nobody else will see, and must lock the current file instead.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {command}\n".encode(), 0)
    try:
        yield path
    finally:
        # Unlink while still holding the lock, so no one can lock this inode and think it current.
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def command_line() -> str:
    """This process's command, for the lock file (``csfgan train --out ...``)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "csfgan")):
        argv[0] = "csfgan"
    return " ".join(argv)
