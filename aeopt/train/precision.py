"""The trainer's fast path: precision, memory layout, threads and compilation, each decided once.

Rules (figures in benchmarks/results/train_speed*.md): bf16 autocast where the processor's bf16
matmuls are faster than its fp32 ones and the model is big enough to gain; channels_last for convs
on GPUs and in bf16 (see use_channels_last); torch.compile opt-in, since it gained nothing on CPU.
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Callable

import torch

from ..errors import AeoptError, describe_failure

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_THREADS = torch.get_num_threads()  # before any run lowers it: one per physical core


def has_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def resolve_precision(precision: str, device: torch.device, flops_per_sample: int, conv: bool = False) -> str:
    """The precision a run uses for `--precision auto`; an explicit choice is kept.

    GPUs: bf16 where supported (no loss scaling needed), else fp16 with a grad scaler. CPUs: bf16
    when the processor has native bf16 (native_bf16(), not oneDNN's emulation) and the model is big
    enough that the time saved outweighs the casts: above 1.5 MFLOP/sample for conv models (which
    then run channels-last), above 20 MFLOP/sample for MLPs (the thresholds' A/B:
    benchmarks/results/train_speed_layout.md).
    """
    if precision == "fp16" and device.type != "cuda":
        raise AeoptError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 (or auto)")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if native_bf16() and flops_per_sample > (1.5e6 if conv else 20e6) else "fp32"


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX). oneDNN reports bf16 as
    supported on every AVX-512 CPU, where it emulates it: on an Ice Lake Xeon without AVX512_BF16,
    autocast made the codecs' and the seed model's training steps 1.3-2.5x *slower* than fp32
    (benchmarks/results/precision_emulated_bf16.md). torch names the two features in torch.cpu; a
    torch without those probes is taken at oneDNN's word, as before."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    if all(probe is None for probe in probes):
        return True
    return any(probe() for probe in probes if probe is not None)


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
    transposed-conv kernels run NHWC natively and the last layer's matmul form (kernels/narrow_conv.py)
    needs it. fp32 on a CPU depends on the CPU: with native bf16 (an AMD EPYC) NHWC measured 5% slower,
    so there fp32 stays NCHW (benchmarks/results/design_notes.md); without it (an Ice Lake Xeon) NHWC
    stepped 11-22% faster on every model measured (benchmarks/results/precision_emulated_bf16.md).
    """
    if choice != "auto":
        return choice == "channels_last"
    return has_conv(model) and (device.type == "cuda" or precision == "bf16" or not native_bf16())


def choose_threads(requested: int | None, log: Callable[[str], None]) -> int:
    """Torch's CPU threads: `requested`, else every core (torch's own default), so that runs are
    reproducible and a resumed run computes exactly as the original did.

    On a busy machine fewer threads can be much faster (OpenMP threads wait for each other at every
    op, and a thread that is not scheduled stalls the rest), so say so when it applies.
    """
    threads = requested or DEFAULT_THREADS
    torch.set_num_threads(threads)
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if not requested and threads > 1 and busy > 2 * (os.cpu_count() or 1):
        log(f"note: load average {busy:.1f} on {os.cpu_count()} cores; if training crawls, try --threads 1")
    return threads


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
