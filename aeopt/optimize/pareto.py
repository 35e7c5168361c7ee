"""The Pareto front: which trials no other trial beats on every objective, retrained in full.

The search ranks configurations after short training on a subset; the front's members are then
retrained on the full training set for longer, and the front is recomputed from their final
validation numbers (a member that longer training left dominated is reported, not hidden).
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import optuna

from ..data import Dataset
from ..evaluate import reconstruct
from ..runs import atomic_write_text, load
from .objectives import COST_KEYS, Objectives, reconstruction_error
from .trial import TrialPlan, trial_config


def non_dominated(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the points that no other point beats or equals in every coordinate (minimized)."""
    keep = []
    for i, p in enumerate(points):
        dominated = any(all(q_k <= p_k for q_k, p_k in zip(q, p)) and any(q_k < p_k for q_k, p_k in zip(q, p))
                        for j, q in enumerate(points) if j != i)
        if not dominated and p not in [points[k] for k in keep]:  # equal points: keep the first
            keep.append(i)
    return keep


def search_front(study: optuna.Study, max_members: int) -> list[optuna.trial.FrozenTrial]:
    """The complete trials on the search's front, at most `max_members` spread along the first cost."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "settings" in t.user_attrs]
    front = sorted((complete[i] for i in non_dominated([tuple(t.values) for t in complete])),
                   key=lambda t: t.values[1])
    if len(front) <= max_members:
        return front
    picks = sorted({round(i * (len(front) - 1) / (max_members - 1)) for i in range(max_members)})
    return [front[i] for i in picks]


def retrain_member(trial: optuna.trial.FrozenTrial, plan: TrialPlan, dataset: Dataset, epochs: int,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Train a front configuration on the full training set (or reuse a finished retrain) and measure it."""
    from ..train import train

    run_dir = plan.out / "front" / f"{trial.number:04d}"
    config = trial_config(plan, trial.user_attrs["settings"], run_dir, epochs)
    config.patience = max(5, epochs // 4)
    started = time.perf_counter()
    done = run_dir / "metrics.json"
    if done.is_file() and load(run_dir).config.epochs == epochs:
        model, metrics = load(run_dir).model, json.loads(done.read_text())
        how = "kept from an earlier run"
    else:
        result = train(config, dataset=dataset, overwrite=True, progress=False, log=lambda message: None,
                       device=plan.device)
        model, metrics = result.model, result.metrics
        how = f"{metrics['epochs']} epochs in {time.perf_counter() - started:.0f} s"
    device = next(model.parameters()).device
    x_hat = reconstruct(model, dataset.x_val, device=device)
    member = {
        "trial": trial.number,
        "mse": reconstruction_error("mse", x_hat, dataset.x_val),
        "test_mse": metrics["test"]["mse"], "test_psnr": metrics["test"]["psnr"],
        "params": int(trial.user_attrs["params"]),
        "train_flops_per_sample": int(trial.user_attrs["train_flops_per_sample"]),
        "run": str(run_dir.relative_to(plan.out)),
        "epochs": metrics["epochs"], "train_seconds": metrics["train_seconds"],
        "search_values": dict(zip(plan.objectives.names, trial.values)),
        "settings": trial.user_attrs["settings"],
    }
    if plan.objectives.error != "mse":
        member[plan.objectives.error] = reconstruction_error(plan.objectives.error, x_hat, dataset.x_val)
    if "latency_us" in trial.user_attrs:
        member["latency_us"] = trial.user_attrs["latency_us"]
    log(f"front: trial {trial.number} retrained ({how}): val mse {member['mse']:.5f}, "
        f"test mse {member['test_mse']:.5f} ({member['test_psnr']:.2f} dB), {member['params']:,} params")
    return member


def final_front(members: list[dict[str, Any]], objectives: Objectives) -> tuple[list[dict], list[dict]]:
    """(front, dropped): the retrained members that stay non-dominated on the final numbers."""
    points = [member_point(m, objectives) for m in members]
    keep = set(non_dominated(points))
    front = sorted((m for i, m in enumerate(members) if i in keep), key=lambda m: member_point(m, objectives)[1])
    return front, [m for i, m in enumerate(members) if i not in keep]


def member_point(member: dict[str, Any], objectives: Objectives) -> tuple[float, ...]:
    return (member[objectives.error], *(member[COST_KEYS[c]] for c in objectives.costs))


def retrain_epochs(front: list[optuna.trial.FrozenTrial], n_train: int, seconds: float | None,
                   search_epochs: int) -> int:
    """Epochs for the full retrain: what fits in `seconds` at each member's measured speed, else 3x the search's."""
    if seconds is None:
        return 3 * search_epochs
    per_epoch = sum(n_train / max(t.user_attrs.get("samples_per_second", 1.0), 1.0) for t in front)
    return int(min(100, max(1, math.floor(seconds / max(per_epoch, 1e-9)))))


def trial_rows(study: optuna.Study, objectives: Objectives) -> list[dict[str, Any]]:
    """One row per trial (every state) for trials.csv."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower()}
        for name, value in zip(objectives.names, t.values or [None] * len(objectives.names)):
            row[f"value_{name}"] = value
        for key in ("params", "train_flops_per_sample", "latency_us", "val_error", "test_mse", "epochs",
                    "train_seconds", "stopped", "run"):
            row[key] = attrs.get(key)
        row.update({k: v for k, v in attrs.items() if k.startswith("rung_")})
        row.update(attrs.get("settings", {}))
        row["seconds"] = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: "" if row.get(k) is None else row.get(k) for k in columns} for row in rows)
    atomic_write_text(path, buffer.getvalue())
