"""Evaluation of a trained model: quality beside PCA, probes on the codes, the run's report."""
from .evaluate import evaluate_model, peak_of, pca_reconstruction, reconstruct

__all__ = ["evaluate_model", "peak_of", "pca_reconstruction", "reconstruct"]
