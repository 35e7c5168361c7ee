"""Generalized divisive normalization (Ballé et al. 2016): the codec's nonlinearity.

GDN divides each channel by a learned norm of all channels at the same pixel,
`y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)`; IGDN multiplies instead (the decoder's inverse).
It Gaussianizes natural-image responses with far fewer layers than ReLUs need, which is why the
Ballé codecs use it. beta and gamma must stay positive: they are stored as square roots and squared
(with a floor on beta), so a gradient step can never make the denominator zero or negative.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...kernels.blocked_gdn import blocked_gdn, use_blocked_gdn

BETA_MIN = 1e-6  # keeps sqrt(beta + ...) away from 0 where every input is 0 (flat image regions)


class GDN(nn.Module):
    def __init__(self, channels: int, *, inverse: bool = False, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        self.gamma_sqrt = nn.Parameter(torch.eye(channels) * gamma_init ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        beta = self.beta_sqrt.square() + BETA_MIN
        gamma = self.gamma_sqrt.square()
        if use_blocked_gdn(x, beta, gamma):  # CPU training: memory-bound otherwise (kernels/blocked_gdn.py)
            return blocked_gdn(x, gamma, beta, self.inverse)
        gamma = gamma.view(channels, channels, 1, 1)
        norm = torch.sqrt(F.conv2d(x.square(), gamma, beta))
        return x * norm if self.inverse else x / norm


def igdn(channels: int) -> GDN:
    return GDN(channels, inverse=True)
