"""csfgan.runtime: the thread count and the allocator setting every compute command applies."""

import platform
import resource

import pytest
import torch

from csfgan.runtime import configure_cpu, default_threads, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_default_threads_is_every_core_unless_asked():
    assert default_threads(3) == 3
    assert default_threads(None) >= 1
    assert default_threads(0) == default_threads(None)  # 0 means "not set", as --threads 0 would


def test_configure_cpu_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        assert configure_cpu(1)["torch_threads"] == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's mallopt")
def test_freed_activation_memory_is_reused_without_page_faults():
    # Without the setting, each 64 MB tensor is a fresh mmap: 16,384 first-touch faults of 4 kB pages.
    assert keep_freed_memory()
    rounds = []
    for _ in range(4):  # the heap grows to its working size in the first round or two
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            torch.ones(16 << 20)  # 64 MB of float32, filled (touched) and freed
        rounds.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # Unset, every round costs at least 10 x 16,384 faults; reused, a round costs less than one buffer's.
    assert min(rounds) < 16_384, f"page faults per round of 10 reused 64 MB buffers: {rounds}"
