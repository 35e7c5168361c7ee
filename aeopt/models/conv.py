"""Convolutional autoencoder: strided-conv encoder, transposed-conv or upsample+conv decoder.

Any image size works: the input is zero-padded so that every stride-2 stage halves it evenly,
and the decoder's output is cropped back, so `x_hat` always has the input's shape.
"""
from __future__ import annotations

import math

import torch.nn as nn

from ..errors import AeoptError
from .base import Autoencoder, check_choice, check_positive, make_activation
from .layers import CropTo, PadTo, Residual, make_norm, padded_size
from ..kernels.narrow_conv import NarrowConv2d
from .registry import register_model


def default_depth(height: int, width: int) -> int:
    """Halve until about 4-7 pixels remain: 8x8 -> 1 stage, 28x28 -> 2, 64x64 -> 4."""
    return max(1, min(4, int(math.log2(min(height, width) / 4))))


def _block(conv: nn.Module, channels: int, norm: str, activation: str) -> list[nn.Module]:
    return [conv, make_norm(norm, channels), make_activation(activation)]


def _refine(blocks: int, channels: int, kernel_size: int, norm: str, activation: str) -> list[nn.Module]:
    """`blocks` residual stride-1 convolutions at one resolution: more computation per pixel, same shape."""
    return [Residual(nn.Sequential(*_block(nn.Conv2d(channels, channels, kernel_size, 1, "same", bias=norm == "none"),
                                           channels, norm, activation))) for _ in range(blocks)]


@register_model("conv", "strided-conv encoder, transposed-conv or upsample+conv decoder; any image size")
def conv(input_shape, latent_dim, output, width=32, depth=None, kernel_size=3, norm="batch",
         activation="relu", decoder="transposed", blocks=0) -> Autoencoder:
    """Args (knobs):
        width: channels of the first stage; each further stage doubles them.
        depth: number of stride-2 stages (default: from the image size).
        blocks: residual stride-1 convolutions after each encoder and decoder stage (0 = none).
        kernel_size: convolution kernel size (odd or even both keep sizes exact).
        norm: batch | group | layer | none.
        activation: relu | leaky_relu | gelu | silu | tanh | elu.
        decoder: transposed (ConvTranspose2d) | upsample (nearest upsample + conv, no checkerboard).
    """
    if len(input_shape) != 3:
        raise AeoptError(f"the conv model needs images (C, H, W), got samples of shape {tuple(input_shape)}; "
                         "use --model mlp for tables")
    channels, height, width_px = input_shape
    depth = default_depth(height, width_px) if depth is None else depth
    for what, value, flag in (("width", width, "--width"), ("depth", depth, "--depth"),
                              ("kernel size", kernel_size, "--kernel-size")):
        check_positive(what, value, flag)
    if not isinstance(blocks, int) or blocks < 0:
        raise AeoptError(f"blocks must be an integer >= 0, got {blocks!r}; fix --blocks")
    check_choice("decoder", decoder, ("transposed", "upsample"))
    pad_h, pad_w = padded_size(height, 2 ** depth), padded_size(width_px, 2 ** depth)
    low_h, low_w = pad_h // 2 ** depth, pad_w // 2 ** depth
    widths = [width * 2 ** i for i in range(depth)]
    pad = (kernel_size - 1) // 2
    bias = norm == "none"

    enc: list[nn.Module] = [PadTo(pad_h, pad_w)]
    for c_in, c_out in zip([channels, *widths[:-1]], widths):
        enc += _block(nn.Conv2d(c_in, c_out, kernel_size, 2, pad, bias=bias), c_out, norm, activation)
        enc += _refine(blocks, c_out, kernel_size, norm, activation)
    flat = widths[-1] * low_h * low_w
    enc += [nn.Flatten(), nn.Linear(flat, latent_dim)]

    dec: list[nn.Module] = [nn.Linear(latent_dim, flat), make_activation(activation),
                            nn.Unflatten(1, (widths[-1], low_h, low_w))]
    ups = list(reversed(widths))
    for c_in, c_out in zip(ups, [*ups[1:], widths[0]]):
        if decoder == "transposed":
            up = nn.ConvTranspose2d(c_in, c_out, kernel_size, 2, pad, output_padding=kernel_size % 2, bias=bias)
            dec += _block(up, c_out, norm, activation)
        else:
            dec += [nn.Upsample(scale_factor=2, mode="nearest"),
                    *_block(nn.Conv2d(c_in, c_out, kernel_size, 1, "same", bias=bias), c_out, norm, activation)]
        dec += _refine(blocks, c_out, kernel_size, norm, activation)
    # the image's few output channels: a faster kernel on CPU (narrow_conv.py)
    dec += [NarrowConv2d(widths[0], channels, kernel_size, 1, "same"), CropTo(height, width_px)]
    return Autoencoder(nn.Sequential(*enc), nn.Sequential(*dec), input_shape, latent_dim, output)
