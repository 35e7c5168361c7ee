"""Optimizers and learning-rate schedules, each chosen by name.

Schedules are pure functions of the step (plus a small plateau state), so resuming a run
needs nothing but the step count and a few numbers: no pickled scheduler objects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import AeoptError
from ..settings import OPTIMIZERS, SCHEDULES



def param_groups(params, weight_decay: float) -> list[dict]:
    """Decay only weight matrices and kernels: decaying biases and norm scales hurts and buys nothing."""
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    decay = [p for p in params if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in params if p.requires_grad and p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, model, *, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, nesterov: bool = False, fused: bool = False) -> torch.optim.Optimizer:
    """An optimizer by name over a module's (or a list of) parameters; weight decay is decoupled for
    adamw, L2 for the others (their definition).

    `fused` (Adam/AdamW only) runs the whole update in one kernel: faster on GPUs, slower on CPUs.
    """
    if name not in OPTIMIZERS:
        raise AeoptError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    if not lr > 0 or not math.isfinite(lr):
        raise AeoptError(f"learning rate must be a positive number, got {lr}; try --lr 1e-3")
    if weight_decay < 0:
        raise AeoptError(f"weight decay must be >= 0, got {weight_decay}; try --weight-decay 1e-4")
    groups = param_groups(model, weight_decay)
    # foreach: one kernel per op over the whole parameter list instead of a Python loop per tensor.
    adam_kernel = {"fused": True} if fused else {"foreach": True}
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **adam_kernel)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **adam_kernel)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum if nesterov else 0.0, foreach=True)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, foreach=True)


@dataclass
class Schedule:
    """Learning-rate multiplier over training: `factor(step)` times the base rate.

    cosine: linear warm-up over the first `warmup` fraction, then cosine decay to 1% of the rate.
    onecycle: warm-up from 1/25 of the rate over 30% of the steps, then cosine down to 1/2500
      (Smith's one-cycle policy, as in torch.optim.lr_scheduler.OneCycleLR's defaults).
    plateau: constant, halved whenever validation loss has not improved for `patience` epochs.
    """

    name: str
    total_steps: int
    warmup: float = 0.05
    patience: int = 2
    plateau_scale: float = 1.0
    plateau_best: float = math.inf
    plateau_bad_epochs: int = 0

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise AeoptError(f"unknown schedule {self.name!r}; known: {', '.join(SCHEDULES)}")

    def factor(self, step: int) -> float:
        t = min(step / max(1, self.total_steps), 1.0)
        if self.name == "cosine":
            if t < self.warmup:
                return (step + 1) / max(1.0, self.warmup * self.total_steps)
            progress = (t - self.warmup) / max(1e-9, 1 - self.warmup)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
        if self.name == "onecycle":
            start, end, peak_at = 1 / 25, 1 / 2500, 0.3
            if t < peak_at:
                return start + (1 - start) * t / peak_at
            return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * (t - peak_at) / (1 - peak_at)))
        if self.name == "plateau":
            return self.plateau_scale
        return 1.0

    def end_of_epoch(self, val_loss: float) -> None:
        """Plateau bookkeeping; the other schedules depend on the step alone."""
        if self.name != "plateau":
            return
        if val_loss < self.plateau_best * (1 - 1e-4):
            self.plateau_best, self.plateau_bad_epochs = val_loss, 0
        else:
            self.plateau_bad_epochs += 1
            if self.plateau_bad_epochs > self.patience:
                self.plateau_scale *= 0.5
                self.plateau_bad_epochs = 0

    def state(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_bad_epochs": self.plateau_bad_epochs}

    def load_state(self, state: dict) -> None:
        self.plateau_scale = state["plateau_scale"]
        self.plateau_best = state["plateau_best"]
        self.plateau_bad_epochs = state["plateau_bad_epochs"]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)  # a CUDA graph reads the rate from this tensor's memory (cuda_graph.py)
        else:
            group["lr"] = lr


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state (moments) its parameter's memory layout. A checkpoint stores tensors
    contiguous; a channels_last model's kernels are not, and fused Adam on CUDA refuses mismatched strides."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def plain_lr(state: dict) -> dict:
    """An optimizer state_dict with tensor learning rates (CUDA-graph runs) as numbers, so that a
    checkpoint resumes anywhere; state_dict() copies its param_groups, so the optimizer is untouched."""
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    return state
