"""Shrinking a trained run: distillation, pruning (unstructured and channel surgery), and the pipeline
that chains them with int8 quantization (aeopt.deploy) into a new run directory."""
from .pipeline import shrink

__all__ = ["shrink"]
