"""Fuzzing every input aeopt reads: any bytes give the one-line AeoptError (exit 2 on the CLI), never another
exception, a hang or an allocation far beyond the input's size.

The hostile inputs (random bytes and mutations of valid files, per reader) live in fuzz_cases.py, shared
with the long run, benchmarks/fuzz_inputs.py (>= 10,000 cases per reader). Here each reader gets a few
hundred, and the bugs the fuzzing found are kept as fixed regression cases below, each of which raised
something other than AeoptError (or allocated its declared size) before its fix.
"""
import gzip
import io
import json
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aeopt.errors import AeoptError
from fuzz_cases import READERS, YAML_BOMBS, write_case

EXAMPLES = 200       # per reader: ~1-3 s each on a loaded 2-core machine
MAX_SECONDS = 30.0   # a case slower than this is a hang (the slowest seen is ~2.5 s: YAML nested 5,000 deep)
MAX_TRACED_MB = 64   # every case is at most a few KB: more than this allocated is a runaway allocation


def outcome(reader, files: dict[str, bytes]) -> str:
    """'accepted', or the message of a one-line AeoptError; anything else fails the test."""
    with tempfile.TemporaryDirectory() as tmp:
        write_case(Path(tmp), files)
        started = time.perf_counter()
        try:
            reader.load(Path(tmp))
        except AeoptError as err:
            assert str(err) and "\n" not in str(err), f"not one line: {str(err)[:200]!r}"
            return str(err)
        finally:
            assert time.perf_counter() - started < MAX_SECONDS, "a hang"
    return "accepted"


@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(data=st.data())
def test_fuzzed_input_gives_one_line_error_or_loads(reader, data):
    outcome(reader, data.draw(reader.inputs, label="files"))


# --- the bugs the fuzzing found, kept as regression cases ------------------------------------------


def npy(header: str, body: bytes = b"", version: int = 1) -> bytes:
    text = header.encode("latin1") + b" " * (64 - (len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<H", len(text)) + text + body


def npy_of(shape, descr="<f8", body=b"") -> bytes:
    return npy("{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, tuple(shape)), body)


def idx(dims, body=b"", type_byte=8) -> bytes:
    return bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body


def zipped(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def png(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def shard_index(**entry) -> bytes:
    return json.dumps({"format": "aeopt-shards", "version": 1, "shards": [{"x": "shard-00000.npy", **entry}]}).encode()


GOOD_SHARD = npy_of((3, 4), "<f4", b"\0" * 48)
BY_NAME = {r.name: r for r in READERS}
REGRESSIONS = [
    # (reader, files, message fragment)
    ("idx", {"images": idx([0] * 255)}, "declares 255 dimensions"),                     # was ValueError (ndim > 64)
    ("idx", {"images": gzip.compress(idx([2 ** 31, 28, 28]))}, "gzip file can hold"),  # was decompressed whole
    ("idx", {"images": idx([6, 2 ** 31, 2 ** 31, 0])}, "truncated or corrupt"),        # was ValueError (reshape)
    ("idx", {"images": idx([2 ** 31, 2 ** 31, 0], type_byte=0x0E)}, "truncated or corrupt"),  # ValueError (bytes)
    ("npy", {"x.npy": npy_of((), "<f4", b"\0" * 4)}, "neither a table"),              # was TypeError (0-d)
    ("npy", {"x.npy": npy_of((2 ** 40, 2 ** 20))}, "needs"),                           # was MemoryError
    ("npy (mmap)", {"x.npy": npy_of((-1, 10 ** 12))}, "corrupt .npy header"),          # was OverflowError
    ("npy", {"x.npy": npy("z'descr': '<f4', 'fortran_order': False, 'shape': (), }")}, "corrupt .npy header"),
    ("npy", {"x.npy": npy_of((3, 2, 0, 1))}, "samples without values"),                # was ValueError (min)
    ("npy (mmap)", {"x.npy": npy_of((0, 1, 2, 0), "<i4")}, "samples without values"),  # was ZeroDivisionError
    ("npy", {"x.npy": npy_of((2,), "|O", b"\0" * 16)}, "object arrays are not supported"),
    ("npz", {"x.npz": b"PK\x05\x06" + b"\0" * 18}, "cannot tell which"),               # was BadZipFile
    ("npz", {"x.npz": b"PK\x05\x06" + b"\0" * 10 + b"\x80" + b"\0" * 7}, "corrupt .npz archive"),  # BadZipFile
    ("npz", {"x.npz": zipped({"x.npy": npy_of((2 ** 33, 8))})}, "truncated or corrupt"),  # was allocated
    ("npz", {"x.npz": zipped({"x.npy": npy_of((), "<f4", b"\0" * 4)})}, "neither a table"),
    ("images", {"img/a.png": png(60000, 60000)}, "cannot read image"),                 # PIL's own bomb limit
    ("images", {"img/a.png": png(5000, 5000)}, "declares 5000x5000 pixels"),           # was a 75 MB allocation
    ("batch (reconstruct)", {"in.png": png(5000, 5000)}, "declares 5000x5000 pixels"),  # the same
    ("shards", {"s/shard-00000.npy": GOOD_SHARD, "s/index.json": shard_index(count=3).replace(b'"version": 1',
                                                                                           b'"version": "1"')},
     "not a number"),                                                                  # was TypeError
    ("shards", {"s/shard-00000.npy": GOOD_SHARD, "s/index.json": shard_index(x="a\0b")}, "not a file in the folder"),
    ("shards", {"s/shard-00000.npy": GOOD_SHARD, "s/index.json": b"[" * 100_000}, "not valid JSON"),  # RecursionError
    ("shards", {"s/shard-00000.npy": GOOD_SHARD, "s/shard-00000.labels.npy": npy_of((), "<i8", b"\0" * 8)},
     "one label per sample"),                                                          # was TypeError (len of 0-d)
    ("shards", {"s/shard-00000.npy": npy_of((4, 3, 5, 1), "|u1", bytes(60))}, "accepted"),  # was AttributeError
    ("config", {"c.yaml": YAML_BOMBS[0].encode()}, "expand to more than"),            # billion laughs: was a hang
    ("config", {"c.yaml": b"x: &a [*a]"}, "expand to more than"),
    ("config", {"c.yaml": b"lr: " + b"9" * 5000}, "not valid YAML"),                   # was ValueError
    ("config", {"c.yaml": b"seed: 2001-13-45"}, "not valid YAML"),                     # was ValueError
    ("config", {"c.yaml": b"[" * 5000}, "not valid YAML"),                             # was RecursionError
    ("config", {"c.yaml": b"data: 5"}, "--data must be text"),                         # was AttributeError in train
    ("config", {"c.yaml": b"model: [conv]"}, "model takes one value"),                 # was TypeError in train
    ("config", {"c.yaml": b"model: 5"}, "--model must be text"),
    ("space", {"space.yaml": b"1: 2\nx: 3"}, "unknown search setting"),               # was TypeError (sorted)
    ("space", {"space.yaml": b"batch_size: {low: 1" + b"0" * 400 + b", high: 5}"}, "finite numbers"),  # OverflowError
    ("space", {"space.yaml": b'"a\\nb": 1'}, "unknown search setting a\\nb"),          # was a two-line message
]


@pytest.mark.parametrize("name, files, message", REGRESSIONS, ids=[f"{r[0]}-{i}" for i, r in enumerate(REGRESSIONS)])
def test_found_bugs_give_one_line_error_without_allocating(name, files, message):
    if name in ("config", "space"):  # tracing makes YAML's deep recursion 30x slower; a YAML bomb is a hang
        assert message in outcome(BY_NAME[name], files)
        return
    tracemalloc.start()  # numpy's buffers are traced too
    try:
        said = outcome(BY_NAME[name], files)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message in said
    assert peak < MAX_TRACED_MB << 20, f"{peak / 2**20:.0f} MB allocated for {sum(map(len, files.values()))} bytes"


def test_the_fuzz_also_accepts_valid_files():
    """The cases are not all refusals: a sound file of each kind loads (else the fuzz proves little)."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.save(buf, rng.random((6, 3)))
    good = {"npy": {"x.npy": buf.getvalue()}, "idx": {"images": idx([4, 2, 2], bytes(16))},
            "npz": {"x.npz": zipped({"x.npy": buf.getvalue()})}, "csv": {"x.csv": b"a,b\n1,2\n3,4\n5,7\n"},
            "shards": {"s/shard-00000.npy": GOOD_SHARD}, "config": {"c.yaml": b"lr: 1e-3\nmodel: mlp\n"},
            "space": {"space.yaml": b"width: {low: 8, high: 16}\n"}}
    for name, files in good.items():
        assert outcome(BY_NAME[name], files) == "accepted", name


# --- the command line: exit code 2, one line on stderr, nothing written -----------------------------


@pytest.mark.parametrize("name, content, flags", [
    ("huge.npy", npy_of((2 ** 40, 2 ** 20)), ["--data", "npy:{file}"]),
    ("bomb.yaml", YAML_BOMBS[0].encode(), ["--config", "{file}"]),
], ids=["huge-npy", "billion-laughs-config"])
def test_cli_refuses_hostile_file_with_one_line_and_exit_2(tmp_path, name, content, flags):
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "run"
    argv = [a.format(file=tmp_path / name) for a in flags]
    proc = subprocess.run([sys.executable, "-m", "aeopt", "train", *argv, "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aeopt: error:") and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [name]
