"""`optimize()`: search, retrain the Pareto front, write pareto.json/csv, trials.csv, pareto.png, report.md."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import torch

from ..data import Dataset, load_data
from ..errors import AeoptError
from ..evaluate import peak_of, pca_reconstruction
from ..metrics import psnr
from ..models import create_model
from ..runs import write_json
from .objectives import parse_objectives
from .pareto import final_front, search_front, trial_rows, write_csv
from .report import plot_front, recommend, write_report
from .retrain import (BEST_SHARE, LEAD_SHARE, MIN_EPOCHS, choose_members, remove_unfinished_members, retrain_front,
                      trainable_within)
from .search import (DEFAULT_JOURNAL_FILE, DEFAULT_STORAGE_FILE, STUDY_NAME, default_storage, open_storage,
                     parse_budget, run_search)
from .space import default_space, load_space
from .trial import TrialPlan

SEARCH_SHARE = 1 / 5  # of a --budget; the rest retrains chosen front members on the full training set
# (the front's errors come from the retraining, which needs most of the time; design_notes.md)
DEFAULT_TRIALS = 20  # when neither --trials nor --budget is given
BUDGET_MAX_EPOCHS = 100  # with a budget and no final_epochs, the time left decides the epochs, up to this many
# (a tighter cap left GPU budgets unused once members trained in seconds; design_notes.md)


@dataclass
class OptimizeResult:
    """The retrained Pareto front (cheapest first), the recommended member and where it all lives."""

    path: Path
    front: list[dict[str, Any]]
    recommended: dict[str, Any]
    dropped: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    study: optuna.Study


def optimize(data: str | Dataset = "digits", *, out: str | Path | None = None, objectives: str = "mse,params",
             trials: int | None = None, budget: str | float | None = None, latent_dim: int | None = None,
             storage: str | None = None, workers: int = 1, tolerance: float = 0.05, space: str | Path | None = None,
             epochs: int = 9, subset: int | None = 12000, final_epochs: int | None = None, max_front: int = 4,
             seed: int = 0, threads: int | None = None, data_dir: str | None = None, device: str = "auto",
             progress: bool = True, overwrite: bool = False,
             log: Callable[[str], None] = print) -> OptimizeResult:
    """Search architectures and training recipes for the best error per cost; return the Pareto front.

    Args:
        data: a data spec ("digits", "fashion-mnist", "npy:PATH", ...) or a loaded Dataset (one worker only).
        out: folder for the study, the trials' runs, the front and the report; rerun to continue.
        objectives: one error (mse, mae) and one or two costs (params, flops, latency), e.g. "mse,flops".
        trials: trials to add in this call (over all workers); default 20 if no budget either.
        budget: wall time for the whole call, e.g. "10m": a fifth for the search, the rest for retraining.
        latent_dim: fix the code size (else it is searched).
        storage: Optuna storage URL (default: SQLite file study.db in `out`; with several workers the journal
            file study.journal), journal:PATH, or postgresql://user@host/db for workers on several machines.
        workers: local worker processes sharing the study.
        tolerance: the recommendation is the cheapest member within this fraction of the best error.
        space: YAML file narrowing or widening the default search space.
        epochs: most epochs per search trial (rungs at epochs/3, epochs/9, ...).
        subset: training samples per search trial (None = all).
        final_epochs: most epochs of the front's retraining (default 3 x epochs; with a budget, as many as fit,
            up to 100).
        max_front: most front members to retrain (the best-error one, the recommended one, the cheapest...).
        seed: data split and initial weights.
        threads: torch threads per worker (default: the cores torch sees, shared among the workers).
        overwrite: start afresh: delete the study (in `storage` too) and everything in `out`; without it a
            rerun continues the study, keeping every finished trial.

    Returns:
        OptimizeResult with the front as dicts (mse, test_mse, params, train_flops_per_sample, run, ...).
    """
    started = time.time()
    goals = parse_objectives(objectives)
    seconds = parse_budget(budget)
    _check_numbers(trials=trials, workers=workers, tolerance=tolerance, epochs=epochs, subset=subset,
                   final_epochs=final_epochs, max_front=max_front, latent_dim=latent_dim, threads=threads)
    if isinstance(data, Dataset):
        if workers > 1:
            raise AeoptError("worker processes load the data themselves: pass a data spec, not a Dataset")
        dataset, spec = data, data.name
    else:
        dataset, spec = load_data(data, data_dir=data_dir, seed=seed), data
    base = default_space(dataset.sample_shape, in_unit_range=dataset.in_unit_range, latent_dim=latent_dim)
    search_space = load_space(space, base)
    out = Path(out or f"runs/optimize-{spec.split(':')[0]}")
    if overwrite:
        start_afresh(out, storage)
    out.mkdir(parents=True, exist_ok=True)
    if trials is None and seconds is None:
        trials = DEFAULT_TRIALS
    threads = threads or max(1, torch.get_num_threads() // workers)
    plan = TrialPlan(data=spec, data_dir=data_dir, out=out, objectives=goals, space=search_space, epochs=epochs,
                     subset=subset, seed=seed, threads=threads, device=device,
                     deadline=None if seconds is None else started + seconds * SEARCH_SHARE)
    study = run_search(plan, storage_url=storage, n_trials=trials, workers=workers, log=log, progress=progress,
                       dataset=dataset if workers == 1 else None)
    search_seconds = time.time() - started

    deadline = None if seconds is None else started + seconds - _reserve(seconds)
    candidates, too_slow = search_front(study), []
    if deadline is not None:
        fits = trainable_within(deadline - time.time(), dataset)
        within = search_front(study, fits)
        if within:  # else the budget fits none: retrain what it can of the whole front
            too_slow, candidates = [t for t in candidates if not fits(t)], within
    picks = choose_members(candidates, tolerance, max_front)
    if not picks:
        raise AeoptError("no trial finished its training; give a larger --budget or more --trials")
    max_epochs = final_epochs or (BUDGET_MAX_EPOCHS if seconds is not None else 3 * epochs)
    if too_slow:
        log(f"not retrained (fewer than {MIN_EPOCHS} full-data epochs would fit in half the time left): "
            + ", ".join(f"trial {t.number}" for t in too_slow))
    within_budget = ("" if deadline is None else f" ({BEST_SHARE}x for the best-error one, {LEAD_SHARE}x for "
                     f"the recommended one), within {max(0.0, deadline - time.time()):.0f} s")
    log(f"retraining {len(picks)} front member(s) on all {dataset.n_train} training samples, cheapest first, "
        f"best error last, up to {max_epochs} epochs each{within_budget}")
    remove_unfinished_members(out / "front", keep={p.trial.number for p in picks})
    members, skipped = retrain_front(picks, plan, dataset, deadline=deadline, max_epochs=max_epochs, log=log)
    skipped = [{"trial": t.number, "reasons": ["on the search's front"],
                "why": f"fewer than {MIN_EPOCHS} full-data epochs would fit in half the retraining time"}
               for t in too_slow] + skipped
    if not members:
        raise AeoptError("the budget left no time to retrain any front member on the full data; give a larger "
                         "--budget or a smaller --subset")
    front, dropped = final_front(members, goals)
    retrain_seconds = time.time() - started - search_seconds

    references = reference_points(dataset, latent_dim or recommend(front, goals, tolerance)["settings"]["latent_dim"])
    rows = trial_rows(study, goals)
    write_json(out / "pareto.json", front)
    write_csv(out / "pareto.csv", [{k: v for k, v in m.items() if k not in ("settings", "search_values")}
                                   | m["settings"] for m in front])
    write_csv(out / "trials.csv", rows)
    plot_front(out / "pareto.png", rows, front, goals, references)
    states = [r["state"] for r in rows]
    counts = {"total": len(rows), "complete": states.count("complete"), "pruned": states.count("pruned"),
              "failed": states.count("fail"), "running": states.count("running")}
    write_report(out / "report.md", data=spec, objectives=goals, front=front, dropped=dropped, counts=counts,
                 plan_text=plan_text(plan, max_epochs, workers, storage, out, seconds), tolerance=tolerance,
                 references=references, seconds={"search": search_seconds, "retrain": retrain_seconds},
                 skipped=skipped)
    return OptimizeResult(out, front, recommend(front, goals, tolerance), dropped, skipped, study)


def _reserve(budget_seconds: float) -> float:
    """Seconds kept at the end of a budget for the references, the files and the plot."""
    return max(5.0, 0.02 * budget_seconds)


def reference_points(dataset: Dataset, latent_dim: int) -> list[dict[str, Any]]:
    """PCA at the latent size (validation and test error) and the seed architecture's cost."""
    peak = peak_of(dataset)
    refs = []
    pca = {"name": f"PCA-{latent_dim}", "color": "C3"}
    for split, x in (("", dataset.x_val), ("test_", dataset.x_test)):
        x_hat = pca_reconstruction(dataset, latent_dim, x)
        pca[f"{split}mse"] = float((x_hat - x).square().mean())
        pca[f"{split}mae"] = float((x_hat - x).abs().mean())
    pca["test_psnr"] = psnr(pca["test_mse"], peak)
    refs.append(pca)
    if dataset.is_image:
        output = "sigmoid" if dataset.in_unit_range else "linear"
        seed = create_model("seed", dataset.sample_shape, latent_dim, output=output)
        refs.append({"name": "seed architecture", "color": "C1", "params": seed.num_params(),
                     "train_flops_per_sample": seed.train_flops_per_sample()})
    return refs


def start_afresh(out: Path, storage: str | None) -> None:
    """--overwrite: the old study goes (from a shared storage too), and `out` with it, if it is a study folder."""
    if storage is not None:
        try:
            optuna.delete_study(study_name=STUDY_NAME, storage=open_storage(storage, out))
        except KeyError:
            pass  # no study there yet
    if out.exists():
        marks = (DEFAULT_STORAGE_FILE, DEFAULT_JOURNAL_FILE, "pareto.json", "trials")
        if any(out.iterdir()) and not any((out / mark).exists() for mark in marks):
            raise AeoptError(f"{out} is not an aeopt optimize folder; refusing to delete it")
        aside = out.with_name(f".{out.name}.old")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(out, aside)   # gone at once from `out`, however long the removal takes
        shutil.rmtree(aside, ignore_errors=True)


def plan_text(plan: TrialPlan, final_epochs: int, workers: int, storage: str | None, out: Path,
              budget: float | None) -> str:
    rungs = ", ".join(map(str, plan.rungs)) or "none"
    timing = ("" if budget is None else
              f" Budget {budget:.0f} s: {SEARCH_SHARE:.0%} for the search, the rest for retraining, cheapest "
              f"member first and the best-error member last, every member the same number of epochs except the "
              f"best-error and recommended ones, which got {BEST_SHARE}x and {LEAD_SHARE}x as many: as many as the "
              f"time left allowed at the speeds their search trials measured, re-planned after each member's "
              f"second epoch from its own speed. Only configurations that would get "
              f"{MIN_EPOCHS} full-data epochs in half the retraining time were candidates (larger ones would join "
              "the front under-trained).")
    return (f"Multi-objective TPE sampler (Optuna), {workers} worker process(es), study in "
            f"`{storage or default_storage(out, workers)}`. Cheap first: each trial trained at most {plan.epochs} "
            f"epochs on the first {plan.subset or 'all'} training samples; at the rungs (epoch {rungs}) a trial "
            f"stopped when {plan.eta - 1} or more trials at the same rung had no higher cost and no higher "
            f"validation error (successive halving with eta={plan.eta}, Pareto-aware). Chosen front members (the "
            f"best-error one, the recommended one, the cheapest, the knee, others spread along the cost) were then "
            f"retrained on the full training set for up to {final_epochs} epochs (early stopping on validation) "
            f"and the front was recomputed from those numbers.{timing} Test numbers were never used to choose.")


def _check_numbers(**values) -> None:
    minimum = {"trials": 1, "workers": 1, "epochs": 1, "subset": 1, "final_epochs": 1, "max_front": 2,
               "latent_dim": 1, "threads": 1}
    for name, low in minimum.items():
        value = values[name]
        if value is not None and (not isinstance(value, int) or value < low):
            raise AeoptError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
    if not values["tolerance"] >= 0:
        raise AeoptError(f"--tolerance must be >= 0 (a fraction, e.g. 0.05), got {values['tolerance']}")
