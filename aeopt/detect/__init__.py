"""Anomaly detection with autoencoders: the detector, its scores and its thresholds."""
from .detector import AutoencoderDetector

__all__ = ["AutoencoderDetector"]
