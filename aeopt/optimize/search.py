"""The study: storage, sampler, budget and worker processes.

Storage: SQLite in the output folder for one worker; Optuna's journal file for --workers N on one
machine (Optuna's FAQ advises against SQLite for parallel writers: its file lock serializes them and
times out under load); PostgreSQL (`--storage postgresql://user@host/db`) for workers on several
machines.

The study lives in its storage, not in memory: rerunning the same command loads it and adds
trials, a killed search loses at most the trials that were running, and any number of workers
(local processes from --workers, or other machines given the same --storage URL) share it.
"""
from __future__ import annotations

import logging
import multiprocessing
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna

from ..data import load_data
from ..errors import AeoptError
from .space import starting_points
from .trial import TrialPlan, TrialRunner

STUDY_NAME = "aeopt"
DEFAULT_STORAGE_FILE = "study.db"
DEFAULT_JOURNAL_FILE = "study.journal"  # --workers N on one machine
STORAGE_ATTEMPTS = 5
# What a process that lost the race to create a new study database sees (the messages measured:
# benchmarks/results/design_notes.md); retried, every other error is not.
SCHEMA_RACE_MESSAGES = ("duplicate", "already exists", "unique constraint", "locked")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(text: str | float | int | None) -> float | None:
    """'90s', '10m', '1.5h' or a number of seconds -> seconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", str(text))
        if not match:
            raise AeoptError(f"cannot read budget {text!r}; write e.g. 90s, 10m or 1.5h")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise AeoptError(f"budget must be positive, got {text!r}; write e.g. 10m")
    return seconds


def default_storage(out: Path, workers: int) -> str:
    """SQLite for one worker; a journal file for several on this machine (an existing study is kept where it is)."""
    if workers > 1 and not (out / DEFAULT_STORAGE_FILE).is_file():
        return f"journal:{(out / DEFAULT_JOURNAL_FILE).resolve()}"
    return f"sqlite:///{(out / DEFAULT_STORAGE_FILE).resolve()}"


def open_storage(url: str | None, out: Path):
    """An Optuna storage: `journal:PATH` or *.log/*.journal = journal file; any other value is an SQLAlchemy
    URL (sqlite:///..., postgresql://..., mysql://...); None: SQLite in `out`."""
    if url is None:
        url = default_storage(out, 1)
    journal_path = url[len("journal:"):] if url.startswith("journal:") else (
        url if url.endswith((".log", ".journal")) and "://" not in url else None)
    if journal_path is not None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(journal_path))
    if "://" not in url:
        raise AeoptError(f"cannot read storage {url!r}; give an SQLAlchemy URL like sqlite:///study.db or "
                         "postgresql://user@host/db, or journal:PATH for a journal file")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            # The heartbeat lets any worker mark a killed worker's running trial as failed after 2 minutes.
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=20, grace_period=120)
        except (ImportError, ModuleNotFoundError) as err:
            raise AeoptError(f"storage {url!r} needs a database driver that is not installed ({err}); "
                             "pip install aeopt[postgres]") from None
        except Exception as err:  # SQLAlchemy's errors: bad URL, unreachable server, a schema race
            # Processes opening a new database together race to create Optuna's tables; the loser sees a
            # duplicate-key (PostgreSQL), "already exists", "UNIQUE constraint failed: alembic_version..." or
            # "database is locked" (SQLite) error and succeeds on a second try, once the tables exist.
            text = str(err).lower()
            if attempt == STORAGE_ATTEMPTS - 1 or not any(s in text for s in SCHEMA_RACE_MESSAGES):
                raise AeoptError(f"cannot open storage {url!r}: {str(err).splitlines()[0]}") from None
            time.sleep(1.0 + attempt)


class _NoCtrlCTraceback(logging.Filter):
    """Optuna logs a trial ended by Ctrl-C as failed, twice: with the KeyboardInterrupt's traceback, then "Trial N
    failed with value None". aeopt says the interruption in one line instead (cli/optimize.py); the trial is
    marked failed in the study all the same."""

    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted = True
            return False
        return not (self.interrupted and "failed with value" in record.getMessage())


def open_study(plan: TrialPlan, storage_url: str | None) -> optuna.Study:
    """Create or load the study; refuse to mix objectives in one study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:  # records of optuna.* loggers reach these handlers
        if not any(isinstance(f, _NoCtrlCTraceback) for f in handler.filters):
            handler.addFilter(_NoCtrlCTraceback())
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat, group
    storage = open_storage(storage_url, plan.out)
    # TPE (multi-objective, multivariate): learns from few trials, where NSGA-II needs generations.
    # constant_liar keeps parallel workers from drawing the same configuration.
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True,
                                         n_startup_trials=8, seed=None)
    directions = ["minimize"] * len(plan.objectives.names)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=directions, sampler=sampler,
                                load_if_exists=True)
    saved = study.user_attrs.get("objectives")
    names = ",".join(plan.objectives.names)
    if saved is None:
        study.set_user_attr("objectives", names)
    elif saved != names:
        raise AeoptError(f"the study in {storage_url or plan.out / DEFAULT_STORAGE_FILE} optimizes {saved}; "
                         f"rerun with --objectives {saved} or choose another --out/--storage")
    return study


def run_worker(plan: TrialPlan, storage_url: str | None, n_trials: int | None, *,
               log: Callable[[str], None] = print, callback: Callable | None = None, dataset=None) -> None:
    """Run trials until n_trials are done here or the deadline passes."""

    if dataset is None:
        dataset = load_data(plan.data, data_dir=plan.data_dir, seed=plan.seed)
    study = open_study(plan, storage_url)
    timeout = None if plan.deadline is None else max(0.0, plan.deadline - time.time())
    if timeout == 0.0 or n_trials == 0:
        return
    study.optimize(TrialRunner(plan, dataset, log), n_trials=n_trials, timeout=timeout,
                   callbacks=[callback] if callback else None, catch=(AeoptError,), gc_after_trial=True)


def _worker_entry(plan: TrialPlan, storage_url: str | None, n_trials: int | None) -> None:
    def log(message: str) -> None:
        print(message, flush=True)

    try:
        run_worker(plan, storage_url, n_trials, log=log)
    except AeoptError as err:
        print(f"aeopt: worker error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def split_trials(n_trials: int | None, workers: int) -> list[int | None]:
    """n_trials spread over workers exactly (no trial more, none fewer): 7 over 2 -> [4, 3]."""
    if n_trials is None:
        return [None] * workers
    return [n_trials // workers + (1 if i < n_trials % workers else 0) for i in range(workers)]


def run_search(plan: TrialPlan, *, storage_url: str | None, n_trials: int | None, workers: int,
               log: Callable[[str], None], progress: bool, dataset=None) -> optuna.Study:
    """Run the search (in this process, or in `workers` processes) with one overall progress bar."""
    if storage_url is None:
        storage_url = default_storage(plan.out, workers)
    study = open_study(plan, storage_url)
    if not study.get_trials(deepcopy=False):
        for params in starting_points(plan.space):
            study.enqueue_trial(params)
    done_before = len(study.get_trials(deepcopy=False, states=FINISHED))
    budget = None if plan.deadline is None else plan.deadline - time.time()
    bar = _progress_bar(n_trials, budget, progress)
    shown = log if bar is None else bar.write

    def update(*_) -> None:
        if bar is None:
            return
        trials = study.get_trials(deepcopy=False, states=FINISHED)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = min((t.values[0] for t in complete), default=float("nan"))
        bar.set_postfix(trials=len(trials) - done_before, complete=len(complete), best=f"{best:.5f}", refresh=False)
        bar.update((len(trials) - done_before if n_trials else time.time() - started) - bar.n)

    started = time.time()
    try:
        if workers == 1:
            run_worker(plan, storage_url, n_trials, log=shown, callback=update, dataset=dataset)
        else:
            context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
            processes = [context.Process(target=_worker_entry, args=(plan, storage_url, n), daemon=False)
                         for n in split_trials(n_trials, workers) if n != 0]
            for process in processes:
                process.start()
            try:
                while any(p.is_alive() for p in processes):
                    time.sleep(1.0)
                    update()
            finally:
                for process in processes:
                    process.join()
            if any(p.exitcode not in (0, None) for p in processes):
                raise AeoptError("a worker process failed (see its message above); rerun the command to continue")
    finally:
        if bar is not None:
            update()
            bar.close()
    return study


def _progress_bar(n_trials: int | None, budget: float | None, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    if n_trials:
        return tqdm(total=n_trials, unit="trial", desc="search", dynamic_ncols=True)
    return tqdm(total=round(budget or 0), unit="s", desc="search", dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")
