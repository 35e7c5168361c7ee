"""The codec's application layer: integer tables, entropy coding, the .aec container, commands.

The networks are aeopt.models.codec; this package turns a trained one into files.
"""
from .api import CodecRun, compress, decompress, decompress_images, load_codec

__all__ = ["CodecRun", "compress", "decompress", "decompress_images", "load_codec"]
