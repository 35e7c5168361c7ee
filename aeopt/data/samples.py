"""Arrays as samples: checked values, images as (N, C, H, W) in [0, 1], read in chunks.

What every data source and the detector apply to raw arrays before they become tensors.
"""
from __future__ import annotations

import numpy as np

from ..errors import AeoptError
from .readers import is_channels_last
from .shards import Releaser, ShardedArray, release

CHUNK_ROWS = 4096  # rows per chunk when a mapped file is checked or summarized


def chunks_of(x):
    """(start, rows) over an array in CHUNK_ROWS pieces; a memory map's pages are handed back after each
    piece, so reading a file much larger than memory never makes the process hold it."""
    releaser = Releaser(x) if isinstance(x, (np.memmap, ShardedArray)) else None
    for start in range(0, len(x), CHUNK_ROWS):
        chunk = x[start:start + CHUNK_ROWS]
        yield start, chunk
        if releaser is not None:
            releaser.tick(chunk.nbytes)
    release(x)


def to_samples(x: np.ndarray, where: str) -> np.ndarray:
    """Check dtype and values; bring images to (N, C, H, W) and leave tables (N, F)."""
    if x.dtype.kind not in "biuf":
        raise AeoptError(f"{where}: unsupported dtype {x.dtype}: save a numeric (integer or float) array")
    if x.ndim < 2:  # before any pass over the rows: a 0-d array has none
        raise AeoptError(f"{where}: array of shape {x.shape} is neither a table (N, F) nor images: reshape it")
    if 0 in x.shape[1:]:
        raise AeoptError(f"{where}: array of shape {x.shape} has samples without values: save at least one "
                         "feature or pixel per sample")
    if x.dtype.kind == "f":
        bad = sum(chunk.size - int(np.count_nonzero(np.isfinite(chunk))) for _, chunk in chunks_of(x))
        if bad:
            raise AeoptError(f"{bad} NaN/Inf values in {where}; clean or impute them first")
    shape = x.shape
    first = x.ndim == 4 and shape[1] in (1, 3, 4)
    if x.ndim == 3:
        x = x[:, None]
    elif is_channels_last(shape):
        x = x.transpose(0, 3, 1, 2)
    elif not (first or (x.ndim == 2 and shape[1] > 0)):
        raise AeoptError(f"{where}: array of shape {shape} is neither a table (N, F) nor images (N, H, W), "
                         "(N, C, H, W) with C in 1/3/4 or (N, H, W, C) with C in 1/3: reshape it")
    if x.ndim == 4 and x.dtype != np.uint8:
        # Only uint8 has an obvious scale (/255); for anything else a guess could silently be wrong.
        ranges = [(float(chunk.min()), float(chunk.max())) for _, chunk in chunks_of(x)]
        lo, hi = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if x.size else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise AeoptError(f"{where}: image values lie in [{lo:g}, {hi:g}], not [0, 1]: scale them to "
                             "[0, 1] (or save uint8 pixels), or save the data as a 2-D (N, F) table")
    return x


def unit_float(x: np.ndarray) -> np.ndarray:
    """Images as float32: uint8 pixels / 255; anything else is already in [0, 1]."""
    if x.dtype == np.uint8:
        return np.divide(x, 255, dtype=np.float32)
    return x.astype(np.float32)
