"""A private training loop for the codec until main's `aeopt.train.fit` lands (tag layout-v2).

TO BE DELETED at the merge: it drives the same Objective protocol (compute / main_parameters /
extra_steps) that fit() takes, so the switch is a change of the call site only. Adam with a short
linear warm-up and cosine decay, gradient clipping at 1 (GDN's early steps can spike), the best
validation loss's weights kept, an optional wall-clock budget.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import AeoptError

WARMUP_STEPS = 200


@dataclass
class DevFitResult:
    model: torch.nn.Module
    history: list[dict]
    best_val: float
    best_epoch: int
    epochs: int
    train_seconds: float
    steps: int


def _tensor_batches(x: torch.Tensor, seed: int, epoch: int, batch_size: int):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    for start in range(0, len(x), batch_size):
        yield x.index_select(0, order[start:start + batch_size])


def _batches(source, seed, epoch, batch_size):
    if isinstance(source, torch.Tensor):
        return _tensor_batches(source, seed, epoch, batch_size)
    return source.batches(epoch, batch_size, "cpu")


@torch.no_grad()
def _validate(model, objective, x_val) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    n = 0
    for start in range(0, len(x_val), 256):
        x = x_val[start:start + 256]
        parts, _ = objective.compute(model, x, x)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(x)
        n += len(x)
    model.train()
    return {k: v / n for k, v in totals.items()}


def fit(model, objective, train, val: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int = 0,
        max_seconds: float | None = None, log: Callable[[str], None] = print, progress: bool = True) -> DevFitResult:
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(objective.main_parameters(model), lr=lr)
    extra = objective.extra_steps(model)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = epochs * steps_per_epoch
    history, best_val, best_epoch, best_state = [], math.inf, 0, None
    step, started = 0, time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="step", dynamic_ncols=True)
    model.train()
    try:
        for epoch in range(epochs):
            sums, seen = {}, 0
            for x in _batches(train, seed, epoch, batch_size):
                factor = min(1.0, (step + 1) / WARMUP_STEPS) * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
                for group in optimizer.param_groups:
                    group["lr"] = lr * max(factor, 0.01)
                parts, out = objective.compute(model, objective.prepare(x), x)
                optimizer.zero_grad(set_to_none=True)
                parts["loss"].backward()
                torch.nn.utils.clip_grad_norm_(objective.main_parameters(model), 1.0)
                optimizer.step()
                for name, extra_step in extra.items():
                    parts.update({f"{name}": v for k, v in extra_step.step(out, x).items()})
                step += 1
                seen += len(x)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(x)
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0:
                        bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", bpp=f"{sums['bpp'] / seen:.3f}",
                                        psnr=f"{sums['psnr'] / seen:.2f}", refresh=False)
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    break
            if not math.isfinite(sums.get("loss", math.nan)):
                raise AeoptError(f"the codec's loss became NaN at epoch {epoch + 1}; lower --lr")
            row = {"epoch": epoch + 1, **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
                   **{f"val_{k}": v for k, v in _validate(model, objective, val).items()},
                   "train_seconds": time.perf_counter() - started}
            history.append(row)
            log(f"epoch {epoch + 1}: val loss {row['val_loss']:.4f}, bpp {row['val_bpp']:.4f}, "
                f"PSNR {row['val_psnr']:.2f} dB")
            if row["val_loss"] < best_val:
                best_val, best_epoch = row["val_loss"], epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                break
    finally:
        if bar is not None:
            bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return DevFitResult(model, history, best_val, best_epoch, len(history), time.perf_counter() - started, step)
