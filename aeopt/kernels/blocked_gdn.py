"""GDN / IGDN forward and backward in cache-sized blocks of pixels, for training on CPUs.

GDN is `y = x / sqrt(beta + gamma @ x^2)` at each pixel (IGDN multiplies); autograd runs it as half
a dozen whole-tensor element-wise passes forward and a dozen backward, each reading and writing the
full activation (8 MB a tensor for a 2 x 64 x 128 x 128 photo batch), so on a CPU the layer is bound
by memory, not arithmetic. Rule: on CPU, in fp32 / fp64 training, compute it over blocks of
`BLOCK_BYTES` of pixels (rows of the (pixels, channels) matrix a channels_last tensor already is), so
every intermediate of a block stays in the core's cache, with the gradient written out by hand:

  s = beta + (x*x) @ gamma^T,  n = sqrt(s);   GDN: y = x / n;   IGDN: y = x * n
  GDN:  t = g * x / (n * s);  dx = g / n - x * (t @ gamma);  dgamma = -1/2 t^T (x*x);  dbeta = -1/2 sum t
  IGDN: t = g * x / n;        dx = g * n + x * (t @ gamma);  dgamma = +1/2 t^T (x*x);  dbeta = +1/2 sum t

Besides the input, only the norm `n` is kept for the backward (one activation more, as autograd's
own path keeps). The results equal the plain formula up to float rounding (tests/kernels/
test_blocked_gdn.py, gradcheck in fp64). An NCHW input is copied to channels_last first, and the
result stays channels_last. The speed-up is in benchmarks/results/codec_train_step.md. GPUs, autocast (bf16), inference
(no gradient: the encoder and decoder keep the plain formula, so decoded pixels do not move),
tracing and export take the plain formula.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import running_eagerly

# 256 KB of pixels a block (1,024 of 64 fp32 channels): x, n, the output and a temporary fit in a
# core's L2 (1-2 MB on current x86 server cores) with room to spare. Counted in bytes, so a wider
# layer takes fewer pixels a block (design_notes.md: 64, 96 and 192 channels).
BLOCK_BYTES = 256 * 1024
MIN_BLOCK_ROWS = 64  # fewer pixels a block and the per-block op overhead outweighs the cache


def _block_rows(rows: torch.Tensor) -> int:
    return max(MIN_BLOCK_ROWS, BLOCK_BYTES // max(1, rows.shape[1] * rows.element_size()))


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N*H*W, C): a view for a channels_last tensor, else a copy."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _as_image(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(N*H*W, C) -> a channels_last (N, C, H, W) view."""
    n, c, h, w = shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


class _BlockedGDN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, inverse: bool):
        rows = _rows(x)
        out, norm = torch.empty_like(rows), torch.empty_like(rows)
        gamma_t = gamma.t()
        size = _block_rows(rows)
        for start in range(0, rows.shape[0], size):
            block = rows[start:start + size]
            n = norm[start:start + size]
            torch.addmm(beta, block * block, gamma_t, out=n)
            n.sqrt_()
            combine = torch.mul if inverse else torch.div
            combine(block, n, out=out[start:start + size])
        ctx.save_for_backward(rows, norm, gamma)
        ctx.inverse, ctx.shape = inverse, x.shape
        return _as_image(out, x.shape)

    @staticmethod
    @once_differentiable  # the hand-written gradient is not itself differentiated (no create_graph)
    def backward(ctx, grad_out):
        rows, norm, gamma = ctx.saved_tensors
        grads = _rows(grad_out)
        grad_x = torch.empty_like(rows)
        grad_gamma = torch.zeros_like(gamma)
        grad_beta = norm.new_zeros(norm.shape[1])
        # t's sign folded in: GDN's dx subtracts x * (t @ gamma) and its dgamma, dbeta carry -1/2
        sign = 1.0 if ctx.inverse else -1.0
        size = _block_rows(rows)
        for start in range(0, rows.shape[0], size):
            x = rows[start:start + size]
            n = norm[start:start + size]
            g = grads[start:start + size]
            dx = grad_x[start:start + size]
            if ctx.inverse:
                t = (g * x).div_(n)
                torch.mul(g, n, out=dx)
            else:
                t = (g * x).div_(n * n * n)  # n^3 = n * s
                torch.div(g, n, out=dx)
            dx.addcmul_(x, t @ gamma, value=sign)
            grad_gamma.addmm_(t.t(), x * x, alpha=0.5 * sign)
            grad_beta.add_(t.sum(0), alpha=0.5 * sign)
        return _as_image(grad_x, ctx.shape), grad_gamma, grad_beta, None


def use_blocked_gdn(x: torch.Tensor, *params: torch.Tensor) -> bool:
    """The blocked path applies: a 4-d fp32 / fp64 CPU tensor in training (a gradient to compute), no
    autocast, not being traced, compiled or exported."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
            and torch.is_grad_enabled() and any(t.requires_grad for t in (x, *params))
            and not torch.is_autocast_enabled("cpu")
            and running_eagerly())


def blocked_gdn(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, inverse: bool) -> torch.Tensor:
    """GDN (inverse=False) or IGDN of x (N, C, H, W) with gamma (C, C) and beta (C,), already positive;
    the result is channels_last."""
    x = x.contiguous(memory_format=torch.channels_last)
    return _BlockedGDN.apply(x, gamma.to(x.dtype), beta.to(x.dtype), inverse)
