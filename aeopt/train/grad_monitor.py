"""Gradient health: per-layer gradient norms, sampled at logging intervals, with warnings.

A layer's gradient is judged against its own weights (||grad|| / ||weight||), so the thresholds
mean the same for a 64-weight bias-free conv and a 400k-weight dense layer: a ratio above
EXPLODE_RATIO (or a NaN/Inf gradient) means one step can rewrite the layer; below COLLAPSE_RATIO
the layer has stopped learning. Each kind of trouble is reported once per run, naming the layers,
with the usual fixes. A layer whose weights are all zero when the monitor starts (a residual branch's
or a context net's last conv, zero so the branch starts as a no-op) has no scale of its own to judge a
gradient against: for it only a NaN/Inf gradient is reported (its ratio would read "exploding" on
every healthy first step).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

EXPLODE_RATIO = 100.0
COLLAPSE_RATIO = 1e-7

EXPLODE_FIX = ("clip it (--clip-grad 1.0), lower --lr (find one with `aeopt lr-find`), "
               "or add normalization (--norm batch)")
COLLAPSE_FIX = ("raise --lr, add normalization (--norm batch), or use a non-saturating activation "
                "(--activation leaky_relu)")


class GradMonitor:
    """Samples the gradient norm of every weight tensor (dim > 1: the layers) after backward.

    `sample()` costs one host sync (a single `.tolist()`), so the trainer calls it only at its
    logging intervals. `epoch_summary()` returns the epoch's mean norms for history.csv.
    """

    def __init__(self, model: torch.nn.Module, log: Callable[[str], None]):
        self.log = log
        self.layers = {name.removesuffix(".weight"): p for name, p in model.named_parameters()
                       if p.requires_grad and p.dim() > 1}
        self.started_at_zero = {name for name, p in self.layers.items() if not p.detach().any()}
        self.sums: dict[str, float] = {}
        self.count = 0
        self.warned: set[str] = set()

    def sample(self) -> None:
        layers = [(name, p) for name, p in self.layers.items() if p.grad is not None]
        if not layers:
            return
        norms = torch.stack([torch.stack([p.grad.detach().float().norm(), p.detach().float().norm()])
                             for _, p in layers]).tolist()
        total = math.sqrt(sum(g * g for g, _ in norms))
        self.sums["grad_norm"] = self.sums.get("grad_norm", 0.0) + total
        exploding, vanishing = [], []
        for (name, _), (grad, weight) in zip(layers, norms):
            self.sums[f"grad/{name}"] = self.sums.get(f"grad/{name}", 0.0) + grad
            ratio = grad / weight if weight > 0 else (math.inf if grad > 0 else 0.0)
            if not math.isfinite(grad) or not math.isfinite(weight):
                exploding.append(f"{name} (gradient norm {grad})")
            elif name in self.started_at_zero:
                continue
            elif ratio > EXPLODE_RATIO:
                exploding.append(f"{name} ({ratio:.3g}x)")
            elif ratio < COLLAPSE_RATIO:
                vanishing.append(f"{name} ({ratio:.3g}x)")
        self._warn("exploding", exploding, f"above {EXPLODE_RATIO:g}x or not finite", EXPLODE_FIX)
        self._warn("vanishing", vanishing, f"below {COLLAPSE_RATIO:g}x", COLLAPSE_FIX)
        self.count += 1

    def _warn(self, kind: str, layers: list[str], rule: str, fix: str) -> None:
        """One line per kind, the first time it happens (a run of warnings would bury the advice)."""
        if layers and kind not in self.warned:
            self.warned.add(kind)
            self.log(f"warning: {kind} gradients (norm vs the layer's weight norm {rule}) in "
                     f"{', '.join(layers)}; {fix}")

    def epoch_summary(self) -> dict[str, float]:
        """Mean sampled norms since the last summary (columns grad_norm, grad/<layer>), then reset."""
        summary = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return summary
