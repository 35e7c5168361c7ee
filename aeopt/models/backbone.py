"""The encoder/decoder pair the variants (vae, vq_vae, aae) build on: a registered conv or mlp model.

Building on the registry keeps one definition of each architecture: a VAE on `conv` has the conv
model's layers, plus a wider last encoder layer for the log-variance.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import AeoptError
from .base import Autoencoder
from .registry import create_model

BACKBONES = ("conv", "mlp")


def build_backbone(backbone: str | None, input_shape, latent_dim: int, output: str, knobs: dict) -> Autoencoder:
    """The `conv` (images) or `mlp` model with the given knobs (None values keep its defaults)."""
    if backbone is None:
        backbone = "conv" if len(input_shape) == 3 else "mlp"
    if backbone not in BACKBONES:
        raise AeoptError(f"unknown backbone {backbone!r}; use --backbone conv or --backbone mlp")
    return create_model(backbone, input_shape, latent_dim, output=output, **knobs)


def widen_encoder_output(encoder: nn.Sequential, factor: int) -> nn.Sequential:
    """Replace the encoder's last Linear(h, d) by Linear(h, factor * d) (a VAE's mean and log-variance)."""
    last = encoder[-1]
    if not isinstance(last, nn.Linear):
        raise AeoptError(f"the backbone's encoder must end in a Linear layer, not {type(last).__name__}")
    encoder[-1] = nn.Linear(last.in_features, factor * last.out_features)
    return encoder
