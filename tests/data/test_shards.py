"""Data larger than memory: shards:DIR and big memory maps, read batch by batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aeopt
from aeopt import AeoptError
from aeopt.cli import main
from aeopt.data import load_data

ROOT = Path(__file__).resolve().parents[2]


def test_training_from_shards_matches_training_in_memory(tmp_path):
    pixels = (load_data("digits").x_test.numpy() * 255).round().astype(np.uint8)  # 270 uint8 images
    pixels = np.concatenate([pixels] * 3)
    labels = np.arange(len(pixels)) % 10
    np.save(tmp_path / "x.npy", pixels)
    np.savez(tmp_path / "xy.npz", x=pixels, y=labels)
    assert main(["shard", "--data", f"npz:{tmp_path / 'xy.npz'}", "--out", str(tmp_path / "shards"),
                 "--shard-size", "100", "--quiet"]) == 0
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [100] * 8 + [10] and index["dtype"] == "uint8"
    sharded = load_data(f"shards:{tmp_path / 'shards'}")
    assert sharded.y_test is not None and sharded.n_train == len(pixels) - 81 - 122
    runs = {}
    for spec in (f"npz:{tmp_path / 'xy.npz'}", f"shards:{tmp_path / 'shards'}"):
        runs[spec[:3]] = aeopt.train(data=spec, model="conv", width=4, latent_dim=4, epochs=2, batch_size=32,
                                     precision="fp32", threads=1, out=str(tmp_path / spec[:3]), progress=False,
                                     log=lambda m: None)
    assert runs["sha"].metrics["test"]["mse"] == runs["npz"].metrics["test"]["mse"]
    assert runs["sha"].metrics["test"]["per_class"] == runs["npz"].metrics["test"]["per_class"]


def test_bad_shard_folders_get_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AeoptError, match="no shards found"):
        load_data(f"shards:{tmp_path / 'empty'}")
    bad = tmp_path / "mixed"
    bad.mkdir()
    np.save(bad / "shard-00000.npy", np.zeros((4, 8, 8), np.uint8))
    np.save(bad / "shard-00001.npy", np.zeros((4, 9, 9), np.uint8))
    with pytest.raises(AeoptError, match="every shard must match"):
        load_data(f"shards:{bad}")
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "index.json").write_text(json.dumps({"format": "aeopt-shards", "version": 1,
                                                    "shards": [{"x": "../../etc/passwd"}]}))
    assert main(["train", "--data", f"shards:{hostile}", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "not a file in the folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


RSS_CHECK = """
import sys
import numpy as np
import aeopt

def status(key):
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key))) * 1024

before = status("VmRSS:")
result = aeopt.train(data="npy:" + sys.argv[1], model="mlp", hidden="8", latent_dim=2, epochs=1, batch_size=4096,
                     precision="fp32", threads=1, out=sys.argv[2], progress=False, log=lambda m: None)
print(before, status("VmHWM:"), status("VmRSS:"), result.metrics["epochs"])
"""


def test_a_run_over_a_2_gb_memory_map_keeps_its_memory_flat(tmp_path):
    """2 GiB of float32 rows (2M x 256): npy:PATH maps it (over 1 GiB), reads batch by batch and hands the
    pages back, so the process's peak resident memory grows by less than 300 MB over the run."""
    path = tmp_path / "big.npy"
    rows, features = 2 * 1024 * 1024, 256
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, features))
    rng = np.random.default_rng(0)
    block = rng.standard_normal((65536, features), dtype=np.float32)
    for start in range(0, rows, len(block)):
        big[start:start + len(block)] = block
    big.flush()
    del big
    assert path.stat().st_size >= 2 * 1024 ** 3
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", RSS_CHECK, str(path), str(tmp_path / "run")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    before, peak, after, epochs = map(int, done.stdout.split())
    assert epochs == 1
    assert peak - before < 300 * 1024 ** 2, f"peak RSS grew by {(peak - before) / 1024 ** 2:.0f} MB"
