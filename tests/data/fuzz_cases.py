"""Hostile inputs for every file aeopt reads, as hypothesis strategies: shared by the CI fuzz test
(tests/data/test_fuzz_readers.py, a few hundred cases each) and the long run (benchmarks/fuzz_inputs.py).

A case is a dict {relative file name: bytes}, written into a fresh folder, and each `Reader` knows the one
library entry point that reads it. The rule every case must keep: `Reader.load` either returns (the input
was valid) or raises AeoptError with a one-line message; never another exception, a hang or an allocation
far larger than the input. Each strategy mixes random bytes with mutations of a valid file, because random
bytes alone almost never get past the first magic-number check, where the interesting bugs are not.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from hypothesis import strategies as st

from aeopt.cli.flags import settings_from_args
from aeopt.data import load_array_file, load_data
from aeopt.optimize.space import ORDER, default_space, load_space
from aeopt.settings import FIELD_SECTION, Settings

HUGE = st.sampled_from([2 ** 31, 2 ** 32 - 1, 2 ** 40, 2 ** 62, 10 ** 12])
SMALL = st.integers(0, 9)


@dataclass
class Reader:
    name: str
    inputs: st.SearchStrategy  # dict {file name: bytes}
    load: Callable[[Path], Any]  # reads what `inputs` wrote under the folder


def write_case(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


@st.composite
def mutated(draw, blob: bytes) -> bytes:
    """`blob` with a few bit flips, a truncation, an insertion or a deletion."""
    data = bytearray(blob)
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "none"]))
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif kind == "insert":
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete" and data:
        pos = draw(st.integers(0, len(data) - 1))
        del data[pos:pos + draw(st.integers(1, 8))]
    return bytes(data)


def body_of(draw, size: int) -> bytes:
    """Data bytes: zeros (valid for every dtype), random bytes, or a few of either when `size` is huge."""
    if size > 4096:
        size = draw(st.integers(0, 4096))
    return b"\0" * size if draw(st.booleans()) else draw(st.binary(min_size=size, max_size=size))


# --- IDX -------------------------------------------------------------------------------------------


@st.composite
def idx_bytes(draw) -> bytes:
    """An IDX file with a drawn type byte, dimension count and dims (small or huge), a body of the right
    size give or take, sometimes gzipped (and then sometimes truncated)."""
    if draw(st.booleans()):  # a sound file of random pixels (or labels), then maybe damaged
        shape = draw(st.sampled_from([(draw(st.integers(0, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 5))),
                                      (draw(st.integers(0, 6)),)]))
        raw = bytes([0, 0, 8, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
        raw += draw(st.binary(min_size=math.prod(shape), max_size=math.prod(shape)))
        raw = gzip.compress(raw, compresslevel=1) if draw(st.booleans()) else raw
        return draw(mutated(raw)) if draw(st.booleans()) else raw
    type_byte = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF]))
    ndim = draw(st.one_of(st.integers(0, 5), st.sampled_from([33, 65, 255])))
    dims = [draw(st.one_of(SMALL, SMALL, SMALL, HUGE.filter(lambda v: v < 2 ** 32))) for _ in range(min(ndim, 8))]
    dims += [draw(st.integers(0, 1))] * (ndim - len(dims))  # many dims: zeros or ones keep the body tiny
    itemsize = {0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(type_byte, 1)
    need = math.prod(dims) * itemsize
    body = body_of(draw, max(0, need + draw(st.sampled_from([0, 0, 0, -1, 1, 7]))))
    magic = draw(st.sampled_from([b"\0\0", b"\0\0", b"\0\1", b"\x1f\x8b"]))
    raw = magic + bytes([type_byte, ndim]) + b"".join(struct.pack(">I", d) for d in dims) + body
    if draw(st.booleans()):
        raw = gzip.compress(raw, compresslevel=1)
        raw = draw(mutated(raw)) if draw(st.booleans()) else raw
    return raw


def idx_case(files: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({"images": files}, optional={"labels": files})


def load_idx(root: Path):
    spec = f"idx:{root / 'images'}" + (f",{root / 'labels'}" if (root / "labels").exists() else "")
    return load_data(spec)


# --- npy / npz -------------------------------------------------------------------------------------

DESCRS = ["<f4", "<f8", "|u1", "<i8", ">f4", ">i2", "|b1", "<f2", "|O", "<U3", "|S2", "<c8", "|V8", "<M8[s]",
          [("a", "<f4")], [("a", "|O")], "<f4 ", "float32", "xyz", 5, None]


@st.composite
def npy_bytes(draw) -> bytes:
    """A .npy file: numpy's own (then mutated) or a hand-made header with a drawn dtype and shape."""
    if draw(st.booleans()):
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
        dtype = draw(st.sampled_from(["f4", "f8", "u1", "i4", ">f8", "f2", "b1"]))
        buf = io.BytesIO()
        np.save(buf, np.zeros(shape, dtype) if draw(st.booleans()) else
                np.frombuffer(draw(st.binary(min_size=math.prod(shape) * np.dtype(dtype).itemsize,
                                             max_size=math.prod(shape) * np.dtype(dtype).itemsize)),
                              dtype).reshape(shape), allow_pickle=False)
        return draw(mutated(buf.getvalue()))
    descr = draw(st.sampled_from(DESCRS))
    shape = draw(st.one_of(st.lists(st.one_of(SMALL, SMALL, HUGE, st.just(-1)), max_size=5).map(tuple),
                           st.just(()), st.sampled_from(["(3, 4)", "[3]", "3", "(1,) * 40"])))
    header = "{'descr': %r, 'fortran_order': %s, 'shape': %r, }" % (
        descr, draw(st.sampled_from(["False", "True", "0", "'no'"])), shape)
    if draw(st.integers(0, 4)) == 0:
        header = draw(mutated(header.encode())).decode("latin1")
    version = draw(st.sampled_from([1, 1, 2, 3, 0, 9]))
    text = header.encode("latin1") + b" " * (64 - (len(header) + 11) % 64) + b"\n"
    size = struct.pack("<H" if version == 1 else "<I", len(text) % (2 ** 16 if version == 1 else 2 ** 32))
    try:
        itemsize = np.dtype(descr).itemsize
        need = math.prod(shape) * itemsize if isinstance(shape, tuple) else 0
    except (TypeError, ValueError, SyntaxError):
        need = 16
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + body_of(draw, max(0, need))


@st.composite
def npz_bytes(draw) -> bytes:
    """A zip archive of .npy members (stored or deflated, named x / y / other), sometimes mutated."""
    buf = io.BytesIO()
    if draw(st.booleans()):  # numpy's own archive of a table (and labels), then maybe damaged
        x = np.frombuffer(draw(st.binary(min_size=24, max_size=24)), np.uint8).reshape(-1, draw(st.sampled_from([1, 2])))
        arrays = {"x": x, "y": np.arange(len(x)) % 2} if draw(st.booleans()) else {"data": x.astype("f4")}
        (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, **arrays)
        return draw(mutated(buf.getvalue())) if draw(st.booleans()) else buf.getvalue()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name in draw(st.lists(st.sampled_from(["x.npy", "y.npy", "X.npy", "labels.npy", "data.npy", "x.txt",
                                                   "../x.npy"]), max_size=3, unique=True)):
            z.writestr(name, draw(npy_bytes()))
    return draw(mutated(buf.getvalue())) if draw(st.booleans()) else buf.getvalue()


def load_npy(root: Path):
    return load_data(f"npy:{root / 'x.npy'}", mmap=False)


def load_npy_mapped(root: Path):
    return load_data(f"npy:{root / 'x.npy'}", mmap=True)


def load_npz(root: Path):
    return load_data(f"npz:{root / 'x.npz'}")


# --- CSV -------------------------------------------------------------------------------------------

NUMBERS = st.one_of(st.integers(-5, 5).map(str), st.floats(-1e6, 1e6).map(repr))
CELLS = st.one_of(NUMBERS, NUMBERS, NUMBERS, st.floats().map(repr),
                  st.sampled_from(["", " ", "nan", "inf", "-Infinity", "1e999", "1_0", "0x10", "abc", "label", "y",
                                   "class", '"1,2"', '"', "\x00", "\ufeff", "é", "1" * 5000]))


@st.composite
def csv_bytes(draw) -> bytes:
    """Rows of drawn cells (numbers, NaN/inf, text, quotes, NUL), ragged or not, with a drawn separator."""
    width = draw(st.integers(1, 5))
    cells = NUMBERS if draw(st.booleans()) else CELLS  # a clean numeric table half the time
    rows = draw(st.lists(st.lists(cells, min_size=width, max_size=width + draw(st.integers(0, 1))), max_size=12))
    if draw(st.booleans()):
        rows.insert(0, draw(st.lists(st.sampled_from(["a", "b", "label", "y", "x1", "1"]), min_size=width,
                                     max_size=width)))
    sep, end = draw(st.sampled_from([",", ";", "\t"])), draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(sep.join(row) for row in rows)
    return draw(st.sampled_from(["utf-8", "utf-16", "latin1"]).map(lambda enc: text.encode(enc, "replace")))


def load_csv(root: Path):
    return load_data(f"csv:{root / 'x.csv'}")


# --- image folders ---------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@st.composite
def image_bytes(draw) -> bytes:
    """A real small PNG/JPEG/BMP (then mutated), a PNG whose header declares a huge size with a valid CRC,
    or random bytes."""
    from PIL import Image

    choice = draw(st.sampled_from(["real", "real", "huge-png", "random"]))
    if choice == "random":
        return draw(st.binary(max_size=300))
    if choice == "huge-png":
        width, height = draw(st.one_of(HUGE.filter(lambda v: v < 2 ** 31), st.integers(1, 70000))), \
            draw(st.one_of(HUGE.filter(lambda v: v < 2 ** 31), st.integers(1, 70000)))
        ihdr = struct.pack(">IIBBBBB", width, height, 8, draw(st.sampled_from([0, 2, 3, 6])), 0, 0, 0)
        idat = zlib.compress(b"\0" * draw(st.integers(0, 2000)))
        return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "I;16", "F", "CMYK"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP"]))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    im = Image.frombytes("L", size, draw(st.binary(min_size=size[0] * size[1], max_size=size[0] * size[1])))
    buf = io.BytesIO()
    try:
        im.convert(mode).save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode this format cannot store: store it as L
        buf = io.BytesIO()
        im.save(buf, format=fmt)
    return draw(mutated(buf.getvalue())) if draw(st.booleans()) else buf.getvalue()


@st.composite
def image_folder(draw) -> dict[str, bytes]:
    nested = draw(st.booleans())
    names = draw(st.lists(st.sampled_from(["a.png", "b.jpg", "c.jpeg", "d.bmp", "e.PNG", "f.png"]), min_size=1,
                          max_size=4, unique=True))
    return {f"img/{draw(st.sampled_from(['cat', 'dog'])) + '/' if nested else ''}{n}": draw(image_bytes())
            for n in names}


def load_images(root: Path):
    return load_data(f"images:{root / 'img'}")


def load_batch(root: Path):
    """What `aeopt reconstruct` / `encode` read: one image or a .npy batch, told apart by content."""
    return load_array_file(str(root / "in.png"))


# --- shards ----------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
NAMES = st.sampled_from(["shard-00000.npy", "shard-00001.npy", "shard-00000.labels.npy", "", ".", "..", "missing.npy",
                         "a\x00b", "sub/x.npy", "index.json"])


@st.composite
def shard_folder(draw) -> dict[str, bytes]:
    """A shard folder: valid shards of one sample shape or hostile .npy files, with or without an index.json
    that is valid, a mutation of a valid one, or random JSON."""
    files = {}
    n_shards = draw(st.integers(0, 3))
    shape = draw(st.sampled_from([(4,), (1, 2, 2), (2, 2), ()]))
    for i in range(n_shards):
        name = f"s/shard-{i:05d}"
        if draw(st.integers(0, 2)):
            buf = io.BytesIO()
            count = draw(st.integers(0, 4))
            np.save(buf, np.zeros((count, *shape), draw(st.sampled_from(["f4", "u1", "i8"]))))
            files[f"{name}.npy"] = buf.getvalue()
        else:
            files[f"{name}.npy"] = draw(npy_bytes())
        if draw(st.booleans()):
            labels = io.BytesIO()
            np.save(labels, draw(st.sampled_from([np.arange(2), np.array(["a", "b"]), np.zeros((2, 2)), np.int64(1)])))
            files[f"{name}.labels.npy"] = labels.getvalue()
    index = draw(st.sampled_from(["none", "valid", "mutated", "random", "deep"]))
    entries = [{"x": draw(st.one_of(st.just(f"shard-{i:05d}.npy"), NAMES)),
                "count": draw(st.one_of(st.integers(-1, 5), st.sampled_from([None, "3", 2.5, True, [1]]))),
                "labels": draw(st.one_of(st.none(), NAMES, st.integers()))} for i in range(n_shards)]
    meta = {"format": "aeopt-shards", "version": draw(st.sampled_from([1, 1, 2, "1", None, [1]])), "shards": entries}
    if index == "valid":
        files["s/index.json"] = json.dumps(meta).encode()
    elif index == "mutated":
        files["s/index.json"] = draw(mutated(json.dumps(meta).encode()))
    elif index == "random":
        files["s/index.json"] = json.dumps(draw(JSON)).encode()
    elif index == "deep":
        files["s/index.json"] = b"[" * 100_000
    files.setdefault("s/.keep", b"")
    return files


def load_shards(root: Path):
    return load_data(f"shards:{root / 's'}")


# --- YAML: the run config and the search space -----------------------------------------------------

YAML_BOMBS = [
    # billion laughs: 9 levels of 9 aliases, 387 million list items if expanded (safe_load shares them)
    "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "lr: *i\n",
    "x: &a [*a]", "[" * 5000 + "]" * 5000, "{a: " * 3000 + "1" + "}" * 3000, "lr: " + "9" * 5000, "seed: 2001-13-45",
    "lr: !!python/object/apply:os.system [ls]", "lr: !!binary '%%%'", "&a [*a]", "- [1]\n- 2\n", "lr: &x 1\n<<: *x",
    "? [a, b]\n: 1", "1: 2\nx: 3", "!!set {a, b}", "!!float foo", "epochs: .nan", "lr: 1e-3\nlr: 2e-3",
]
SETTING_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10 ** 6) | st.floats() | st.text(max_size=10)
    | st.sampled_from(["auto", "digits", "mse", "conv", "mlp", "relu", "1e-3", "256,128", "gaussian:0.3", "0.05:0.1",
                       "npy:/nonexistent.npy"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


@st.composite
def yaml_bytes(draw, keys: list[str], values: st.SearchStrategy) -> bytes:
    """Known keys with drawn values (flat or nested by section), dumped then maybe mutated; random YAML-ish
    text; or a bomb (aliases, nesting, huge numbers, bad tags)."""
    choice = draw(st.sampled_from(["dump", "dump", "text", "bomb", "bytes"]))
    if choice == "text":
        return draw(st.text(alphabet=" \n\t-:[]{}&*!?|>'\",#%@`abcxyz0129.e", max_size=120)).encode()
    if choice == "bomb":
        return draw(st.sampled_from(YAML_BOMBS)).encode()
    if choice == "bytes":
        return draw(st.binary(max_size=200))
    doc = draw(st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=5)), values, max_size=5))
    if draw(st.booleans()):
        doc = draw(st.one_of(st.just([doc]), st.just({"optimization": doc}), SETTING_VALUES))
    return draw(mutated(yaml.safe_dump(doc).encode())) if draw(st.integers(0, 3)) == 0 else yaml.safe_dump(doc).encode()


RANGES = st.one_of(SETTING_VALUES, st.fixed_dictionaries(
    {"low": st.one_of(st.integers(-3, 300), st.floats(), st.just(10 ** 400), st.text(max_size=3)),
     "high": st.one_of(st.integers(-3, 300), st.floats(), st.just(10 ** 400))},
    optional={"log": st.one_of(st.booleans(), st.text(max_size=3)), "step": st.integers()}))


def load_config(root: Path):
    """What `aeopt train --config` does before it loads data: the CLI's own reading and flattening, then
    every setting's check."""
    return Settings.from_flat(settings_from_args(argparse.Namespace(config=str(root / "c.yaml")))).validate()


def load_search_space(root: Path):
    return load_space(root / "space.yaml", default_space((1, 8, 8), in_unit_range=True, latent_dim=None))


def one_file(name: str, structured: st.SearchStrategy) -> st.SearchStrategy:
    """{name: bytes}: structured input three times in four, random bytes otherwise."""
    return st.one_of(structured, structured, structured, st.binary(max_size=300)).map(lambda b: {name: b})


READERS = [
    Reader("idx", idx_case(st.one_of(idx_bytes(), idx_bytes(), idx_bytes(), st.binary(max_size=300))), load_idx),
    Reader("npy", one_file("x.npy", npy_bytes()), load_npy),
    Reader("npy (mmap)", one_file("x.npy", npy_bytes()), load_npy_mapped),
    Reader("npz", one_file("x.npz", npz_bytes()), load_npz),
    Reader("csv", one_file("x.csv", csv_bytes()), load_csv),
    Reader("images", image_folder(), load_images),
    Reader("batch (reconstruct)", one_file("in.png", st.one_of(image_bytes(), npy_bytes())), load_batch),
    Reader("shards", shard_folder(), load_shards),
    Reader("config", one_file("c.yaml", yaml_bytes(sorted(FIELD_SECTION), SETTING_VALUES)), load_config),
    Reader("space", one_file("space.yaml", yaml_bytes(list(ORDER), RANGES)), load_search_space),
]
