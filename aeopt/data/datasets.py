"""Load training data for aeopt: built-in sets (digits, Fashion-MNIST) and user files.

The file readers live in readers.py; ``load_data`` checks what they return, splits it into
train/validation/test, scales it and returns float32 torch tensors. Anything wrong with the
user's input raises ``AeoptError`` with a one-line message saying what is wrong and how to fix it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import AeoptError
from .batches import InMemorySource, MmapSource, as_float
from .samples import CHUNK_ROWS, to_samples, unit_float
from .shards import Releaser, ShardedArray, gather, read_shards, release
from .readers import (GREY_MODES, NPY_MAGIC, has_magic, load_digits, load_fashion,
                      load_image_dir, load_npy, load_npy_mapped, load_npz, open_image, read_idx, require_file)
from .tables import load_csv

KNOWN_SOURCES = ["digits", "fashion-mnist", "idx:IMAGES[,LABELS]", "npy:PATH", "npz:PATH",
                 "images:DIR", "csv:PATH", "shards:DIR"]
MAPPED_HOLDOUT_MAX = 10_000          # mapped/sharded data: validation and test each at most this many samples
MAPPED_HOLDOUT_MAX_BYTES = 64 << 20  # ... and this many bytes of float32, so memory does not grow with the data
MMAP_ABOVE_BYTES = 1 << 30  # npy:PATH is memory-mapped above this size unless --mmap says otherwise


class MappedSplit:
    """A split that stays in a memory-mapped file: `rows` of `array`, made float32 samples by
    `to_samples` only when read. Slicing gives a tensor; the training loop reads it through a
    `MmapSource`, one batch at a time."""

    def __init__(self, array: np.ndarray, rows: np.ndarray, to_samples):
        self.array, self.rows, self.to_samples = array, np.asarray(rows, dtype=np.int64), to_samples
        self.shape = (len(self.rows), *to_samples(array[:1]).shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.to_samples(gather(self.array, self.rows[index]))))

    def numel(self) -> int:
        return len(self.rows) * int(np.prod(self.shape[1:]))

    def chunks(self):
        rows, releaser = np.sort(self.rows), Releaser(self.array)  # file order: sequential reads
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = self.to_samples(self.array[rows[start:start + CHUNK_ROWS]])
            yield torch.from_numpy(np.ascontiguousarray(chunk))
            releaser.tick(chunk.nbytes)
        release(self.array)

    @functools.cached_property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) of the split's samples, from one pass over the file."""
        ranges = [(chunk.min(), chunk.max()) for chunk in self.chunks()]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def min(self) -> torch.Tensor:
        return self.bounds[0]

    def max(self) -> torch.Tensor:
        return self.bounds[1]


def in_memory(x, limit: int | None = None) -> torch.Tensor:
    """A stored split (`Dataset.train_split`) as float32 samples: the first `limit` rows (all if None)."""
    if isinstance(x, MappedSplit):
        return x[:limit] if limit is not None else x[:]
    return as_float(x if limit is None else x[:limit])


def batch_source(x, *, seed: int, device, rank: int = 0, world_size: int = 1):
    """The batch source for a split (pass `Dataset.train_split` for the training split): in memory on the
    device (uint8 pixels converted batch by batch), or read from its memory map."""
    if isinstance(x, MappedSplit):
        return MmapSource(x.array, x.rows, x.to_samples, seed=seed, device=device, rank=rank, world_size=world_size,
                          release=Releaser(x.array).tick, gather=gather)
    return InMemorySource(x, seed=seed, device=device, rank=rank, world_size=world_size)



@dataclass
class Dataset:
    """A dataset split into train/validation/test tensors.

    Images are float32 (N, C, H, W) in [0, 1]; tables are float32 (N, F) standardized with
    the train split's mean/std, which are kept in ``scaler``. Labels are int64 or None.

    uint8 pixels stay uint8 in the training split (`train_split`, 4x less memory than float32):
    reading `x_train` converts them (a new float32 tensor each time), while the training loop's
    batch source converts one batch at a time. A memory-mapped split stays in its file (MappedSplit).
    """

    name: str
    x_train: torch.Tensor
    x_val: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None
    y_val: torch.Tensor | None
    y_test: torch.Tensor | None
    is_image: bool
    scaler: dict | None = None

    @property
    def train_split(self):
        """The training split as stored: a float32 tensor, a uint8 pixel tensor or a MappedSplit."""
        return self.__dict__["_x_train"]

    @property
    def n_train(self) -> int:
        return len(self.train_split)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (1, 28, 28) or (F,)."""
        return tuple(self.train_split.shape[1:])

    @functools.cached_property
    def in_unit_range(self) -> bool:
        """True when every value lies in [0, 1] (always for images), e.g. to allow a sigmoid output.
        Computed once per Dataset: for a mapped split it is a pass over the file."""
        if self.is_image:
            return True
        return all(t.numel() == 0 or (t.min().item() >= 0 and t.max().item() <= 1)
                   for t in (self.train_split, self.x_val, self.x_test))


def _read_x_train(self):
    stored = self.__dict__["_x_train"]
    return as_float(stored) if isinstance(stored, torch.Tensor) else stored


def _write_x_train(self, value) -> None:
    self.__dict__["_x_train"] = value


Dataset.x_train = property(_read_x_train, _write_x_train, doc="The training split as float32 samples.")


def load_data(spec: str = "digits", *, data_dir: str | None = None, seed: int = 0,
              val_fraction: float = 0.1, test_fraction: float = 0.15, limit: int | None = None,
              image_size: tuple[int, int] | None = None, mmap: bool | None = None) -> Dataset:
    """Load a dataset by spec and split it deterministically.

    Args:
        spec: One of ``KNOWN_SOURCES``, e.g. "digits", "fashion-mnist", "npy:/path/x.npy".
        data_dir: Folder with the Fashion-MNIST files (default /usr/share/datasets/fashion-mnist).
        seed: Seed of the split; the same spec and seed always give the same split.
        val_fraction: Share held out for validation (fashion-mnist holds out 5,000 train images).
        test_fraction: Share held out for testing (fashion-mnist uses its own test set).
        limit: Keep only the first ``limit`` training samples; validation and test stay whole.
        image_size: (height, width) for ``images:DIR`` files; default their most common size.
        mmap: ``npy:PATH`` only: keep the training split in a memory map, read batch by batch
            (None: when the file is larger than MMAP_ABOVE_BYTES). Validation and test are loaded.

    Returns:
        The split, scaled dataset.

    Raises:
        AeoptError: On a bad argument or bad input data.
    """
    _check_args(seed, val_fraction, test_fraction, limit, image_size)
    x, y, splits = read_source(spec, data_dir=data_dir, seed=seed, image_size=image_size, mmap=mmap)
    if isinstance(x, (np.memmap, ShardedArray)):
        return _mapped_dataset(x, y, spec, seed, val_fraction, test_fraction, limit)
    is_image = x.ndim == 4
    train, val, test = splits or _split_indices(len(x), seed, val_fraction, test_fraction, spec)

    if limit is not None:
        train = train[:limit]
    xs = [x[i] for i in (train, val, test)]
    ys = [None if y is None else y[i] for i in (train, val, test)]
    scaler = None
    if is_image:
        # uint8 pixels of the training split stay uint8 (Dataset.train_split); val/test are float32
        xs = [xs[0] if xs[0].dtype == np.uint8 else unit_float(xs[0])] + [unit_float(a) for a in xs[1:]]
    else:
        # Statistics from the train split only, so nothing leaks from val/test into training.
        train64 = xs[0].astype(np.float64)
        mean, std = train64.mean(axis=0), train64.std(axis=0)
        std[~(std > 1e-12)] = 1.0  # constant columns: centre them, don't divide by ~0
        scaler = {"mean": mean.tolist(), "std": std.tolist()}
        xs = [standardize(a, scaler) for a in xs]

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

    return Dataset(spec, *map(tensor, xs), *map(tensor, ys), is_image=is_image, scaler=scaler)


def _mapped_dataset(x, y: np.ndarray | None, spec: str, seed: int, val_fraction: float, test_fraction: float,
                    limit: int | None) -> Dataset:
    """The same split and scaling as in memory, with the training split left in the memory map (or shards);
    validation and test hold at most MAPPED_HOLDOUT_MAX samples each, so memory does not grow with the data."""
    is_image = x.ndim == 4
    row_bytes = 4 * int(np.prod(x.shape[1:]))
    most = max(1, min(MAPPED_HOLDOUT_MAX, MAPPED_HOLDOUT_MAX_BYTES // row_bytes))
    train, val, test = _split_indices(len(x), seed, val_fraction, test_fraction, spec, most=most)
    if limit is not None:
        train = train[:limit]
    scaler = None
    if is_image:
        as_rows = unit_float
    else:
        total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        releaser, ordered = Releaser(x), np.sort(train)
        for start in range(0, len(ordered), CHUNK_ROWS):
            rows = x[ordered[start:start + CHUNK_ROWS]].astype(np.float64)
            releaser.tick(rows.nbytes)
            total += rows.sum(0)
            squares += np.square(rows).sum(0)
        mean = total / len(train)
        std = np.sqrt(np.maximum(squares / len(train) - mean ** 2, 0))
        std[~(std > 1e-12)] = 1.0
        scaler = {"mean": mean.tolist(), "std": std.tolist()}

        def as_rows(rows: np.ndarray) -> np.ndarray:
            return standardize(rows, scaler)

    def loaded(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(as_rows(gather(x, rows))))

    def labels(rows: np.ndarray) -> torch.Tensor | None:
        return None if y is None else torch.from_numpy(y[rows])

    release(x)  # the checks and statistics read the whole map: hand its pages back
    return Dataset(spec, MappedSplit(x, train, as_rows), loaded(val), loaded(test), labels(train), labels(val),
                   labels(test), is_image=is_image, scaler=scaler)


def read_source(spec: str, *, data_dir: str | None = None, seed: int = 0,
                image_size: tuple[int, int] | None = None, mmap: bool | None = None):
    """(samples, labels or None, official splits or None) of a data spec, checked, before splitting and
    scaling: images (N, C, H, W) in their own dtype (uint8 pixels stay uint8), tables (N, F)."""
    kind, _, arg = spec.partition(":")
    splits = None
    if spec == "digits":
        x, y = load_digits()
    elif spec == "fashion-mnist":
        x, y, splits = load_fashion(data_dir, seed)
    elif kind == "idx" and arg:
        images, _, labels = arg.partition(",")
        x = read_idx(images, "images", f"idx:{images}")
        y = read_idx(labels, "labels", f"idx:{labels}") if labels else None
    elif kind == "npy" and arg:
        mapped = mmap if mmap is not None else require_file(arg).stat().st_size > MMAP_ABOVE_BYTES
        x, y = (load_npy_mapped(arg, spec) if mapped else load_npy(arg, spec)), None
    elif kind == "npz" and arg:
        x, y = load_npz(arg, spec)
    elif kind == "images" and arg:
        x, y = load_image_dir(arg, spec, image_size)
    elif kind == "csv" and arg:
        x, y = load_csv(arg, spec)
    elif kind == "shards" and arg:
        x, y = read_shards(arg, spec)
    else:
        raise AeoptError(f"unknown data source {spec!r}: use one of {', '.join(KNOWN_SOURCES)}")
    x = to_samples(x, spec)
    if y is not None:
        y = _labels(y, len(x), spec)
    return x, y, splits


def standardize(x: np.ndarray, scaler: dict) -> np.ndarray:
    """Apply a saved table scaler, (x - mean) / std, e.g. to new data for evaluate/reconstruct.

    Args:
        x: Table of shape (N, F).
        scaler: ``{"mean": [...], "std": [...]}`` as stored in ``Dataset.scaler``.

    Returns:
        The standardized, contiguous float32 table.

    Raises:
        AeoptError: If ``x`` is not a table with the scaler's number of columns.
    """
    mean = np.asarray(scaler["mean"], dtype=np.float64)
    std = np.asarray(scaler["std"], dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != mean.size:
        raise AeoptError(f"data of shape {x.shape} does not match the {mean.size} columns the model was "
                         "trained on: pass rows with the same columns as the training data")
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def load_array_file(path: str) -> np.ndarray:
    """Read a batch to reconstruct: a .npy array or one image file (PNG/JPEG/BMP).

    Images come back float32 (N, C, H, W) in [0, 1]. A 2-D .npy comes back as an unscaled float32
    table (apply ``standardize`` with the model's scaler); a 1-D .npy is taken as one table row.

    Args:
        path: File to read.

    Returns:
        The float32 array.

    Raises:
        AeoptError: If the file is missing, unreadable or holds unusable values.
    """
    if has_magic(require_file(path), NPY_MAGIC):  # trust the content, not the extension
        x = load_npy(path, path)
        x = to_samples(x[None] if x.ndim == 1 else x, path)
        return np.ascontiguousarray(unit_float(x) if x.ndim == 4 else x, dtype=np.float32)
    try:
        im = open_image(Path(path).expanduser(), path, lambda im: im.convert("L" if im.mode in GREY_MODES else "RGB"))
    except AeoptError as e:
        raise AeoptError(f"{path}: not a .npy array or a readable image ({e}): "
                         "pass a .npy batch or a PNG/JPEG image") from None
    a = np.asarray(im)
    a = a[None, None] if a.ndim == 2 else a.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(unit_float(a))


# --- checks and shared helpers ------------------------------------------------------------------


def _check_args(seed, val_fraction, test_fraction, limit, image_size) -> None:
    """Reject bad arguments up front, before any slow file reading."""
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(seed) or seed < 0:
        raise AeoptError(f"seed must be a non-negative integer, got {seed!r}: pass e.g. 0")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < f < 1:  # also rejects NaN
            raise AeoptError(f"{name} must be between 0 and 1 (exclusive), got {f!r}: pass e.g. 0.1")
    if val_fraction + test_fraction >= 1:
        raise AeoptError(f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves no "
                         "training data: make their sum less than 1")
    if limit is not None and (not is_int(limit) or limit < 1):
        raise AeoptError(f"limit must be a positive integer, got {limit!r}: use 1 or more, "
                         "or no limit to use all training samples")
    if image_size is not None and (len(image_size) != 2 or not all(is_int(v) and v > 0 for v in image_size)):
        raise AeoptError(f"image_size must be two positive integers (height, width), got {image_size!r}")


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Class ids as int64: non-negative integers as they are, others by rank of sorted unique value."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise AeoptError(f"{where}: labels have shape {y.shape} but there are {n} samples: "
                         "give exactly one label per sample")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise AeoptError(f"{where}: labels must be class ids or names, found NaN/Inf or fractions: "
                             "use whole numbers or strings")
        y = y.astype(np.int64)
    if y.dtype.kind in "biu" and (y.size == 0 or y.min() >= 0):
        return y.astype(np.int64)
    if y.dtype.kind not in "biuUS":
        raise AeoptError(f"{where}: labels of dtype {y.dtype} are not supported: use integers or strings")
    return np.unique(y, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _split_indices(n: int, seed: int, val_fraction: float, test_fraction: float,
                   where: str, most: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split range(n) by a seeded permutation; every split gets at least one sample."""
    if n < 3:
        raise AeoptError(f"{where} has only {n} samples: at least 3 are needed (one each for "
                         "training, validation and test); add more data")
    n_test = min(max(1, round(n * test_fraction)), n - 2, most or n)
    n_val = min(max(1, round(n * val_fraction)), n - n_test - 1, most or n)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]
