"""What each piece of the CPU fast path buys: one training step, with and without it, A/B.

The seed model (or another), bf16 autocast, channels_last, batch 256, Adam, BCE, on random images.
Four variants, each in a fresh process (the malloc setting is process-wide), cycled --repeats
times so that the shared machine's changing load hits them alike:
  stock        torch's own layers, glibc's malloc defaults
  narrow       the last layer as matmul + shifted adds (models/narrow_conv.py)
  malloc       freed memory kept in the heap (speed.keep_freed_memory)
  both         aeopt's default
Reports the median and best ms/step and the page faults per step. Writes benchmarks/results/cpu_step.md.

  python benchmarks/cpu_step.py --model seed --repeats 5
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_line  # noqa: E402

from aeopt.models import create_model  # noqa: E402
from aeopt.kernels.narrow_conv import NarrowConv2d, NarrowConvTranspose2d  # noqa: E402
from aeopt.kernels.memory import keep_freed_memory  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

VARIANTS = ("stock", "narrow", "malloc", "both")
RESULTS = Path(__file__).parent / "results"


def with_stock_layers(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights in torch's own Conv2d / ConvTranspose2d classes."""
    stock = {NarrowConv2d: torch.nn.Conv2d, NarrowConvTranspose2d: torch.nn.ConvTranspose2d}
    for module in model.modules():
        if type(module) in stock:
            module.__class__ = stock[type(module)]  # same attributes and parameters; only forward() differs
    return model


def time_steps(model_name: str, variant: str, threads: int, warmup: int = 4, steps: int = 16) -> dict:
    if variant in ("malloc", "both"):
        keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name, (1, 28, 28), 32)
    if variant in ("stock", "malloc"):
        model = with_stock_layers(model)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    x = torch.rand(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)["logits"]
        loss = F.binary_cross_entropy_with_logits(logits.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return {"ms_per_step": (time.perf_counter() - started) / steps * 1000,
            "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS / "cpu_step.md"))
    p.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one variant, one process
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(time_steps(a.model, a.one, a.threads)), flush=True)
        return
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(a.repeats):
        for variant in VARIANTS:
            done = subprocess.run([sys.executable, __file__, "--one", variant, "--model", a.model,
                                   "--threads", str(a.threads)], capture_output=True, text=True, check=True)
            line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
            runs[variant].append(json.loads(line[len("RESULT "):]))
            print(variant, runs[variant][-1], flush=True)
    base = statistics.median(r["ms_per_step"] for r in runs["stock"])
    command = "python benchmarks/cpu_step.py " + " ".join(sys.argv[1:])
    lines = ["# One CPU training step: what each piece of the fast path buys", "",
             f"Command: `{command}`  ", f"Machine: {machine_line()}  ",
             f"Model `{a.model}`, bf16 autocast, channels_last, batch 256, Adam, BCE, {a.threads} thread(s); each "
             f"variant timed over 16 steps after 4 warm-up steps in a fresh process, the four cycled {a.repeats} times.",
             "", "| variant | median ms/step | best ms/step | speed-up (median) | page faults per step |",
             "|---|---:|---:|---:|---:|"]
    for variant, results in runs.items():
        times = [r["ms_per_step"] for r in results]
        faults = statistics.median(r["faults_per_step"] for r in results)
        lines.append(f"| {variant} | {statistics.median(times):.0f} | {min(times):.0f} | "
                     f"{base / statistics.median(times):.2f}x | {faults:,.0f} |")
    atomic_write_text(Path(a.out), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
