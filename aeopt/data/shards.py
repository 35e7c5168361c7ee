"""Sharded data (`shards:DIR`): a folder of .npy files read as one array, batch by batch, never whole.

Layout (what `aeopt shard` writes, and what a user may write by hand):

    DIR/index.json               {"format": "aeopt-shards", "version": 1, "count": N,
                                  "shards": [{"x": "shard-00000.npy", "count": n0, "labels": "..."}, ...]}
    DIR/shard-00000.npy          samples 0 .. n0-1: images (n, C, H, W) or (n, H, W), or a table (n, F);
                                 any numeric dtype, uint8 pixels kept as they are
    DIR/shard-00000.labels.npy   optional: one label per sample of that shard

Without index.json, the folder's shard-*.npy files are taken in name order (labels beside them when
present). Every shard must have the same sample shape and dtype. Shards are memory-mapped; a batch
gathers its rows from whichever shards hold them, so the epoch's shuffle mixes all shards, and the
mapped pages are released every few batches (`release`), so resident memory stays flat as the data
grows: the page cache, not the process, holds what was read.
"""
from __future__ import annotations

import json
import mmap
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import AeoptError
from .readers import is_channels_last, load_npy, load_npy_mapped

INDEX = "index.json"
FORMAT, VERSION = "aeopt-shards", 1


class ShardedArray:
    """Several memory-mapped arrays of one sample shape and dtype, indexed as one (N, ...) array."""

    def __init__(self, parts: list[np.ndarray], where: str):
        if not parts:
            raise AeoptError(f"{where}: no shards found; write them with `aeopt shard --data SPEC --out DIR`")
        first = parts[0]
        for i, part in enumerate(parts):
            if part.shape[1:] != first.shape[1:] or part.dtype != first.dtype:
                raise AeoptError(f"{where}: shard {i} holds {part.dtype} samples of shape {part.shape[1:]}, shard 0 "
                                 f"{first.dtype} of shape {first.shape[1:]}: every shard must match")
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]), *first.shape[1:])
        self.dtype, self.ndim, self.size = first.dtype, first.ndim, int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        rows = np.asarray(index, dtype=np.int64)
        if rows.ndim == 0:
            return self[rows[None]][0]
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        for s in np.unique(shard):
            picked = shard == s
            out[picked] = gather(self.parts[s], rows[picked] - self.starts[s])
        return out

    def release(self) -> None:
        for part in self.parts:
            release(part)


RELEASE_BYTES = 32 << 20  # a reader hands a map's pages back after about this much was read


def gather(array, rows: np.ndarray) -> np.ndarray:
    """array[rows] for scattered rows of a file-backed map, read with pread into a fresh buffer instead of
    through the mapping: a page fault maps its neighbours too (fault-around), so a random batch of 4,096
    small rows would map hundreds of MB into the process; a read leaves them in the page cache only."""
    filename, mapped = getattr(array, "filename", None), getattr(array, "_mmap", None)
    if not (isinstance(array, np.memmap) and filename and mapped is not None and array.flags.c_contiguous
            and len(rows)):
        return array[rows]
    row_bytes = array.itemsize * int(np.prod(array.shape[1:]))
    map_address = np.frombuffer(mapped, dtype=np.uint8, count=1).ctypes.data
    start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY + (array.ctypes.data - map_address)
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    view = memoryview(out.reshape(len(rows), -1).view(np.uint8))
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    breaks = np.flatnonzero(np.diff(ordered) != 1) + 1  # runs of consecutive rows: one read each
    with open(filename, "rb", buffering=0) as f:
        fd = f.fileno()
        for run in np.split(np.arange(len(rows)), breaks):
            first, count = int(ordered[run[0]]), len(run)
            os.preadv(fd, [view[run[0]:run[0] + count]], start + first * row_bytes)
    result = np.empty_like(out)
    result[order] = out
    return result


class Releaser:
    """Calls `release(array)` once about RELEASE_BYTES were read since the last time: often enough to keep
    resident memory flat, rarely enough that madvise (which walks the whole mapping) costs little."""

    def __init__(self, array):
        self.array, self.read = array, 0

    def tick(self, nbytes: int) -> None:
        self.read += nbytes
        if self.read >= RELEASE_BYTES:
            release(self.array)
            self.read = 0


def release(array) -> None:
    """Drop a memory map's pages from this process (they stay in the page cache): flat resident memory."""
    if isinstance(array, ShardedArray):
        array.release()
        return
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED)


def read_shards(folder: str, where: str) -> tuple[ShardedArray, np.ndarray | None]:
    """The samples and (if every shard has them) the labels of a shard folder."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AeoptError(f"{where}: no such folder; write shards with `aeopt shard --data SPEC --out {folder}`")
    entries = _entries(root, where)
    parts = [_channels_first(load_npy_mapped(str(root / e["x"]), f"{where}/{e['x']}")) for e in entries]
    for entry, part in zip(entries, parts):
        if part.ndim == 0:
            raise AeoptError(f"{where}: {entry['x']} holds a single value, not samples: rewrite the shards")
        if entry.get("count") is not None and entry["count"] != len(part):
            raise AeoptError(f"{where}: index.json says {entry['x']} holds {entry['count']} samples, the file "
                             f"{len(part)}: rewrite the shards")
    labels = None
    if entries and all(e.get("labels") for e in entries):
        pieces = [load_npy(str(root / e["labels"]), f"{where}/{e['labels']}") for e in entries]
        if any(p.ndim != 1 or len(p) != len(x) for p, x in zip(pieces, parts)):
            raise AeoptError(f"{where}: a labels file does not have one label per sample of its shard")
        try:
            labels = np.concatenate(pieces)
        except (TypeError, ValueError):  # e.g. class names in one shard, numbers in another
            raise AeoptError(f"{where}: the shards' labels files hold {', '.join(sorted({str(p.dtype) for p in pieces}))} "
                             "labels: write every shard's labels with one dtype") from None
    return ShardedArray(parts, where), labels


def _channels_first(part: np.ndarray) -> np.ndarray:
    """(n, H, W) -> (n, 1, H, W) and (n, H, W, C) -> (n, C, H, W), as views of the map."""
    if part.ndim == 3:
        return part[:, None]
    if is_channels_last(part.shape):  # the rule `load_data` applies to arrays: ShardedArray cannot transpose
        return part.transpose(0, 3, 1, 2)
    return part


def _in_folder(name) -> bool:
    """A plain file name (no folder part, no NUL that the OS would refuse), so an index cannot point outside."""
    return isinstance(name, str) and "/" not in name and ".." not in name and "\0" not in name


def _entries(root: Path, where: str) -> list[dict]:
    index = root / INDEX
    if not index.is_file():
        files = sorted(p.name for p in root.glob("shard-*.npy") if not p.name.endswith(".labels.npy"))
        return [{"x": f, "labels": f[:-4] + ".labels.npy" if (root / (f[:-4] + ".labels.npy")).is_file() else None}
                for f in files]
    try:
        meta = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:  # deep nesting: RecursionError
        raise AeoptError(f"{where}: {INDEX} is not valid JSON ({err}); rewrite the shards") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("shards"), list):
        raise AeoptError(f"{where}: {INDEX} is not an aeopt shard index; rewrite the shards with `aeopt shard`")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise AeoptError(f"{where}: {INDEX} has version {str(version)[:20]!r}, not a number; rewrite the shards")
    if version > VERSION:
        raise AeoptError(f"{where}: shard format version {meta['version']} is newer than this aeopt reads "
                         f"({VERSION}); upgrade aeopt")
    entries = []
    for e in meta["shards"]:
        if not (isinstance(e, dict) and _in_folder(e.get("x"))):
            raise AeoptError(f"{where}: {INDEX} lists a shard that is not a file in the folder; rewrite the shards")
        labels = e.get("labels")
        if labels is not None and not _in_folder(labels):
            raise AeoptError(f"{where}: {INDEX} lists a labels file outside the folder; rewrite the shards")
        entries.append({"x": e["x"], "count": e.get("count"), "labels": labels})
    return entries


def write_shards(x: np.ndarray, y: np.ndarray | None, out: str | Path, shard_size: int, *,
                 overwrite: bool = False, progress=None) -> dict:
    """Write samples (and labels) as shards of `shard_size` into `out`, built beside it and renamed into place."""
    if not isinstance(shard_size, int) or shard_size < 1:
        raise AeoptError(f"--shard-size must be a positive number of samples, got {shard_size!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise AeoptError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    stage = out.parent / f".{out.name}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        shards = []
        for number, start in enumerate(range(0, len(x), shard_size)):
            name = f"shard-{number:05d}"
            np.save(stage / f"{name}.npy", np.ascontiguousarray(x[start:start + shard_size]), allow_pickle=False)
            entry = {"x": f"{name}.npy", "count": int(min(shard_size, len(x) - start)), "labels": None}
            if y is not None:
                np.save(stage / f"{name}.labels.npy", np.asarray(y[start:start + shard_size]), allow_pickle=False)
                entry["labels"] = f"{name}.labels.npy"
            shards.append(entry)
            if progress is not None:
                progress(entry["count"])
        meta = {"format": FORMAT, "version": VERSION, "count": int(len(x)), "sample_shape": list(x.shape[1:]),
                "dtype": str(x.dtype), "shards": shards}
        (stage / INDEX).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return meta
