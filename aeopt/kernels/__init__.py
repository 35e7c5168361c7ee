"""CPU kernels and process settings the fast path relies on: the narrow-output conv, blocked GDN,
malloc tuning."""
from __future__ import annotations

import torch


def running_eagerly() -> bool:
    """Not being traced, compiled or exported: the hand-written kernels (autograd Functions, Python
    loops) are for eager training; a graph capture takes torch's own ops, which it understands."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())
