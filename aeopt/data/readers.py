"""File formats: each reader returns raw numpy arrays, or raises AeoptError naming the file and the fix.

`aeopt.data.load_data` turns what these return into checked, split, scaled tensors.
"""

from __future__ import annotations

import csv
import gzip
import math
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import AeoptError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_VAL_SIZE = 5000
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_HINT = "install it with: apt-get install -y dataset-fashion-mnist (or pass --data-dir DIR)"
# IDX type byte -> dtype; multi-byte IDX values are big-endian by definition of the format.
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_LABEL_COLUMNS = ("label", "class", "y")
NPY_MAGIC = b"\x93NUMPY"


def require_file(path: str) -> Path:
    """Return ``path`` as a Path, or raise if it is not an existing file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AeoptError(f"no such file: {path}: check the path")
    if not p.is_file():
        raise AeoptError(f"{path} is not a regular file: pass a file, not a directory")
    return p


def has_magic(file: Path, magic: bytes) -> bool:
    """True when the file starts with ``magic``."""
    with open(file, "rb") as f:
        return f.read(len(magic)) == magic


# --- loaders: each returns raw (x, y) arrays ----------------------------------------------------


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits, scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    d = load_digits()
    return d.images / 16.0, d.target


def load_fashion(data_dir: str | None, seed: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Fashion-MNIST, train then t10k, with split indices: a seeded validation hold-out and t10k as test."""
    root = Path(data_dir or FASHION_MNIST_DIR).expanduser()
    if not root.is_dir():
        raise AeoptError(f"fashion-mnist: no directory {root}: {FASHION_HINT}")
    arrays = []
    for stem in FASHION_FILES:
        file = next((p for p in (root / f"{stem}.gz", root / stem) if p.is_file()), None)
        if file is None:
            raise AeoptError(f"fashion-mnist: {root / stem}.gz is missing: {FASHION_HINT}")
        arrays.append(read_idx(str(file), "labels" if "labels" in stem else "images", str(file)))
    x_tr, y_tr, x_te, y_te = arrays
    if x_tr.shape[1:] != x_te.shape[1:] or len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise AeoptError(f"fashion-mnist: the files in {root} do not match each other: {FASHION_HINT}")
    n_tr = len(x_tr)
    n_val = min(FASHION_VAL_SIZE, max(1, n_tr // 12))  # 5,000 of 60,000; fewer for a smaller copy
    perm = np.random.default_rng(seed).permutation(n_tr)
    splits = (perm[n_val:], perm[:n_val], np.arange(n_tr, n_tr + len(x_te)))
    return np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te]), splits


def read_idx(path: str, role: str, where: str) -> np.ndarray:
    """Parse an MNIST-style IDX file (gzipped or not) into an array of the header's shape."""
    raw = require_file(path).read_bytes()
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


def load_npy(path: str, where: str) -> np.ndarray:
    """Load a .npy file; anything else (pickles, .npz) is refused."""
    file = require_file(path)
    if not has_magic(file, NPY_MAGIC):
        raise AeoptError(f"{where}: not a .npy file: save it with numpy.save (use npz:PATH for .npz)")
    return _np_load(file, where)


def load_npy_mapped(path: str, where: str) -> np.ndarray:
    """A .npy file as a read-only memory map (nothing is read until used); never unpickles."""
    file = require_file(path)
    if not has_magic(file, NPY_MAGIC):
        raise AeoptError(f"{where}: not a .npy file: save it with numpy.save (use npz:PATH for .npz)")
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _np_error(e, where) from None


def load_npz(path: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Load data ``x`` (or ``X``, ``images``, or the only array) and labels ``y``/``labels``."""
    file = require_file(path)
    if not has_magic(file, b"PK"):  # .npz is a zip archive
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


def load_image_dir(path: str, where: str, image_size: tuple[int, int] | None
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
    mode = "L" if all(m in GREY_MODES for m, _ in info) else "RGB"
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


def load_csv(path: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a numeric CSV table with an optional header row and label column."""
    file = require_file(path)
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
