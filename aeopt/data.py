"""Load training data for aeopt: built-in sets (digits, Fashion-MNIST) and user files.

Each loader returns raw numpy arrays; ``load_data`` then checks them, splits them into
train/validation/test, scales them and returns float32 torch tensors. Anything wrong with the
user's input raises ``AeoptError`` with a one-line message saying what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import gzip
import math
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aeopt.errors import AeoptError

KNOWN_SOURCES = ["digits", "fashion-mnist", "idx:IMAGES[,LABELS]", "npy:PATH", "npz:PATH",
                 "images:DIR", "csv:PATH"]
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_VAL_SIZE = 5000
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_FASHION_HINT = "install it with: apt-get install -y dataset-fashion-mnist (or pass --data-dir DIR)"
# IDX type byte -> dtype; multi-byte IDX values are big-endian by definition of the format.
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_LABEL_COLUMNS = ("label", "class", "y")
_NPY_MAGIC = b"\x93NUMPY"


@dataclass
class Dataset:
    """A dataset split into train/validation/test tensors.

    Images are float32 (N, C, H, W) in [0, 1]; tables are float32 (N, F) standardized with
    the train split's mean/std, which are kept in ``scaler``. Labels are int64 or None.
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
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (1, 28, 28) or (F,)."""
        return tuple(self.x_train.shape[1:])

    @property
    def in_unit_range(self) -> bool:
        """True when every value lies in [0, 1] (always for images), e.g. to allow a sigmoid output."""
        if self.is_image:
            return True
        return all(t.numel() == 0 or (t.min().item() >= 0 and t.max().item() <= 1)
                   for t in (self.x_train, self.x_val, self.x_test))


def load_data(spec: str = "digits", *, data_dir: str | None = None, seed: int = 0,
              val_fraction: float = 0.1, test_fraction: float = 0.15, limit: int | None = None,
              image_size: tuple[int, int] | None = None) -> Dataset:
    """Load a dataset by spec and split it deterministically.

    Args:
        spec: One of ``KNOWN_SOURCES``, e.g. "digits", "fashion-mnist", "npy:/path/x.npy".
        data_dir: Folder with the Fashion-MNIST files (default /usr/share/datasets/fashion-mnist).
        seed: Seed of the split; the same spec and seed always give the same split.
        val_fraction: Share held out for validation (fashion-mnist holds out 5,000 train images).
        test_fraction: Share held out for testing (fashion-mnist uses its own test set).
        limit: Keep only the first ``limit`` training samples; validation and test stay whole.
        image_size: (height, width) for ``images:DIR`` files; default their most common size.

    Returns:
        The split, scaled dataset.

    Raises:
        AeoptError: On a bad argument or bad input data.
    """
    _check_args(seed, val_fraction, test_fraction, limit, image_size)
    kind, _, arg = spec.partition(":")
    splits = None
    if spec == "digits":
        x, y = _load_digits()
    elif spec == "fashion-mnist":
        x, y, splits = _load_fashion(data_dir, seed)
    elif kind == "idx" and arg:
        images, _, labels = arg.partition(",")
        x = _read_idx(images, "images", f"idx:{images}")
        y = _read_idx(labels, "labels", f"idx:{labels}") if labels else None
    elif kind == "npy" and arg:
        x, y = _load_npy(arg, spec), None
    elif kind == "npz" and arg:
        x, y = _load_npz(arg, spec)
    elif kind == "images" and arg:
        x, y = _load_image_dir(arg, spec, image_size)
    elif kind == "csv" and arg:
        x, y = _load_csv(arg, spec)
    else:
        raise AeoptError(f"unknown data source {spec!r}: use one of {', '.join(KNOWN_SOURCES)}")

    x = _to_samples(x, spec)
    is_image = x.ndim == 4
    if y is not None:
        y = _labels(y, len(x), spec)
    train, val, test = splits or _split_indices(len(x), seed, val_fraction, test_fraction, spec)
    if limit is not None:
        train = train[:limit]
    xs = [x[i] for i in (train, val, test)]
    ys = [None if y is None else y[i] for i in (train, val, test)]
    scaler = None
    if is_image:
        xs = [_unit_float(a) for a in xs]
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
    if _has_magic(_require_file(path), _NPY_MAGIC):  # trust the content, not the extension
        x = _load_npy(path, path)
        x = _to_samples(x[None] if x.ndim == 1 else x, path)
        return np.ascontiguousarray(_unit_float(x) if x.ndim == 4 else x, dtype=np.float32)
    from PIL import Image

    try:
        with Image.open(Path(path).expanduser()) as im:
            im = im.convert("L" if im.mode in _GREY_MODES else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise AeoptError(f"{path}: not a .npy array or a readable image ({e}): "
                         "pass a .npy batch or a PNG/JPEG image") from None
    a = np.asarray(im)
    a = a[None, None] if a.ndim == 2 else a.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(_unit_float(a))


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


def _require_file(path: str) -> Path:
    """Return ``path`` as a Path, or raise if it is not an existing file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AeoptError(f"no such file: {path}: check the path")
    if not p.is_file():
        raise AeoptError(f"{path} is not a regular file: pass a file, not a directory")
    return p


def _has_magic(file: Path, magic: bytes) -> bool:
    """True when the file starts with ``magic``."""
    with open(file, "rb") as f:
        return f.read(len(magic)) == magic


def _to_samples(x: np.ndarray, where: str) -> np.ndarray:
    """Check dtype and values; bring images to (N, C, H, W) and leave tables (N, F)."""
    if x.dtype.kind not in "biuf":
        raise AeoptError(f"{where}: unsupported dtype {x.dtype}: save a numeric (integer or float) array")
    if x.dtype.kind == "f":
        bad = x.size - int(np.count_nonzero(np.isfinite(x)))
        if bad:
            raise AeoptError(f"{bad} NaN/Inf values in {where}; clean or impute them first")
    shape = x.shape
    first = x.ndim == 4 and shape[1] in (1, 3, 4)
    last = x.ndim == 4 and shape[3] in (1, 3)
    if x.ndim == 3:
        x = x[:, None]
    elif last and not (first and shape[1] <= shape[3]):
        # If both layouts fit, e.g. (N, 4, 4, 1), the smaller axis is the likelier channel axis;
        # on a tie channels-first, PyTorch's layout, wins.
        x = x.transpose(0, 3, 1, 2)
    elif not (first or (x.ndim == 2 and shape[1] > 0)):
        raise AeoptError(f"{where}: array of shape {shape} is neither a table (N, F) nor images (N, H, W), "
                         "(N, C, H, W) with C in 1/3/4 or (N, H, W, C) with C in 1/3: reshape it")
    if x.ndim == 4 and x.dtype != np.uint8:
        # Only uint8 has an obvious scale (/255); for anything else a guess could silently be wrong.
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise AeoptError(f"{where}: image values lie in [{lo:g}, {hi:g}], not [0, 1]: scale them to "
                             "[0, 1] (or save uint8 pixels), or save the data as a 2-D (N, F) table")
    return x


def _unit_float(x: np.ndarray) -> np.ndarray:
    """Images as float32: uint8 pixels / 255; anything else is already in [0, 1]."""
    if x.dtype == np.uint8:
        return np.divide(x, 255, dtype=np.float32)
    return x.astype(np.float32)


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
                   where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split range(n) by a seeded permutation; every split gets at least one sample."""
    if n < 3:
        raise AeoptError(f"{where} has only {n} samples: at least 3 are needed (one each for "
                         "training, validation and test); add more data")
    n_test = min(max(1, round(n * test_fraction)), n - 2)
    n_val = min(max(1, round(n * val_fraction)), n - n_test - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


# --- loaders: each returns raw (x, y) arrays ----------------------------------------------------


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits, scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    d = load_digits()
    return d.images / 16.0, d.target


def _load_fashion(data_dir: str | None, seed: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Fashion-MNIST, train then t10k, with split indices: a seeded validation hold-out and t10k as test."""
    root = Path(data_dir or FASHION_MNIST_DIR).expanduser()
    if not root.is_dir():
        raise AeoptError(f"fashion-mnist: no directory {root}: {_FASHION_HINT}")
    arrays = []
    for stem in _FASHION_FILES:
        file = next((p for p in (root / f"{stem}.gz", root / stem) if p.is_file()), None)
        if file is None:
            raise AeoptError(f"fashion-mnist: {root / stem}.gz is missing: {_FASHION_HINT}")
        arrays.append(_read_idx(str(file), "labels" if "labels" in stem else "images", str(file)))
    x_tr, y_tr, x_te, y_te = arrays
    if x_tr.shape[1:] != x_te.shape[1:] or len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise AeoptError(f"fashion-mnist: the files in {root} do not match each other: {_FASHION_HINT}")
    n_tr = len(x_tr)
    n_val = min(FASHION_VAL_SIZE, max(1, n_tr // 12))  # 5,000 of 60,000; fewer for a smaller copy
    perm = np.random.default_rng(seed).permutation(n_tr)
    splits = (perm[n_val:], perm[:n_val], np.arange(n_tr, n_tr + len(x_te)))
    return np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te]), splits


def _read_idx(path: str, role: str, where: str) -> np.ndarray:
    """Parse an MNIST-style IDX file (gzipped or not) into an array of the header's shape."""
    raw = _require_file(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: detect by content, not by extension
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise AeoptError(f"{where}: corrupt or truncated gzip data ({e}): "
                             "re-download the file or check it with gunzip -t") from None
    # Header: two zero bytes, a type byte, the number of dimensions, then one uint32 per dimension.
    if len(raw) < 4 or raw[0] or raw[1] or raw[3] == 0:
        raise AeoptError(f"{where}: wrong magic number 0x{int.from_bytes(raw[:4], 'big'):04X} (expected "
                         f"0x{0x0803 if role == 'images' else 0x0801:04X} for {role}): "
                         "is this an MNIST-style IDX file?")
    if raw[2] not in _IDX_DTYPES:
        raise AeoptError(f"{where}: unsupported IDX data type 0x{raw[2]:02X}: convert the file to one of "
                         + ", ".join(f"0x{t:02X}" for t in _IDX_DTYPES))
    dtype, header = _IDX_DTYPES[raw[2]], 4 + 4 * raw[3]
    if len(raw) < header:
        raise AeoptError(f"{where}: truncated IDX header ({len(raw)} of {header} bytes): re-download it")
    dims = tuple(int.from_bytes(raw[i:i + 4], "big") for i in range(4, header, 4))
    need, have = math.prod(dims) * dtype.itemsize, len(raw) - header
    if have != need:
        raise AeoptError(f"{where}: {'truncated' if have < need else 'has trailing bytes'}: shape {dims} "
                         f"needs {need} data bytes but the file has {have}: re-download or re-create it")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _np_error(e: Exception, where: str) -> AeoptError:
    """Turn an error from reading a .npy/.npz into a user-facing one."""
    if "object arrays" in str(e).lower():  # what numpy says when allow_pickle=False meets objects
        return AeoptError(f"{where}: object arrays are not supported; save a numeric array "
                          "(e.g. x.astype('float32'))")
    return AeoptError(f"{where}: cannot read the array ({e}): re-save it with numpy")


def _np_load(file: Path, where: str):
    """np.load that never unpickles, with its errors turned into AeoptError."""
    try:
        return np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _np_error(e, where) from None


def _load_npy(path: str, where: str) -> np.ndarray:
    """Load a .npy file; anything else (pickles, .npz) is refused."""
    file = _require_file(path)
    if not _has_magic(file, _NPY_MAGIC):
        raise AeoptError(f"{where}: not a .npy file: save it with numpy.save (use npz:PATH for .npz)")
    return _np_load(file, where)


def _load_npz(path: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Load data ``x`` (or ``X``, ``images``, or the only array) and labels ``y``/``labels``."""
    file = _require_file(path)
    if not _has_magic(file, b"PK"):  # .npz is a zip archive
        raise AeoptError(f"{where}: not a .npz archive: save it with numpy.savez (use npy:PATH for .npy)")
    with _np_load(file, where) as archive:
        keys = archive.files
        x_key = next((k for k in ("x", "X", "images") if k in keys), keys[0] if len(keys) == 1 else None)
        if x_key is None:
            raise AeoptError(f"{where}: cannot tell which of the arrays {keys} is the data: "
                             "name it 'x' (and the labels 'y')")
        y_key = next((k for k in ("y", "labels") if k in keys and k != x_key), None)
        try:  # members are read lazily, so bad (e.g. object) arrays only fail here
            x, y = archive[x_key], (archive[y_key] if y_key else None)
        except (ValueError, OSError, EOFError) as e:
            raise _np_error(e, where) from None
    if not all(isinstance(a, np.ndarray) for a in (x, y) if a is not None):  # non-.npy zip members
        raise AeoptError(f"{where}: {x_key!r} is not a numpy array: save the archive with numpy.savez")
    return x, y


def _load_image_dir(path: str, where: str, image_size: tuple[int, int] | None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a folder of images (class = first-level subfolder) as uint8 (N, C, H, W)."""
    from PIL import Image  # imported lazily: only this loader needs it

    root = Path(path).expanduser()
    if not root.is_dir():
        raise AeoptError(f"no such directory: {path}: check the path")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise AeoptError(f"{where}: no PNG/JPEG/BMP images found: put image files in {path} "
                         "(optionally one subfolder per class)")
    parts = [p.relative_to(root).parts for p in files]
    nested = {len(q) > 1 for q in parts}
    if nested == {True, False}:
        raise AeoptError(f"{where}: images both at the top level and in subfolders: "
                         "put every image in a class subfolder, or none")

    def read(p: Path, fn):
        try:
            with Image.open(p) as im:
                return fn(im)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise AeoptError(f"{where}: cannot read image {p} ({e}): fix or remove the file") from None

    # A first pass over the headers only picks one mode and size for all images.
    info = [read(p, lambda im: (im.mode, im.size)) for p in files]
    mode = "L" if all(m in _GREY_MODES for m, _ in info) else "RGB"
    size = (image_size[1], image_size[0]) if image_size else Counter(s for _, s in info).most_common(1)[0][0]

    def pixels(im) -> np.ndarray:
        im = im.convert(mode)  # PIL sizes are (width, height)
        return np.asarray(im if im.size == size else im.resize(size, Image.Resampling.BILINEAR))

    x = np.stack([read(p, pixels) for p in files])
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    if nested == {False}:
        return x, None
    classes = sorted({q[0] for q in parts})
    return x, np.array([classes.index(q[0]) for q in parts], dtype=np.int64)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _load_csv(path: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a numeric CSV table with an optional header row and label column."""
    file = _require_file(path)
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, [c.strip() for c in row]) for row in reader if any(map(str.strip, row))]
    except (UnicodeDecodeError, csv.Error) as e:
        raise AeoptError(f"{where}: not a readable CSV text file ({e}): save it as UTF-8 CSV") from None
    if not rows:
        raise AeoptError(f"{where}: the table is empty: write a header row and one row per sample")
    header = rows[0][1]
    if all(map(_is_number, header)):  # no header row: every row is data
        header = [f"column {i + 1}" for i in range(len(header))]
    else:
        rows = rows[1:]
    if not rows:
        raise AeoptError(f"{where}: the table is empty (only a header): add one row per sample")
    names = [h.lower() for h in header]
    label_col = next((names.index(n) for n in _LABEL_COLUMNS if n in names), None)
    cols = [i for i in range(len(header)) if i != label_col]
    if not cols:
        raise AeoptError(f"{where}: no feature columns besides the label: add numeric columns")
    x = np.empty((len(rows), len(cols)))
    for r, (line, row) in enumerate(rows):
        if len(row) != len(header):
            raise AeoptError(f"{where}: line {line} has {len(row)} cells but the header has {len(header)}: "
                             "give every row the same number of cells")
        try:
            x[r] = [float(row[i]) for i in cols]
        except ValueError:
            i = next(i for i in cols if not _is_number(row[i]))
            raise AeoptError(f"{where}: non-numeric value {row[i]!r} in column {header[i]!r} at line {line}: "
                             "make the column numeric (class names belong in a 'label' column)") from None
    if label_col is None:
        return x, None
    raw = [row[label_col] for _, row in rows]
    empty = next((line for (line, _), v in zip(rows, raw) if not v), None)
    if empty is not None:
        raise AeoptError(f"{where}: empty {header[label_col]!r} at line {empty}: give every row a label")
    return x, (np.array([float(v) for v in raw]) if all(map(_is_number, raw)) else np.array(raw))
