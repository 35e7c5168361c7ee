"""`aeopt.train()`: settings -> data -> model -> objective -> `fit()` -> evaluation -> report.

Everything a run decides once is decided here, in this order: the settings (validated, with the
rules of --resume), the device and CPU threads, the data, the run directory (created only after
every setting and the model were accepted, so bad input leaves nothing behind), the learning rate
(`auto`: the range test), and then the one loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..data import Dataset
from ..errors import AeoptError, Interrupted
from ..evaluate.evaluate import evaluate_model
from ..evaluate.report import write_report
from ..models.losses import build_loss, choose_auto_loss
from ..runs import build_model, read_config, save_config, warm_start, write_json
from ..settings import Settings
from .callbacks import Callback
from .loop import Loop, resolve_device
from .lr_find import lr_range_test
from . import distributed
from .prepare import data_info, fit_settings, how_to_continue, load_run_data, open_run


@dataclass
class TrainResult:
    path: Path
    model: torch.nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]]


# Models whose whole run (data, objective, what is measured after fit) belongs to an application
# package: name -> its train function, same arguments as train(). The application registers itself
# on import (aeopt.codec: "codec"), so this layer never imports upward.
MODEL_TRAINERS: dict[str, Callable[..., TrainResult]] = {}


def _print(message: str) -> None:
    print(message, flush=True)


def resolve_settings(config: Settings | None, resume: str | Path | None, settings: dict[str, Any]) -> Settings:
    """The run's settings: a resumed run's own (only what --resume allows may change), else config + keywords."""
    if resume is not None:
        saved, _ = read_config(resume)
        saved.check_resume(settings)
        return saved.replace(**settings).validate()
    return (config or Settings()).replace(**settings).validate()


def train(config: Settings | None = None, *, dataset: Dataset | None = None, resume: str | Path | None = None,
          overwrite: bool = False, progress: bool = True, log: Callable[[str], None] = _print,
          device: str | None = None, callbacks: Iterable[Callback] = (), setup: Callable[[Loop], Any] | None = None,
          objective_hook: Callable | None = None, **settings) -> TrainResult:
    """Train an autoencoder and write its run directory.

    Args:
        config: all settings (`aeopt.Settings`); or pass them as keywords (`train(data="digits", latent_dim=8)`).
        dataset: an already loaded `Dataset` (skips loading `config.data`).
        resume: a run directory to continue from its last checkpoint (only epochs, threads and device may change).
        overwrite: replace an existing run directory at `config.out`.
        progress: show a progress bar.
        log: where one-line messages go (`print` by default).
        device: "auto", "cpu" or "cuda" (default: the settings' `device`).
        callbacks: step/epoch events (aeopt.train.callbacks.Callback).
        setup: called with the training Loop before training, to inspect or seed it.
        objective_hook: called with the run's objective before training, to configure it (distillation).

    Returns:
        A TrainResult with the run directory, the best model and its metrics.
    """
    model_name = (settings.get("model") or (config.architecture.model if config else None)
                  or (read_config(resume)[0].architecture.model if resume is not None else None))
    if model_name in MODEL_TRAINERS:
        return MODEL_TRAINERS[model_name](config, dataset=dataset, resume=resume, overwrite=overwrite,
                                          progress=progress, log=log, device=device, callbacks=callbacks, **settings)
    if device is not None:
        settings["device"] = device
    config = resolve_settings(config, resume, settings)
    group = distributed.from_environment(config.runtime.device)  # set up by torchrun (or `aeopt train --nproc-per-node N`)
    if group is not None and config.optimization.max_minutes is not None:  # each rank would plan its own
        # epoch count from its own clock, and the ranks would hang waiting for each other
        raise AeoptError("--max-minutes is not available with several processes yet; give --epochs instead")
    if group is not None and not group.is_main:
        log, progress = (lambda message: None), False  # rank 0 speaks for the run
    torch_device = group.device(config.runtime.device) if group else resolve_device(config.runtime.device)
    if dataset is None:
        dataset = load_run_data(config)
    if config.objective.loss == "auto":
        log(f"loss auto -> {choose_auto_loss(dataset.in_unit_range)[1]}")
    checked = build_model(config, data_info(dataset))  # fail on bad model settings before any directory exists
    if config.optimization.init is not None and resume is None:  # ... and on weights that do not fit them
        warm_start(checked, config.optimization.init, model_name=config.architecture.model)
    build_loss(config.objective.loss, in_unit_range=dataset.in_unit_range, sparse_l1=config.objective.sparse_l1)
    inputs = math.prod(dataset.sample_shape)
    if config.architecture.latent_dim >= inputs:
        log(f"warning: --latent-dim {config.architecture.latent_dim} is at least the {inputs} values of a sample: "
            f"the code can copy the input, so nothing is compressed or learned (PCA is already exact there); "
            f"pick a latent below {inputs}")
    if group is not None and config.optimization.lr == "auto":
        raise AeoptError("--lr auto runs the range test in one process; run `aeopt lr-find` first and pass --lr")
    run_dir, tracking = open_run(config, resume=resume, overwrite=overwrite, log=log, group=group)
    config = config.replace(out=str(run_dir))
    with tracking:  # each tracker's run ends as finished, failed or killed (Ctrl-C), however train() ends
        try:
            if config.optimization.lr == "auto":
                found = lr_range_test(config, dataset, run_dir, device=torch_device, log=log)
                config = config.replace(lr=found.lr)  # the run remembers the number, so --resume needs no second sweep
            if group is None or group.is_main:
                save_config(run_dir, config, data_info(dataset))
            result = fit_settings(config, dataset, run_dir, device=torch_device, log=log, progress=progress,
                                  callbacks=[*callbacks, *tracking.trackers], resume=resume is not None, setup=setup,
                                  objective_hook=objective_hook, group=group)
        except KeyboardInterrupt:
            raise Interrupted(how_to_continue(run_dir)) from None
        loop = result.loop
        if group is not None and not group.is_main:
            return TrainResult(run_dir, result.model, {}, result.history)
        metrics = evaluate_model(result.model, dataset, device=torch_device)
        metrics.update({
            "params": result.model.num_params(), "train_flops_per_sample": loop.flops,
            "train_seconds": result.train_seconds, **loop.throughput(),
            "epochs": result.epochs, "steps": loop.step, "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val, "loss": loop.objective.spec, "precision": result.precision,
            "device": str(torch_device),
            "memory_format": "channels_last" if loop.channels_last else "contiguous",
            "cuda_graph": bool(loop.graphed and loop.graphed.graph is not None),
        })
        write_report(run_dir, result.model, dataset, metrics, result.history)
        write_json(run_dir / "metrics.json", metrics)  # last: a run with metrics.json is finished (see run_dir_for)
        tracking.finish(run_dir, metrics)  # after metrics.json: the artifacts are the finished run
        return TrainResult(run_dir, result.model, metrics, result.history)
