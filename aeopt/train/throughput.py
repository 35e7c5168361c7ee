"""Training speed against the machine: the measured matmul peak and the achieved rate."""
from __future__ import annotations

import functools
import time

import torch

from .precision import DTYPES

PEAK_PROBE_SECONDS = 0.3  # the probe's least timing window: long enough to outlast a busy moment


@functools.lru_cache(maxsize=None)
def peak_gflops(device_type: str, precision: str, threads: int) -> float:
    """The machine's measured dense-matmul rate in GFLOP/s for a precision: the best of repeated square
    matmuls for at least PEAK_PROBE_SECONDS. The yardstick for `fraction_of_peak`; cached per run.
    Best over a time window, not a few runs: a short probe that lands in a busy moment reads low."""
    dtype = DTYPES.get(precision, torch.float32)
    if device_type == "cpu" and precision == "fp16":
        dtype = torch.float32  # fp16 autocast is GPU-only here
    n = 8192 if device_type == "cuda" else 1024
    a = torch.randn(n, n, device=device_type).to(dtype)
    b = torch.randn(n, n, device=device_type).to(dtype)
    sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 6 or (spent < PEAK_PROBE_SECONDS and runs < 500):
        sync()
        started = time.perf_counter()
        (a @ b).sum()
        sync()
        elapsed = time.perf_counter() - started
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return 2 * n ** 3 / best / 1e9


def throughput(samples: int, seconds: float, flops_per_sample: int, peak: float) -> dict[str, float]:
    """samples/s, achieved GFLOP/s and its fraction of the measured peak, for metrics.json."""
    rate = samples / max(seconds, 1e-9)
    gflops = rate * flops_per_sample / 1e9
    return {"samples_per_second": rate, "gflops_per_second": gflops, "peak_gflops": peak,
            "fraction_of_peak": gflops / peak if peak > 0 else 0.0}
