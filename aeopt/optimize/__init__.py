"""Automatic multi-objective search for the best autoencoder per cost (`aeopt optimize`)."""
from .api import OptimizeResult, optimize

__all__ = ["OptimizeResult", "optimize"]
