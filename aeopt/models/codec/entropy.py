"""The codec's learned probability models: what the rate term of R + lambda*D is measured with.

`EntropyBottleneck` (Ballé et al. 2017, appendix 6.1): one non-parametric density per channel,
its cumulative c(x) a small monotone network (softplus matrices, tanh gating). The likelihood of
a quantized value v is c(v + 1/2) - c(v - 1/2), computed in logit space on the side where the
sigmoid is not saturated so tiny probabilities stay accurate. Its `quantiles` parameter tracks
the 1e-9 / 50% / 1 - 1e-9 points of each density through the auxiliary loss; they bound the
integer CDF tables built after training and nothing else, so they are trained by their own
optimizer and excluded from the main one (the rate gradient must not move them).

`GaussianConditional` (Ballé et al. 2018): y given the hyperprior is a Gaussian of a per-element
scale (and, for the mean-scale model, mean; else zero), convolved with a unit box for the rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TAIL_MASS = 1e-9  # probability left outside the quantile range: escapes are that rare
LIKELIHOOD_MIN = 1e-9  # a floor on each likelihood: -log2 stays finite (<= 30 bits) early in training
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64  # the fixed scale table (CompressAI's defaults)


def scale_table() -> torch.Tensor:
    """SCALE_LEVELS scales, log-spaced: the only scales the coder ever uses (float64)."""
    return torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS, dtype=torch.float64))


class EntropyBottleneck(nn.Module):
    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels = channels
        full = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / full[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, full[i + 1], full[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, full[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, full[i + 1], 1)))
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        target = math.log(2 / TAIL_MASS - 1)
        self.register_buffer("target", torch.tensor([-target, 0.0, target]), persistent=False)

    def logits_cdf(self, x: torch.Tensor, *, detach: bool = False) -> torch.Tensor:
        """logit(c(x)) per channel; x is (C, 1, N). `detach`: the aux loss must move only the quantiles."""
        logits = x
        for i, matrix in enumerate(self.matrices):
            matrix, bias = F.softplus(matrix), self.biases[i]
            if detach:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(matrix, logits) + bias
            if i < len(self.factors):
                factor = self.factors[i].detach() if detach else self.factors[i]
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """P(round(y) = y) under the density (y already quantized or noisy), same shape as y."""
        b, c, h, w = y.shape
        v = y.float().permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(v - 0.5)
        upper = self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.clamp_min(LIKELIHOOD_MIN).reshape(c, b, h, w).permute(1, 0, 2, 3)

    def aux_loss(self) -> torch.Tensor:
        return (self.logits_cdf(self.quantiles, detach=True) - self.target).abs().sum()

    @torch.no_grad()
    def pmf_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel: the lowest coded symbol and the pmf over [lowest, highest] (float64, padded with 0).

        The range is the quantiles widened to integers; values outside it are escapes (intcdf.py).
        """
        q = self.quantiles.detach().double()
        low = torch.floor(q[:, 0, 0]).long()
        high = torch.ceil(q[:, 0, 2]).long()
        high = torch.maximum(high, low)
        length = int((high - low).max()) + 1
        v = low[:, None] + torch.arange(length)[None, :]
        p = self.likelihood_float64(v.double())
        p[torch.arange(length)[None, :] > (high - low)[:, None]] = 0.0
        return low, p

    def likelihood_float64(self, v: torch.Tensor) -> torch.Tensor:
        """Unfloored pmf at integers v (C, L), in float64, for the tables."""
        module = self.double()
        try:
            lower = module.logits_cdf(v[:, None, :] - 0.5)
            upper = module.logits_cdf(v[:, None, :] + 0.5)
            sign = -torch.sign(lower + upper)
            return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))[:, 0, :]
        finally:
            self.float()


class GaussianConditional(nn.Module):
    """Likelihood of y under N(mean, scale^2) (mean 0 when not given) convolved with U(-1/2, 1/2)."""

    @staticmethod
    def likelihood(y: torch.Tensor, scale: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        scale = scale.float().clamp(SCALE_MIN, SCALE_MAX)
        v = (y.float() - mean.float() if mean is not None else y.float()).abs()
        upper = _std_normal_cdf((0.5 - v) / scale)
        lower = _std_normal_cdf((-0.5 - v) / scale)
        return (upper - lower).clamp_min(LIKELIHOOD_MIN)

    @staticmethod
    def pmf_table(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each table scale: symbols -L..L with L = the 1 - TAIL_MASS/2 point, pmf (float64, 0-padded)."""
        half = torch.ceil(-_normal_ppf(TAIL_MASS / 2) * scales).long()
        length = int(2 * half.max()) + 1
        v = torch.arange(length, dtype=torch.float64)[None, :] - half[:, None]
        s = scales[:, None]
        p = _std_normal_cdf((0.5 - v.abs()) / s) - _std_normal_cdf((-0.5 - v.abs()) / s)
        p[torch.arange(length)[None, :] > 2 * half[:, None]] = 0.0
        return -half, p

    @staticmethod
    def shifted_pmf_table(scales: torch.Tensor, phases: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For the mean-scale model: row k * phases + j is N(f_j, scale_k^2), f_j = (j + 1/2) / phases,
        the mean's fractional part (its integer part shifts the symbols, tables.py); symbols -L..L + 1
        around it, L as in pmf_table (float64, 0-padded)."""
        half = torch.ceil(-_normal_ppf(TAIL_MASS / 2) * scales).long()
        length = int(2 * half.max()) + 2
        f = (torch.arange(phases, dtype=torch.float64) + 0.5) / phases
        s = scales.repeat_interleave(phases)[:, None]
        low = (-half).repeat_interleave(phases)
        v = torch.arange(length, dtype=torch.float64)[None, :] + low[:, None] - f.repeat(len(scales))[:, None]
        p = _std_normal_cdf((v + 0.5) / s) - _std_normal_cdf((v - 0.5) / s)
        p[torch.arange(length)[None, :] > 2 * half.repeat_interleave(phases)[:, None] + 1] = 0.0
        return low, p


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def _normal_ppf(p: float) -> float:
    return math.sqrt(2.0) * torch.erfinv(torch.tensor(2 * p - 1, dtype=torch.float64)).item()
