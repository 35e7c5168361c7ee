"""The one training loop: every path that trains a model (train, optimize trials, sklearn, lr-find,
shrink fine-tuning, distillation, the codec) runs `fit()`.

What is trained and how its loss is made comes from the run's `Objective` (models/objective.py);
where batches come from, from a `BatchSource` (data/batches.py); what else should happen at a step
or an epoch, from `Callback`s (callbacks.py). The loop itself owns only what every run shares:
precision and memory layout (precision.py), the optimizer and schedule (optim.py), the CUDA-graph
step (cuda_graph.py), validation, "best" weights, early stopping and checkpoints (checkpoint.py).

Exact resume works because nothing random carries over between epochs: epoch e's order is a pure
function of (seed, e) and torch's global RNG (dropout, noise) is reseeded the same way, so a run
restarted from the checkpoint of epoch e-1 replays epoch e bit for bit.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..data.batches import BatchSource
from ..errors import AeoptError
from ..kernels.memory import keep_freed_memory
from ..models.objective import Objective
from ..runs import load_tensors, save_tensors
from ..settings import Settings
from .callbacks import Callback, DeadlinePlan
from .checkpoint import load_checkpoint, save_checkpoint, write_history
from .cuda_graph import GraphedStep, graph_reason
from .distributed import Group, average_gradients_before_step, wrap
from .grad_monitor import GradMonitor
from .optim import Schedule, build_optimizer, set_lr
from .precision import (CompiledForward, autocast, choose_threads, grad_scaler, has_conv, resolve_precision,
                        use_channels_last)
from .throughput import peak_gflops, throughput

LOG_EVERY = 20  # steps between host syncs (progress bar, NaN check): a sync per step costs time on GPUs
VAL_BATCH = 1024


class TrainingDiverged(AeoptError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AeoptError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


@dataclass
class FitResult:
    model: torch.nn.Module          # with the best validation weights loaded
    history: list[dict[str, float]]
    best_val: float
    best_epoch: int
    epochs: int
    train_seconds: float
    precision: str
    device: torch.device
    loop: "Loop" = field(repr=False)


class Loop:
    """The state of one training run; `fit()` builds one and calls `run()`."""

    def __init__(self, model: torch.nn.Module, objective: Objective, train: BatchSource, val: BatchSource | None,
                 settings: Settings, *, run_dir: Path | None, device: torch.device, log: Callable[[str], None],
                 progress: bool, callbacks: Iterable[Callback] = (), group: Group | None = None):
        self.settings, self.config = settings, settings  # `config`: the name hooks and tests have always used
        self.objective, self.train_source, self.val_source = objective, train, val
        self.run_dir, self.device, self.log, self.progress = run_dir, device, log, progress
        self.callbacks, self.group = list(callbacks), group
        self.writes = run_dir is not None and (group is None or group.is_main)  # only rank 0 writes files
        rt, opt = settings.runtime, settings.optimization
        if device.type == "cpu":
            choose_threads(rt.threads, log)  # every run's threads are decided here, and only here
            keep_freed_memory()  # no page faults on every step's fresh tensors (kernels/memory.py)
        self.model = model.to(device)
        counter = getattr(model, "train_flops_per_sample", None)
        self.flops = counter() if counter else 0
        self.precision = resolve_precision(rt.precision, device, self.flops, has_conv(self.model))
        self.scaler = grad_scaler(device, self.precision)
        self.channels_last = use_channels_last(device, self.model, self.precision, rt.memory_format)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        wrapped = wrap(self.model, objective.main_parameters(self.model), device) if group else self.model
        self.forward = CompiledForward(wrapped, log) if rt.compile else wrapped
        self.grad_monitor = GradMonitor(self.model, log)
        self.optimizer = build_optimizer(opt.optimizer, objective.main_parameters(self.model), lr=opt.lr,
                                         weight_decay=opt.weight_decay, momentum=opt.momentum,
                                         nesterov=opt.nesterov, fused=device.type == "cuda")
        self.extra_steps = objective.extra_steps(self.model)
        if group is not None:
            for extra in self.extra_steps.values():
                average_gradients_before_step(extra.optimizer, group.world_size)
        self.steps_per_epoch = math.ceil(len(train) / opt.batch_size)
        self.schedule = Schedule(opt.schedule, total_steps=opt.epochs * self.steps_per_epoch)
        self.epochs = opt.epochs  # a callback may re-plan it (optimize's retraining does)
        self.epoch, self.step, self.train_seconds = 0, 0, 0.0
        self.best_val, self.best_epoch, self.best_state = math.inf, 0, None
        self.history: list[dict[str, float]] = []
        self.stop = False  # set by a callback (e.g. a time budget): end after this step, keep the best weights
        self.graphed: GraphedStep | bool | None = None  # decided at the first step

    # --- one step ----------------------------------------------------------------------------
    def run_forward(self, x_in: torch.Tensor, *, cache: bool = True) -> dict:
        """The model's forward in the run's precision and layout (what objectives call)."""
        if self.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision, cache=cache):
            return self.forward(x_in)

    def forward_loss(self, x: torch.Tensor, *, cache: bool = True) -> tuple[dict, dict]:
        x_in = self.objective.prepare(x)
        return self.objective.compute(lambda inputs: self.run_forward(inputs, cache=cache), x_in, x)

    def train_step(self, x: torch.Tensor, *, sample_grads: bool = False) -> dict[str, torch.Tensor]:
        """One optimizer step on batch `x` (plus the objective's extra steps); returns the detached parts.
        On a GPU the step is replayed as a CUDA graph where it can be (cuda_graph.py)."""
        if self.graphed is None:
            reason = graph_reason(self)
            if reason and self.device.type == "cuda" and self.settings.runtime.cuda_graph:
                self.log(f"note: the training step runs eagerly, not as a CUDA graph: {reason}")
            self.graphed = False if reason else GraphedStep(self, self._graph_body, self.eager_step)
        parts = self.graphed(x, sample_grads=sample_grads) if self.graphed else self.eager_step(x, sample_grads)
        self.objective.after_step(self.step)
        for callback in self.callbacks:
            callback.on_step_end(self, x, parts)
        return parts

    def eager_step(self, x: torch.Tensor, sample_grads: bool = False) -> dict[str, torch.Tensor]:
        parts, out = self.forward_loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(parts["loss"]).backward()
        self.scaler.unscale_(self.optimizer)  # true gradients for the monitor and the clip
        if sample_grads:
            self.grad_monitor.sample()
        if self.settings.optimization.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.optimization.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        parts = {k: v.detach() for k, v in parts.items()}
        for extra in self.extra_steps.values():
            parts.update(extra.step(out, x))
        return parts

    def _graph_body(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the CUDA graph records before the optimizer update: loss, gradients, clipping."""
        parts, _ = self.forward_loss(x, cache=False)
        parts["loss"].backward()
        if self.settings.optimization.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.optimization.clip_grad)
        return {k: v.detach() for k, v in parts.items()}

    # --- epochs ------------------------------------------------------------------------------
    def run_epoch(self, bar) -> dict[str, float]:
        opt = self.settings.optimization
        torch.manual_seed(self.settings.dataset.seed * 1_000_003 + self.epoch)  # dropout/noise, replayable on resume
        sums: dict[str, torch.Tensor] = {}
        started, seen, last = time.perf_counter(), 0, self.steps_per_epoch - 1
        for i, x in enumerate(self.train_source.batches(self.epoch, opt.batch_size)):
            set_lr(self.optimizer, opt.lr * self.schedule.factor(self.step))
            logging = (i + 1) % LOG_EVERY == 0 or i == last
            parts = self.train_step(x, sample_grads=logging)
            for name, value in parts.items():  # sums stay on the device: no host sync per step
                sums[name] = sums.get(name, 0) + value.float() * len(x)
            seen += len(x)
            self.step += 1
            if logging and self.group is not None:
                self.agree_on_stop()
            if self.stop and (logging or self.group is None):  # ranks stop together, at a step they share
                break
            if logging:
                mean = sums["loss"].item() / seen
                if not math.isfinite(mean):
                    where = f" (last good checkpoint kept in {self.run_dir})" if self.run_dir else ""
                    raise TrainingDiverged(f"loss became {mean} at epoch {self.epoch + 1}, step {self.step}; lower "
                                           f"--lr or add --clip-grad 1.0{where}")
                if bar is not None:
                    rate = seen / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{mean:.4f}", samples_s=f"{rate:.0f}", refresh=False)
                    bar.update(self.step - bar.n)
        self.train_seconds += time.perf_counter() - started
        means = {name: float(total) / max(seen, 1) for name, total in sums.items()}
        return {"train_loss": means.pop("loss"), **{f"train_{name}": value for name, value in means.items()}}

    def agree_on_stop(self) -> None:
        """A callback's stop on any rank stops every rank: one rank leaving alone would leave the others
        waiting forever in the next gradient all-reduce."""
        self.stop = self.group.sum([float(self.stop)], self.device)[0] > 0

    def validation(self) -> dict[str, float]:
        """Mean validation figures over the validation split, in eval mode, without gradients."""
        if self.val_source is None:
            return {"val_loss": math.nan}
        self.model.eval()
        sums: dict[str, float] = {}
        count = 0
        with torch.no_grad():
            for x in self.val_source.in_order(VAL_BATCH):
                parts = self.objective.validate(lambda inputs: self.run_forward(inputs), x)
                for name, value in parts.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * len(x)
                count += len(x)
        self.model.train()
        if self.group is not None:  # the same figures, and so the same decisions, on every rank
            names = sorted(sums)
            *totals, count = self.group.sum([sums[n] for n in names] + [count], self.device)
            sums = dict(zip(names, totals))
        means = {name: total / max(count, 1) for name, total in sums.items()}
        return {"val_loss": means.pop("loss"), **{f"val_{name}": value for name, value in means.items()}}

    def run(self) -> None:
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.epochs * self.steps_per_epoch, initial=self.step, unit="step", dynamic_ncols=True)
        for callback in self.callbacks:
            callback.on_fit_start(self)
        try:
            while self.epoch < self.epochs and not self.stop:
                row = self.run_epoch(bar)
                row.update(self.validation())
                val_loss = row["val_loss"]
                self.epoch += 1
                self.schedule.end_of_epoch(val_loss)
                self.history.append({"epoch": self.epoch, "train_loss": row.pop("train_loss"), "val_loss": val_loss,
                                     "lr": float(self.optimizer.param_groups[0]["lr"]),
                                     "train_seconds": self.train_seconds, **self.grad_monitor.epoch_summary(),
                                     **{k: v for k, v in row.items() if k != "val_loss"}})
                for callback in self.callbacks:
                    callback.on_epoch_end(self, self.history[-1])
                if self.group is not None:
                    self.agree_on_stop()
                if bar is not None:
                    bar.set_description(f"epoch {self.epoch}/{self.epochs} val {val_loss:.4f}")
                if val_loss < self.best_val or math.isnan(val_loss):  # no validation split: the last epoch
                    self.best_val, self.best_epoch = val_loss, self.epoch
                    self.keep_best()
                if self.writes:
                    save_checkpoint(self)
                    write_history(self.run_dir / "history.csv", self.history)
                patience = self.settings.optimization.patience
                if patience and self.epoch - self.best_epoch >= patience:
                    self.log(f"early stop: no validation gain for {patience} epochs (best epoch {self.best_epoch})")
                    break
            if bar is not None:
                speed = self.throughput()
                bar.set_postfix(samples_s=f"{speed['samples_per_second']:.0f}",
                                gflops=f"{speed['gflops_per_second']:.1f}",
                                peak=f"{100 * speed['fraction_of_peak']:.0f}%")
        finally:
            if bar is not None:
                bar.close()
        self.restore_best()

    def keep_best(self) -> None:
        if self.writes:
            save_tensors(self.run_dir / "model.safetensors", self.model.state_dict())
        else:
            self.best_state = copy.deepcopy(self.model.state_dict())

    def restore_best(self) -> None:
        if self.writes and (self.run_dir / "model.safetensors").is_file():
            self.model.load_state_dict(load_tensors(self.run_dir / "model.safetensors"))
        elif self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def throughput(self) -> dict[str, float]:
        """Training-step speed so far (evaluation excluded) against the machine's matmul peak."""
        peak = peak_gflops(self.device.type, self.precision, torch.get_num_threads())
        processes = self.group.world_size if self.group else 1  # the run's rate, all processes together
        return throughput(len(self.train_source) * self.epoch * processes, self.train_seconds, self.flops,
                          peak * processes)

    def load_checkpoint(self) -> None:
        load_checkpoint(self)


def _budget_plan(settings: Settings, callbacks: Iterable[Callback]) -> list[Callback]:
    """`max_minutes` as a DeadlinePlan counted from the loop's start (a resumed run gets it afresh), unless
    the caller plans its own (optimize's retraining). One process only: train() refuses it with several,
    whose ranks would each plan their own epoch count and then wait for each other."""
    minutes = settings.optimization.max_minutes
    if minutes is None or any(isinstance(c, DeadlinePlan) for c in callbacks):
        return []
    return [DeadlinePlan(math.inf, settings.optimization.epochs, budget=60 * minutes)]


def fit(model: torch.nn.Module, objective: Objective, train: BatchSource, val: BatchSource | None,
        settings: Settings, *, run_dir: Path | None = None, device: str | torch.device | None = None,
        callbacks: Iterable[Callback] = (), log: Callable[[str], None] = print, progress: bool = True,
        resume: bool = False, setup: Callable[[Loop], Any] | None = None, group: Group | None = None) -> FitResult:
    """Train `model` on `objective` with batches from `train`; returns it with its best weights.

    Args:
        model: the module to train (moved to `device`).
        objective: what a step computes (models/objective.py).
        train, val: batch sources; `val` decides the best epoch and early stopping (None: the last epoch).
        settings: the run's settings (optim and runtime sections are read here).
        run_dir: where checkpoints, model.safetensors and history.csv go (None: nothing is written).
        device: "auto", "cpu", "cuda" or a torch.device (default: the settings' `device`). The batch sources
            must yield batches there. CPU threads come from the settings' `threads` (choose_threads).
        callbacks: step/epoch events (callbacks.py).
        resume: continue from `run_dir`'s checkpoint.
        setup: called with the Loop before training (after a resume has loaded), to inspect or seed it.
        group: this process's place in a multi-process run (train/distributed.py); the sources must then
            be sharded with its rank and world size. Only rank 0 writes `run_dir`.
    """
    device = device if isinstance(device, torch.device) else resolve_device(device or settings.runtime.device)
    callbacks = list(callbacks)
    callbacks += _budget_plan(settings, callbacks)
    loop = Loop(model, objective, train, val, settings, run_dir=run_dir, device=device, log=log, progress=progress,
                callbacks=callbacks, group=group)
    if resume:
        loop.load_checkpoint()
    if setup is not None:
        setup(loop)
    loop.run()
    if loop.channels_last:  # how this machine trains fastest, not part of the model: hand it back as
        loop.model.to(memory_format=torch.contiguous_format)  # aeopt.load() builds it, same outputs to the bit
    return FitResult(loop.model, loop.history, loop.best_val, loop.best_epoch, loop.epoch, loop.train_seconds,
                     loop.precision, device, loop)
