"""aeopt: build, train, evaluate, shrink and optimize autoencoders, with honest numbers."""
from .codec import compress, decompress
from .data import Dataset, load_data
from .deploy import bench, evaluate, export_onnx, load
from .detect import AutoencoderDetector
from .errors import AeoptError
from .models import create_model, list_models, register_model
from .optimize import optimize
from .settings import Settings, TrainConfig
from .shrink import shrink
from .sklearn import AutoencoderTransformer
from .train import fit, train

__version__ = "0.1.0"
