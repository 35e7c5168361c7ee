"""The final phase: retrain a few chosen front members on the full training set, within the budget.

The search ranks configurations after short training on a subset. A handful of its front's members are
then retrained on all the training data: the best-error one, the recommended one (cheapest within the
tolerance of the best error), the cheapest, the knee of the front (where more cost stops buying much
less error) and members spread along the cost axis. They run cheapest first, the best-error member last,
each for the same number of epochs except the recommended and the best-error members, which get
LEAD_SHARE and BEST_SHARE times as many (their errors are the figures users quote, and short runs
under-train the larger models): as many as the time left allows at the speeds their search trials measured,
corrected by how fast the member before ran (recomputed before each member, so time a member does not
use goes to the next, and finally to the best-error one). After its second epoch each member re-plans
its epochs from its own measured speed (`DeadlinePlan`), so every schedule completes, and the last one
gets all the time left. The last member is sized with a thinner margin (LAST_SAFETY): nobody after it
could use what it leaves. A member that cannot get one epoch is skipped and reported; a member still
running at its deadline (slower than measured: a busy machine) stops after the current step with its
best weights.
With a budget, only configurations that would get MIN_EPOCHS full-data epochs in half the retraining
time are candidates (`trainable_within`): a larger model would join the front under-trained and push the
cheaper members out of the retraining time (benchmarks/results/optimize.md, notes; design_notes.md).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from ..data import Dataset
from ..deploy.inference import load
from ..evaluate import evaluate_model, reconstruct
from ..runs import write_json
from ..train import DeadlinePlan
from .objectives import reconstruction_error
from .trial import TrialPlan, fit_config, trial_config

SAFETY = 0.85  # epochs are sized for this fraction of a member's share: throughput varies on shared machines
LAST_SAFETY = 0.95  # the last member's margin; its deadline hook still guards the budget if it runs slow
FIRST_OVERHEAD_S = 2.0  # model build and test evaluation of one member (seconds), until one has been measured
VAL_COST = 1 / 3  # an evaluation forward pass costs about a third of a training step per sample
LEAD_SHARE = 2  # with a budget, the recommended member trains this many times the others' epochs,
BEST_SHARE = 3  # and the best-error one this many (the largest model, slowest to converge: in a 15-minute run
# at equal shares the recommended 25-MFLOP conv got 15 epochs, more than it needed, the best 45-MFLOP one 11)
REPLAN_SAFETY = 0.98  # the re-plan measures a whole epoch of the member itself; the deadline hook guards the rest
MIN_EPOCHS = 6  # with a budget, a configuration is retrained only if this many epochs fit in half the time left


@dataclass
class Pick:
    """A front trial chosen for retraining and why."""

    trial: optuna.trial.FrozenTrial
    reasons: list[str]


def choose_members(front: list[optuna.trial.FrozenTrial], tolerance: float, max_members: int) -> list[Pick]:
    """At most `max_members` of `front` (sorted by its first cost), cheapest first: the best-error trial, the
    recommended one, the cheapest, the knee of the front, then others spread evenly between them."""
    if not front:
        return []
    best = min(front, key=lambda t: t.values[0])
    recommended = next(t for t in front if t.values[0] <= best.values[0] * (1 + tolerance))
    chosen: dict[int, list[str]] = {best.number: ["best error"]}
    chosen.setdefault(recommended.number, []).append("recommended")
    extras = [(front[0], "cheapest"), (knee(front, best), "knee of the front")]
    for trial, why in extras:
        if trial is not None and trial.number not in chosen and len(chosen) < max_members:
            chosen[trial.number] = [why]
    rest = [t for t in front if t.number not in chosen]
    spread = min(len(rest), max(0, max_members - len(chosen)))
    for k in range(spread):  # evenly inside the rest, away from the members already chosen at its ends
        chosen[rest[round((k + 1) * (len(rest) + 1) / (spread + 1)) - 1].number] = ["spread along the cost"]
    order = {t.number: i for i, t in enumerate(front)}
    return [Pick(front[order[n]], reasons) for n, reasons in sorted(chosen.items(), key=lambda kv: order[kv[0]])]


def knee(front: list[optuna.trial.FrozenTrial], best: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial | None:
    """The member furthest below the straight line from the cheapest to the best-error member on log-cost vs
    log-error axes: where paying more stops buying much. None if no member lies 1% (in error) below it."""
    (e0, c0), (e1, c1) = front[0].values[:2], best.values[:2]
    if min(e0, c0, e1, c1) <= 0 or c1 <= c0:
        return None
    slope = (math.log(e1) - math.log(e0)) / (math.log(c1) - math.log(c0))
    below = [(math.log(e0) + slope * (math.log(t.values[1]) - math.log(c0)) - math.log(t.values[0]), t)
             for t in front if c0 < t.values[1] < c1 and t.values[0] > 0]
    distance, trial = max(below, key=lambda pair: pair[0], default=(0.0, None))
    return trial if distance >= 0.01 else None


def _is_best(pick: Pick) -> bool:
    return "best error" in pick.reasons


def _share(pick: Pick) -> int:
    if _is_best(pick):
        return BEST_SHARE
    return LEAD_SHARE if "recommended" in pick.reasons else 1


def seconds_per_epoch(trial: optuna.trial.FrozenTrial, n_train: int, n_val: int) -> float:
    """One full-data epoch (training + validation pass) at the speed the trial measured in the search."""
    rate = max(float(trial.user_attrs.get("samples_per_second", 1.0)), 1e-3)
    return (n_train + VAL_COST * n_val) / rate


def trainable_within(seconds: float, dataset: Dataset) -> Callable[[optuna.trial.FrozenTrial], bool]:
    """Whether a search trial's configuration gets MIN_EPOCHS full-data epochs in half of `seconds`, at the
    speed the trial measured (a filter for `search_front`)."""
    n_train, n_val = dataset.n_train, len(dataset.x_val)
    return lambda trial: seconds_per_epoch(trial, n_train, n_val) * MIN_EPOCHS <= seconds / 2


def retrain_front(picks: list[Pick], plan: TrialPlan, dataset: Dataset, *, deadline: float | None,
                  max_epochs: int, log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Retrain the picks in order within `deadline` (None: `max_epochs` each). Returns (members, skipped)."""
    members, skipped = [], []
    overhead = FIRST_OVERHEAD_S
    picks = sorted(picks, key=_is_best)  # stable: cheapest first, best error last
    shares = [_share(p) if deadline is not None else 1 for p in picks]
    per_epoch = [seconds_per_epoch(p.trial, dataset.n_train, len(dataset.x_val)) for p in picks]
    for i, pick in enumerate(picks):
        epochs, member_deadline, last = max_epochs * shares[i], None, i == len(picks) - 1
        if deadline is not None:
            left = (deadline - time.time()) * (LAST_SAFETY if last else SAFETY)
            # The same number of epochs (times its share) for every member still to train, as many as fit:
            unit = sum(e * s for e, s in zip(per_epoch[i:], shares[i:]))
            epochs = min(epochs, math.floor(shares[i] * (left - overhead * (len(picks) - i)) / unit))
            if epochs < 1 and per_epoch[i] <= left - overhead:
                epochs = 1  # it fits on its own; the members after it share what is left
            if epochs < 1:
                reason = f"one epoch needs about {per_epoch[i]:.1f} s, {max(left - overhead, 0):.1f} s were left"
                skipped.append({"trial": pick.trial.number, "reasons": pick.reasons, "why": reason})
                log(f"front: trial {pick.trial.number} not retrained: {reason}")
                continue
            # Stop by this member's time: its epochs at the measured speed, plus a margin, within the budget
            # (the last member's time is all that is left).
            member_deadline = min(deadline, time.time() + epochs * per_epoch[i] / SAFETY + overhead)
            if last:
                member_deadline = deadline
        started = time.time()
        member = retrain_member(pick, plan, dataset, epochs, member_deadline, log,
                                most_epochs=max_epochs * shares[i] if last else epochs)
        members.append(member)
        spent = member["train_seconds"] + member["val_seconds"]
        overhead = max(0.0, time.time() - started - spent)
        if deadline is not None and member["epochs"] and spent > 0:
            # The search measured its speeds on a subset, start-up included, and full-data epochs run at
            # another speed (design_notes.md): scale the members still to train by how far off the
            # prediction was for this one.
            factor = min(2.0, max(0.5, spent / (member["epochs"] * per_epoch[i])))
            per_epoch[i + 1:] = [e * factor for e in per_epoch[i + 1:]]
    return members, skipped


def remove_unfinished_members(front_dir: Path, keep: set[int]) -> None:
    """A member whose retraining was killed (no metrics.json) and that this call does not retrain again is
    removed: the front folder then holds finished runs only (benchmarks/results/chaos.md found two)."""
    if not front_dir.is_dir():
        return
    for run_dir in front_dir.iterdir():
        if run_dir.is_dir() and run_dir.name.isdigit() and int(run_dir.name) not in keep \
                and not (run_dir / "metrics.json").is_file():
            shutil.rmtree(run_dir, ignore_errors=True)


def retrain_member(pick: Pick, plan: TrialPlan, dataset: Dataset, epochs: int, deadline: float | None,
                   log: Callable[[str], None], most_epochs: int | None = None) -> dict[str, Any]:
    """Train one front configuration on the full training set (or reuse a finished retrain) and measure it.
    With a deadline, the epochs are re-planned after the second one (`DeadlinePlan`), up to `most_epochs`."""
    trial = pick.trial
    run_dir = plan.out / "front" / f"{trial.number:04d}"
    config = trial_config(plan, trial.user_attrs["settings"], run_dir, epochs).replace(patience=max(5, epochs // 4))
    started = time.perf_counter()
    done = run_dir / "metrics.json"
    if done.is_file() and load(run_dir).config.epochs == epochs:
        model, metrics = load(run_dir).model, json.loads(done.read_text())
        how = "kept from an earlier run"
        planned = epochs
    else:
        timed = deadline is not None
        trainer = fit_config(config, dataset, device=plan.device,
                             callbacks=[DeadlinePlan(deadline, most_epochs or epochs, once=True,
                                                     safety=REPLAN_SAFETY)] if timed else [])
        model = trainer.model
        metrics = {**evaluate_model(model, dataset, device=trainer.device), "epochs": trainer.epoch,
                   "best_epoch": trainer.best_epoch, "train_seconds": trainer.train_seconds, **trainer.throughput()}
        write_json(run_dir / "metrics.json", metrics)
        planned = trainer.epochs
        replanned = f", re-planned from {epochs}" if planned != epochs else ""
        how = f"{metrics['epochs']} of {planned} epochs{replanned} in {time.perf_counter() - started:.0f} s"
    device = next(model.parameters()).device
    x_hat = reconstruct(model, dataset.x_val, device=device)
    member = {
        "trial": trial.number, "picked_as": ", ".join(pick.reasons),
        "mse": reconstruction_error("mse", x_hat, dataset.x_val),
        "test_mse": metrics["test"]["mse"], "test_psnr": metrics["test"]["psnr"],
        "params": int(trial.user_attrs["params"]),
        "train_flops_per_sample": int(trial.user_attrs["train_flops_per_sample"]),
        "run": str(run_dir.relative_to(plan.out)),
        "epochs": metrics["epochs"], "planned_epochs": planned, "train_seconds": metrics["train_seconds"],
        "val_seconds": metrics["epochs"] * VAL_COST * len(dataset.x_val) / max(metrics["samples_per_second"], 1e-3),
        "search_values": dict(zip(plan.objectives.names, trial.values)),
        "settings": trial.user_attrs["settings"],
    }
    if plan.objectives.error != "mse":
        member[plan.objectives.error] = reconstruction_error(plan.objectives.error, x_hat, dataset.x_val)
    if "latency_us" in trial.user_attrs:
        member["latency_us"] = trial.user_attrs["latency_us"]
    log(f"front: trial {trial.number} ({member['picked_as']}) retrained ({how}): val mse {member['mse']:.5f}, "
        f"test mse {member['test_mse']:.5f} ({member['test_psnr']:.2f} dB), {member['params']:,} params")
    return member
