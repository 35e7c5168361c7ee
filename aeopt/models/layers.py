"""Small building blocks shared by the image models."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import check_choice

NORMS = ("batch", "group", "layer", "none")


def make_norm(name: str, channels: int) -> nn.Module:
    """A 2-D normalization layer; "group" uses up to 8 groups, "layer" one group over all channels."""
    check_choice("norm", name, NORMS)
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if name == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def padded_size(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


class PadTo(nn.Module):
    """Zero-pads images on the bottom/right so strided stages divide them evenly (28 -> 32, say)."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dh, dw = self.height - x.shape[-2], self.width - x.shape[-1]
        return F.pad(x, (0, dw, 0, dh)) if dh or dw else x


class CropTo(nn.Module):
    """Cuts the decoder's padded output back to the data's height and width."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.height, : self.width]


class Residual(nn.Module):
    """x + f(x): extra stride-1 convolutions that refine a stage without changing its shape."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
