"""One search trial: draw a configuration, train it briefly on a subset, stop it early if it lags.

Cheap first (successive halving across a multi-objective study): every trial trains for at most
`epochs` epochs on a training subset and reports its validation error at the rungs, epochs
E/eta^k (E=9, eta=3: after 1 and 3 epochs). At a rung the trial stops ("pruned") when at least
eta-1 other trials at the same rung were no more costly and no worse, i.e. it is dominated there
by several peers; the rest are promoted to the next rung and finally to the full E epochs.
Pruned trials stay in the study so the sampler learns what not to draw again.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from ..data import Dataset
from ..errors import AeoptError
from ..evaluate import reconstruct
from ..runs import build_model, save_config
from ..settings import Settings
from ..train import Callback, OnEpochEnd, OnStepEnd, TrainingDiverged, data_info, fit_settings, prepare_run_dir
from ..train.loop import Loop, resolve_device
from .objectives import Objectives, model_costs, reconstruction_error
from .space import SearchSpace, describe, suggest


@dataclass
class TrialPlan:
    """Everything a worker needs to run trials (picklable, so worker processes get a copy)."""

    data: str
    data_dir: str | None
    out: Path
    objectives: Objectives
    space: SearchSpace
    epochs: int = 9
    eta: int = 3
    subset: int | None = 12000
    val_subset: int | None = 2000  # same samples for every trial: enough to rank, cheap per epoch
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    deadline: float | None = None  # time.time() after which running trials stop

    @property
    def rungs(self) -> list[int]:
        """Epochs at which trials are compared: E/eta^k for k >= 1, ascending, at least epoch 1."""
        rungs, epoch = set(), self.epochs
        while epoch > 1:
            epoch = max(1, epoch // self.eta)
            rungs.add(epoch)
        return sorted(rungs)


def search_subset(dataset: Dataset, plan: TrialPlan) -> Dataset:
    """The first `subset` training and `val_subset` validation samples (the split is already shuffled)."""
    def head(x, n):
        return x if x is None or n is None else x[:n]

    return dataclasses.replace(dataset, x_train=head(dataset.x_train, plan.subset),
                               y_train=head(dataset.y_train, plan.subset),
                               x_val=head(dataset.x_val, plan.val_subset), y_val=head(dataset.y_val, plan.val_subset))


def trial_config(plan: TrialPlan, settings: dict[str, Any], run_dir: Path, epochs: int) -> Settings:
    return Settings.from_flat(data=plan.data, data_dir=plan.data_dir, seed=plan.seed, epochs=epochs, patience=None,
                              threads=plan.threads, out=str(run_dir), **settings)


def fit_config(config: Settings, dataset: Dataset, *, device: str, callbacks: list[Callback] = ()) -> Loop:
    """fit() a trial's settings and return the loop: search trials and the front's retraining need no report
    (train() writes one, which costs seconds); the run directory still holds the config, the weights and the
    history, so `aeopt evaluate` and `aeopt report` work on it later."""
    config.validate()
    run_dir = prepare_run_dir(config.out, config, overwrite=True)
    save_config(run_dir, config, data_info(dataset))
    torch_device = resolve_device(device)
    return fit_settings(config, dataset, run_dir, device=torch_device, log=lambda message: None,
                        callbacks=callbacks).loop


def dominated_count(rung_error: float, costs: tuple[float, ...], peers: list[tuple[float, tuple]]) -> int:
    """How many peers (error, costs) are at least as good in every objective and better in one."""
    mine = (rung_error, *costs)
    count = 0
    for error, peer_costs in peers:
        theirs = (error, *peer_costs)
        if all(t <= m for t, m in zip(theirs, mine)) and any(t < m for t, m in zip(theirs, mine)):
            count += 1
    return count


class TrialRunner:
    """The Optuna objective: returns (error, *costs) for one configuration, or raises TrialPruned."""

    def __init__(self, plan: TrialPlan, dataset: Dataset, log: Callable[[str], None]):
        self.plan, self.dataset, self.log = plan, search_subset(dataset, plan), log
        self.data_info = data_info(self.dataset)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        plan, objectives = self.plan, self.plan.objectives
        settings = suggest(trial, plan.space)
        run_dir = plan.out / "trials" / f"{trial.number:04d}"
        config = trial_config(plan, settings, run_dir, plan.epochs)
        try:
            costs = model_costs(build_model(config, self.data_info), objectives)
        except AeoptError as err:
            trial.set_user_attr("stopped", f"invalid configuration: {err}")
            self.log(f"trial {trial.number:4d} | {describe(settings)} | invalid: {err}")
            raise optuna.TrialPruned(str(err)) from None
        for key, value in costs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("run", str(run_dir.relative_to(plan.out)))
        trial.set_user_attr("settings", settings)  # what the front's retraining rebuilds the model from
        cost_values = tuple(float(costs[k]) for k in objectives.cost_keys)
        started = time.perf_counter()
        summary = f"trial {trial.number:4d} | {describe(settings)} | {_cost_text(costs)}"
        try:
            trainer = self._train(config, trial, cost_values)
        except optuna.TrialPruned as stop:
            self.log(f"{summary} | {time.perf_counter() - started:.0f} s | stopped: {stop}")
            raise
        except TrainingDiverged:
            trial.set_user_attr("stopped", "diverged")
            self.log(f"{summary} | diverged (loss NaN/Inf)")
            raise optuna.TrialPruned("diverged") from None
        model, device = trainer.model, trainer.device
        error = reconstruction_error(objectives.error, reconstruct(model, self.dataset.x_val, device=device),
                                     self.dataset.x_val)
        if not math.isfinite(error):
            raise optuna.TrialPruned("non-finite validation error")
        test_mse = reconstruction_error("mse", reconstruct(model, self.dataset.x_test, device=device),
                                        self.dataset.x_test)
        attrs = {"val_error": error, "test_mse": test_mse, "epochs": trainer.epoch,
                 "train_seconds": trainer.train_seconds,
                 "samples_per_second": len(self.dataset.x_train) * trainer.epoch / max(trainer.train_seconds, 1e-9)}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        self.log(f"{summary} | {trainer.epoch} ep {time.perf_counter() - started:.0f} s | val {objectives.error} "
                 f"{error:.5f} | done")
        return (error, *cost_values)

    def _train(self, config: Settings, trial: optuna.Trial, costs: tuple[float, ...]) -> Loop:
        callbacks = [OnEpochEnd(self._epoch_hook(trial, costs))]
        if self.plan.deadline is not None:
            callbacks.append(OnStepEnd(_stop_at_deadline(trial, self.plan.deadline)))
        return fit_config(config, self.dataset, device=self.plan.device, callbacks=callbacks)

    def _epoch_hook(self, trial: optuna.Trial, costs: tuple[float, ...]) -> Callable:
        """The per-epoch callback: validation error at rungs and rung pruning."""
        plan, x_val = self.plan, self.dataset.x_val

        def at_epoch_end(trainer, row: dict) -> None:
            epoch = row["epoch"]
            if epoch not in plan.rungs:
                return
            x_hat = reconstruct(trainer.model, x_val, device=trainer.device)
            trainer.model.train()  # reconstruct() leaves eval mode on; the trainer expects train mode
            error = reconstruction_error(plan.objectives.error, x_hat, x_val)
            trial.set_user_attr(f"rung_{epoch}", error)
            peers = rung_peers(trial, epoch, plan.objectives)
            beaten_by = dominated_count(error, costs, peers)
            if len(peers) >= plan.eta and beaten_by >= plan.eta - 1:
                reason = f"rung {epoch} ep: dominated by {beaten_by} of {len(peers)} trials there"
                trial.set_user_attr("stopped", reason)
                raise optuna.TrialPruned(reason)

        return at_epoch_end


def _stop_at_deadline(trial: optuna.Trial, deadline: float) -> Callable:
    """A step callback that stops the trial as soon as the search's share of the budget is spent."""
    def check(trainer, batch, parts) -> None:
        if time.time() > deadline:
            trial.set_user_attr("stopped", f"budget ran out in epoch {trainer.epoch + 1}")
            raise optuna.TrialPruned(f"budget ran out in epoch {trainer.epoch + 1}")
    return check


def rung_peers(trial: optuna.Trial, epoch: int, objectives: Objectives) -> list[tuple[float, tuple]]:
    """(error at this rung, costs) of every other trial in the study that reached the rung."""
    key = f"rung_{epoch}"
    peers = []
    for other in trial.study.get_trials(deepcopy=False):
        if other.number == trial.number or key not in other.user_attrs:
            continue
        if all(k in other.user_attrs for k in objectives.cost_keys):
            peers.append((other.user_attrs[key], tuple(other.user_attrs[k] for k in objectives.cost_keys)))
    return peers


def _cost_text(costs: dict[str, float]) -> str:
    text = f"{costs['params'] / 1e3:.0f}k params {costs['train_flops_per_sample'] / 1e6:.2f} MFLOP"
    if "latency_us" in costs:
        text += f" {costs['latency_us']:.1f} us"
    return text

