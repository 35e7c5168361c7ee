"""The codec's four transforms (Ballé et al. 2018): g_a, g_s (image <-> latent y) and h_a, h_s
(y <-> hyper-latent z, hyperprior only).

g_a is `depth` stride-2 5x5 convs with GDN between them; g_s mirrors it with transposed convs and
IGDN. h_s upsamples by sub-pixel convolution (3x3 conv to 4x the channels, then PixelShuffle)
rather than transposed convs, because the decoder evaluates h_s in integer arithmetic
(aeopt/codec/intnet.py) and conv + reshuffle is the simplest exact integer form.
"""
from __future__ import annotations

import torch.nn as nn

from .gdn import GDN, igdn


def analysis(in_channels: int, width: int, latent: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(depth):
        out = latent if i == depth - 1 else width
        layers.append(nn.Conv2d(channels, out, 5, stride=2, padding=2))
        if i < depth - 1:
            layers.append(GDN(out))
        channels = out
    return nn.Sequential(*layers)


def synthesis(out_channels: int, width: int, latent: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = latent
    for i in range(depth):
        out = out_channels if i == depth - 1 else width
        layers.append(nn.ConvTranspose2d(channels, out, 5, stride=2, padding=2, output_padding=1))
        if i < depth - 1:
            layers.append(igdn(out))
        channels = out
    return nn.Sequential(*layers)


HYPER_STRIDE = 4  # h_a downsamples y twice: one z value summarizes a 4x4 block of y


def hyper_analysis(latent: int, hyper: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(latent, hyper, 3, padding=1), nn.ReLU(),
        nn.Conv2d(hyper, hyper, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(hyper, hyper, 5, stride=2, padding=2))


def hyper_synthesis(latent: int, hyper: int) -> nn.Sequential:
    """Output: log-scale of y's zero-mean Gaussian, one per element of y.

    Only Conv2d (3x3, padding 1), PixelShuffle and ReLU: the layer types intnet.py evaluates.
    """
    return nn.Sequential(
        nn.Conv2d(hyper, 4 * hyper, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
        nn.Conv2d(hyper, 4 * hyper, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(),
        nn.Conv2d(hyper, latent, 3, padding=1))
