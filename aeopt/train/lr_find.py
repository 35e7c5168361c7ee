"""Learning-rate range test (Smith 2017; fastai's lr_find): pick --lr from one short sweep.

The rate grows exponentially from `min_lr` to `max_lr` over `steps` optimizer steps on the run's
own model, loss, data and precision. The loss is smoothed (exponential moving average, bias
corrected) and the sweep stops once it climbs past 4x its best. The rule: the suggested rate is
one tenth of the rate where the smoothed loss was lowest (the minimum sits at the edge of
divergence; a decade below it is still fast and safely stable). The plot and the numbers go into
the run directory as lr_find.png and lr_find.csv.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data import Dataset
from ..errors import AeoptError
from ..evaluate.figures import figure_bytes, pyplot
from ..runs import atomic_write_bytes, atomic_write_text
from ..settings import Settings
from .loop import Loop, resolve_device
from .optim import set_lr
from .prepare import load_run_data, prepare_run_dir, start_run

SMOOTHING = 0.9   # EMA factor: ~10 steps of memory, enough to see through batch noise
STOP_FACTOR = 4.0  # the sweep is over once the smoothed loss exceeds 4x its best
BELOW_MINIMUM = 10.0  # the rule: suggested rate = rate at the smoothed minimum / 10


@dataclass
class LRFinding:
    lr: float                 # the suggested learning rate
    lr_at_minimum: float      # where the smoothed loss was lowest
    lrs: list[float]
    losses: list[float]       # smoothed
    plot: Path


def lr_range_test(config: Settings, dataset: Dataset, run_dir: Path, *, device: torch.device,
                  log: Callable[[str], None] = print, min_lr: float = 1e-6, max_lr: float = 1.0,
                  steps: int = 100) -> LRFinding:
    """Sweep the learning rate on a throwaway copy of the run's model and suggest one.

    Args:
        config: the run's settings (its `lr` is ignored; the schedule is replaced by the sweep).
        dataset: the run's data; batches cycle through its training split.
        run_dir: where lr_find.png and lr_find.csv are written.
        device: where to train.
        log: where the one-line result goes.
        min_lr, max_lr: the swept range (exponential).
        steps: optimizer steps in the sweep.

    Returns:
        An LRFinding whose `lr` lies inside [min_lr, max_lr].
    """
    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise AeoptError(f"lr-find needs 0 < --min-lr < --max-lr, got {min_lr} and {max_lr}")
    if steps < 10:
        raise AeoptError(f"lr-find needs --steps >= 10 to see a trend, got {steps}")
    sweep_config = config.replace(lr=min_lr, schedule="constant")
    model, objective, train_source, _ = start_run(sweep_config, dataset, device=device, log=log)
    loop = Loop(model, objective, train_source, None, sweep_config, run_dir=None, device=device, log=log,
                progress=False)
    batches, epoch = train_source.batches(0, config.batch_size), 0
    lrs, losses, average, best = [], [], 0.0, math.inf
    for i in range(steps):
        x = next(batches, None)
        if x is None:  # cycle through the epochs' orders, as training would
            epoch += 1
            batches = train_source.batches(epoch, config.batch_size)
            x = next(batches)
        lr = min_lr * (max_lr / min_lr) ** (i / (steps - 1))
        set_lr(loop.optimizer, lr)
        loss = float(loop.train_step(x)["loss"])
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (i + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > STOP_FACTOR * best:
            break
    if not losses:
        raise AeoptError(f"the loss was not finite even at --min-lr {min_lr}; check the data or lower --min-lr")
    lr_at_minimum = lrs[losses.index(min(losses))]
    suggestion = min(max(lr_at_minimum / BELOW_MINIMUM, min_lr), max_lr)
    plot = run_dir / "lr_find.png"
    _write_sweep(run_dir, lrs, losses, suggestion, plot)
    log(f"lr-find: smoothed loss lowest at lr {lr_at_minimum:.3g}; using {suggestion:.3g} (one tenth of it); "
        f"plot: {plot}")
    return LRFinding(suggestion, lr_at_minimum, lrs, losses, plot)


def _write_sweep(run_dir: Path, lrs: list[float], losses: list[float], suggestion: float, plot: Path) -> None:
    plt = pyplot()

    atomic_write_text(run_dir / "lr_find.csv",
                      "lr,smoothed_loss\n" + "".join(f"{lr},{loss}\n" for lr, loss in zip(lrs, losses)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    atomic_write_bytes(plot, figure_bytes(fig))
    plt.close(fig)


def lr_find(config: Settings | None = None, *, dataset: Dataset | None = None, out: str | None = None,
            overwrite: bool = False, device: str | None = None, log: Callable[[str], None] = print,
            min_lr: float = 1e-6, max_lr: float = 1.0, steps: int = 100, **settings) -> LRFinding:
    """Run the range test for a training configuration into its own directory (see lr_range_test)."""
    if device is not None:
        settings["device"] = device
    config = (config or Settings()).replace(**settings).validate()
    torch_device = resolve_device(config.runtime.device)
    if dataset is None:
        dataset = load_run_data(config)
    run_dir = prepare_run_dir(out or config.out, config.replace(model=f"{config.model}-lrfind"), overwrite=overwrite)
    return lr_range_test(config, dataset, run_dir, device=torch_device, log=log, min_lr=min_lr, max_lr=max_lr,
                         steps=steps)
