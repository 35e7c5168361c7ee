"""Pruning: global magnitude (unstructured) and channel pruning (structured), with iterative fine-tuning.

Unstructured pruning zeroes the smallest weights across all conv/linear layers at once (a global
threshold, so layers with many redundant weights give up more); the zeros stay zero during
fine-tuning through a step callback. The file does not shrink and dense kernels do not speed up.

Structured pruning removes whole channels (see aeopt.models.channels): the result is a smaller
dense model, so it is smaller on disk and faster. Each producer's channels are ranked by the norm of
their filters after folding in the following BatchNorm's scale (gamma / sqrt(var + eps)): BatchNorm
would otherwise rescale a small filter back up, so the raw norm alone says little.

Both run in rounds: round r prunes to 1 - (1 - F)^(r / rounds) of the weights/channels, so each
round removes the same proportion of what is left, then fine-tunes with the one training loop.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn

from ..data import Dataset
from ..data.datasets import batch_source
from ..errors import AeoptError
from ..models.channels import PRODUCERS, Link, find_links, keep_channels_
from ..settings import Settings
from ..train import OnStepEnd, fit, resolve_device

NORMS = ("l1", "l2")


def check_fraction(fraction: float) -> None:
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):
        raise AeoptError(f"--prune must be a fraction between 0 and 1 (e.g. 0.5), got {fraction!r}")


# --- unstructured ------------------------------------------------------------------------------
def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight tensors of conv and linear layers (biases and norms are never pruned)."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, PRODUCERS)}


def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Masks (True = keep) that zero the `sparsity` fraction of smallest |w| over all layers together."""
    weights = prunable_weights(model)
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    k = int(round(sparsity * magnitudes.numel()))
    if k == 0:
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    threshold = magnitudes.kthvalue(k).values
    masks = {name: w.detach().abs() > threshold for name, w in weights.items()}
    return masks  # weights tied with the threshold go too, so the sparsity is at least the request


def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    weights = prunable_weights(model)
    with torch.no_grad():
        for name, mask in masks.items():
            weights[name].mul_(mask)


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries among the prunable weights."""
    weights = prunable_weights(model).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


# --- structured --------------------------------------------------------------------------------
def channel_scores(link: Link, norm: str = "l2") -> torch.Tensor:
    """One importance score per unit of a link: the norm of its BatchNorm-folded filter."""
    producer = link.producer
    weight = producer.weight.detach()
    rows = weight.transpose(0, 1) if isinstance(producer, nn.ConvTranspose2d) else weight  # (out, ...)
    rows = rows.flatten(1)
    batch_norm = next((m for m in link.between if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))), None)
    if batch_norm is not None and batch_norm.weight is not None:
        scale = batch_norm.weight.detach().abs() / (batch_norm.running_var + batch_norm.eps).sqrt()
        if len(scale) == len(rows):
            rows = rows * scale[:, None]
        else:  # BatchNorm2d after an Unflatten: one scale per channel, `group` rows per channel
            rows = rows * scale.repeat_interleave(link.group)[:, None]
    per_unit = rows.reshape(link.units, -1) if isinstance(producer, nn.Linear) else rows
    return per_unit.abs().sum(1) if norm == "l1" else per_unit.norm(dim=1)


# --- the iterative schedule -------------------------------------------------------------------
def _finetune(model: nn.Module, config: Settings, dataset: Dataset, epochs: int,
              masks: dict[str, torch.Tensor] | None, log: Callable[[str], None]) -> nn.Module:
    """A few epochs of the one loop on the pruned model itself, the masks re-applied after every step."""
    # A gentler peak rate than training from scratch: the weights are already near a good minimum.
    tuned = config.replace(epochs=epochs, lr=config.lr / 3, patience=None)
    device = resolve_device(tuned.runtime.device)
    steps = -(-len(dataset.x_train) // tuned.batch_size)
    objective = model.objective(tuned, in_unit_range=dataset.in_unit_range, steps_per_epoch=steps)
    seed = tuned.seed
    callbacks = [OnStepEnd(lambda loop, batch, parts: apply_masks_(loop.model, masks))] if masks is not None else []
    return fit(model, objective, batch_source(dataset.x_train, seed=seed, device=device),
               batch_source(dataset.x_val, seed=seed, device=device), tuned, device=device, callbacks=callbacks,
               log=log, progress=False).model


def prune(model: nn.Module, config: Settings, dataset: Dataset, *, fraction: float,
          structured: bool = False, rounds: int = 3, epochs_per_round: int = 2, norm: str = "l2",
          log: Callable[[str], None] = print) -> tuple[nn.Module, dict[str, int] | None]:
    """Prune `model` (trained with `config`) in `rounds` rounds, fine-tuning after each.

    Args:
        model: the trained model (left untouched: a copy is pruned).
        config: its training settings (the fine-tuning uses them).
        dataset: the data to fine-tune on.
        fraction: of the weights (unstructured) or of each layer's channels (structured) to remove.
        structured: remove channels instead of zeroing single weights.
        rounds, epochs_per_round: the schedule; epochs_per_round 0 prunes without fine-tuning.
        norm: l1 | l2, the channel ranking norm.

    Returns:
        The pruned, fine-tuned model and, when structured, each layer's kept channel count (what the run's
        `artifact` records so that `aeopt.load` rebuilds the narrower model).
    """
    check_fraction(fraction)
    if rounds < 1:
        raise AeoptError(f"--prune-rounds must be >= 1, got {rounds}")
    model = copy.deepcopy(model).cpu().eval()
    original = {link.name: link.units for link in find_links(model)}
    if structured and not original:
        raise AeoptError(f"model {config.model!r} has no channels that can be removed; use unstructured pruning")
    masks, channels = None, None
    for r in range(1, rounds + 1):
        keep_fraction = (1 - fraction) ** (r / rounds)
        if structured:
            keep = {}
            for link in find_links(model):
                count = min(link.units, max(1, round(original[link.name] * keep_fraction)))
                keep[link.name] = channel_scores(link, norm).topk(count).indices
            keep_channels_(model, keep)
            channels = {n: int(len(k)) for n, k in keep.items()}
        else:
            masks = magnitude_masks(model, 1 - keep_fraction)
            apply_masks_(model, masks)
        log(f"prune round {r}/{rounds}: {'channels' if structured else 'weights'} kept {keep_fraction:.2f}, "
            f"{sum(p.numel() for p in model.parameters()):,} params")
        if epochs_per_round:
            model = _finetune(model, config, dataset, epochs_per_round, masks, log).cpu().eval()
    return model, channels


def pruning_summary(model: nn.Module) -> dict[str, float | int]:
    return {"params": sum(p.numel() for p in model.parameters()), "sparsity": round(sparsity(model), 4)}


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(m.weight.shape) for name, m in model.named_modules() if isinstance(m, PRODUCERS)}
