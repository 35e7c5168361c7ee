"""The files a killed command left: each must read back whole as its kind (benchmarks/chaos.py)."""
from __future__ import annotations

import csv
import functools
import io
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

def unreadable(path: Path) -> str | None:
    """Why `path` is not a whole file of its kind, or None when it reads back."""
    suffix = path.suffix
    try:
        if suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif suffix == ".csv":
            rows = list(csv.reader(io.StringIO(path.read_text())))
            if rows and len({len(r) for r in rows if r}) > 1:
                return "ragged rows"
        elif suffix == ".md":
            path.read_text()
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    f.get_tensor(name)
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                image.load()
        elif suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif suffix == ".db":
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    return "SQLite integrity check failed"
        elif suffix == ".aec":  # decoded with the codec run beside the outputs (checksum and all)
            from aeopt.codec import decompress

            decompress(_codec(str(path.parents[1] / "codec")), path.read_bytes())
        elif suffix == ".onnx":
            import onnx

            onnx.load(str(path))
    except Exception as err:  # any failure to read is the finding
        return f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    return None


@functools.lru_cache(maxsize=4)
def _codec(run: str):
    from aeopt.codec import load_codec

    return load_codec(run)


@dataclass
class FileCheck:
    files: int = 0
    corrupt: list[str] = field(default_factory=list)
    leftovers: int = 0   # hidden temp files/stages a SIGKILL cannot clean (never read as results)


def check_files(root: Path) -> FileCheck:
    found = FileCheck()
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if hidden:
            found.leftovers += 1
            continue
        found.files += 1
        problem = unreadable(path)
        if problem:
            found.corrupt.append(f"{path.relative_to(root)}: {problem}")
    return found


def run_dirs_unfinished(root: Path) -> list[str]:
    """Visible run directories (config.yaml) without metrics.json: a half-written run where a finished one is
    expected, once recovery has succeeded. A search trial's folder (optimize's trials/NNNN) holds a
    checkpoint and no metrics by design: the study records its result."""
    return [str(p.parent.relative_to(root)) for p in root.rglob("config.yaml")
            if not any(part.startswith(".") or part == "trials" for part in p.relative_to(root).parts)
            and not (p.parent / "metrics.json").is_file()]
