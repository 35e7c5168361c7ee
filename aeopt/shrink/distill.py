"""Distillation: train a smaller student (any registry model) to match a trained teacher.

The student trains with the normal trainer; a `setup` hook makes its reconstruction target a mix
of the teacher's reconstruction and the data (`alpha` of the teacher). The teacher's
reconstructions are smoother targets than the raw pixels (its errors are ones a small model can
copy). Optionally (`latent_weight` > 0, codes of the same size) the student's code is pulled
towards the teacher's, in units of the teacher codes' variance.
Measured on digits (teacher conv width 8, 30 epochs, 17.3 dB; student conv width 4, 10 epochs,
seed 0): alone 12.99 dB; alpha 0.7 13.30 dB, alpha 1.0 13.24 dB; adding latent matching HURT
(weight 0.03: 11.96 dB, 0.1: 11.69 dB, 1.0 unnormalized: 11.40 dB): a small student cannot
reproduce the teacher's code and also reconstruct well, so it is off by default. With a weaker
teacher (20 epochs, 16.2 dB) and 8 student epochs the gain vanished (12.06 vs 12.08 dB).
Validation (and so the choice of the best epoch) still measures the error against the data.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from ..config import MODEL_KNOBS, TrainConfig
from ..data import Dataset
from ..errors import AeoptError


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """"conv:width=8,depth=1" -> ("conv", {"width": 8, "depth": 1}).

    A piece without "=" continues the previous value, so "mlp:hidden=64,32,activation=gelu" gives
    hidden "64,32". `latent_dim=N` is accepted too (the default keeps the teacher's code size).
    """
    name, _, rest = spec.partition(":")
    if not name:
        raise AeoptError(f"empty model spec {spec!r}; write e.g. conv:width=8 (see `aeopt models`)")
    knobs: dict[str, Any] = {}
    last = None
    for piece in filter(None, (p.strip() for p in rest.split(","))):
        if "=" in piece:
            last, _, value = piece.partition("=")
            last = last.strip().replace("-", "_")
            knobs[last] = value.strip()
        elif last is not None:
            knobs[last] = f"{knobs[last]},{piece}"
        else:
            raise AeoptError(f"cannot read {piece!r} in model spec {spec!r}; write knob=value pairs, e.g. conv:width=8")
    for key, value in knobs.items():
        if key not in (*MODEL_KNOBS, "latent_dim"):
            raise AeoptError(f"unknown setting {key!r} in model spec {spec!r}; known: latent_dim, {', '.join(MODEL_KNOBS)}")
        if "," not in value:
            knobs[key] = yaml.safe_load(value)   # "8" -> 8, "0.1" -> 0.1, "relu" stays a string
    return name, knobs


def student_config(teacher_config: TrainConfig, spec: str, *, epochs: int | None = None) -> TrainConfig:
    """The teacher's training settings with the student's model and knobs (and no pruning record)."""
    name, knobs = parse_model_spec(spec)
    latent_dim = knobs.pop("latent_dim", teacher_config.latent_dim)
    cleared = {k: None for k in MODEL_KNOBS}
    extra = {k: v for k, v in teacher_config.extra.items() if k not in ("channels", "format", "onnx")}
    return dataclasses.replace(teacher_config, model=name, latent_dim=latent_dim, **{**cleared, **knobs},
                               extra=extra, epochs=epochs or teacher_config.epochs)


class _DistillLoss:
    """The trainer's loss plus the latent-matching term (only on training steps, where z is cached)."""

    def __init__(self, base: Callable, cache: dict[str, torch.Tensor], weight: float):
        self.base, self.cache, self.weight = base, cache, weight
        self.spec = base.spec

    def __call__(self, out: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.base(out, target)
        teacher_z = self.cache.pop("z", None)
        if teacher_z is None:
            return parts
        # relative to the spread of the teacher's codes, so the weight means the same for any code scale
        teacher_z = teacher_z.float()
        latent = F.mse_loss(out["z"].float(), teacher_z) / teacher_z.var().clamp_min(1e-8)
        return {**parts, "latent": latent, "loss": parts["loss"] + self.weight * latent}


def distillation_setup(teacher: nn.Module, *, alpha: float = 0.7, latent_weight: float = 0.0) -> Callable:
    """A `setup(trainer)` for aeopt.train.train that makes the student learn from `teacher`."""
    if not 0.0 <= alpha <= 1.0:
        raise AeoptError(f"distillation alpha must be in [0, 1], got {alpha}")

    def setup(trainer) -> None:
        teacher.to(trainer.device).eval()
        cache: dict[str, torch.Tensor] = {}
        match_codes = latent_weight > 0 and getattr(teacher, "latent_dim", None) == trainer.model.latent_dim

        def target(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                out = teacher(x)
            if match_codes:
                cache["z"] = out["z"]
            return alpha * out["x_hat"].float() + (1 - alpha) * x

        trainer.target = target
        if match_codes:
            trainer.loss_fn = _DistillLoss(trainer.loss_fn, cache, latent_weight)

    return setup


def train_student(teacher_config: TrainConfig, spec: str, *, dataset: Dataset | None = None,
                  epochs: int | None = None, setup: Callable | None = None, out: Path | None = None,
                  log: Callable[[str], None] = print) -> tuple[nn.Module, TrainConfig]:
    """Train the student `spec` with the teacher's settings; returns the student and its config.

    Without `setup` this is the student trained alone (from scratch, on the data only): the
    baseline that shows what distillation adds. `distill` passes a `distillation_setup`.

    Args:
        teacher_config: the teacher's config (the student keeps its data, seed, loss and optimizer).
        spec: the student's model spec (see `parse_model_spec`).
        dataset: the training data (default: loaded from the config).
        epochs: student training epochs (default: the teacher's).
        setup: a `setup(trainer)` hook for aeopt.train.train, e.g. `distillation_setup(teacher)`.
        out: run directory for the student (default: a temporary folder).
    """
    from ..train import train

    config = student_config(teacher_config, spec, epochs=epochs)
    with tempfile.TemporaryDirectory(prefix="aeopt-student-") as tmp:
        config = dataclasses.replace(config, out=str(out or Path(tmp) / "student"))
        result = train(config, dataset=dataset, setup=setup, overwrite=True, progress=False, log=log)
    return result.model.cpu().eval(), config


def distill(teacher: nn.Module, teacher_config: TrainConfig, dataset: Dataset, spec: str, *,
            epochs: int | None = None, alpha: float = 0.7, latent_weight: float = 0.0, out: Path | None = None,
            log: Callable[[str], None] = print) -> tuple[nn.Module, TrainConfig]:
    """Train the student `spec` (e.g. "conv:width=8") from `teacher`; returns the student and its config.

    Args:
        teacher: the trained model to imitate.
        teacher_config: its config (the student keeps its data, loss and optimizer settings).
        dataset: the training data.
        spec: the student's model spec (see `parse_model_spec`).
        epochs: student training epochs (default: the teacher's).
        alpha, latent_weight: see `distillation_setup`.
        out: run directory for the student (default: a temporary folder).
    """
    setup = distillation_setup(teacher, alpha=alpha, latent_weight=latent_weight)
    return train_student(teacher_config, spec, dataset=dataset, epochs=epochs, setup=setup, out=out, log=log)
