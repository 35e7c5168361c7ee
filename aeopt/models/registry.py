"""One registry for every autoencoder: `@register_model` on a factory, `create_model(name, ...)`.

A factory takes the data's sample shape, the latent size, the output activation and its own
keyword knobs, and returns an `Autoencoder`. Unknown names and unknown knobs are answered with
the known ones, so a typo on the command line never turns into a traceback.
"""
from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Callable

from ..errors import AeoptError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable
    description: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str) -> Callable:
    """Decorator: register `factory` under `name` with a one-line description."""

    def wrap(factory: Callable) -> Callable:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, factory, description)
        return factory

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_description(name: str) -> str:
    return _get(name).description


def model_knobs(name: str) -> list[str]:
    """The keyword knobs a model's factory accepts (besides shape, latent and output)."""
    params = inspect.signature(_get(name).factory).parameters
    return [p for p in params if p not in ("input_shape", "latent_dim", "output")]


def _get(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise AeoptError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, input_shape: tuple[int, ...], latent_dim: int, *, output: str = "sigmoid",
                 **knobs):
    """Build a registered model for samples of `input_shape` (without the batch dimension).

    Args:
        name: registry name, e.g. "conv".
        input_shape: (C, H, W) for images or (F,) for tables.
        latent_dim: size of the code z.
        output: "sigmoid" for data in [0, 1] (the model's logits go to BCE), "linear" otherwise.
        **knobs: the model's own settings; None values mean "the model's default".
    """
    entry = _get(name)
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise AeoptError(f"latent size must be a positive integer, got {latent_dim!r}; pass e.g. --latent-dim 32")
    if output not in ("sigmoid", "linear"):
        raise AeoptError(f"unknown output activation {output!r}; use 'sigmoid' or 'linear'")
    knobs = {k: v for k, v in knobs.items() if v is not None}
    allowed = model_knobs(name)
    unknown = sorted(set(knobs) - set(allowed))
    if unknown:
        raise AeoptError(f"model {name!r} has no setting {', '.join(unknown)}; its settings: "
                         f"{', '.join(allowed) or 'none'}")
    return entry.factory(input_shape=tuple(input_shape), latent_dim=latent_dim, output=output, **knobs)
