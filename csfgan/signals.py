"""SIGTERM (what Snakemake, SLURM and ``kill`` send) ends a command the way Ctrl-C does.

The handler raises :class:`Terminated`, a ``KeyboardInterrupt``, in the main thread, so every
``try/finally`` and ``except BaseException`` cleanup of a partial output runs; ``csfgan``'s main
then prints one line and exits with 128 + the signal number.

Long jobs (training, DAMSM pretraining, the feature network) instead take the signal at their next
step boundary (:func:`deferred_stop`): they save their resumable state first, so a job killed at
its wall-time limit (Slurm sends SIGTERM, or the signal ``--signal`` names, before SIGKILL) and
submitted again continues from where it was. :class:`SaveClock` saves by time as well, for the
kills no signal announces.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (or, in a :func:`deferred_stop` block, SIGUSR1)."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = int(signum)


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
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
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


_prctl: Any = None  # libc's prctl, looked up in the parent before it forks (see _die_with_parent)


def _libc_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not glibc/Linux: workers then rely on the pool's own terminate
        return None


_POOL_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _die_with_parent(parent: int) -> None:
    """A pool worker's initializer: the signals :func:`worker_pool` held come back, and the worker ends
    with the process that made the pool, even if that was killed before it could terminate its
    workers (an orphan would wait on the pool's queue forever).

    SIGTERM is the default action (the pool's terminate), Ctrl-C is the parent's to handle. Both were
    blocked from before the fork to here, so a terminate that comes while the worker is still starting
    stays pending and ends it now; a handler inherited from the parent would instead have been tripped
    and then cleared by CPython's after-fork reset, leaving the worker waiting on the pool's queue and
    the parent joining it for ever.

    A forked worker must not dlopen or dlsym either: if another thread of the parent held the dynamic
    loader's lock at the fork (the test suite's process has many), the worker would wait on it for
    ever. So the parent resolves prctl before the fork and a forked worker only calls it; a spawned
    worker is a fresh process and looks it up itself."""
    prctl = _prctl if _prctl is not None else _libc_prctl()
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl: nobody is left to serve
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _POOL_SIGNALS)


@contextmanager
def worker_pool(method: str, processes: int) -> Iterator[Any]:
    """A ``multiprocessing`` pool (start ``method``: fork or spawn) that no signal can leave behind.

    A SIGTERM or Ctrl-C raised inside ``Pool()`` itself, after its helper threads start and before the
    ``with`` block owns it, skips the pool's terminate; at exit multiprocessing then kills the workers,
    the still-running helper thread forks replacements, and those outlive the command holding its
    stderr (a caller waiting on it hangs). So the pool is made with those signals blocked (the
    workers and the pool's threads start with them blocked too), and one that came meanwhile is
    delivered inside the block, whose exit terminates the pool.
    """
    import multiprocessing

    global _prctl
    if method == "fork" and _prctl is None:
        _prctl = _libc_prctl()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _POOL_SIGNALS)
    try:
        pool = multiprocessing.get_context(method).Pool(
            processes, initializer=_die_with_parent, initargs=(os.getpid(),))
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        raise
    with pool:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        yield pool


def exit_status(exc: KeyboardInterrupt) -> tuple[str, int]:
    """(what stopped the command, exit status) for an interruption."""
    if isinstance(exc, Terminated):
        return signal.Signals(exc.signum).name, 128 + exc.signum
    return "SIGINT (Ctrl-C)", 128 + signal.SIGINT


# Signals a long job answers by saving first: SIGTERM (Slurm at the time limit, Snakemake, kill),
# SIGUSR1 (what `sbatch --signal=USR1@<seconds>` is usually set to) and Ctrl-C.
DEFERRED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequest:
    """Set by a signal inside :func:`deferred_stop`; the loop polls it at a step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        """What the handler does (and what a test, or another rank's agreement, may do)."""
        self.signum = int(signum)

    def stop(self) -> None:
        """Raise what the signal would have raised at once (call after the state is saved)."""
        if self.signum is None:
            return
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt()
        raise Terminated(self.signum)


@contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """Within the block, SIGTERM, SIGUSR1 and SIGINT set the yielded request instead of interrupting;
    a second Ctrl-C interrupts at once (a stuck save can still be stopped), a repeated SIGTERM is ignored.
    The previous handlers come back afterwards, and a signal that arrived is then acted on by the caller's
    ``stop()``."""
    global _fork_hook, _active
    if not _fork_hook:
        os.register_at_fork(after_in_child=_in_forked_child)
        _fork_hook = True
    request = StopRequest()
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if request.requested:
            # A second Ctrl-C is a person who will not wait. A second SIGTERM is not: Slurm signals every
            # process of a job and torchrun forwards what it gets, so a rank hears it twice; whoever
            # cannot wait follows it with SIGKILL.
            if signum == signal.SIGINT:
                raise KeyboardInterrupt()
            return
        request.request(signum)
        print(f"csfgan: {signal.Signals(signum).name} received: saving the state at the end of this step, "
              f"then stopping (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    before = {sig: signal.signal(sig, handler) for sig in DEFERRED_SIGNALS}
    _active += 1
    try:
        yield request
    finally:
        _active -= 1
        for sig, old in before.items():
            signal.signal(sig, old)


class SaveClock:
    """Whether ``minutes`` have passed since the last save: long jobs save by time as well as by steps,
    so a kill nothing announces (SIGKILL, a node failure) loses at most that much work.
    ``minutes`` 0 or None never says a save is due."""

    def __init__(self, minutes: float | None, clock=time.monotonic):
        if minutes is not None and minutes < 0:
            raise ValueError(f"save interval {minutes} minutes: must be 0 (off) or positive")
        self.seconds = (minutes or 0) * 60.0
        self._clock = clock
        self._last = clock()

    def due(self) -> bool:
        return self.seconds > 0 and self._clock() - self._last >= self.seconds

    def saved(self) -> None:
        self._last = self._clock()
