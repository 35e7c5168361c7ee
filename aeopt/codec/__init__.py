"""The codec's application layer: integer tables, entropy coding, the .aec container, its training
and report. The networks are aeopt.models.codec; this package turns a trained one into files.

Importing it registers the codec's trainer and evaluator with aeopt.train and aeopt.deploy, which
run codec runs through it (they sit below this layer and do not import it).
"""
from ..deploy.inference import MODEL_EVALUATORS
from ..train.api import MODEL_TRAINERS
from .api import CodecRun, compress, decompress, decompress_files, decompress_images, load_codec
from .train import evaluate_codec, train_codec

MODEL_TRAINERS["codec"] = train_codec
MODEL_EVALUATORS["codec"] = evaluate_codec

__all__ = ["CodecRun", "compress", "decompress", "decompress_files", "decompress_images", "evaluate_codec",
           "load_codec", "train_codec"]
