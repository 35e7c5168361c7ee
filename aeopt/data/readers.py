"""File formats: each reader returns raw numpy arrays, or raises AeoptError naming the file and the fix.

`aeopt.data.load_data` turns what these return into checked, split, scaled tensors.
"""

from __future__ import annotations

import gzip
import math
import os
import tokenize
import warnings
import zipfile
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
NPY_MAGIC = b"\x93NUMPY"
MAX_DEFLATE_RATIO = 1032  # DEFLATE (gzip, zip) cannot expand more: a header claiming more is corrupt
READ_PIECE = 16 << 20    # compressed data is read this much at a time
MAX_PIXELS_PER_BYTE = 8 * MAX_DEFLATE_RATIO  # 1-bit PNG pixels after DEFLATE: no image file holds more


def is_channels_last(shape: tuple[int, ...]) -> bool:
    """True when 4-D samples of this shape are (N, H, W, C) with C in 1/3 rather than (N, C, H, W): if both
    layouts fit, e.g. (N, 4, 4, 1), the smaller axis is the likelier channel axis; on a tie channels-first,
    PyTorch's layout, wins. One rule for arrays and shards, so both see the same images."""
    if len(shape) != 4 or shape[3] not in (1, 3):
        return False
    return not (shape[1] in (1, 3, 4) and shape[1] <= shape[3])


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
    """Parse an MNIST-style IDX file (gzipped or not) into an array of the header's shape.

    The declared shape is checked against what the file can hold before any data is read, so a corrupt
    header (2^31 rows in a few bytes) is refused instead of allocated; gzip data is read in pieces, at most
    the declared size plus one byte, so a decompression bomb cannot outgrow its header either.
    """
    file = require_file(path)
    size, gz = file.stat().st_size, has_magic(file, b"\x1f\x8b")  # gzip: detect by content, not by extension
    try:
        with (gzip.open(file, "rb") if gz else open(file, "rb")) as f:
            return _parse_idx(f, role, where, most=size * MAX_DEFLATE_RATIO if gz else size, gz=gz)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        if not gz:
            raise AeoptError(f"{where}: cannot read the file ({e}): check its permissions") from None
        raise AeoptError(f"{where}: corrupt or truncated gzip data ({e}): "
                         "re-download the file or check it with gunzip -t") from None


def _parse_idx(f, role: str, where: str, most: int, gz: bool) -> np.ndarray:
    """The IDX array of an open stream of at most `most` bytes."""
    head = f.read(4)
    # Header: two zero bytes, a type byte, the number of dimensions, then one uint32 per dimension.
    if len(head) < 4 or head[0] or head[1] or head[3] == 0:
        raise AeoptError(f"{where}: wrong magic number 0x{int.from_bytes(head[:4], 'big'):04X} (expected "
                         f"0x{0x0803 if role == 'images' else 0x0801:04X} for {role}): "
                         "is this an MNIST-style IDX file?")
    if head[2] not in _IDX_DTYPES:
        raise AeoptError(f"{where}: unsupported IDX data type 0x{head[2]:02X}: convert the file to one of "
                         + ", ".join(f"0x{t:02X}" for t in _IDX_DTYPES))
    if head[3] > 4:  # images are (N, H, W) or (N, H, W, C), labels (N,)
        raise AeoptError(f"{where}: the header declares {head[3]} dimensions, more than the 4 of (N, H, W, C) "
                         "images: is this an MNIST-style IDX file?")
    dtype, header = _IDX_DTYPES[head[2]], 4 + 4 * head[3]
    raw_dims = f.read(header - 4)
    if len(raw_dims) < header - 4:
        raise AeoptError(f"{where}: truncated IDX header ({4 + len(raw_dims)} of {header} bytes): re-download it")
    dims = tuple(int.from_bytes(raw_dims[i:i + 4], "big") for i in range(0, header - 4, 4))
    need = math.prod(dims) * dtype.itemsize
    # Zero rows make `need` 0 whatever the other dims, but numpy still refuses a shape whose bytes overflow.
    if need > most - header or math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        have = (f"a {most // MAX_DEFLATE_RATIO}-byte gzip file can hold at most {most - header}" if gz
                else f"the file has {most - header}")
        raise AeoptError(f"{where}: truncated or corrupt: shape {dims} needs {need} data bytes but {have}: "
                         "re-download or re-create it")
    body = _read_at_most(f, need + 1)
    if len(body) != need:
        if gz:
            _drain(f)  # a damaged gzip stream is said as such, not as a wrong size
        have = len(body) if len(body) < need else (most - header if not gz else f"more than {need}")
        raise AeoptError(f"{where}: {'truncated' if len(body) < need else 'has trailing bytes'}: shape {dims} "
                         f"needs {need} data bytes but the file has {have}: re-download or re-create it")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _read_at_most(f, n: int) -> bytearray:
    """Up to `n` bytes of a stream, read in pieces: memory grows with what is there, not with `n`."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(n - len(buf), READ_PIECE))
        if not chunk:
            break
        buf += chunk
    return buf


def _drain(f, most: int = 64 << 20) -> None:
    """Read on (discarding) up to `most` bytes, so a corrupt compressed stream raises its own error."""
    while most > 0 and (chunk := f.read(READ_PIECE)):
        most -= len(chunk)


def _npy_header(f, where: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, fortran_order) of a .npy stream, left at the first data byte; numpy's own parser,
    with everything it raises on a damaged header said in one line, and object dtypes refused."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # 3.0 is only written for structured dtypes, which aeopt does not read
            raise AeoptError(f"{where}: .npy format version {version[0]}.{version[1]} is not supported: "
                             "save a plain numeric array with numpy.save")
        reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, fortran, dtype = reader(f)
    except AeoptError:
        raise
    except (ValueError, SyntaxError, TypeError, OverflowError, RecursionError, MemoryError, EOFError,
            tokenize.TokenError) as e:
        raise AeoptError(f"{where}: corrupt .npy header ({str(e).splitlines()[0] if str(e) else type(e).__name__}"
                         "): re-save the array with numpy.save") from None
    if dtype.hasobject:
        raise AeoptError(f"{where}: object arrays are not supported; save a numeric array (e.g. x.astype('float32'))")
    if dtype.itemsize == 0 or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise AeoptError(f"{where}: corrupt .npy header (dtype {dtype}, shape {shape}): re-save it with numpy.save")
    return dtype, shape, fortran


def _np_error(e: Exception, where: str) -> AeoptError:
    """Turn an error from reading a .npy into a user-facing one."""
    if "object arrays" in str(e).lower():  # what numpy says when allow_pickle=False meets objects
        return AeoptError(f"{where}: object arrays are not supported; save a numeric array "
                          "(e.g. x.astype('float32'))")
    return AeoptError(f"{where}: cannot read the array ({e}): re-save it with numpy")


def _checked_npy(path: str, where: str) -> Path:
    """The file, once its .npy header is known to be sound and its data all there: numpy is then never
    asked to allocate (or map) a declared shape the file does not hold."""
    file = require_file(path)
    if not has_magic(file, NPY_MAGIC):
        raise AeoptError(f"{where}: not a .npy file: save it with numpy.save (use npz:PATH for .npz)")
    with open(file, "rb") as f:
        dtype, shape, _ = _npy_header(f, where)
        have = file.stat().st_size - f.tell()
    need = math.prod(shape) * dtype.itemsize
    if need > have:
        raise AeoptError(f"{where}: truncated: shape {shape} of {dtype} needs {need} data bytes but the file has "
                         f"{have}: re-save it with numpy.save")
    return file


def load_npy(path: str, where: str) -> np.ndarray:
    """Load a .npy file; anything else (pickles, .npz) is refused."""
    file = _checked_npy(path, where)
    try:
        return np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _np_error(e, where) from None


def load_npy_mapped(path: str, where: str) -> np.ndarray:
    """A .npy file as a read-only memory map (nothing is read until used); never unpickles."""
    file = _checked_npy(path, where)
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _np_error(e, where) from None


def load_npz(path: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Load data ``x`` (or ``X``, ``images``, or the only array) and labels ``y``/``labels``.

    Read with zipfile, member by member, rather than numpy's NpzFile: a damaged archive raises a dozen
    exception types there, and a member's declared shape would be allocated before its data is read.
    """
    file = require_file(path)
    if not has_magic(file, b"PK"):  # .npz is a zip archive
        raise AeoptError(f"{where}: not a .npz archive: save it with numpy.savez (use npy:PATH for .npy)")
    try:
        with zipfile.ZipFile(file) as archive:
            members = {(n[:-4] if n.endswith(".npy") else n): n for n in archive.namelist()}
            keys = list(members)
            x_key = next((k for k in ("x", "X", "images") if k in keys), keys[0] if len(keys) == 1 else None)
            if x_key is None:
                raise AeoptError(f"{where}: cannot tell which of the arrays {keys} is the data: "
                                 "name it 'x' (and the labels 'y')")
            y_key = next((k for k in ("y", "labels") if k in keys and k != x_key), None)
            x = _npz_member(archive, members[x_key], where, file.stat().st_size)
            y = _npz_member(archive, members[y_key], where, file.stat().st_size) if y_key else None
    except AeoptError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as e:  # RuntimeError: an encrypted member
        raise AeoptError(f"{where}: corrupt .npz archive ({str(e).splitlines()[0] if str(e) else type(e).__name__}"
                         "): re-save it with numpy.savez") from None
    return x, y


def _npz_member(archive: zipfile.ZipFile, name: str, where: str, archive_bytes: int) -> np.ndarray:
    """One .npy member, its declared size checked against what the archive can hold before it is read."""
    if not name.endswith(".npy"):
        raise AeoptError(f"{where}: {name!r} is not a numpy array: save the archive with numpy.savez")
    info = archive.getinfo(name)
    with archive.open(info) as f:
        dtype, shape, fortran = _npy_header(f, f"{where}[{name}]")
        need = math.prod(shape) * dtype.itemsize
        most = info.file_size - f.tell()
        if info.compress_type != zipfile.ZIP_STORED:
            most = min(most, archive_bytes * MAX_DEFLATE_RATIO)
        if need > most:
            raise AeoptError(f"{where}: {name} is truncated or corrupt: shape {shape} of {dtype} needs {need} "
                             f"bytes, the archive holds at most {max(most, 0)}: re-save it with numpy.savez")
        out = np.empty(need, np.uint8)  # untouched pages cost nothing if the data turns out shorter
        done = 0
        while done < need and (chunk := f.read(min(need - done, READ_PIECE))):
            out[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
            done += len(chunk)
    if done < need:
        raise AeoptError(f"{where}: {name} is truncated ({done} of {need} data bytes): re-save it with numpy.savez")
    return out.view(dtype).reshape(shape, order="F" if fortran else "C")


def open_image(p: Path, where: str, fn):
    """`fn(image)` of an opened image file, after its declared size passed the check below; every error
    PIL raises on a damaged file is said in one line.

    PIL allocates the declared size before decoding, so a 100-byte file claiming 10,000 x 10,000 pixels
    would cost 400 MB for nothing: no file holds more than 8 pixels per byte after DEFLATE's 1032:1 (PNG at
    1 bit per pixel, the densest of the formats read here), nor more than PIL's own limit (which PIL only
    warns about between 1x and 2x)."""
    from PIL import Image  # imported lazily: only images need it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                size = p.stat().st_size
                if im.size[0] * im.size[1] > min(Image.MAX_IMAGE_PIXELS or math.inf, MAX_PIXELS_PER_BYTE * size):
                    raise AeoptError(f"{where}: image {p} declares {im.size[0]}x{im.size[1]} pixels, more than its "
                                     f"{size} bytes can hold (or over PIL's limit): fix or remove the file")
                return fn(im)
    except AeoptError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise AeoptError(f"{where}: cannot read image {p} ({e}): fix or remove the file") from None


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

    # A first pass over the headers only picks one mode and size for all images.
    info = [open_image(p, where, lambda im: (im.mode, im.size)) for p in files]
    mode = "L" if all(m in GREY_MODES for m, _ in info) else "RGB"
    size = (image_size[1], image_size[0]) if image_size else Counter(s for _, s in info).most_common(1)[0][0]
    need = len(files) * (1 if mode == "L" else 3) * size[0] * size[1]
    if need > _memory_bytes():
        raise AeoptError(f"{where}: {len(files)} images of {size[0]}x{size[1]} need {need / 2**30:.1f} GiB, more "
                         f"than this machine's {_memory_bytes() / 2**30:.1f} GiB: pass a smaller image size")

    def pixels(im) -> np.ndarray:
        im = im.convert(mode)  # PIL sizes are (width, height)
        return np.asarray(im if im.size == size else im.resize(size, Image.Resampling.BILINEAR))

    x = np.stack([open_image(p, where, pixels) for p in files])
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    if nested == {False}:
        return x, None
    classes = sorted({q[0] for q in parts})
    return x, np.array([classes.index(q[0]) for q in parts], dtype=np.int64)


def _memory_bytes() -> int | float:
    """This machine's physical memory (infinite where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return math.inf
