"""Robust training on contaminated data: each batch's highest-loss samples do not train the model.

In the unsupervised setting the training data hold the anomalies we want to find. A plain
autoencoder learns to reconstruct them too, which shrinks exactly the errors that should stand
out. Trimming the worst `trim` fraction of each batch (a trimmed mean, as in least-trimmed-squares
regression) keeps them out of the gradient while the normal data, the large majority, train as
usual. Whether it helps is measured in benchmarks/results/detect.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import AeoptError
from ..metrics import ssim_per_sample
from ..models.objective import Objective


def _per_sample(name: str, out: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    x_hat = out["x_hat"].float()
    if name == "mse":
        e = (x_hat - x).square()
    elif name == "l1":
        e = (x_hat - x).abs()
    elif name == "huber":
        e = F.huber_loss(x_hat, x, delta=0.1, reduction="none")
    elif name == "bce":
        e = F.binary_cross_entropy_with_logits(out["logits"].float(), x, reduction="none")
    elif name == "ssim":
        return 1.0 - ssim_per_sample(x_hat, x)
    else:
        raise AeoptError(f"robust training cannot trim loss {name!r}; use mse, l1, huber, bce or ssim")
    return e.flatten(1).mean(1)


@dataclass
class TrimmedLoss:
    """The run's loss with its reconstruction part averaged over the lowest (1 - trim) of each batch.

    Regularizers (sparse codes and the like) stay as the base loss computes them.
    """

    base: Any
    trim: float

    @property
    def spec(self) -> str:
        return f"{self.base.spec} (trimmed {self.trim:g})"

    def __call__(self, out: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.base(out, x)
        x = x.float()
        per_sample = sum(w * _per_sample(name, out, x) for w, name in self.base.terms)
        keep = max(1, int(round(len(per_sample) * (1 - self.trim))))
        trimmed = per_sample.topk(keep, largest=False).values.mean()
        plain = sum(w * parts[name] for w, name in self.base.terms)
        parts["loss"] = parts["loss"] - plain + trimmed
        return parts


def trimmed_objective(objective: Objective, trim: float) -> Objective:
    """The objective with its reconstruction loss trimmed (training and validation alike: a validation
    split of contaminated data holds anomalies too, and they must not pick the best epoch).

    Works on every objective built on the reconstruction objective (conv, mlp, vae, vq, aae), which
    keep their loss in `loss_fn`; the model's own penalties (a VAE's KL) are left as they are.
    """
    if not hasattr(objective, "loss_fn"):
        raise AeoptError(f"robust training trims a reconstruction loss; {type(objective).__name__} has none: "
                         "pass robust=0")
    objective.loss_fn = TrimmedLoss(objective.loss_fn, trim)
    objective.spec = objective.loss_fn.spec
    objective.graph_reason = objective.graph_reason or "the trimmed loss sorts each batch's losses"
    return objective


def check_trim(trim) -> float:
    if isinstance(trim, bool) or not isinstance(trim, (int, float)) or not 0 <= trim < 0.5:
        raise AeoptError(f"robust must be the share of each batch left out of training, in [0, 0.5), got "
                         f"{trim!r}: pass e.g. 0.1, or 0 to train on every sample")
    return float(trim)
