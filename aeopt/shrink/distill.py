"""Distillation: train a smaller student (any registry model) to match a trained teacher.

The student trains with the one loop; its objective's target is a mix of the teacher's
reconstruction and the data (`alpha` of the teacher). The teacher's
reconstructions are smoother targets than the raw pixels (its errors are ones a small model can
copy). Optionally (`latent_weight` > 0, codes of the same size) the student's code is pulled
towards the teacher's, in units of the teacher codes' variance.
Rules (figures: benchmarks/results/design_notes.md, shrink.md): alpha 0.7 by default, where the
student gained most; latent matching off by default, since it hurt: a small student cannot
reproduce the teacher's code and also reconstruct well. A weak teacher buys nothing.
Validation (and so the choice of the best epoch) still measures the error against the data.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from ..data import Dataset
from ..errors import AeoptError
from ..settings import MODEL_KNOBS, Settings
from ..train import train


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


def student_config(teacher_config: Settings, spec: str, *, epochs: int | None = None) -> Settings:
    """The teacher's training settings with the student's model and knobs."""
    name, knobs = parse_model_spec(spec)
    latent_dim = knobs.pop("latent_dim", teacher_config.latent_dim)
    cleared = {k: None for k in MODEL_KNOBS}
    # init=None: a teacher warm-started from another run (--init) does not hand that run's weights on
    return teacher_config.replace(model=name, latent_dim=latent_dim, **{**cleared, **knobs},
                                  epochs=epochs or teacher_config.epochs, init=None)


def distillation_hook(teacher: nn.Module, *, alpha: float = 0.7, latent_weight: float = 0.0) -> Callable:
    """An `objective_hook` for aeopt.train.train that makes the student learn from `teacher`: its target
    becomes alpha * the teacher's reconstruction + (1 - alpha) * the data, and with `latent_weight` (codes
    of the same size) its code is pulled towards the teacher's, in units of the teacher codes' variance."""
    if not 0.0 <= alpha <= 1.0:
        raise AeoptError(f"distillation alpha must be in [0, 1], got {alpha}")

    def hook(objective) -> None:
        device = next(objective.model.parameters()).device
        teacher.to(device).eval()
        cache: dict[str, torch.Tensor] = {}
        match_codes = latent_weight > 0 and getattr(teacher, "latent_dim", None) == objective.model.latent_dim

        def target(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                out = teacher.to(x.device)(x)
            if match_codes:
                cache["z"] = out["z"]
            return alpha * out["x_hat"].float() + (1 - alpha) * x

        def latent_term(out: dict) -> dict[str, torch.Tensor]:
            teacher_z = cache.pop("z", None)
            if teacher_z is None:
                return {}
            teacher_z = teacher_z.float()
            return {"latent": latent_weight * F.mse_loss(out["z"].float(), teacher_z) / teacher_z.var().clamp_min(1e-8)}

        objective.target_fn = target
        objective.graph_reason = "distillation runs the teacher on every batch"
        if match_codes:
            objective.extra_terms.append(latent_term)

    return hook


def train_student(teacher_config: Settings, spec: str, *, dataset: Dataset | None = None,
                  epochs: int | None = None, objective_hook: Callable | None = None, out: Path | None = None,
                  log: Callable[[str], None] = print) -> tuple[nn.Module, Settings]:
    """Train the student `spec` with the teacher's settings; returns the student and its config.

    Without `objective_hook` this is the student trained alone (from scratch, on the data only): the
    baseline that shows what distillation adds. `distill` passes a `distillation_hook`.

    Args:
        teacher_config: the teacher's config (the student keeps its data, seed, loss and optimizer).
        spec: the student's model spec (see `parse_model_spec`).
        dataset: the training data (default: loaded from the config).
        epochs: student training epochs (default: the teacher's).
        objective_hook: configures the student's objective, e.g. `distillation_hook(teacher)`.
        out: run directory for the student (default: a temporary folder).
    """
    config = student_config(teacher_config, spec, epochs=epochs)
    with tempfile.TemporaryDirectory(prefix="aeopt-student-") as tmp:
        config = config.replace(out=str(out or Path(tmp) / "student"))
        result = train(config, dataset=dataset, objective_hook=objective_hook, overwrite=True, progress=False,
                       log=log)
    return result.model.cpu().eval(), config


def distill(teacher: nn.Module, teacher_config: Settings, dataset: Dataset, spec: str, *,
            epochs: int | None = None, alpha: float = 0.7, latent_weight: float = 0.0, out: Path | None = None,
            log: Callable[[str], None] = print) -> tuple[nn.Module, Settings]:
    """Train the student `spec` (e.g. "conv:width=8") from `teacher`; returns the student and its config.

    Args:
        teacher: the trained model to imitate.
        teacher_config: its config (the student keeps its data, loss and optimizer settings).
        dataset: the training data.
        spec: the student's model spec (see `parse_model_spec`).
        epochs: student training epochs (default: the teacher's).
        alpha, latent_weight: see `distillation_hook`.
        out: run directory for the student (default: a temporary folder).
    """
    hook = distillation_hook(teacher, alpha=alpha, latent_weight=latent_weight)
    return train_student(teacher_config, spec, dataset=dataset, epochs=epochs, objective_hook=hook, out=out, log=log)
