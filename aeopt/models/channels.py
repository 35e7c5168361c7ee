"""Channel surgery: remove whole channels (units) from a model so it becomes a smaller dense model.

A *link* joins a producer layer (Conv2d, ConvTranspose2d, Linear) to the next producer in the same
`nn.Sequential` (its consumer), through layers that act channel by channel (activations,
BatchNorm, Upsample, Flatten/Unflatten, padding, cropping). Dropping unit j of a link removes
the producer's output j, the per-channel state of the layers in between and the consumer's input j.
Across a Flatten (conv -> Linear) or an Unflatten (Linear -> conv) a unit is one channel's block of
`group` = H*W consecutive features, because flattening (C, H, W) is channel-major.

The last producer of the encoder (the code z) and of the decoder (the output) are never links, so
the model's interface (input shape, latent size, output) never changes.

A pruned run records `{producer name: kept units}` in its config (`extra["channels"]`);
`aeopt.runs.build_model` rebuilds the registry model and calls `keep_channels_` with those counts,
so the trainer, `aeopt.load` and fine-tuning all rebuild the smaller model from the config alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import AeoptError
from .layers import CropTo, PadTo

PRODUCERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
# Layers that act on each channel on its own: a channel can be removed through them.
CHANNELWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.ELU,
               nn.Sigmoid, nn.Upsample, nn.Dropout, nn.Identity, nn.Flatten, nn.Unflatten, PadTo, CropTo)


@dataclass
class Link:
    """A prunable connection: `producer` -> `between` layers -> `consumer`, in units of `group` features."""

    name: str                       # the producer's qualified name, the key in `extra["channels"]`
    producer: nn.Module
    consumer: nn.Module
    between: list[nn.Module] = field(default_factory=list)
    group: int = 1

    @property
    def units(self) -> int:
        n_out = _out_features(self.producer)
        return n_out // self.group if isinstance(self.producer, nn.Linear) else n_out


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _in_features(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def find_links(model: nn.Module) -> list[Link]:
    """Every prunable link of every `nn.Sequential` in the model, in order."""
    links = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        layers = list(seq.named_children())
        producers = [i for i, (_, m) in enumerate(layers) if isinstance(m, PRODUCERS)]
        for a, b in zip(producers[:-1], producers[1:]):
            producer, consumer = layers[a][1], layers[b][1]
            between = [m for _, m in layers[a + 1:b]]
            if not all(isinstance(m, CHANNELWISE) for m in between):
                continue
            if any(getattr(m, "groups", 1) != 1 for m in (producer, consumer)):
                continue
            n_out, n_in = _out_features(producer), _in_features(consumer)
            if isinstance(producer, nn.Linear) and not isinstance(consumer, nn.Linear):
                group = n_out // n_in      # Linear -> Unflatten -> conv: a channel is H*W features
            elif isinstance(consumer, nn.Linear) and not isinstance(producer, nn.Linear):
                group = n_in // n_out      # conv -> Flatten -> Linear
            else:
                group = 1
            if group < 1 or max(n_out, n_in) != group * min(n_out, n_in):
                continue
            name = f"{seq_name}.{layers[a][0]}" if seq_name else layers[a][0]
            links.append(Link(name, producer, consumer, between, group))
    return links


def channel_counts(model: nn.Module) -> dict[str, int]:
    """{producer name: units} for every prunable link."""
    return {link.name: link.units for link in find_links(model)}


def _expand(units: torch.Tensor, group: int) -> torch.Tensor:
    """Unit indices -> feature indices (unit j covers features j*group ... j*group+group-1)."""
    return (units[:, None] * group + torch.arange(group)).flatten()


def _select_(layer: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    tensor = getattr(layer, name)
    if tensor is None:
        return
    picked = tensor.detach().index_select(dim, index).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(layer, name, nn.Parameter(picked, requires_grad=tensor.requires_grad))
    else:
        layer.register_buffer(name, picked)


def _shrink_producer_(layer: nn.Module, rows: torch.Tensor) -> None:
    if isinstance(layer, nn.ConvTranspose2d):   # weight is (in, out, kh, kw)
        _select_(layer, "weight", 1, rows)
        layer.out_channels = len(rows)
    else:                                       # Conv2d (out, in, kh, kw), Linear (out, in)
        _select_(layer, "weight", 0, rows)
        if isinstance(layer, nn.Linear):
            layer.out_features = len(rows)
        else:
            layer.out_channels = len(rows)
    _select_(layer, "bias", 0, rows)


def _shrink_consumer_(layer: nn.Module, cols: torch.Tensor) -> None:
    if isinstance(layer, nn.ConvTranspose2d):
        _select_(layer, "weight", 0, cols)
        layer.in_channels = len(cols)
    else:
        _select_(layer, "weight", 1, cols)
        if isinstance(layer, nn.Linear):
            layer.in_features = len(cols)
        else:
            layer.in_channels = len(cols)


def _shrink_between_(layer: nn.Module, units: torch.Tensor, group: int) -> None:
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        # BatchNorm2d sees channels; BatchNorm1d sees the flat features (a channel's block of `group`)
        features = units if isinstance(layer, nn.BatchNorm2d) else _expand(units, group)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _select_(layer, name, 0, features)
        layer.num_features = len(features)
    elif isinstance(layer, nn.Unflatten):
        layer.unflattened_size = (len(units), *tuple(layer.unflattened_size)[1:])


def keep_channels_(model: nn.Module, keep: dict[str, torch.Tensor | list[int] | int]) -> nn.Module:
    """Keep only the given units of each named link, in place; returns the model.

    Args:
        model: a model whose links (see `find_links`) are named in `keep`.
        keep: producer name -> indices of the units to keep, or a count (keeps the first N: enough
            to rebuild the shape before loading pruned weights).
    """
    links = {link.name: link for link in find_links(model)}
    for name, units in keep.items():
        if name not in links:
            raise AeoptError(f"the model has no prunable layer {name!r} (known: {', '.join(links)}); "
                             "the run's config does not match its model")
        link = links[name]
        units = torch.arange(units) if isinstance(units, int) else torch.as_tensor(units, dtype=torch.long)
        if not 1 <= len(units) <= link.units:
            raise AeoptError(f"layer {name} has {link.units} channels; cannot keep {len(units)}")
        units = units.sort().values
        features = _expand(units, link.group)
        _shrink_producer_(link.producer, features if isinstance(link.producer, nn.Linear) else units)
        _shrink_consumer_(link.consumer, features if isinstance(link.consumer, nn.Linear) else units)
        for layer in link.between:
            _shrink_between_(layer, units, link.group)
    return model
