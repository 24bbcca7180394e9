"""SIGTERM (what Snakemake, SLURM and ``kill`` send) ends a command the way Ctrl-C does.

The handler raises :class:`Terminated`, a ``KeyboardInterrupt``, in the main thread, so every
``try/finally`` and ``except BaseException`` cleanup of a partial output runs; ``csfgan``'s main
then prints one line and exits with 128 + the signal number.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _handler(owner: int, exception: type[BaseException]):
    def handler(signum, frame):
        if os.getpid() != owner:
            # A child forked a moment ago, before _in_forked_child reset its handlers: die quietly.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise exception()

    return handler


def _in_forked_child() -> None:
    # Workers forked by a data-preparation pool: default SIGTERM (their parent terminates them),
    # Ctrl-C left to the parent, and die with the parent even if it could not terminate them.
    if not _active:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


_fork_hook = False
_active = 0  # interruptible() blocks entered and not left (forks outside them are left alone)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt``; the
    previous handlers come back afterwards."""
    global _fork_hook, _active
    if not _fork_hook:
        os.register_at_fork(after_in_child=_in_forked_child)
        _fork_hook = True
    before = {sig: signal.signal(sig, _handler(os.getpid(), exc))
              for sig, exc in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt))}
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        for sig, old in before.items():
            signal.signal(sig, old)


def exit_status(exc: KeyboardInterrupt) -> tuple[str, int]:
    """(what stopped the command, exit status) for an interruption."""
    if isinstance(exc, Terminated):
        return "SIGTERM", 128 + signal.SIGTERM
    return "SIGINT (Ctrl-C)", 128 + signal.SIGINT
