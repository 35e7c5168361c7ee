"""aeopt: build, train, evaluate, shrink and optimize autoencoders, with honest numbers."""
from .config import TrainConfig
from .data import Dataset, load_data
from .errors import AeoptError
from .evaluate import evaluate
from .models import create_model, list_models, register_model
from .runs import load
from .shrink import bench, export_onnx, shrink
from .sklearn import AutoencoderTransformer
from .train import train

__version__ = "0.1.0"


def __getattr__(name: str):
    """`aeopt.optimize` is imported on first use: Optuna and SQLAlchemy take a while to import."""
    if name == "optimize":
        from .optimize import optimize

        globals()["optimize"] = optimize  # importing the subpackage bound the name to it: rebind the function
        return optimize
    raise AttributeError(f"module 'aeopt' has no attribute {name!r}")
__all__ = ["AeoptError", "AutoencoderTransformer", "Dataset", "TrainConfig", "bench", "create_model", "evaluate",
           "export_onnx", "list_models", "load", "load_data", "optimize", "register_model", "shrink", "train"]
