"""Reconstruction losses and regularizers. Every loss returns a dict that always has "loss".

A loss spec is a name (`mse`, `l1`, `huber`, `bce`, `ssim`), a weighted mix (`mse+0.2*ssim`),
or `auto`, which picks from the data and says why. All arithmetic runs in fp32, also when the
forward pass ran under bf16 autocast, so small losses do not round to zero.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import AeoptError
from ..metrics import ssim_per_sample


def _mse(out, x):
    return F.mse_loss(out["x_hat"].float(), x)


def _l1(out, x):
    return F.l1_loss(out["x_hat"].float(), x)


def _huber(out, x):
    # delta 0.1: pixel errors above 0.1 count linearly, so a few bad pixels don't dominate.
    return F.huber_loss(out["x_hat"].float(), x, delta=0.1)


def _bce(out, x):
    # On logits: log-sum-exp form, exact and stable where sigmoid + log would overflow.
    return F.binary_cross_entropy_with_logits(out["logits"].float(), x)


def _ssim(out, x):
    if x.dim() != 4:
        raise AeoptError("the ssim loss needs image data (N, C, H, W); use mse or l1 for tables")
    return 1.0 - ssim_per_sample(out["x_hat"], x).mean()


LOSSES = {
    "mse": (_mse, "mean squared error"),
    "l1": (_l1, "mean absolute error (robust to outliers, sharper edges)"),
    "huber": (_huber, "squared below 0.1, absolute above"),
    "bce": (_bce, "binary cross-entropy on logits (data in [0, 1])"),
    "ssim": (_ssim, "1 - SSIM (structure, for images)"),
}
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?(?:e-?\d+)?)\s*\*\s*)?([a-z_0-9]+)\s*$")


@dataclass
class ReconstructionLoss:
    """A weighted sum of named reconstruction terms, plus optional regularizers on the code z."""

    terms: list[tuple[float, str]]
    sparse_l1: float = 0.0  # weight of mean |z|: pushes codes toward zero (sparse autoencoder)
    sparse_kl: tuple[float, float] | None = None  # (rho, weight) of the KL sparsity penalty

    @property
    def spec(self) -> str:
        return "+".join(name if w == 1 else f"{w:g}*{name}" for w, name in self.terms)

    def __call__(self, out: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.float()
        parts = {name: LOSSES[name][0](out, x) for _, name in self.terms}
        loss = sum(w * parts[name] for w, name in self.terms)
        if self.sparse_l1:
            parts["sparse_l1"] = out["z"].float().abs().mean()
            loss = loss + self.sparse_l1 * parts["sparse_l1"]
        if self.sparse_kl:
            rho, weight = self.sparse_kl
            parts["sparse_kl"] = sparsity_kl(out["z"], rho)
            loss = loss + weight * parts["sparse_kl"]
        return {"loss": loss, **parts}


def sparsity_kl(z: torch.Tensor, rho: float) -> torch.Tensor:
    """Sum over code units of KL(rho || rho_hat_j), rho_hat_j the unit's mean activity over the batch.

    The classic penalty assumes sigmoid units; our codes are linear, so a unit's activity is
    tanh(|z|) in [0, 1): 0 when the unit is silent, so a small rho asks for mostly-zero codes.
    """
    rho_hat = torch.tanh(z.float().abs()).mean(0).clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def parse_sparse_kl(spec: str) -> tuple[float, float]:
    """"0.05:0.1" -> (rho 0.05, weight 0.1), with a one-line error for anything else."""
    try:
        rho, weight = (float(v) for v in str(spec).split(":"))
    except ValueError:
        raise AeoptError(f"--sparse-kl wants RHO:W, e.g. 0.05:0.1, got {spec!r}") from None
    if not (0 < rho < 1 and weight >= 0):
        raise AeoptError(f"--sparse-kl {spec}: the target activity RHO must be in (0, 1) and the weight W >= 0")
    return rho, weight


def choose_auto_loss(in_unit_range: bool) -> tuple[str, str]:
    """The loss `auto` picks, and the reason, from the data's value range."""
    if in_unit_range:
        return "bce", "data lie in [0, 1], so each value is treated as a probability: bce on logits"
    return "mse", "data are not in [0, 1] (standardized table), so bce does not apply: mse"


def build_loss(spec: str, *, in_unit_range: bool, sparse_l1: float = 0.0,
               sparse_kl: str | None = None) -> ReconstructionLoss:
    """Parse a loss spec ("mse", "mse+0.2*ssim", "auto") for data with the given value range.

    `sparse_kl` is the "RHO:W" text of --sparse-kl (None = off).
    """
    if sparse_l1 < 0:
        raise AeoptError(f"--sparse-l1 must be >= 0, got {sparse_l1}")
    if spec == "auto":
        spec = choose_auto_loss(in_unit_range)[0]
    terms = []
    for raw in spec.split("+"):
        match = _TERM.match(raw)
        if not match:
            raise AeoptError(f"cannot read loss term {raw!r} in {spec!r}; write e.g. mse+0.2*ssim")
        weight, name = float(match.group(1) or 1.0), match.group(2)
        if name not in LOSSES:
            raise AeoptError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}, mixes like mse+0.2*ssim, or auto")
        if name == "bce" and not in_unit_range:
            raise AeoptError("the bce loss needs data in [0, 1] but this data is standardized; use --loss mse")
        terms.append((weight, name))
    return ReconstructionLoss(terms, sparse_l1, parse_sparse_kl(sparse_kl) if sparse_kl else None)


def l1_weight_penalty(model: torch.nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices/kernels (not biases or norm scales): drives weights to zero."""
    return sum(p.abs().sum() for p in model.parameters() if p.dim() > 1)
