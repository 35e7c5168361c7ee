"""aeopt: build, train, evaluate, shrink and optimize autoencoders, with honest numbers."""
from .config import TrainConfig
from .data import Dataset, load_data
from .errors import AeoptError
from .evaluate import evaluate
from .models import create_model, list_models, register_model
from .optimize import optimize
from .runs import load
from .train import train

__version__ = "0.1.0"
__all__ = ["AeoptError", "Dataset", "TrainConfig", "create_model", "evaluate", "list_models", "load",
           "load_data", "optimize", "register_model", "train"]
