"""The seed article's Keras autoencoder, rebuilt in PyTorch with its two shape bugs fixed.

The article's encoder (conv 64 -> conv 32, LeakyReLU + BatchNorm, then Dense) ends in
`Dense(1, sigmoid)`: a one-number code. Fix 1: the code has `latent_dim` numbers (still sigmoid).
Its generator (Dense 7x7x256 -> ConvTranspose 128 -> 64 -> 3, tanh) emits 3 channels in [-1, 1]
while the input is 28x28x1 in [0, 1] under binary cross-entropy. Fix 2: the last layer emits the
input's channels as logits, and `x_hat` = sigmoid(logits), so BCE on logits is exact and stable.
Layer order (activation before BatchNorm) and bias-free layers follow the article.
Other image sizes are padded to a multiple of 4 and cropped back, like the `conv` model.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import AeoptError
from .base import Autoencoder
from .layers import CropTo, PadTo, padded_size
from ..kernels.narrow_conv import NarrowConvTranspose2d
from .registry import register_model


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.2)  # tf.nn.leaky_relu's default slope


@register_model("seed", "the seed article's conv encoder + transposed-conv generator (shape bugs fixed)")
def seed(input_shape, latent_dim, output) -> Autoencoder:
    if len(input_shape) != 3:
        raise AeoptError(f"the seed model needs images (C, H, W), got samples of shape {tuple(input_shape)}; "
                         "use --model mlp for tables")
    channels, height, width = input_shape
    pad_h, pad_w = padded_size(height, 4), padded_size(width, 4)
    low_h, low_w = pad_h // 4, pad_w // 4
    encoder = nn.Sequential(
        PadTo(pad_h, pad_w),
        nn.Conv2d(channels, 64, 3, 2, 1, bias=False), _leaky(), nn.BatchNorm2d(64),
        nn.Conv2d(64, 32, 3, 2, 1, bias=False), _leaky(), nn.BatchNorm2d(32),
        nn.Flatten(), nn.Linear(32 * low_h * low_w, latent_dim, bias=False), nn.Sigmoid())
    decoder = nn.Sequential(
        nn.Linear(latent_dim, 256 * low_h * low_w, bias=False), _leaky(), nn.BatchNorm1d(256 * low_h * low_w),
        nn.Unflatten(1, (256, low_h, low_w)),
        nn.ConvTranspose2d(256, 128, 5, 2, 2, output_padding=1, bias=False), _leaky(), nn.BatchNorm2d(128),
        nn.ConvTranspose2d(128, 64, 5, 2, 2, output_padding=1, bias=False), _leaky(), nn.BatchNorm2d(64),
        NarrowConvTranspose2d(64, channels, 5, 1, 2, bias=False),  # a faster kernel for few channels on CPU
        CropTo(height, width))
    return Autoencoder(encoder, decoder, input_shape, latent_dim, output)
