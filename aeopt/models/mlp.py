"""Fully connected autoencoder: works on tables and on flattened images."""
from __future__ import annotations

import math

import torch.nn as nn

from ..errors import AeoptError
from .base import Autoencoder, check_choice, make_activation
from .registry import register_model


def parse_sizes(hidden) -> tuple[int, ...]:
    """Hidden sizes from a list or a "256,128" string (as typed on the command line)."""
    if isinstance(hidden, str):
        try:
            hidden = [int(s) for s in hidden.split(",") if s.strip()]
        except ValueError:
            raise AeoptError(f"hidden sizes must be integers like 256,128, got {hidden!r}") from None
    sizes = tuple(int(h) for h in hidden)
    if any(h < 1 for h in sizes):
        raise AeoptError(f"hidden sizes must be positive, got {sizes}; pass e.g. --hidden 256,128")
    return sizes


def _stack(sizes: list[int], activation: str, norm: str, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(n_in, n_out))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(n_out))
        elif norm == "layer":
            layers.append(nn.LayerNorm(n_out))
        layers.append(make_activation(activation))
        if dropout:
            layers.append(nn.Dropout(dropout))
    return layers


@register_model("mlp", "fully connected encoder/decoder (mirrored hidden sizes); tables or flattened images")
def mlp(input_shape, latent_dim, output, hidden="256,128", activation="relu", norm="none",
        dropout=0.0) -> Autoencoder:
    """Encoder: Flatten -> hidden layers -> Linear(latent); the decoder mirrors it."""
    check_choice("norm", norm, ("batch", "layer", "none"))
    if not 0.0 <= float(dropout) < 1.0:
        raise AeoptError(f"dropout must be in [0, 1), got {dropout}; fix --dropout")
    sizes = parse_sizes(hidden)
    n_in = math.prod(input_shape)
    encoder = nn.Sequential(nn.Flatten(), *_stack([n_in, *sizes], activation, norm, dropout),
                            nn.Linear(sizes[-1] if sizes else n_in, latent_dim))
    back = [latent_dim, *reversed(sizes)]
    decoder = nn.Sequential(*_stack(back, activation, norm, dropout), nn.Linear(back[-1], n_in),
                            nn.Unflatten(1, tuple(input_shape)))
    return Autoencoder(encoder, decoder, input_shape, latent_dim, output)
