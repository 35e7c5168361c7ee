"""Convolutions with very few output channels (an image model's last layer), made fast on CPUs.

oneDNN's CPU kernels are built for many output channels and run a layer with one to three of them
far below the machine's peak. Rule: compute such a layer as one matmul over the channels (every
kernel tap at once, an (O*kh*kw, C) x (C, N*H*W) product) followed by kh*kw shifted adds of
single-channel planes, and backward the same way round; it is faster for the layer and for the
whole step (benchmarks/results/cpu_step*.md; the layer timings are in design_notes.md).

`NarrowConv2d` and `NarrowConvTranspose2d` are drop-in subclasses (same parameters, same
state_dict, same results up to float rounding) that take this path for stride-1, undilated,
ungrouped layers with at most `MAX_OUT_CHANNELS` outputs, when the input is a bf16 (or bf16-
autocast) channels_last CPU tensor: the trainer's bf16 fast path. In fp32 the gain was uneven (an
NCHW input must first be copied to NHWC), so fp32, GPUs, ONNX export, tracing and torch.compile run
the stock kernel.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import running_eagerly

MAX_OUT_CHANNELS = 3  # RGB; at 4 outputs oneDNN was already faster (design_notes.md)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


class _ShiftedMatmulConv(torch.autograd.Function):
    """conv2d(x, weight, bias) with stride 1 and explicit padding (top, bottom, left, right)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        top, bottom, left, right = padding
        dtype = _compute_dtype(x)
        pixels = x.to(dtype).permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view for channels_last input
        taps = weight.to(dtype).permute(0, 2, 3, 1).reshape(o * kh * kw, c)
        # cols[o, ki, kj, pixel]: what input pixel contributes through tap (ki, kj); fp32 for the sum
        cols = (taps @ pixels.t()).float().view(o, kh, kw, n, h, w)
        acc = cols.new_zeros(o, n, h + kh - 1, w + kw - 1)
        for ki in range(kh):
            for kj in range(kw):
                acc[:, :, kh - 1 - ki: kh - 1 - ki + h, kw - 1 - kj: kw - 1 - kj + w] += cols[:, ki, kj]
        out_h, out_w = h + top + bottom - kh + 1, w + left + right - kw + 1
        out = acc[:, :, kh - 1 - top: kh - 1 - top + out_h, kw - 1 - left: kw - 1 - left + out_w]
        out = out.permute(1, 0, 2, 3)
        if bias is not None:
            out = out + bias.view(1, o, 1, 1)
        ctx.save_for_backward(pixels, taps)
        ctx.shapes = (x.shape, x.dtype, weight.dtype, kh, kw, padding, bias is not None)
        return out.to(dtype).contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        pixels, taps = ctx.saved_tensors
        (n, c, h, w), x_dtype, w_dtype, kh, kw, (top, _, left, _), has_bias = ctx.shapes
        o = taps.shape[0] // (kh * kw)
        out_h, out_w = grad_out.shape[-2:]
        grad_acc = grad_out.new_zeros(o, n, h + kh - 1, w + kw - 1, dtype=torch.float32)
        grad_acc[:, :, kh - 1 - top: kh - 1 - top + out_h, kw - 1 - left: kw - 1 - left + out_w] = \
            grad_out.permute(1, 0, 2, 3)
        grad_cols = torch.stack([grad_acc[:, :, kh - 1 - ki: kh - 1 - ki + h, kw - 1 - kj: kw - 1 - kj + w]
                                 for ki in range(kh) for kj in range(kw)], dim=1)  # (o, kh*kw, n, h, w)
        grad_cols = grad_cols.to(taps.dtype).view(o * kh * kw, n * h * w)
        grad_x = (grad_cols.t() @ taps).view(n, h, w, c).permute(0, 3, 1, 2).to(x_dtype)
        grad_w = (grad_cols @ pixels).view(o, kh, kw, c).permute(0, 3, 1, 2).to(w_dtype)
        grad_b = grad_out.float().sum((0, 2, 3)) if has_bias else None
        return grad_x, grad_w, grad_b, None


def _fast_path(x: torch.Tensor, out_channels: int) -> bool:
    return (x.device.type == "cpu" and x.dim() == 4 and out_channels <= MAX_OUT_CHANNELS
            and x.is_contiguous(memory_format=torch.channels_last) and _compute_dtype(x) == torch.bfloat16
            and running_eagerly())


def _explicit_padding(kernel: tuple[int, int], padding) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for a tuple padding, "valid", or "same" (the odd pixel at the bottom/right, as torch)."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        (kh, kw) = kernel
        return (kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2
    ph, pw = padding
    return ph, ph, pw, pw


class NarrowConv2d(nn.Conv2d):
    """nn.Conv2d whose few-output-channel, stride-1 case runs as a matmul + shifted adds on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (_fast_path(x, self.out_channels) and self.stride == (1, 1) and self.dilation == (1, 1)
                and self.groups == 1 and self.padding_mode == "zeros"):
            padding = _explicit_padding(self.kernel_size, self.padding)
            return _ShiftedMatmulConv.apply(x, self.weight, self.bias, padding)
        return super().forward(x)


class NarrowConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d likewise: at stride 1 it is a conv with the kernel flipped and transposed."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if (_fast_path(x, self.out_channels) and output_size is None and self.stride == (1, 1)
                and self.dilation == (1, 1) and self.groups == 1 and self.output_padding == (0, 0)):
            (kh, kw), (ph, pw) = self.kernel_size, self.padding
            if ph < kh and pw < kw:
                weight = self.weight.transpose(0, 1).flip(2, 3)
                padding = (kh - 1 - ph, kh - 1 - ph, kw - 1 - pw, kw - 1 - pw)
                return _ShiftedMatmulConv.apply(x, weight, self.bias, padding)
        return super().forward(x, output_size)

