"""One process at a time per output: an exclusive ``flock`` on ``.<name>.lock`` beside the output.

The lock file holds the holder's pid, host and command, so a second process can say who has it.
The kernel drops the lock when its holder dies (even by SIGKILL), so a lock is never stale; the
holder removes the file when it is done. ``flock`` works across processes on one machine and on
NFSv4 and Lustre mounts that support locking; where a mount refuses it, an exclusive-create marker
(``.<name>.lock.held``) takes its place (:func:`_marker_lock`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
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
    unsupported: OSError | None = None
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
        except OSError as exc:
            os.close(fd)
            if exc.errno not in NO_FLOCK:
                raise
            # This file system has no flock (NFS without lockd, some FUSE and Lustre mounts mounted
            # without -o flock): an exclusive-create marker instead.
            unsupported = exc
            break
        # The holder before us may have removed the file after we opened it: then we locked an
        # unlinked inode that nobody else will see, and must lock the current file instead.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if unsupported is not None:
        with _marker_lock(output, path, command, unsupported):
            yield path
        return
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


# What flock raises where the file system does not support it.
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def _alive_here(text: str) -> bool | None:
    """Whether the marker's holder still runs: True/False when it is on this host, None when elsewhere."""
    found = re.match(r"pid (\d+) on (\S+):", text)
    if found is None or found.group(2) != socket.gethostname():
        return None
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _marker_lock(output: Path, path: Path, command: str, why: OSError) -> Iterator[None]:
    """The lock as a file created with O_EXCL (atomic on NFSv3+ and Lustre). Unlike flock it outlives a
    holder killed by SIGKILL: a marker whose holder is gone from this host is taken over; one from
    another host is named, with how to remove it."""
    marker = path.with_name(path.name + ".held")
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            try:
                text = marker.read_text(errors="replace").strip()
            except FileNotFoundError:
                continue
            if _alive_here(text) is False:
                marker.unlink(missing_ok=True)  # its holder died on this host: the lock is stale
                continue
            raise OutputLocked(
                f"{output} is being written by another process ({text or 'unknown'}; lock {marker}, used "
                f"because {path.parent} does not support flock: {why.strerror}): wait for it to finish; if "
                f"no such process runs any more, remove {marker}"
            ) from None
        except OSError as exc:
            raise UserError(f"cannot create the lock file {marker} ({exc.strerror}): choose a writable output") \
                from exc
    else:
        raise OutputLocked(f"{output}: could not take the lock {marker}; run this again")
    try:
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {command}\n".encode())
    finally:
        os.close(fd)
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def command_line() -> str:
    """This process's command, for the lock file (``csfgan train --out ...``)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "csfgan")):
        argv[0] = "csfgan"
    return " ".join(argv)
