"""Learning-rate range test (Smith 2017; fastai's lr_find): pick --lr from one short sweep.

The rate grows exponentially from `min_lr` to `max_lr` over `steps` optimizer steps on the run's
own model, loss, data and precision. The loss is smoothed (exponential moving average, bias
corrected) and the sweep stops once it climbs past 4x its best. The rule: the suggested rate is
one tenth of the rate where the smoothed loss was lowest (the minimum sits at the edge of
divergence; a decade below it is still fast and safely stable). The plot and the numbers go into
the run directory as lr_find.png and lr_find.csv.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .config import TrainConfig
from .data import Dataset
from .errors import AeoptError
from .optim import set_lr
from .runs import atomic_write_bytes, atomic_write_text

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


def lr_range_test(config: TrainConfig, dataset: Dataset, run_dir: Path, *, device: torch.device,
                  log: Callable[[str], None] = print, setup: Callable | None = None, min_lr: float = 1e-6,
                  max_lr: float = 1.0, steps: int = 100) -> LRFinding:
    """Sweep the learning rate on a throwaway copy of the run's model and suggest one.

    Args:
        config: the run's settings (its `lr` is ignored; the schedule is replaced by the sweep).
        dataset: the run's data; batches cycle through its training split.
        run_dir: where lr_find.png and lr_find.csv are written.
        device: where to train.
        log: where the one-line result goes.
        setup: the run's trainer setup (corruption, targets), so the sweep sees the same loss.
        min_lr, max_lr: the swept range (exponential).
        steps: optimizer steps in the sweep.

    Returns:
        An LRFinding whose `lr` lies inside [min_lr, max_lr].
    """
    from .train import Trainer, epoch_order

    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise AeoptError(f"lr-find needs 0 < --min-lr < --max-lr, got {min_lr} and {max_lr}")
    if steps < 10:
        raise AeoptError(f"lr-find needs --steps >= 10 to see a trend, got {steps}")
    sweep_config = dataclasses.replace(config, lr=min_lr, schedule="constant")
    trainer = Trainer(sweep_config, dataset, run_dir, device=device, log=log, progress=False)
    if setup is not None:
        setup(trainer)
    n, batch = len(trainer.x_train), config.batch_size
    lrs, losses, average, best = [], [], 0.0, math.inf
    order, cursor, epoch = epoch_order(n, config.seed, 0, device), 0, 0
    for i in range(steps):
        if cursor >= n:
            epoch, cursor = epoch + 1, 0
            order = epoch_order(n, config.seed, epoch, device)
        lr = min_lr * (max_lr / min_lr) ** (i / (steps - 1))
        set_lr(trainer.optimizer, lr)
        loss = float(trainer.train_step(trainer.x_train.index_select(0, order[cursor:cursor + batch])))
        cursor += batch
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import figure_bytes

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


def lr_find(config: TrainConfig | None = None, *, dataset: Dataset | None = None, out: str | None = None,
            overwrite: bool = False, device: str = "auto", log: Callable[[str], None] = print,
            min_lr: float = 1e-6, max_lr: float = 1.0, steps: int = 100, **settings) -> LRFinding:
    """Run the range test for a training configuration into its own directory (see lr_range_test)."""
    from .data import load_data
    from .train import prepare_run_dir, resolve_device

    config = dataclasses.replace(config or TrainConfig(), **settings).validate()
    from .speed import choose_threads

    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        choose_threads(config.threads, log)
    if dataset is None:
        dataset = load_data(config.data, data_dir=config.data_dir, seed=config.seed, limit=config.limit)
    run_dir = prepare_run_dir(out or config.out, dataclasses.replace(config, model=f"{config.model}-lrfind"),
                              overwrite=overwrite)
    return lr_range_test(config, dataset, run_dir, device=torch_device, log=log, min_lr=min_lr, max_lr=max_lr,
                         steps=steps)


def _cmd_lr_find(args: argparse.Namespace) -> None:
    from .cli import config_from_args

    settings = config_from_args(args)
    settings.pop("lr", None)
    finding = lr_find(TrainConfig.from_dict(settings), overwrite=args.overwrite, device=args.device,
                      min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
    print(f"suggested --lr {finding.lr:.3g}")


def add_commands(subparsers) -> None:
    """`aeopt lr-find`: the training flags, plus the sweep's range and length."""
    from .cli import add_train_flags

    p = subparsers.add_parser("lr-find", help="learning-rate range test: plot loss vs lr and suggest --lr")
    p.add_argument("--config", help="YAML file of settings; flags override it")
    p.add_argument("--min-lr", type=float, default=1e-6, help="start of the exponential sweep (default: 1e-6)")
    p.add_argument("--max-lr", type=float, default=1.0, help="end of the sweep (default: 1.0)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps in the sweep (default: 100)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_train_flags(p)
    p.set_defaults(func=_cmd_lr_find)
