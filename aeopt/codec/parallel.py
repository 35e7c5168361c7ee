"""Coding on several cores: the slices of a many-image file (container.slices) are independent
streams, so threads can code them side by side.

Threads, not processes: the transforms (torch), the integer h_s (a float64 BLAS product) and most
numpy work release the GIL, and threads share the loaded model and tables for free. Each worker
runs torch and BLAS with one thread while they work: their own threads do not pay on a 28x28
batch (before slices, 2 torch threads coded Fashion-MNIST at 918 images/s, 1 at 1,110), and two
workers each running a multi-threaded BLAS product fight over the cores. Range coding holds the
GIL: it is the part that does not scale (codec_kernels.md: ~10% of a fast model's work). One core
vs two for the same model: codec.md. threadpoolctl (scikit-learn's own dependency) sets BLAS's
thread count.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch

from ..errors import AeoptError

T, R = TypeVar("T"), TypeVar("R")
MAX_WORKERS = 256


def check_workers(workers) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise AeoptError(f"workers must be a whole number in 1..{MAX_WORKERS}, got {workers!r}")
    return workers


def default_workers() -> int:
    """As many as torch may use (torch.set_num_threads; by default the physical cores)."""
    return max(1, torch.get_num_threads())


def in_parallel(work: Callable[[T], R], jobs: Sequence[T], workers: int | None = None) -> list[R]:
    """[work(job) for job in jobs], in order, on up to `workers` threads (None: default_workers()).
    The first error any job raises is raised here."""
    workers = min(check_workers(workers) or default_workers(), len(jobs))
    if workers <= 1:
        return [work(job) for job in jobs]
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="aeopt-codec")
    try:
        with threadpool_limits(1, user_api="blas"):
            return list(pool.map(work, jobs))
    finally:  # after an error or a Ctrl-C: the jobs not started are dropped, the running ones finish
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
