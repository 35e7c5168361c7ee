"""The Pareto front: which trials no other trial beats on every objective, retrained in full.

The search ranks configurations after short training on a subset; chosen members are then
retrained on the full training set (retrain.py), and the front is recomputed from their final
validation numbers (a member that longer training left dominated is reported, not hidden).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable

import optuna

from ..runs import atomic_write_text
from .objectives import COST_KEYS, Objectives


def non_dominated(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the points that no other point beats or equals in every coordinate (minimized)."""
    keep = []
    for i, p in enumerate(points):
        dominated = any(all(q_k <= p_k for q_k, p_k in zip(q, p)) and any(q_k < p_k for q_k, p_k in zip(q, p))
                        for j, q in enumerate(points) if j != i)
        if not dominated and p not in [points[k] for k in keep]:  # equal points: keep the first
            keep.append(i)
    return keep


def search_front(study: optuna.Study, keep: Callable[[optuna.trial.FrozenTrial], bool] | None = None
                 ) -> list[optuna.trial.FrozenTrial]:
    """The complete trials on the search's front (of those `keep` accepts), sorted by the first cost."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "settings" in t.user_attrs and (keep is None or keep(t))]
    return sorted((complete[i] for i in non_dominated([tuple(t.values) for t in complete])),
                  key=lambda t: t.values[1])


def final_front(members: list[dict[str, Any]], objectives: Objectives) -> tuple[list[dict], list[dict]]:
    """(front, dropped): the retrained members that stay non-dominated on the final numbers."""
    points = [member_point(m, objectives) for m in members]
    keep = set(non_dominated(points))
    front = sorted((m for i, m in enumerate(members) if i in keep), key=lambda m: member_point(m, objectives)[1])
    return front, [m for i, m in enumerate(members) if i not in keep]


def member_point(member: dict[str, Any], objectives: Objectives) -> tuple[float, ...]:
    return (member[objectives.error], *(member[COST_KEYS[c]] for c in objectives.costs))


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
