"""aeopt: build, train, evaluate, shrink and optimize autoencoders, with honest numbers."""
from .codec import compress, decompress
from .config import TrainConfig
from .data import Dataset, load_data
from .errors import AeoptError
from .evaluate import evaluate
from .models import create_model, list_models, register_model
from .optimize import optimize
from .runs import load
from .shrink import bench, export_onnx, shrink
from .sklearn import AutoencoderTransformer
from .train import train

__version__ = "0.1.0"

