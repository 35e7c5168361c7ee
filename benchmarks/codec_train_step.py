"""One codec training step on a CPU in fp32, with and without each of its CPU kernels, A/B.

The step the trainer takes (channels_last, freed memory kept in the heap, AdamW, R + lambda * D and
the quantiles' aux step) on random images, for a photo codec (channel-wise on the mean grid, width
64, latent 64, 2 x 256^2 crops: the two-hour photo recipe) or the Fashion-MNIST headline tier (fmcgrt's
wide one: width 48, latent 32, two residual units each side, batch 128). The variants run in one
process on one model, switched between blocks of steps (the switches are module-level functions read
on every forward), in a rotated order each round, so a drift of this shared machine's speed hits
them alike and each round gives paired ratios (fresh processes per variant, the first runs of this
script, read 1.05x-1.19x for the same code as the machine's load moved):
  stock     torch's own kernels: autograd's GDN, oneDNN's transposed conv for g_s's last layer
  gdn       GDN / IGDN in cache-sized blocks (aeopt/kernels/blocked_gdn.py)
  subpixel  g_s's last layer as its sub-pixel conv (aeopt/models/codec/transforms.py UpConv)
  both      aeopt's default
Reports the median and range of ms/step and the median and range of each round's stock / variant
ratio. That the variants compute the same function is the tests' job (tests/kernels/
test_blocked_gdn.py, tests/codec/test_codec_fast_paths.py). Writes benchmarks/results/
codec_train_step.md (--append adds a section for another model).

  flock /tmp/aeopt-bench.lock python benchmarks/codec_train_step.py --model photo --rounds 8
  flock /tmp/aeopt-bench.lock python benchmarks/codec_train_step.py --model fmnist --rounds 8 --append
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_line  # noqa: E402

import aeopt.models.codec.gdn as gdn_module  # noqa: E402
import aeopt.models.codec.transforms as transforms_module  # noqa: E402
from aeopt.kernels.memory import keep_freed_memory  # noqa: E402
from aeopt.models.codec import CodecObjective, codec  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402

VARIANTS = ("stock", "gdn", "subpixel", "both")
RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "codec_train_step.md"
MODELS = {  # name: (input shape, batch, codec knobs, warm-up steps, timed steps a round)
    "photo": ((3, 256, 256), 2, dict(entropy="channelwise", latent_grid="mean", width=64, latent_dim=64,
                                      lmbda=0.0067), 3, 12),
    "fmnist": ((1, 28, 28), 128, dict(entropy="channelwise", latent_grid="mean", width=48, latent_dim=32,
                                       hyper_width=16, blocks=2, decoder_blocks=2, lmbda=0.005), 5, 40),
}
BLOCKED_GDN, SUB_PIXEL = gdn_module.use_blocked_gdn, transforms_module._sub_pixel_trains_faster  # aeopt's own


def _select(variant: str) -> None:
    """Switch the two kernels for the next steps (module-level switches, read on every forward)."""
    gdn_module.use_blocked_gdn = BLOCKED_GDN if variant in ("gdn", "both") else (lambda *args: False)
    transforms_module._sub_pixel_trains_faster = SUB_PIXEL if variant in ("subpixel", "both") else (lambda *args: False)


def measure(model_name: str, threads: int, rounds: int) -> dict[str, list[float]]:
    """ms/step of each variant, one value per round: all variants in one process on one model, each
    round running them in a rotated order, so a drift of the machine's speed hits them alike and each
    round's ratios are paired."""
    keep_freed_memory()
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

    def step(i: int):
        x = images[i % len(images)]
        optimizer.zero_grad(set_to_none=True)
        parts, outputs = objective.compute(model, x, x)
        parts["loss"].backward()
        optimizer.step()
        aux.step(outputs, x)

    for variant in VARIANTS:
        _select(variant)
        for i in range(warmup):
            step(i)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
            _select(variant)
            started = time.perf_counter()
            for i in range(steps):
                step(i)
            times[variant].append((time.perf_counter() - started) / steps * 1000)
        print(f"round {r + 1}: " + ", ".join(f"{v} {t[-1]:.1f} ms" for v, t in times.items()), flush=True)
    return times


def render(a, times: dict[str, list[float]]) -> list[str]:
    shape, batch, knobs, warmup, steps = MODELS[a.model]
    base = statistics.median(times["stock"])
    knob_text = ", ".join(f"{k} {v}" for k, v in knobs.items())
    lines = [f"## {a.model}: {batch} x {'x'.join(map(str, shape))}, {knob_text}", "",
             f"Command: `python benchmarks/codec_train_step.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine_line()}  ",
             f"fp32, channels_last, {a.threads} thread(s), freed memory kept; one process, one model; each round "
             f"times {steps} steps of every variant (order rotated each round) after {warmup} warm-up steps of each; "
             f"{a.rounds} rounds.", "",
             "| variant | median ms/step | range ms/step | speed-up (medians) | speed-up per round (median, range) |",
             "|---|---:|---:|---:|---:|"]
    for variant, t in times.items():
        paired = [s / v for s, v in zip(times["stock"], t)]
        lines.append(f"| {variant} | {statistics.median(t):.1f} | {min(t):.0f}-{max(t):.0f} | "
                     f"{base / statistics.median(t):.2f}x | {statistics.median(paired):.2f}x "
                     f"({min(paired):.2f}-{max(paired):.2f}) |")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="photo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--append", action="store_true", help="add this model's section to the result file")
    a = p.parse_args()
    times = measure(a.model, a.threads, a.rounds)
    head = ["# One codec training step on a CPU: what each kernel buys", ""]
    if a.append and OUT.exists():
        head = [OUT.read_text().rstrip("\n"), ""]
    text = "\n".join(head + render(a, times))
    atomic_write_text(OUT, text)
    print(text)


if __name__ == "__main__":
    main()
