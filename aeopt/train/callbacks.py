"""Callbacks: typed events of the training loop, instead of attributes patched onto it.

A callback overrides any of the three events; each gets the `Loop` (its settings, model, epoch,
step, history...) and may set `loop.stop = True` to end training after the current step with the
best weights kept. The CUDA-graph step and the eager step hand `on_step_end` the same arguments:
the batch and the step's detached loss parts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from .loop import Loop


class Callback:
    def on_fit_start(self, loop: "Loop") -> None:
        """Before the first step (after a resume has loaded its checkpoint)."""

    def on_step_end(self, loop: "Loop", batch: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        """After each optimizer step (and the objective's extra steps); `loop.step` not yet advanced."""

    def on_epoch_end(self, loop: "Loop", row: dict[str, float]) -> None:
        """After each epoch's validation, with its history row, before "best" and the checkpoint."""


class OnEpochEnd(Callback):
    """A plain function as an epoch-end callback: `OnEpochEnd(lambda loop, row: ...)`."""

    def __init__(self, function: Callable[["Loop", dict], None]):
        self.function = function

    def on_epoch_end(self, loop: "Loop", row: dict[str, float]) -> None:
        self.function(loop, row)


class OnStepEnd(Callback):
    """A plain function as a step-end callback: `OnStepEnd(lambda loop, batch, parts: ...)`."""

    def __init__(self, function: Callable[["Loop", torch.Tensor, dict], None]):
        self.function = function

    def on_step_end(self, loop: "Loop", batch: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        self.function(loop, batch, parts)


class StopAt(Callback):
    """End training after the step that crosses `deadline` (a time.time() value); best weights kept."""

    def __init__(self, deadline: float, clock: Callable[[], float] | None = None):
        import time

        self.deadline, self.clock = deadline, clock or time.time

    def on_step_end(self, loop: "Loop", batch: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        if self.clock() > self.deadline:
            loop.stop = True
