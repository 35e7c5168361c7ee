"""Which residual units pay: one epoch from fmcgw2-0.013 (fmcgt's top tier) with units in g_a, in
g_s, in both or in neither, two seeds, validation R + lambda D.

  python benchmarks/codec_units_ablation.py     # trains the missing runs (two side by side), then
                                                # writes results/codec_units_ablation.md

Each run is `benchmarks/codec.py train-fmnist --init-from fmcgw2 --lambdas 0.013 --epochs 1 --lr 1.5e-4`
in fmcgt's wide shape (width 48, latent 32, hyperprior 16, channel-wise on the mean grid), one
thread, fp32, cached as abl-NAME-0.013; the seed draws the new units' weights, the noise and the
batch order. The plain rows are the same further epoch without units: the baseline each unit
layout is read against, at the same seed. Each run's test point is its own files for all 10,000
test images (train-fmnist measures them after training).

The long check, one tier trained as fmcgrt's were (12 epochs at lr 1.5e-4 from fmcgw2-0.005) with
four units in g_s only, is read from its cached run (`--long`: train it first, 2 threads, ~25 min):
  python benchmarks/codec.py train-fmnist --prefix fmcgdd4 --init-from fmcgw2 --lambdas 0.005 --epochs 12 \
      --lr 1.5e-4 --latent 32 --width 48 --hyper-width 16 --entropy channelwise --latent-grid mean \
      --decoder-blocks 4 --threads 2
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.codec import CACHE, RESULTS  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

from aeopt.runs import atomic_write_text  # noqa: E402

SHAPE = ["--init-from", "fmcgw2", "--lambdas", "0.013", "--epochs", "1", "--lr", "1.5e-4", "--latent", "32",
         "--width", "48", "--hyper-width", "16", "--entropy", "channelwise", "--latent-grid", "mean"]
# (label, g_a units, g_s units)
LAYOUTS = [("plain", 0, 0), ("enc2", 2, 0), ("dec2", 0, 2), ("dec4", 0, 4), ("both2", 2, 2)]
SEEDS = [0, 1]


def prefix(label: str, seed: int) -> str:
    return f"abl-{label}" + (f"-s{seed}" if seed else "")


def run_dir(label: str, seed: int) -> Path:
    return CACHE / f"{prefix(label, seed)}-0.013"


def history(label: str, seed: int) -> dict:
    """The run's one epoch: history.csv's last row."""
    return list(csv.DictReader((run_dir(label, seed) / "history.csv").open()))[-1]


def test_point(label: str, seed: int) -> dict:
    """The run's test files (all 10,000 test images, one .aec file each): metrics.json's test block."""
    return json.loads((run_dir(label, seed) / "metrics.json").read_text())["test"]


def train_missing() -> None:
    # a run is done once its test files are measured (metrics.json is written last)
    todo = [(label, enc, dec, seed) for seed in SEEDS for label, enc, dec in LAYOUTS
            if not (run_dir(label, seed) / "metrics.json").is_file()]
    for k in range(0, len(todo), 2):  # two at a time: one thread each on the two cores
        procs = [subprocess.Popen([sys.executable, str(Path(__file__).with_name("codec.py")), "train-fmnist",
                                   "--prefix", prefix(label, seed), *SHAPE, "--blocks", str(enc),
                                   "--decoder-blocks", str(dec), "--seed", str(seed)])
                 for label, enc, dec, seed in todo[k:k + 2]]
        for p in procs:
            if p.wait():
                raise SystemExit(f"a training run failed (exit {p.returncode})")


# (run, units g_a + g_s): fmcgt's tier, fmcgrt's tier grown from it, the same growth with g_s's units only
LONG = [("fmcgw2-0.005", "0 + 0 (fmcgt's tier, before growing)"), ("fmcgrd-0.005", "2 + 2 (fmcgrt's tier)"),
        ("fmcgdd4-0.005", "0 + 4")]


def long_rows() -> list[str]:
    rows = ["", "Twelve epochs, as fmcgrt's tiers were grown: from fmcgw2-0.005 at lr 1.5e-4 (cosine); test: all "
            "10,000 test images, one .aec file each.", "",
            "| run | units (g_a + g_s) | parameters | best val loss | test bytes/image | test PSNR dB |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, units in LONG:
        folder = CACHE / name
        if not (folder / "metrics.json").is_file():
            continue
        metrics = json.loads((folder / "metrics.json").read_text())
        rows.append(f"| {name} | {units} | {metrics['params']:,} | {metrics['best_val_loss']:.4f} | "
                    f"{metrics['test']['bytes_per_image']:.1f} | {metrics['test']['psnr']:.2f} |")
    return rows


# what the tables say, written when they were measured (twenty-fifth session); rerun: check it still holds
READ = ('Read: in one epoch four units in g_s alone match two in each; over twelve they end 0.6% behind in '
        'validation loss and 0.18 dB lower for 0.5 B less (about 9 B per dB on this part of the curve: ~1.5% '
        "more bytes at equal PSNR). The encoder's units pay a little, beside the decoder's, not alone. "
        'fmcgdd4 trained on 2 threads alone, fmcgrd one thread beside another run: their training times are '
        'not compared.')


def main() -> None:
    train_missing()
    lines = ["# Residual units: which side pays (benchmarks/codec_units_ablation.py)", "",
             f"Machine: {machine_line()} (the runs trained one thread each, two side by side)", "",
             "One epoch from fmcgw2-0.013 at lr 1.5e-4 (cosine), validation loss R + lambda D on the held-out "
             "5,000 training images; change against the plain further epoch of the same seed; test: each run's "
             "own .aec files for the 10,000 test images, every byte counted.", "",
             "| units (g_a + g_s) | " + " | ".join(f"seed {s} val loss | change" for s in SEEDS)
             + " | mean change | test bytes/image (seeds 0, 1) | test PSNR dB (seeds 0, 1) | train s (seed 0) |",
             "| --- | " + " | ".join("--- | ---" for _ in SEEDS) + " | --- | --- | --- | --- |"]
    base = {s: float(history("plain", s)["val_loss"]) for s in SEEDS}
    for label, enc, dec in LAYOUTS:
        rows = {s: history(label, s) for s in SEEDS}
        changes = [float(rows[s]["val_loss"]) / base[s] - 1 for s in SEEDS]
        cells = " | ".join(f"{float(rows[s]['val_loss']):.4f} | {100 * c:+.2f}%" for s, c in zip(SEEDS, changes))
        tests = [test_point(label, s) for s in SEEDS]
        lines.append(f"| {enc} + {dec} | {cells} | {100 * sum(changes) / len(changes):+.2f}% | "
                     + ", ".join(f"{t['bytes_per_image']:.1f}" for t in tests) + " | "
                     + ", ".join(f"{t['psnr']:.2f}" for t in tests) + " | "
                     f"{float(rows[SEEDS[0]]['train_seconds']):.0f} |")
    lines += long_rows() + ["", READ]
    atomic_write_text(RESULTS / "codec_units_ablation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
