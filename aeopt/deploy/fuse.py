"""Fold each BatchNorm into the layer before it, for inference.

In eval mode a BatchNorm is a fixed per-channel affine map, y = scale * x + shift with
scale = gamma / sqrt(var + eps) and shift = beta - mean * scale. When it directly follows a
Conv2d, ConvTranspose2d or Linear, that map can be multiplied into the layer's weights and bias,
so inference runs one layer instead of two (ONNX Runtime fuses Conv + BatchNorm itself, but not
ConvTranspose + BatchNorm, and eager PyTorch fuses neither). Models whose BatchNorm follows an
activation (the `seed` model) keep those BatchNorms: folding them into the next layer would be
inexact at the zero-padded borders.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..models.channels import PRODUCERS

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _fold_(layer: nn.Module, norm: nn.Module) -> None:
    scale = (norm.weight if norm.weight is not None else 1.0) / (norm.running_var + norm.eps).sqrt()
    shift = (norm.bias if norm.bias is not None else 0.0) - norm.running_mean * scale
    out_dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0   # ConvTranspose2d weight is (in, out, ...)
    shape = [1] * layer.weight.dim()
    shape[out_dim] = -1
    bias = layer.bias if layer.bias is not None else torch.zeros_like(shift)
    layer.weight = nn.Parameter(layer.weight * scale.reshape(shape))
    layer.bias = nn.Parameter(bias * scale + shift)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every BatchNorm that directly follows a producer folded into it.

    The copy computes the same function (up to float rounding) with fewer layers; the original is
    left untouched. A BatchNorm whose size does not match its producer's outputs (one after an
    Unflatten) is left in place.
    """
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for before, after in zip(names[:-1], names[1:]):
            layer, norm = seq._modules[before], seq._modules[after]
            if not (isinstance(layer, PRODUCERS) and isinstance(norm, NORMS) and norm.track_running_stats):
                continue
            out_features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            if out_features != norm.num_features:
                continue
            _fold_(layer, norm)
            seq._modules[after] = nn.Identity()
    return model
