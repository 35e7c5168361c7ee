"""Training: the one loop (`fit`), its step, precision, callbacks and checkpoints, lr-find, and
`train()` (fit + evaluate + report)."""
from .api import TrainResult, train
from .callbacks import Callback, DeadlinePlan, OnEpochEnd, OnStepEnd, StopAt
from .loop import FitResult, Loop, TrainingDiverged, fit, resolve_device
from .prepare import data_info, fit_settings, prepare_run_dir

__all__ = ["Callback", "DeadlinePlan", "FitResult", "Loop", "OnEpochEnd", "OnStepEnd", "StopAt", "TrainResult", "TrainingDiverged",
           "data_info", "fit", "fit_settings", "prepare_run_dir", "resolve_device", "train"]
