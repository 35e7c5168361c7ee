"""The trainer's fast path: precision, memory layout, compilation, and how fast it actually ran.

Measured on the 2-core AMD EPYC this project develops on (seed model, batch 256; see
benchmarks/results/train_speed.md): bf16 autocast runs the step ~2.4x faster than fp32 because
the processor's bf16 matmuls are ~2.5x its fp32 ones; channels_last helps bf16 convs on CPU and
all convs on CUDA (see use_channels_last); keeping freed memory in malloc's heap makes the step
1.13-1.23x faster still (keep_freed_memory); torch.compile gave no gain on CPU, so it is opt-in (`--compile`).
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import time
from contextlib import AbstractContextManager
from typing import Callable

import torch

from .errors import AeoptError, describe_failure

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_THREADS = torch.get_num_threads()  # before any run lowers it: one per physical core
PEAK_PROBE_SECONDS = 0.3  # the matmul probe's least timing window: long enough to outlast a busy moment


def has_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def resolve_precision(precision: str, device: torch.device, flops_per_sample: int, conv: bool = False) -> str:
    """The precision a run uses for `--precision auto`; an explicit choice is kept.

    GPUs: bf16 where supported (no loss scaling needed), else fp16 with a grad scaler. CPUs: bf16
    when the processor has native bf16 (oneDNN says so) and the model is big enough that the time
    saved outweighs the casts. For conv models (`conv`), which then run channels-last, that starts
    early: on 28x28 images a 2 MFLOP/sample conv stepped 1,700 vs 840 samples/s and a 6 MFLOP one
    1,430 vs 880 (bf16 NHWC vs fp32, 2 threads), while the 1 MFLOP conv on 8x8 digits ran faster in
    fp32 (4,700 vs 4,100); MLPs gain nothing below ~20 MFLOP/sample (2.5 MFLOP: 6,200 vs 5,900).
    """
    if precision == "fp16" and device.type != "cuda":
        raise AeoptError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 (or auto)")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bf16" if fast_bf16 and flops_per_sample > (1.5e6 if conv else 20e6) else "fp32"


def autocast(device: torch.device, precision: str, cache: bool = True) -> AbstractContextManager:
    """Autocast to the run's low precision; weights, optimizer state and losses stay fp32. `cache`
    keeps each step's low-precision weight copies; CUDA graph capture needs it off."""
    dtype = DTYPES.get(precision, torch.bfloat16)
    return torch.autocast(device.type, dtype=dtype, enabled=precision in DTYPES, cache_enabled=cache)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on GPUs (its small exponent underflows gradients); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")


def use_channels_last(device: torch.device, model: torch.nn.Module, precision: str, choice: str = "auto") -> bool:
    """NHWC activations for conv models: `choice` channels_last | contiguous, or auto.

    Auto picks NHWC on GPUs (tensor cores want it) and for bf16 on CPU, where oneDNN's bf16 conv and
    transposed-conv kernels run NHWC natively and the last layer's matmul form (models/narrow_conv.py)
    needs it: in benchmarks/results/train_speed_layout.md (2 threads, best of 2, same run) the default
    conv trained at 4,558 samples/s NHWC vs 2,941 NCHW, the seed model at 591 vs 586. In fp32 NHWC
    was slower (conv step, ad-hoc A/B: 712 vs 673 ms), so fp32 stays NCHW.
    """
    if choice != "auto":
        return choice == "channels_last"
    return has_conv(model) and (device.type == "cuda" or precision == "bf16")


def choose_threads(requested: int | None, log: Callable[[str], None]) -> int:
    """Torch's CPU threads: `requested`, else every core (torch's own default), so that runs are
    reproducible and a resumed run computes exactly as the original did.

    On a busy machine fewer threads can be much faster (OpenMP threads wait for each other at every
    op, and a thread that is not scheduled stalls the rest: on the shared 2-core machine at load
    average ~10 the seed model stepped 3x faster on 1 thread than on 2), so say so when it applies.
    """
    threads = requested or DEFAULT_THREADS
    torch.set_num_threads(threads)
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if not requested and threads > 1 and busy > 2 * (os.cpu_count() or 1):
        log(f"note: load average {busy:.1f} on {os.cpu_count()} cores; if training crawls, try --threads 1")
    return threads


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    glibc's defaults serve large blocks with fresh pages from the kernel (mmap) and hand freed memory
    back (munmap, trimming the heap's top), so a training step's activation and gradient tensors are
    page-faulted in anew at every step: ~35,000 page faults per seed-model step (batch 256), ~80 ms
    of kernel time, and memory-bound ops (BatchNorm, activations) ran at half speed. With the heap
    kept (the in-process equivalent of running under jemalloc or tcmalloc, as PyTorch's CPU tuning
    guide suggests) the faults drop to ~0 and the bf16 step ran 1.13x faster on seed, 1.23x on conv
    (benchmarks/results/cpu_step*.md, 2 threads). The price: the process keeps its peak memory until
    it exits, as PyTorch's CUDA caching allocator does. Once per process; a no-op (False) where the C
    library is not glibc.
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


class CompiledForward:
    """`torch.compile(model)` with a clean fallback: compilation happens on the first call, so a
    failure there (no C compiler, an unsupported op) is caught once, reported, and eager mode used."""

    def __init__(self, model: torch.nn.Module, log: Callable[[str], None], mode: str | None = None):
        self.model, self.log = model, log
        self.compiled: Callable | None = None
        try:
            self.compiled = torch.compile(model, mode=mode)
        except Exception as err:  # torch.compile raises many kinds of errors; any of them means eager
            self._fall_back(err)

    def _fall_back(self, err: Exception) -> None:
        self.log(f"warning: --compile failed ({describe_failure(err)}); training in eager mode")
        self.compiled = None

    def __call__(self, x: torch.Tensor):
        if self.compiled is None:
            return self.model(x)
        try:
            return self.compiled(x)
        except Exception as err:
            self._fall_back(err)
            return self.model(x)


@functools.lru_cache(maxsize=None)
def peak_gflops(device_type: str, precision: str, threads: int) -> float:
    """The machine's measured dense-matmul rate in GFLOP/s for a precision: the best of repeated square
    matmuls for at least PEAK_PROBE_SECONDS. The yardstick for `fraction_of_peak`; cached per run.

    Best of many, because one 1024^2 bf16 matmul takes ~5 ms on 2 cores: best-of-6 (~30 ms) once landed
    in a moment when the shared machine was busy and read 203 instead of ~410 GFLOP/s."""
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
