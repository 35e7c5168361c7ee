"""Training speed: aeopt's trainer vs the textbook PyTorch loop (and the seed's Keras code), one run.

Same data (Fashion-MNIST, the first --limit training images), same model, latent 32, batch 256,
Adam, BCE, same number of epochs. For each model the textbook loop and aeopt run back to back
(--repeats alternates them again; the best rate of each is kept), because the machine is shared
and its load changes by the minute. Each contender runs in a fresh Python process, so that nothing
one sets process-wide (aeopt's malloc tuning, thread pools, oneDNN's kernel caches) carries over to
the next. Prints the table and writes benchmarks/results/train_speed.md.

  python benchmarks/train_speed.py --limit 15000 --epochs 2 --models seed,conv
  python benchmarks/train_speed.py --device cuda --epochs 2 --models seed,conv --compile
  python benchmarks/train_speed.py ... --keras-python /path/to/venv/bin/python   # adds the Keras row
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_line  # noqa: E402

from aeopt.data import load_data  # noqa: E402
from aeopt.models import create_model  # noqa: E402
from aeopt.train.throughput import peak_gflops  # noqa: E402
from aeopt.train import train  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KERAS_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "baselines" / "seed_keras.py"  # the peer, beside the repo


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def test_mse(model: torch.nn.Module, x_test: torch.Tensor, device: torch.device) -> float:
    """Mean squared error of sigmoid(logits) on the test set, fp32, the same for every contender."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x_test), 1000):
            x = x_test[start:start + 1000].to(device)
            total += float(F.mse_loss(model(x)["x_hat"].float(), x, reduction="sum"))
    return total / x_test.numel()


def textbook(name: str, x_train: torch.Tensor, x_test: torch.Tensor, epochs: int, device: torch.device) -> dict:
    """The loop a tutorial writes: DataLoader over a TensorDataset, fp32, eager, Adam(1e-3)."""
    torch.manual_seed(0)
    model = create_model(name, (1, 28, 28), 32).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x_train), batch_size=256, shuffle=True)
    seconds = 0.0
    for _ in range(epochs):
        model.train()
        sync(device)
        started = time.perf_counter()
        for (x,) in loader:
            x = x.to(device)
            loss = F.binary_cross_entropy_with_logits(model(x)["logits"], x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        sync(device)
        seconds += time.perf_counter() - started
    return {"samples_per_second": len(x_train) * epochs / seconds, "test_mse": test_mse(model, x_test, device),
            "precision": "fp32"}


def aeopt_trainer(name: str, dataset, epochs: int, device: torch.device, compile_model: bool, out: Path,
                  memory_format: str = "auto", cuda_graph: bool = True) -> dict:
    """aeopt's trainer with its default settings, at the benchmark's batch size, optimizer and loss."""
    result = train(dataset=dataset, model=name, latent_dim=32, batch_size=256, optimizer="adam", loss="bce",
                   epochs=epochs, patience=None, compile=compile_model, threads=torch.get_num_threads(),
                   memory_format=memory_format, cuda_graph=cuda_graph,
                   out=str(out), overwrite=True, progress=False, log=lambda message: None, device=device.type)
    m = result.metrics
    layout = ", NHWC" if m.get("memory_format") == "channels_last" else ""
    graphed = ", CUDA graph" if m.get("cuda_graph") else ""
    return {"samples_per_second": m["samples_per_second"], "test_mse": test_mse(result.model, dataset.x_test, device),
            "precision": m["precision"] + layout + graphed}


def keras(python: str, limit: int | None, epochs: int, threads: int) -> dict | None:
    """The seed's Keras script, run by a Python that has tensorflow; its last epoch line parsed."""
    command = [python, str(KERAS_SCRIPT), "--epochs", str(epochs), "--threads", str(threads)]
    if limit:
        command += ["--limit", str(limit)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = re.findall(r"samples_per_s=([\d.]+) test_mse=([\d.]+)", done.stdout)
    if done.returncode or not lines:
        print(f"keras run failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    rates = [float(rate) for rate, _ in lines]
    return {"samples_per_second": max(rates), "test_mse": float(lines[-1][1]), "precision": "fp32"}


CONTENDERS = {  # --one NAME: what one fresh process measures
    "textbook": "textbook PyTorch loop",
    "aeopt": "aeopt train (defaults)",
    "aeopt-nchw": "aeopt train, NCHW forced",      # the same defaults with the activations' layout back to NCHW
    "aeopt-no-graph": "aeopt train, no CUDA graph",  # the same defaults, each step launched kernel by kernel
}


def measure_one(a) -> None:
    """The --one mode: a single contender on a single model, printed as one JSON line."""
    device = torch.device(a.device)
    dataset = load_data("fashion-mnist", data_dir=a.data_dir, seed=0, limit=a.limit or None)
    if a.one == "textbook":
        result = textbook(a.models, dataset.x_train, dataset.x_test, a.epochs, device)
    else:
        result = aeopt_trainer(a.models, dataset, a.epochs, device, a.compile, Path("/tmp/aeopt-train-speed"),
                               "contiguous" if a.one == "aeopt-nchw" else "auto", cuda_graph=a.one != "aeopt-no-graph")
    print("RESULT " + json.dumps(result), flush=True)


def in_fresh_process(a, who: str, name: str) -> dict:
    command = [sys.executable, __file__, "--one", who, "--models", name, "--device", a.device, "--epochs", str(a.epochs),
               "--limit", str(a.limit), "--threads", str(a.threads)] + (["--compile"] if a.compile else []) + (
               ["--data-dir", a.data_dir] if a.data_dir else [])
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{who} on {name} failed:\n{done.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=15000, help="train on the first N images (0 = all 55k)")
    p.add_argument("--models", default="seed,conv")
    p.add_argument("--repeats", type=int, default=1, help="alternate textbook/aeopt this many times")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="aeopt with --compile")
    p.add_argument("--with-nchw", action="store_true", help="also aeopt with --memory-format contiguous (NCHW)")
    p.add_argument("--without-graph", action="store_true", help="CUDA: also aeopt with --no-cuda-graph")
    p.add_argument("--keras-python", help="a Python with tensorflow, to run the seed's Keras code")
    p.add_argument("--out", default=str(RESULTS / "train_speed.md"))
    p.add_argument("--data-dir", help="folder of Fashion-MNIST's IDX files (default: the Debian package's)")
    p.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)  # internal: one contender, one model
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.one:
        return measure_one(a)
    device = torch.device(a.device)
    dataset = load_data("fashion-mnist", data_dir=a.data_dir, seed=0, limit=a.limit or None)
    peaks = {prec: peak_gflops(device.type, prec, a.threads) for prec in ("fp32", "bf16")}
    load_before = os.getloadavg()
    rows = []
    for name in a.models.split(","):
        flops = create_model(name, (1, 28, 28), 32).train_flops_per_sample()
        contenders = ["textbook", "aeopt"] + ["aeopt-nchw"] * a.with_nchw + ["aeopt-no-graph"] * a.without_graph
        runs: dict[str, list[dict]] = {CONTENDERS[who]: [] for who in contenders}
        for _ in range(a.repeats):
            for who in contenders:
                runs[CONTENDERS[who]].append(in_fresh_process(a, who, name))
        if name == "seed" and a.keras_python:
            keras_run = keras(a.keras_python, len(dataset.x_train), a.epochs, a.threads)
            if keras_run:
                runs["seed's Keras code"] = [keras_run]
        base = max(r["samples_per_second"] for r in runs["textbook PyTorch loop"])
        for who, results in runs.items():
            best = max(results, key=lambda r: r["samples_per_second"])
            gflops = best["samples_per_second"] * flops / 1e9
            rows.append({"model": name, "who": who, "precision": best["precision"],
                         "samples_per_second": best["samples_per_second"], "ratio": best["samples_per_second"] / base,
                         "gflops_per_second": gflops, "fraction_of_bf16_peak": gflops / peaks["bf16"],
                         "test_mse": best["test_mse"], "all_rates": [r["samples_per_second"] for r in results]})
            print(f"{name:5} {who:24} {best['samples_per_second']:8.0f} samples/s  x{rows[-1]['ratio']:.2f}  "
                  f"{gflops:6.1f} GFLOP/s  test mse {best['test_mse']:.5f}", flush=True)
    write_results(a, device, peaks, load_before, rows, len(dataset.x_train))


def write_results(a, device, peaks, load_before, rows, n_train: int) -> None:
    command = "python benchmarks/train_speed.py " + " ".join(sys.argv[1:])
    load_after = os.getloadavg()
    lines = [
        "# Training speed: aeopt's trainer vs the textbook PyTorch loop and the seed's Keras code", "",
        f"Command: `{command}`  ", f"Machine: {machine_line()}  ",
        f"Measured matmul peak ({device.type}): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s  ",
        f"Load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} (other jobs on the machine "
        "make absolute rates noisy); each textbook run and aeopt run of a model ran back to back, each in a "
        "fresh process with the same --threads, and the ratio is the figure to read.", "",
        f"Fashion-MNIST, {'the first' if a.limit else 'all'} {n_train:,} training images, latent 32, batch 256, Adam, BCE, {a.epochs} "
        "epoch(s). samples/s = training-step time only (no evaluation). GFLOP/s from torch's flop counter "
        "(forward + backward per sample). % of peak is against the measured bf16 matmul peak (the machine's "
        "best). Test MSE on the 10k test images after the same number of epochs. aeopt runs its defaults "
        "(auto precision and memory layout: bf16 autocast with channels_last (NHWC) activations here; the "
        "last, one-channel layer as a matmul + shifted adds; freed memory kept by malloc for the next step; Adam at "
        "lr 3e-3 with warm-up + cosine decay, weight decay 1e-4 on weights only); the "
        "textbook loop is DataLoader + fp32 + Adam(1e-3) as a tutorial writes it.", "",
        "| model | trainer | precision | samples/s | ratio to textbook | GFLOP/s | % of bf16 peak | test MSE |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['who']} | {r['precision']} | {r['samples_per_second']:.0f} | "
                     f"{r['ratio']:.2f}x | {r['gflops_per_second']:.1f} | {100 * r['fraction_of_bf16_peak']:.0f}% | "
                     f"{r['test_mse']:.5f} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine_line(),
                                                    "peaks": peaks, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
