"""What starting a run from its settings takes: the data, the run directory, the model, its objective
and batch sources. Shared by train(), lr-find, search trials and the front's retraining."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..data import Dataset, load_data
from ..data.datasets import batch_source
from ..errors import AeoptError
from ..runs import build_model, warm_start
from ..settings import Settings
from .callbacks import Callback
from .checkpoint import has_checkpoint
from .distributed import Group
from .loop import Loop, fit
from .tracking import Tracking


def data_info(dataset: Dataset) -> dict[str, Any]:
    """What the run must remember about its data to rebuild and apply the model later."""
    return {"sample_shape": list(dataset.sample_shape), "is_image": dataset.is_image,
            "output": "sigmoid" if dataset.in_unit_range else "linear", "scaler": dataset.scaler,
            "n_train": dataset.n_train, "n_val": len(dataset.x_val), "n_test": len(dataset.x_test)}


def run_dir_for(out: str | None, settings: Settings, *, overwrite: bool) -> Path:
    """The run directory `out` names (default runs/<data>-<model>-<time>), refused if it may not be replaced."""
    if out is None:
        out = f"runs/{settings.dataset.data.split(':')[0]}-{settings.architecture.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(out)
    if path.exists():
        if not overwrite:
            if has_checkpoint(path) and not (path / "metrics.json").is_file():
                raise AeoptError(f"{path} holds an unfinished run; continue it with `aeopt train --resume {path}`, "
                                 "or pass --overwrite to start it again")
            raise AeoptError(f"{path} already exists; pass --overwrite to replace it or --out to choose another")
        if not (path / "config.yaml").is_file() and any(path.iterdir()):
            raise AeoptError(f"{path} exists and is not an aeopt run directory; refusing to delete it")
    return path


def how_to_continue(run_dir: Path) -> str:
    """What an interrupted run's user types next: every finished epoch is in the checkpoint."""
    if has_checkpoint(run_dir):
        return f"the finished epochs are kept: continue with `aeopt train --resume {run_dir}`"
    return f"no epoch had finished: start again with `--overwrite --out {run_dir}`"


def prepare_run_dir(out: str | None, settings: Settings, *, overwrite: bool) -> Path:
    path = run_dir_for(out, settings, overwrite=overwrite)
    init = settings.optimization.init
    if init is not None and path.exists() and Path(init).resolve() == path.resolve():
        raise AeoptError(f"--init {init} is also --out: replacing it would delete the weights the run starts "
                         "from; pick another --out")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def open_run(settings: Settings, *, resume: str | Path | None, overwrite: bool, log: Callable[[str], None],
             group: Group | None = None) -> tuple[Path, Tracking]:
    """The run directory (the resumed one, or a new one) and its trackers, in the order that leaves
    nothing written on bad input: the path is checked, the trackers' extras imported and their stores
    reached, and only then is the directory replaced (by rank 0: only rank 0 tracks and writes)."""
    run_dir = Path(resume) if resume is not None else run_dir_for(settings.runtime.out, settings, overwrite=overwrite)
    main = group is None or group.is_main
    tracking = Tracking.open(settings, run_dir, log) if main else Tracking()
    if group is not None:
        group.barrier()  # every rank has checked the directory before rank 0 replaces it
    if resume is None and main:
        run_dir = prepare_run_dir(str(run_dir), settings, overwrite=overwrite)
    return run_dir, tracking


def load_run_data(settings: Settings) -> Dataset:
    d = settings.dataset
    return load_data(d.data, data_dir=d.data_dir, seed=d.seed, limit=d.limit, mmap=d.mmap)


def start_run(settings: Settings, dataset: Dataset, *, device: torch.device, log: Callable[[str], None],
              objective_hook: Callable | None = None, group: Group | None = None, resume: bool = False):
    """The run's model and objective (`objective_hook(objective)` may configure it: distillation sets
    its target), and its batch sources (this rank's share of them in a multi-process run).
    The model starts from `--init RUN`'s weights when given, unless resuming (the checkpoint's win)."""
    torch.manual_seed(settings.dataset.seed)  # the same initial weights on every rank
    model = build_model(settings, data_info(dataset))
    if settings.optimization.init is not None and not resume:
        warm_start(model, settings.optimization.init, model_name=settings.architecture.model)
    seed, rank, world = settings.dataset.seed, group.rank if group else 0, group.world_size if group else 1
    train = batch_source(dataset.train_split, seed=seed, device=device, rank=rank, world_size=world)
    val = batch_source(dataset.x_val, seed=seed, device=device, rank=rank, world_size=world)
    steps_per_epoch = -(-len(train) // settings.optimization.batch_size)
    objective = model.objective(settings, in_unit_range=dataset.in_unit_range, steps_per_epoch=steps_per_epoch)
    if objective_hook is not None:
        objective_hook(objective)
    return model, objective, train, val


def fit_settings(settings: Settings, dataset: Dataset, run_dir: Path | None, *, device: torch.device,
                 log: Callable[[str], None] = print, progress: bool = False, callbacks: Iterable[Callback] = (),
                 resume: bool = False, setup: Callable[[Loop], Any] | None = None,
                 objective_hook: Callable | None = None, group: Group | None = None):
    """fit() for a run described by its settings (no evaluation or report): what train(), search trials
    and the front's retraining share."""
    model, objective, train_source, val_source = start_run(settings, dataset, device=device, log=log,
                                                           objective_hook=objective_hook, group=group, resume=resume)
    return fit(model, objective, train_source, val_source, settings, run_dir=run_dir, device=device,
               callbacks=callbacks, log=log, progress=progress, resume=resume, setup=setup, group=group)
