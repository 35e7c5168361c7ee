"""aeopt: build, train, evaluate, shrink and optimize autoencoders, with honest numbers."""
import sys as _sys

try:  # importing torch takes seconds: Ctrl-C there ends the `aeopt` command with a line, not a traceback
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
except KeyboardInterrupt:
    # Only the command line (the `aeopt` script, `python -m aeopt`) exits here; `import aeopt` in a
    # program or a notebook gets its KeyboardInterrupt as usual.
    if _sys.argv and (_sys.argv[0] == "-m" or _sys.argv[0].endswith(("/aeopt", "\\aeopt", "aeopt.exe"))):
        from .errors import forget_unhandled_ctrl_c

        print("aeopt: interrupted while starting; nothing was written", file=_sys.stderr)
        forget_unhandled_ctrl_c()
        raise SystemExit(130) from None
    raise

__version__ = "0.1.0"
__all__ = ["AeoptError", "AutoencoderDetector", "AutoencoderTransformer", "Dataset", "Settings", "TrainConfig",
           "bench", "compress", "create_model", "decompress", "evaluate", "export_onnx", "fit", "list_models", "load",
           "load_data", "optimize", "register_model", "shrink", "train"]
