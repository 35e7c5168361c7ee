"""Keeping the freed heap: the CPU fast path's memory setting (one process-wide mallopt call)."""
from __future__ import annotations

import ctypes
import functools
import platform


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    Rule: on CPU, keep it. glibc's defaults hand a step's large tensors back to the kernel, so every
    step page-faults its activations and gradients in anew; keeping the heap (what jemalloc or
    tcmalloc do, as PyTorch's CPU tuning guide suggests) removes those faults (the A/B is in
    benchmarks/results/cpu_step.md). The price: the process keeps its peak memory until it exits,
    as PyTorch's CUDA caching allocator does. Once per process; a no-op (False) without glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # mallopt's parameter numbers (malloc.h)
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)   # glibc's largest: bigger blocks still use mmap
                and libc.mallopt(m_trim_threshold, 1 << 30)  # keep up to 1 GiB of free heap top
                and libc.mallopt(m_top_pad, 64 << 20))     # grow the heap in 64 MiB steps
