"""Model registry and the built-in models (importing a module registers its models)."""
from . import aae, codec, conv, mlp, seed, vae, vq  # noqa: F401  (registration side effect)
from .base import Autoencoder
from .registry import create_model, list_models, model_description, model_knobs, register_model

__all__ = ["Autoencoder", "create_model", "list_models", "model_description", "model_knobs", "register_model"]
