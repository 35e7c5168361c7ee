"""The trainer: batches straight from in-memory tensors, bf16 autocast, checkpoints, exact resume.

The fast path (precision, channels_last, --compile, the matmul peak) lives in speed.py, the GPU
step replayed as a CUDA graph in cuda_graph.py, the gradient health monitor in grad_monitor.py, the
learning-rate range test in lr_find.py.

Exact resume works because nothing random carries over between epochs: epoch e shuffles with a
generator seeded by (seed, e) and reseeds torch's global RNG (dropout) the same way, so a run
restarted from the checkpoint of epoch e-1 replays epoch e bit for bit.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .config import TrainConfig
from .data import Dataset, load_data
from .errors import AeoptError
from .grad_monitor import GradMonitor
from .losses import build_loss, choose_auto_loss, l1_weight_penalty
from .optim import Schedule, build_optimizer, match_param_layout, plain_lr, set_lr
from .runs import (build_model, flatten_state, load_tensors, read_config, save_config, save_tensors,
                   unflatten_state, write_json)
from .speed import (CompiledForward, autocast, choose_threads, grad_scaler, has_conv, keep_freed_memory,
                    peak_gflops, resolve_precision, throughput, use_channels_last)

LOG_EVERY = 20  # steps between host syncs (progress bar, NaN check): a sync per step costs time on GPUs


class TrainingDiverged(AeoptError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    path: Path
    model: torch.nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AeoptError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).to(device)


def batched_loss(model, loss_fn, x: torch.Tensor, batch_size: int, autocast) -> float:
    """Mean loss over a tensor, in eval mode, without gradients."""
    model.eval()
    total = 0.0
    with torch.no_grad(), autocast():
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            total += float(loss_fn(model(batch), batch)["loss"]) * len(batch)
    model.train()
    return total / len(x)


def prepare_run_dir(out: str | None, config: TrainConfig, *, overwrite: bool) -> Path:
    if out is None:
        out = f"runs/{config.data.split(':')[0]}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(out)
    if path.exists():
        if not overwrite:
            raise AeoptError(f"{path} already exists; pass --overwrite to replace it or --out to choose another")
        if not (path / "config.yaml").is_file() and any(path.iterdir()):
            raise AeoptError(f"{path} exists and is not an aeopt run directory; refusing to delete it")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


class Trainer:
    """One training run. `fit()` trains, checkpoints and returns the best model's metrics."""

    def __init__(self, config: TrainConfig, dataset: Dataset, run_dir: Path, *, device: torch.device,
                 log: Callable[[str], None], progress: bool):
        self.config, self.dataset, self.run_dir, self.device = config, dataset, run_dir, device
        self.log, self.progress = log, progress
        if device.type == "cpu":
            keep_freed_memory()  # no page faults on every step's fresh tensors (speed.py)
        torch.manual_seed(config.seed)
        self.model = build_model(config, data_info(dataset)).to(device)
        self.flops = self.model.train_flops_per_sample()
        self.precision = resolve_precision(config.precision, device, self.flops, has_conv(self.model))
        self.scaler = grad_scaler(device, self.precision)
        self.channels_last = use_channels_last(device, self.model, self.precision, config.memory_format)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = CompiledForward(self.model, log) if config.compile else self.model
        self.grad_monitor = GradMonitor(self.model, log)
        self.loss_fn = build_loss(config.loss, in_unit_range=dataset.in_unit_range, sparse_l1=config.sparse_l1)
        self.optimizer = build_optimizer(config.optimizer, self.model, lr=config.lr, weight_decay=config.weight_decay,
                                         momentum=config.momentum, nesterov=config.nesterov,
                                         fused=device.type == "cuda")
        self.steps_per_epoch = math.ceil(len(dataset.x_train) / config.batch_size)
        self.schedule = Schedule(config.schedule, total_steps=config.epochs * self.steps_per_epoch)
        self.x_train = dataset.x_train.to(device)
        self.x_val = dataset.x_val.to(device)
        self.epoch, self.step, self.train_seconds = 0, 0, 0.0
        self.best_val, self.best_epoch = math.inf, 0
        self.history: list[dict[str, float]] = []
        # Extension points, installed by a `setup` function passed to train() (variants, distillation,
        # search pruning) so that none of them needs its own copy of the loop:
        self.corrupt: Callable[[torch.Tensor], torch.Tensor] | None = None  # model input from clean x (denoising)
        self.target: Callable[[torch.Tensor], torch.Tensor] | None = None   # what to reconstruct (distillation)
        self.step_hooks: list[Callable[["Trainer", torch.Tensor, dict], None]] = []  # after each optimizer step
        self.epoch_hooks: list[Callable[["Trainer", dict], None]] = []  # after each epoch, given its history row
        self.stop_requested = False  # set by a hook (e.g. a time budget): end after this step, keep the best weights
        self.extra_optimizers: dict[str, torch.optim.Optimizer] = {}  # e.g. an AAE's discriminator: checkpointed too
        self.graphed = None  # the CUDA-graph step, decided at the first step (after every hook is installed)
        from .variants import install_variants

        install_variants(self)  # denoising, sparse-KL, contractive, VAE warm-up, AAE: set by the config

    def autocast(self):
        return autocast(self.device, self.precision)

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        tensors, skeleton = flatten_state({
            "model": self.model.state_dict(), "optimizer": plain_lr(self.optimizer.state_dict()),
            "extra_optimizers": {name: opt.state_dict() for name, opt in self.extra_optimizers.items()}})
        save_tensors(self.run_dir / "checkpoint.safetensors", tensors)
        write_json(self.run_dir / "checkpoint.json", {
            "state": skeleton, "epoch": self.epoch, "step": self.step, "train_seconds": self.train_seconds,
            "best_val": self.best_val, "best_epoch": self.best_epoch, "schedule": self.schedule.state(),
            "history": self.history})

    def load_checkpoint(self) -> None:
        meta_path = self.run_dir / "checkpoint.json"
        if not meta_path.is_file():
            raise AeoptError(f"{self.run_dir} has no checkpoint to resume from; start a new run instead")
        meta = json.loads(meta_path.read_text())
        state = unflatten_state(meta["state"], load_tensors(self.run_dir / "checkpoint.safetensors"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        match_param_layout(self.optimizer)
        for name, optimizer in self.extra_optimizers.items():
            optimizer.load_state_dict(state["extra_optimizers"][name])
            match_param_layout(optimizer)
        self.epoch, self.step, self.train_seconds = meta["epoch"], meta["step"], meta["train_seconds"]
        self.best_val = math.inf if meta["best_val"] is None else meta["best_val"]
        self.best_epoch, self.history = meta["best_epoch"], meta["history"]
        self.schedule.load_state({k: (math.inf if v is None else v) for k, v in meta["schedule"].items()})

    # --- the loop ----------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, *, sample_grads: bool = False) -> torch.Tensor:
        """One optimizer step on batch `x`; `sample_grads` feeds the gradient monitor (a host sync).
        On a GPU the step is replayed as a CUDA graph where it can be (cuda_graph.py)."""
        if self.graphed is None:
            from .cuda_graph import GraphedStep, graph_reason

            reason = graph_reason(self)
            if reason and self.device.type == "cuda" and self.config.cuda_graph:
                self.log(f"note: the training step runs eagerly, not as a CUDA graph: {reason}")
            self.graphed = False if reason else GraphedStep(self, self._graph_body, self.eager_step)
        if self.graphed:
            return self.graphed(x, sample_grads=sample_grads)
        return self.eager_step(x, sample_grads=sample_grads)

    def forward_loss(self, x: torch.Tensor, *, cache: bool = True) -> tuple[torch.Tensor, dict]:
        """The training loss on batch `x` and the model's outputs (`cache`: autocast's weight-cast cache,
        which CUDA graph capture must not use)."""
        x_in = self.corrupt(x) if self.corrupt else x
        if self.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision, cache=cache):
            out = self.forward(x_in)
        target = self.target(x) if self.target else x
        parts = self.loss_fn(out, target)
        loss = parts["loss"] + sum(self.model.penalties(out, x_in).values())
        if self.config.l1_weights:
            loss = loss + self.config.l1_weights * l1_weight_penalty(self.model)
        return loss, out

    def eager_step(self, x: torch.Tensor, *, sample_grads: bool = False) -> torch.Tensor:
        loss, out = self.forward_loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # true gradients for the monitor and the clip
        if sample_grads:
            self.grad_monitor.sample()
        if self.config.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for hook in self.step_hooks:
            hook(self, x, out)
        return loss.detach()

    def _graph_body(self, x: torch.Tensor) -> torch.Tensor:
        """What the CUDA graph records before the optimizer update: loss, gradients, clipping."""
        loss, _ = self.forward_loss(x, cache=False)
        loss.backward()
        if self.config.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        return loss.detach()

    def run_epoch(self, bar) -> float:
        cfg = self.config
        torch.manual_seed(cfg.seed * 1_000_003 + self.epoch)  # dropout noise, replayable on resume
        order = epoch_order(len(self.x_train), cfg.seed, self.epoch, self.device)
        running = torch.zeros((), device=self.device)
        started, seen = time.perf_counter(), 0
        for i, start in enumerate(range(0, len(order), cfg.batch_size)):
            set_lr(self.optimizer, cfg.lr * self.schedule.factor(self.step))
            x = self.x_train.index_select(0, order[start:start + cfg.batch_size])
            logging = (i + 1) % LOG_EVERY == 0 or start + cfg.batch_size >= len(order)
            running += self.train_step(x, sample_grads=logging) * len(x)
            seen += len(x)
            self.step += 1
            if self.stop_requested:
                break
            if logging:
                mean = running.item() / seen
                if not math.isfinite(mean):
                    raise TrainingDiverged(
                        f"loss became {mean} at epoch {self.epoch + 1}, step {self.step}; lower --lr or add "
                        f"--clip-grad 1.0 (last good checkpoint kept in {self.run_dir})")
                if bar is not None:
                    rate = seen / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{mean:.4f}", samples_s=f"{rate:.0f}", refresh=False)
                    bar.update(self.step - bar.n)
        self.train_seconds += time.perf_counter() - started
        return running.item() / seen

    def fit(self) -> None:
        cfg = self.config
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.epochs * self.steps_per_epoch, initial=self.step, unit="step", dynamic_ncols=True)
        try:
            while self.epoch < cfg.epochs and not self.stop_requested:
                train_loss = self.run_epoch(bar)
                val_loss = batched_loss(self.model, self.loss_fn, self.x_val, 1024, self.autocast)
                self.epoch += 1
                self.schedule.end_of_epoch(val_loss)
                self.history.append({"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss,
                                     "lr": float(self.optimizer.param_groups[0]["lr"]),
                                     "train_seconds": self.train_seconds, **self.grad_monitor.epoch_summary()})
                for hook in self.epoch_hooks:
                    hook(self, self.history[-1])
                if bar is not None:
                    bar.set_description(f"epoch {self.epoch}/{cfg.epochs} val {val_loss:.4f}")
                if val_loss < self.best_val:
                    self.best_val, self.best_epoch = val_loss, self.epoch
                    save_tensors(self.run_dir / "model.safetensors", self.model.state_dict())
                self.save_checkpoint()
                write_history(self.run_dir / "history.csv", self.history)
                if cfg.patience and self.epoch - self.best_epoch >= cfg.patience:
                    self.log(f"early stop: no validation gain for {cfg.patience} epochs (best epoch {self.best_epoch})")
                    break
            if bar is not None:
                speed = self.throughput()
                bar.set_postfix(samples_s=f"{speed['samples_per_second']:.0f}",
                                gflops=f"{speed['gflops_per_second']:.1f}",
                                peak=f"{100 * speed['fraction_of_peak']:.0f}%")
        finally:
            if bar is not None:
                bar.close()
        self.model.load_state_dict(load_tensors(self.run_dir / "model.safetensors"))

    def throughput(self) -> dict[str, float]:
        """Training-step speed so far (evaluation excluded) against the machine's matmul peak."""
        peak = peak_gflops(self.device.type, self.precision, torch.get_num_threads())
        samples = len(self.x_train) * self.epoch
        return throughput(samples, self.train_seconds, self.flops, peak)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    from .runs import atomic_write_text

    columns = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(columns)] + [",".join(f"{row.get(c, '')}" for c in columns) for row in history]
    atomic_write_text(path, "\n".join(lines) + "\n")


def data_info(dataset: Dataset) -> dict[str, Any]:
    """What the run must remember about its data to rebuild and apply the model later."""
    return {"sample_shape": list(dataset.sample_shape), "is_image": dataset.is_image,
            "output": "sigmoid" if dataset.in_unit_range else "linear", "scaler": dataset.scaler,
            "n_train": len(dataset.x_train), "n_val": len(dataset.x_val), "n_test": len(dataset.x_test)}


def _print(message: str) -> None:
    print(message, flush=True)


def train(config: TrainConfig | None = None, *, dataset: Dataset | None = None, resume: str | Path | None = None,
          overwrite: bool = False, progress: bool = True, log: Callable[[str], None] = _print,
          device: str = "auto", setup: Callable[[Trainer], None] | None = None, **settings) -> TrainResult:
    """Train an autoencoder and write its run directory.

    Args:
        config: all settings; or pass them as keywords (`train(data="digits", latent_dim=8)`).
        dataset: an already loaded `Dataset` (skips loading `config.data`).
        resume: a run directory to continue from its last checkpoint (`epochs` may be raised).
        overwrite: replace an existing run directory at `config.out`.
        progress: show a progress bar.
        log: where one-line messages go (`print` by default).
        device: "auto", "cpu" or "cuda".
        setup: called with the Trainer before training, to install hooks (see Trainer.__init__).

    Returns:
        A TrainResult with the run directory, the best model and its metrics.
    """
    from .evaluate import evaluate_model

    if resume is not None:
        config, _ = read_config(resume)
        config = dataclasses.replace(config, **settings)
    else:
        config = dataclasses.replace(config or TrainConfig(), **settings)
    config.validate()
    if config.model == "codec":  # its own objective and loop until the layout-v2 merge (aeopt/codec/train.py)
        from .codec.train import train_codec

        return train_codec(config, dataset=dataset, overwrite=overwrite, progress=progress, log=log, resume=resume)
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        choose_threads(config.threads, log)
    if dataset is None:
        dataset = load_data(config.data, data_dir=config.data_dir, seed=config.seed, limit=config.limit)
    if config.loss == "auto":
        log(f"loss auto -> {choose_auto_loss(dataset.in_unit_range)[1]}")
    build_model(config, data_info(dataset))  # fail on bad model settings before any directory exists
    build_loss(config.loss, in_unit_range=dataset.in_unit_range, sparse_l1=config.sparse_l1)
    run_dir = Path(resume) if resume is not None else prepare_run_dir(config.out, config, overwrite=overwrite)
    config.out = str(run_dir)
    if config.lr == "auto":
        from .lr_find import lr_range_test

        found = lr_range_test(config, dataset, run_dir, device=torch_device, log=log, setup=setup)
        config.lr = found.lr  # the run remembers the number, so --resume needs no second sweep
    trainer = Trainer(config, dataset, run_dir, device=torch_device, log=log, progress=progress)
    save_config(run_dir, config, data_info(dataset))
    if setup is not None:
        setup(trainer)
    if resume is not None:
        trainer.load_checkpoint()
    trainer.fit()
    metrics = evaluate_model(trainer.model, dataset, device=torch_device)
    metrics.update({
        "params": trainer.model.num_params(), "train_flops_per_sample": trainer.flops,
        "train_seconds": trainer.train_seconds,
        **trainer.throughput(),
        "epochs": trainer.epoch, "best_epoch": trainer.best_epoch, "best_val_loss": trainer.best_val,
        "loss": trainer.loss_fn.spec, "precision": trainer.precision, "device": str(torch_device),
        "memory_format": "channels_last" if trainer.channels_last else "contiguous",
        "cuda_graph": bool(trainer.graphed and trainer.graphed.graph is not None),
    })
    write_json(run_dir / "metrics.json", metrics)
    from .report import write_report

    write_report(run_dir, trainer.model, dataset, metrics, trainer.history)
    return TrainResult(run_dir, trainer.model, metrics, trainer.history)
