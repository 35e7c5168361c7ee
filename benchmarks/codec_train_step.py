"""One codec training step on a CPU in fp32, with and without each of its CPU kernels, A/B.

The step the trainer takes (channels_last, freed memory kept in the heap, AdamW, R + lambda * D and
the quantiles' aux step) on random images, for a photo codec (channel-wise on the mean grid, width
64, latent 64, 2 x 256^2 crops: the two-hour photo recipe) or the Fashion-MNIST headline tier (fmcgrt's
wide one: width 48, latent 32, two residual units each side, batch 128). Variants, each in a fresh
process, cycled --repeats times so the machine's changing load hits them alike:
  stock     torch's own kernels: autograd's GDN, oneDNN's transposed conv for g_s's last layer
  gdn       GDN / IGDN in cache-sized blocks (aeopt/kernels/blocked_gdn.py)
  subpixel  g_s's last layer as its sub-pixel conv (aeopt/models/codec/transforms.py UpConv)
  both      aeopt's default
Reports the median and the range of ms/step (a wide range: the machine's load moved; read the medians
with it) and the loss after the timed steps (the variants compute the same
function: equal up to float rounding). Writes benchmarks/results/codec_train_step.md (--append adds a
section for another model).

  flock /tmp/aeopt-bench.lock python benchmarks/codec_train_step.py --model photo --repeats 5
  flock /tmp/aeopt-bench.lock python benchmarks/codec_train_step.py --model fmnist --repeats 5 --append
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cycled_fresh_processes, machine_line  # noqa: E402

import aeopt.models.codec.gdn as gdn_module  # noqa: E402
import aeopt.models.codec.transforms as transforms_module  # noqa: E402
from aeopt.kernels.memory import keep_freed_memory  # noqa: E402
from aeopt.models.codec import CodecObjective, codec  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

VARIANTS = ("stock", "gdn", "subpixel", "both")
RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "codec_train_step.md"
MODELS = {  # name: (input shape, batch, codec knobs, warm-up steps, timed steps)
    "photo": ((3, 256, 256), 2, dict(entropy="channelwise", latent_grid="mean", width=64, latent_dim=64,
                                      lmbda=0.0067), 3, 12),
    "fmnist": ((1, 28, 28), 128, dict(entropy="channelwise", latent_grid="mean", width=48, latent_dim=32,
                                       hyper_width=16, blocks=2, decoder_blocks=2, lmbda=0.005), 5, 40),
}


def time_steps(model_name: str, variant: str, threads: int) -> dict:
    keep_freed_memory()
    if variant in ("stock", "subpixel"):
        gdn_module.use_blocked_gdn = lambda *args: False
    if variant in ("stock", "gdn"):
        transforms_module._sub_pixel_trains_faster = lambda *args: False
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shape, batch, knobs, warmup, steps = MODELS[model_name]
    knobs = dict(knobs)
    model = codec(shape, knobs.pop("latent_dim"), "sigmoid", **knobs).to(memory_format=torch.channels_last)
    objective = CodecObjective(model.lmbda)
    optimizer = torch.optim.AdamW(objective.main_parameters(model), lr=1e-4, foreach=True)
    aux = objective.extra_steps(model)["aux"]
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(batch, *shape, generator=generator).contiguous(memory_format=torch.channels_last)
              for _ in range(4)]
    losses = []

    def step(i: int):
        x = images[i % len(images)]
        optimizer.zero_grad(set_to_none=True)
        parts, outputs = objective.compute(model, x, x)
        parts["loss"].backward()
        optimizer.step()
        aux.step(outputs, x)
        losses.append(float(parts["loss"].detach()))

    for i in range(warmup):
        step(i)
    started = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    return {"ms_per_step": (time.perf_counter() - started) / steps * 1000, "loss": losses[-1]}


def render(a, runs: dict[str, list[dict]]) -> list[str]:
    shape, batch, knobs, warmup, steps = MODELS[a.model]
    base = statistics.median(r["ms_per_step"] for r in runs["stock"])
    knob_text = ", ".join(f"{k} {v}" for k, v in knobs.items())
    lines = [f"## {a.model}: {batch} x {'x'.join(map(str, shape))}, {knob_text}", "",
             f"Command: `python benchmarks/codec_train_step.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine_line()}  ",
             f"fp32, channels_last, {a.threads} thread(s), freed memory kept; each variant timed over {steps} steps "
             f"after {warmup} warm-up steps in a fresh process, the four cycled {a.repeats} times.", "",
             "| variant | median ms/step | range ms/step | speed-up (median) | loss after the steps |",
             "|---|---:|---:|---:|---:|"]
    for variant, results in runs.items():
        times = [r["ms_per_step"] for r in results]
        lines.append(f"| {variant} | {statistics.median(times):.1f} | {min(times):.0f}-{max(times):.0f} | "
                     f"{base / statistics.median(times):.2f}x | {results[-1]['loss']:.6f} |")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="photo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--append", action="store_true", help="add this model's section to the result file")
    p.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one variant, one process
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(time_steps(a.model, a.one, a.threads)), flush=True)
        return
    runs = cycled_fresh_processes(__file__, VARIANTS, a.repeats, ["--model", a.model, "--threads", str(a.threads)])
    head = ["# One codec training step on a CPU: what each kernel buys", ""]
    if a.append and OUT.exists():
        head = [OUT.read_text().rstrip("\n"), ""]
    text = "\n".join(head + render(a, runs))
    atomic_write_text(OUT, text)
    print(text)


if __name__ == "__main__":
    main()
