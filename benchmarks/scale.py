"""Scaling out: DDP throughput per process count, and resident memory as sharded data grows, one run.

  python benchmarks/scale.py --out benchmarks/results/scale.md

Part 1, processes: the same run (Fashion-MNIST, the default conv, global batch 256) as 1 process x T threads
and as N processes x T/N threads (DDP over gloo, `aeopt train --nproc-per-node N`), each in a fresh process;
samples/s from each run's metrics.json (training steps only), efficiency = rate / (rate of 1 process).
Part 2, memory: synthetic uint8 28x28 images written as shards at 1x, 2x, 4x, 8x a base size; one epoch of a
small MLP over each, in a fresh process; the peak resident memory (VmHWM) growth over the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aeopt.runs import atomic_write_text  # noqa: E402

RSS = """
import sys, aeopt
def status(key):
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key))) * 1024
before = status("VmRSS:")
r = aeopt.train(data="shards:" + sys.argv[1], model="mlp", hidden="32", latent_dim=8, epochs=1, batch_size=2048,
                precision="fp32", threads=1, out=sys.argv[2], progress=False, log=lambda m: None)
print(before, status("VmHWM:"), r.metrics["samples_per_second"])
"""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ddp_rate(nproc: int, threads: int, limit: int, epochs: int, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "aeopt", "train", "--data", "fashion-mnist", "--limit", str(limit), "--epochs",
               str(epochs), "--batch-size", str(256 // nproc), "--threads", str(threads), "--patience", "0",
               "--quiet", "--overwrite", "--out", str(out)]
    if nproc > 1:
        command[4:4] = ["--nproc-per-node", str(nproc)]
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text())["samples_per_second"]


def memory_row(factor: int, base: int, work: Path) -> tuple[int, float, float]:
    n = base * factor
    folder = work / f"shards-{factor}x"
    rng = np.random.default_rng(factor)
    folder.mkdir()
    shards = []
    for i, start in enumerate(range(0, n, 50_000)):
        count = min(50_000, n - start)
        np.save(folder / f"shard-{i:05d}.npy", rng.integers(0, 256, (count, 1, 28, 28), dtype=np.uint8))
        shards.append({"x": f"shard-{i:05d}.npy", "count": count})
    atomic_write_text(folder / "index.json", json.dumps({"format": "aeopt-shards", "version": 1, "shards": shards}))
    done = subprocess.run([sys.executable, "-c", RSS, str(folder), str(work / f"run-{factor}")],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True, text=True)
    before, peak, rate = done.stdout.split()
    return n, (int(peak) - int(before)) / 2 ** 20, float(rate)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--procs", default="1,2", help="process counts to compare (each a divisor of --threads)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads in all")
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--base", type=int, default=60_000, help="samples at 1x in the memory part")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.md"))
    a = p.parse_args()
    load_before = os.getloadavg()[0]
    lines = ["# Scaling out: DDP processes and sharded data", "",
             f"Command: `python benchmarks/scale.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, load average "
             f"{load_before:.1f} before", "",
             f"## Processes (Fashion-MNIST, first {a.limit:,} images, default conv, global batch 256, {a.epochs} "
             "epochs, gloo)", "", "| processes x threads | samples/s | efficiency vs 1 process |", "|---|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="aeopt-scale-") as tmp:
        rates = {}
        for n in map(int, a.procs.split(",")):
            rates[n] = ddp_rate(n, max(1, a.threads // n), a.limit, a.epochs, Path(tmp) / f"ddp{n}")
            lines.append(f"| {n} x {max(1, a.threads // n)} | {rates[n]:.0f} | {rates[n] / rates[min(rates)]:.2f} |")
            print(lines[-1], flush=True)
        lines += ["", "## Memory (synthetic uint8 28x28 shards, one epoch of an MLP, 1 thread)", "",
                  "| data | samples | peak RSS growth MB | vs 1x | samples/s |", "|---|---:|---:|---:|---:|"]
        first = None
        for factor in (1, 2, 4, 8):
            n, growth, rate = memory_row(factor, a.base, Path(tmp))
            first = first or growth
            lines.append(f"| {factor}x | {n:,} | {growth:.0f} | {growth / first:.2f} | {rate:.0f} |")
            print(lines[-1], flush=True)
    lines += ["", f"Load average after: {os.getloadavg()[0]:.1f}. Targets: 2 processes x 1 thread >= 0.9x one 2-thread "
              "process; resident memory within 10% from 1x to 8x. 4 and 8 processes need a machine with that many "
              "cores (the lent device machine was not drawn for this task)."]
    atomic_write_text(Path(a.out), "\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
