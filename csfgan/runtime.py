"""Process-wide CPU settings every compute command applies before it builds a network.

Two things decide how fast these networks run on a CPU besides the kernels themselves:

* torch's intra-op thread count: the rule's ``threads`` (all cores when run by hand);
* what the C allocator does with freed memory. A 64 px activation at batch 32 is 2–16 MB, above
  glibc's mmap threshold, so by default every such tensor is a fresh ``mmap``: the kernel maps and
  zeroes its pages on first touch and takes them back on ``free``. Measured at the default scale on
  2 threads, that was 10,000 page faults per training step and 40 ms of its 190 ms in the kernel
  (inference: 37 → 25 ms per batch once freed memory is kept). PyTorch's CPU tuning guide suggests
  jemalloc or tcmalloc for the same reason; glibc's own ``mallopt`` does the job without a new
  dependency: a 1 GiB mmap threshold and no trimming keep freed blocks in the heap for the next step.
  The cost is that the process keeps its high-water mark of memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from pathlib import Path

# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest an int can say: never give the heap's top back


def default_threads(requested: int | None) -> int:
    """``requested`` when given, else every core."""
    return max(1, requested or os.cpu_count() or 1)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed activation memory instead of unmapping it.

    Returns whether the setting took: False on a C library other than glibc (macOS, musl), where the
    allocator already behaves differently and nothing is changed.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt returns 1 on success; both settings also turn off glibc's dynamic threshold.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def configure_cpu(threads: int | None) -> dict[str, int | bool]:
    """Apply both settings; returns what was set (recorded by ``csfgan bench``)."""
    import torch  # here, so that `csfgan prepare` can use default_threads without loading torch

    n = default_threads(threads)
    torch.set_num_threads(n)
    return {"torch_threads": n, "malloc_keeps_freed_memory": keep_freed_memory()}


def resolve_device(requested: str):
    """The torch device ``--device`` names: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or
    ``cuda:N``; anything else, or CUDA on a machine without it, is a UserError naming the value."""
    import re

    import torch

    from csfgan.errors import UserError

    text = str(requested).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UserError(f"--device {requested!r}: unknown device; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
    if match.group(1) is None:
        return torch.device(f"cuda:{claim_free_gpu()}")
    index = int(match.group(1))
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                        f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return torch.device(text)


_claimed: dict[int, int] = {}  # visible GPU index -> the lock's file descriptor, held until the process exits


def gpu_lock_dir() -> Path:
    return Path(os.environ.get("CSFGAN_GPU_LOCKS") or f"/tmp/csfgan-gpu-locks-{os.getuid()}")


def claim_free_gpu() -> int:
    """The index of the first visible GPU that no other csfgan process on this machine holds.

    ``--device cuda`` names the kind, not one card: on a workstation where Snakemake runs as many GPU
    jobs at once as its ``gpu`` resource allows, every job would otherwise land on cuda:0. Each
    process takes an exclusive ``flock`` on a file named after the GPU's UUID (so two Slurm jobs that
    each see their own GPU as cuda:0 do not collide) and keeps it until it exits; the kernel
    releases it even on SIGKILL. A single visible GPU is used without a lock.
    """
    import fcntl

    import torch

    from csfgan.errors import UserError

    count = torch.cuda.device_count()
    if count <= 1:
        return 0
    if _claimed:
        return next(iter(_claimed))
    root = gpu_lock_dir()
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", index))
        fd = os.open(root / f"gpu-{uuid}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        _claimed[index] = fd
        return index
    raise UserError(f"--device cuda: all {count} visible GPUs are held by other csfgan processes (locks in "
                    f"{root}); wait, name one with --device cuda:N, or lower the profile's gpu resource")
