"""Gradient health: per-layer gradient norms, sampled at logging intervals, with warnings.

A layer's gradient is judged against its own weights (||grad|| / ||weight||), so the thresholds
mean the same for a 64-weight bias-free conv and a 400k-weight dense layer: a ratio above
EXPLODE_RATIO (or a NaN/Inf gradient) means one step can rewrite the layer; below COLLAPSE_RATIO
the layer has stopped learning. Each layer warns once per kind per run, with the usual fixes.
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
        self.sums: dict[str, float] = {}
        self.count = 0
        self.warned: set[tuple[str, str]] = set()

    def sample(self) -> None:
        layers = [(name, p) for name, p in self.layers.items() if p.grad is not None]
        if not layers:
            return
        norms = torch.stack([torch.stack([p.grad.detach().float().norm(), p.detach().float().norm()])
                             for _, p in layers]).tolist()
        total = math.sqrt(sum(g * g for g, _ in norms))
        self.sums["grad_norm"] = self.sums.get("grad_norm", 0.0) + total
        for (name, _), (grad, weight) in zip(layers, norms):
            self.sums[f"grad/{name}"] = self.sums.get(f"grad/{name}", 0.0) + grad
            self._judge(name, grad, weight)
        self.count += 1

    def _judge(self, name: str, grad: float, weight: float) -> None:
        ratio = grad / weight if weight > 0 else (math.inf if grad > 0 else 0.0)
        if not math.isfinite(grad) or ratio > EXPLODE_RATIO:
            self._warn(name, "exploding", f"gradient norm {grad:.3g} is {ratio:.3g}x its weights' norm "
                                          f"{weight:.3g}; {EXPLODE_FIX}")
        elif ratio < COLLAPSE_RATIO:
            self._warn(name, "vanishing", f"gradient norm {grad:.3g} is {ratio:.3g}x its weights' norm "
                                          f"{weight:.3g}; {COLLAPSE_FIX}")

    def _warn(self, name: str, kind: str, detail: str) -> None:
        if (name, kind) not in self.warned:
            self.warned.add((name, kind))
            self.log(f"warning: {kind} gradient in layer {name}: {detail}")

    def epoch_summary(self) -> dict[str, float]:
        """Mean sampled norms since the last summary (columns grad_norm, grad/<layer>), then reset."""
        summary = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return summary
