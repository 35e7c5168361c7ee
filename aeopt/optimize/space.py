"""The search space: which settings a search tries, with defaults fitted to the data's shape.

A space maps a setting name to a `Dimension`: a fixed value, a list of choices, or an int/float
range (optionally log-scaled). A YAML file narrows or widens it, key by key:

    model: conv                         # fixed
    activation: [relu, silu]            # choices
    width: {low: 8, high: 96, log: true}  # range (ints stay ints)

Architecture settings are conditional: conv knobs are only drawn for conv trials, mlp knobs for
mlp trials, so the sampler never learns from settings a model did not use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AeoptError
from ..models import list_models
from ..models.base import ACTIVATIONS
from ..models.layers import NORMS
from ..models.losses import build_loss
from ..settings import OPTIMIZERS, SCHEDULES, read_yaml

CONV_KNOBS = ("width", "depth", "blocks", "kernel_size", "decoder", "norm")
MLP_KNOBS = ("hidden_layers", "hidden_size", "dropout")
SHARED_KNOBS = ("activation",)
TRAINING = ("loss", "optimizer", "lr", "weight_decay", "batch_size", "schedule")
INTS = ("latent_dim", "width", "depth", "blocks", "kernel_size", "hidden_layers", "hidden_size", "batch_size")
MAY_BE_ZERO = ("blocks",)  # the other integer settings must be >= 1
FLOATS = ("lr", "weight_decay", "dropout")
ORDER = ("model", "latent_dim", *SHARED_KNOBS, *CONV_KNOBS, *MLP_KNOBS, *TRAINING)


@dataclass(frozen=True)
class Dimension:
    """One searched setting: `choices` (a single choice = fixed) or a [low, high] range."""

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def fixed(self) -> bool:
        return self.choices is not None and len(self.choices) == 1

    def suggest(self, trial) -> Any:
        """Draw this setting for an Optuna trial (fixed values are recorded as user attributes)."""
        if self.fixed:
            trial.set_user_attr(self.name, self.choices[0])
            return self.choices[0]
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.name in INTS:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def to_yaml(self) -> Any:
        if self.choices is not None:
            return self.choices[0] if self.fixed else list(self.choices)
        return {"low": self.low, "high": self.high, "log": self.log}


SearchSpace = dict[str, Dimension]


def default_space(sample_shape: tuple[int, ...], *, in_unit_range: bool, latent_dim: int | None) -> SearchSpace:
    """A space that makes sense for samples of this shape: conv + mlp for images, mlp for tables."""
    n_features = math.prod(sample_shape)
    is_image = len(sample_shape) == 3
    # Stride-2 stages until about 2-4 pixels are left: 8x8 -> up to 2 stages, 28x28 -> up to 3.
    max_depth = max(1, int(math.log2(min(sample_shape[1:]) / 2))) if is_image else 1
    # Ranges fitted to what trains well in few epochs: AdamW at 1e-3..1e-2 with a warm-up schedule,
    # batches of 64..256 (smaller ones collapse CPU throughput), no constant learning rate.
    values: dict[str, Any] = {
        "model": ["conv", "mlp"] if is_image else "mlp",
        "latent_dim": latent_dim if latent_dim else {"low": 2, "high": max(2, min(64, n_features // 2)), "log": True},
        "activation": ["relu", "leaky_relu", "gelu", "silu"],
        "width": {"low": 8, "high": 64, "log": True},
        "depth": {"low": 1, "high": max_depth},
        "blocks": [0, 1, 2],
        "kernel_size": [3, 5],
        "decoder": ["transposed", "upsample"],
        "norm": ["batch", "group", "none"],
        "hidden_layers": {"low": 1, "high": 3},
        "hidden_size": {"low": 32 if n_features < 256 else 64, "high": max(64, min(1024, 4 * n_features)),
                        "log": True},
        "dropout": 0.0,
        "loss": ["bce", "mse"] if in_unit_range else ["mse", "huber"],
        "optimizer": "adamw",
        "lr": {"low": 1e-3, "high": 1e-2, "log": True},
        "weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
        "batch_size": [64, 128, 256],
        "schedule": ["onecycle", "cosine"],
    }
    return {name: parse_dimension(name, value, "default space") for name, value in values.items()}


def load_space(path: str | Path | None, base: SearchSpace) -> SearchSpace:
    """`base` with the settings of a YAML space file replacing its dimensions, checked key by key."""
    if path is None:
        return base
    values = read_yaml(path)
    unknown = sorted(map(str, set(values) - set(ORDER)))  # keys may be numbers or dates: compare as text
    if unknown:
        raise AeoptError(f"{path}: unknown search setting {', '.join(unknown)}; known: {', '.join(ORDER)}")
    space = dict(base)
    for name, value in values.items():
        space[name] = parse_dimension(name, value, str(path))
    for name in space:
        check_values(space[name], str(path))
    return space


def parse_dimension(name: str, value: Any, source: str) -> Dimension:
    """A Dimension from a YAML value: scalar (fixed), list (choices) or {low, high, log} (range)."""
    if isinstance(value, dict):
        extra = sorted(map(str, set(value) - {"low", "high", "log"}))
        if extra or not {"low", "high"} <= set(value):
            raise AeoptError(f"{source}: {name} range must be {{low: L, high: H[, log: true]}}, got {value}")
        if name not in INTS + FLOATS:
            raise AeoptError(f"{source}: {name} takes a list of choices, not a range")
        low, high, log = value["low"], value["high"], value.get("log", False)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in (low, high)):
            raise AeoptError(f"{source}: {name} range bounds must be finite numbers, got {low!r} and {high!r}")
        if name in INTS and not (float(low).is_integer() and float(high).is_integer()):
            raise AeoptError(f"{source}: {name} takes whole numbers, got {low!r}..{high!r}")
        if low > high:
            raise AeoptError(f"{source}: {name} range is empty (low {low} > high {high}); swap or widen it")
        if log and low <= 0:
            raise AeoptError(f"{source}: {name} log range needs low > 0, got {low}")
        if low == high:
            return Dimension(name, choices=(int(low) if name in INTS else float(low),))
        return Dimension(name, low=low, high=high, log=bool(log))
    choices = value if isinstance(value, list) else [value]
    if not choices:
        raise AeoptError(f"{source}: {name} has an empty list of choices; give at least one value")
    if any(isinstance(c, (dict, list)) for c in choices):
        raise AeoptError(f"{source}: {name} choices must be plain values, got {value}")
    return Dimension(name, choices=tuple(choices))


def _finite(v: int | float) -> bool:
    """A bound a float can hold: not NaN, not infinite, not an integer beyond 1e308."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def check_values(dim: Dimension, source: str) -> None:
    """Reject choices the models, losses or optimizers would not accept, before any trial runs."""
    known = {"model": ("conv", "mlp"), "activation": tuple(ACTIVATIONS), "norm": NORMS,
             "decoder": ("transposed", "upsample"), "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    if dim.name == "model":
        known["model"] = tuple(m for m in list_models() if m in ("conv", "mlp"))
    for choice in dim.choices or ():
        if dim.name in known and choice not in known[dim.name]:
            raise AeoptError(f"{source}: unknown {dim.name} {choice!r}; known: {', '.join(map(str, known[dim.name]))}")
        lowest = 0 if dim.name in MAY_BE_ZERO else 1
        if dim.name in INTS and (not isinstance(choice, int) or isinstance(choice, bool) or choice < lowest):
            raise AeoptError(f"{source}: {dim.name} choices must be integers >= {lowest}, got {choice!r}")
        if dim.name in FLOATS and (not isinstance(choice, (int, float)) or isinstance(choice, bool) or choice < 0):
            raise AeoptError(f"{source}: {dim.name} choices must be numbers >= 0, got {choice!r}")
        if dim.name == "loss":
            if not isinstance(choice, str):
                raise AeoptError(f"{source}: loss choices must be names like mse or bce, got {choice!r}")
            build_loss(choice, in_unit_range=True)  # raises a one-line error for unknown terms
    if dim.name in INTS and dim.low is not None and dim.low < (0 if dim.name in MAY_BE_ZERO else 1):
        raise AeoptError(f"{source}: {dim.name} must be >= {0 if dim.name in MAY_BE_ZERO else 1}, got low {dim.low}")
    if dim.name in ("lr",) and dim.low is not None and dim.low <= 0:
        raise AeoptError(f"{source}: lr must be > 0, got low {dim.low}")


def suggest(trial, space: SearchSpace) -> dict[str, Any]:
    """Draw one configuration: flat settings (model knobs only for the model drawn)."""
    drawn: dict[str, Any] = {}
    model = space["model"].suggest(trial)
    for name in ORDER[1:]:
        if name in CONV_KNOBS and model != "conv" or name in MLP_KNOBS and model != "mlp":
            continue
        drawn[name] = space[name].suggest(trial)
    settings = {k: drawn[k] for k in ("latent_dim", "activation", *TRAINING)}
    settings["model"] = model
    if model == "conv":
        settings.update({k: drawn[k] for k in CONV_KNOBS})
    else:
        # Mirrored MLP: the first hidden layer has hidden_size units, each further one half as many.
        sizes = [max(drawn["latent_dim"], drawn["hidden_size"] // 2 ** i) for i in range(drawn["hidden_layers"])]
        settings.update(hidden=",".join(map(str, sizes)), dropout=drawn["dropout"],
                        norm="none")  # the mlp's own norm choices differ from conv's; none is its default
    return settings


# The library's default recipes: the first trials of a new study, so that the search starts from
# configurations known to train well and the sampler has good examples from the start.
# Short Fashion-MNIST runs ranked SiLU, one-cycle, lr 6e-3 and batch norm first, and width 32 with 2 stages
# over residual blocks or 3 stages; batch 64, not 128, since search trials are short and at 128 the larger
# recipes get too few steps to rank where they end (the figures: benchmarks/results/design_notes.md).
STARTING_POINTS = (
    {"model": "conv", "width": 32, "depth": 2, "blocks": 0, "kernel_size": 3, "decoder": "transposed",
     "norm": "batch", "activation": "silu", "loss": "bce", "optimizer": "adamw", "lr": 6e-3,
     "weight_decay": 1e-4, "batch_size": 64, "schedule": "onecycle", "latent_dim": 16},
    {"model": "conv", "width": 32, "depth": 3, "blocks": 0, "kernel_size": 3, "decoder": "transposed",
     "norm": "batch", "activation": "silu", "loss": "bce", "optimizer": "adamw", "lr": 6e-3,
     "weight_decay": 1e-4, "batch_size": 64, "schedule": "onecycle", "latent_dim": 16},
    {"model": "mlp", "hidden_layers": 2, "hidden_size": 256, "activation": "relu", "loss": "bce",
     "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "batch_size": 128, "schedule": "onecycle",
     "latent_dim": 16},
)


def starting_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The default recipes, clipped into the space; a recipe whose model the space excludes is skipped."""
    points = []
    for recipe in STARTING_POINTS:
        if recipe["model"] not in (space["model"].choices or ()):
            continue
        params = {}
        for name, value in recipe.items():
            dim = space[name]
            if dim.fixed:
                continue  # fixed settings are not sampled parameters
            if dim.choices is not None:
                params[name] = value if value in dim.choices else dim.choices[0]
            else:
                params[name] = type(value)(min(max(value, dim.low), dim.high))
        if params not in points:  # clipping can make two recipes the same (e.g. depth on small images)
            points.append(params)
    return points


def describe(settings: dict[str, Any]) -> str:
    """A short human description of a configuration, for the one-line trial summaries."""
    if settings["model"] == "conv":
        arch = (f"conv w{settings['width']} d{settings['depth']} b{settings.get('blocks', 0)} "
                f"k{settings['kernel_size']} {settings['decoder'][:5]} {settings['norm']}")
    else:
        arch = f"mlp {settings['hidden']}"
    return (f"{arch} {settings['activation']} z{settings['latent_dim']} | {settings['loss']} "
            f"{settings['optimizer']} lr {settings['lr']:.1e} wd {settings['weight_decay']:.0e} "
            f"bs {settings['batch_size']} {settings['schedule']}")
