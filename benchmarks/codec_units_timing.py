"""What the residual units (--blocks 2 --decoder-blocks 2) cost in decode time: each grown run against
the run it grew from, in one run, interleaved, median of 3 rounds, one thread.

  flock /tmp/aeopt-bench.lock python benchmarks/codec_units_timing.py   # -> results/codec_units_timing.md

Times `aeopt.decompress` (the Python call: parse, range-decode, integer h_s and contexts, g_s) on 300
one-image files and on one 1,000-image file of Fashion-MNIST test images.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import CACHE, RESULTS  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

import torch  # noqa: E402

import aeopt  # noqa: E402
from aeopt.codec import compress, decompress, load_codec  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

PAIRS = [("fmcg2-0.0003", "fmcgrn-0.0003"), ("fmcgw2-0.011", "fmcgrd-0.011")]
FILES, BATCH, ROUNDS = 300, 1000, 3


def main() -> None:
    torch.set_num_threads(1)
    images = (aeopt.load_data("fashion-mnist").x_test[:BATCH] * 255).round().byte().numpy()
    runs = {name: load_codec(CACHE / name) for pair in PAIRS for name in pair}
    files = {n: [compress(r, images[i:i + 1]) for i in range(FILES)] for n, r in runs.items()}
    batch = {n: compress(r, images) for n, r in runs.items()}
    times = {n: {"file": [], "batch": []} for n in runs}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            start = time.perf_counter()
            for data in files[name]:
                decompress(run, data)
            times[name]["file"].append((time.perf_counter() - start) / FILES * 1e3)
            start = time.perf_counter()
            decompress(run, batch[name])
            times[name]["batch"].append((time.perf_counter() - start) / BATCH * 1e3)
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    lines = ["# Residual units: decode cost", "", f"Machine: {machine_line()}", "",
             f"`python benchmarks/codec_units_timing.py`: `aeopt.decompress` on {FILES} one-image files and one "
             f"{BATCH:,}-image file, one thread, median of {ROUNDS} interleaved rounds.", "",
             "| run | grown run | one-image file ms | grown ms | ratio | many-image file ms/image | grown | ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for plain, grown in PAIRS:
        a, b = med[plain], med[grown]
        lines.append(f"| {plain} | {grown} | {a['file']:.3f} | {b['file']:.3f} | {b['file'] / a['file']:.2f}x | "
                     f"{a['batch']:.3f} | {b['batch']:.3f} | {b['batch'] / a['batch']:.2f}x |")
    atomic_write_text(RESULTS / "codec_units_timing.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
