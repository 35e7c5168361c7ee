"""The objective protocol: everything a model family hands the one training loop, in plain sight.

The loop (aeopt.train.loop) knows nothing of VAEs, adversaries or entropy models. Each step it asks
the run's `Objective` for the model input (`prepare`), the loss and its named parts (`compute`), and
runs the objective's extra optimizers (`extra_steps`) after the main update; `after_step` updates
per-step state such as a warm-up ramp. `graph_reason` says why the step may not be captured as a
CUDA graph (None: it may). A model picks its objective with `Autoencoder.objective(...)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

Forward = Callable[[torch.Tensor], dict]  # the model's forward in the run's precision


@dataclass
class ExtraStep:
    """A second optimizer run after each main step (an AAE's discriminator, a codec's auxiliary loss).

    `step(outputs, x)` computes its own loss, back-propagates, steps its optimizer and returns the
    parts to log. Its optimizer state is checkpointed with the run, so resume stays exact."""

    optimizer: torch.optim.Optimizer
    step: Callable[[dict, torch.Tensor], dict[str, torch.Tensor]]


class Objective:
    """The default hooks; subclasses override what their family needs."""

    graph_reason: str | None = None
    spec: str = "loss"  # what metrics.json names the loss

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The model input made from the clean batch (noise for a denoising AE)."""
        return x

    def compute(self, forward: Forward, x_in: torch.Tensor, x: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(parts, outputs): parts["loss"] is back-propagated; other keys are logged per epoch."""
        raise NotImplementedError

    def validate(self, forward: Forward, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The validation figures on a clean batch; "loss" decides the best epoch and early stopping."""
        return self.compute(forward, x, x)[0]

    def main_parameters(self, model: torch.nn.Module) -> Iterable[torch.nn.Parameter]:
        """What the main optimizer updates (a codec keeps its density's quantiles for the aux optimizer)."""
        return model.parameters()

    def extra_steps(self, model: torch.nn.Module) -> dict[str, ExtraStep]:
        return {}

    def after_step(self, step: int) -> None:
        """Called after main step `step` (0-based) with everything updated: per-step state lives here."""
