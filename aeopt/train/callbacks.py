"""Callbacks: typed events of the training loop, instead of attributes patched onto it.

A callback overrides any of the three events; each gets the `Loop` (its settings, model, epoch,
step, history...) and may set `loop.stop = True` to end training after the current step with the
best weights kept. The CUDA-graph step and the eager step hand `on_step_end` the same arguments:
the batch and the step's detached loss parts.
"""
from __future__ import annotations

import math
import time
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
    """End training after the step that crosses `deadline` (a time.time() value); best weights kept.
    `budget` (seconds) sets the deadline when training starts instead: a budget for the loop, not for
    the set-up before it (which can take longer than a short budget)."""

    def __init__(self, deadline: float = math.inf, clock: Callable[[], float] | None = None, *,
                 budget: float | None = None):
        self.deadline, self.clock, self.budget = deadline, clock or time.time, budget

    def on_fit_start(self, loop: "Loop") -> None:
        if self.budget is not None:
            self.deadline = self.clock() + self.budget

    def on_step_end(self, loop: "Loop", batch: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        if self.clock() > self.deadline:
            loop.stop = True


class DeadlinePlan(StopAt):
    """Fit a time-capped run's epochs, and its LR schedule's length with them, to its deadline.

    A schedule laid over a fixed number of epochs and cut by a deadline never finishes its decay when
    the run is slower than planned: the photo codec runs stopped at 99 of 130 epochs with the cosine's
    rate still 3x its floor (benchmarks/results/codec.md). So after each epoch from the second of this
    session on (the first pays start-up), the run's epochs become those that fit before `deadline` at
    the speed of the epoch just ended (training, validation, checkpoint), `safety` of the time left,
    at most `most_epochs` and never fewer than are done. The last epoch's speed, not the mean: a
    machine that got busy mid-run is what cut the photo runs. `once=True` re-plans after the second
    epoch only (optimize's retraining, whose members are short). It is a StopAt too: the run also
    ends after the step that crosses the deadline.
    """

    def __init__(self, deadline: float, most_epochs: int, *, once: bool = False, safety: float = 0.98,
                 clock: Callable[[], float] | None = None, budget: float | None = None):
        super().__init__(deadline, clock, budget=budget)
        self.most_epochs, self.once, self.safety = most_epochs, once, safety
        self.last_end: float | None = None
        self.epochs_seen = 0

    def on_epoch_end(self, loop: "Loop", row: dict[str, float]) -> None:
        now, previous = self.clock(), self.last_end
        self.last_end, self.epochs_seen = now, self.epochs_seen + 1
        if previous is None or (self.once and self.epochs_seen != 2):
            return
        done = int(row["epoch"])
        fit = done + math.floor((self.deadline - now) * self.safety / max(now - previous, 1e-3))
        loop.epochs = max(done, min(self.most_epochs, fit))
        loop.schedule.total_steps = loop.epochs * loop.steps_per_epoch
