"""fp32 against bf16 autocast, NCHW against NHWC, for one training step on this CPU: does auto choose right?

oneDNN calls bf16 supported on every AVX-512 CPU, and emulates it where the hardware has neither
AVX512_BF16 nor AMX; aeopt's auto rules ask for the hardware (aeopt/train/precision.py native_bf16,
use_channels_last). Each model takes Adam steps on random inputs as fp32 NCHW, fp32 NHWC and bf16 NHWC
(bf16 is always run channels-last by the trainer), in --rounds interleaved rounds so that the shared
machine's load hits all alike; the median ms per step is kept. Writes
benchmarks/results/precision_emulated_bf16.md.

  flock /tmp/aeopt-bench.lock python benchmarks/precision_ab.py --rounds 5
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_line  # noqa: E402

from aeopt.models import create_model  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402
from aeopt.train.precision import has_conv, native_bf16, resolve_precision, use_channels_last  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# name: (registry name, sample shape, batch, latent, knobs); the codecs are the committed families' shapes
MODELS = {
    "conv autoencoder (default), Fashion-MNIST, batch 256": ("conv", (1, 28, 28), 256, 32, {}),
    "seed (the article's model), Fashion-MNIST, batch 256": ("seed", (1, 28, 28), 256, 32, {}),
    "conv autoencoder, digits 8x8, batch 64": ("conv", (1, 8, 8), 64, 8, {}),
    "codec fmcg shape (channel-wise, width 32), 28x28, batch 64":
        ("codec", (1, 28, 28), 64, 16, dict(entropy="channelwise", lmbda=0.005, width=32, hyper_width=16,
                                            latent_grid="mean")),
    "codec photo shape (channel-wise, width 64), 256x256 crops, batch 2":
        ("codec", (3, 256, 256), 2, 64, dict(entropy="channelwise", lmbda=0.0067, width=64, latent_grid="mean")),
}


def _loss(out, x: torch.Tensor) -> torch.Tensor:
    if "likelihoods" in out:  # a codec: distortion plus its rate terms
        rate = sum(v.float().clamp_min(1e-9).log().mean() for v in out["likelihoods"].values())
        return F.mse_loss(out["x_hat"].float(), x) - rate
    return F.binary_cross_entropy_with_logits(out["logits"].float(), x)


VARIANTS = {"fp32 NCHW": ("fp32", torch.contiguous_format), "fp32 NHWC": ("fp32", torch.channels_last),
            "bf16 NHWC": ("bf16", torch.channels_last)}


def time_step(model: torch.nn.Module, x: torch.Tensor, precision: str, layout, warmup: int = 1, steps: int = 4
              ) -> float:
    model, x = model.to(memory_format=layout), x.contiguous(memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = _loss(out, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1000


@contextmanager
def _old_rule():
    module = importlib.import_module("aeopt.train.precision")  # aeopt.train is also the function
    kept = module.native_bf16
    module.native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported
    try:
        yield
    finally:
        module.native_bf16 = kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "precision_emulated_bf16.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    features = {"oneDNN bf16 'supported'": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                "AVX512_BF16": getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: None)(),
                "AMX": getattr(torch.cpu, "_is_amx_tile_supported", lambda: None)(), "native_bf16()": native_bf16()}
    load_before = os.getloadavg()[0]
    rows = []
    cpu = torch.device("cpu")
    for name, (kind, shape, batch, latent, knobs) in MODELS.items():
        model = create_model(kind, shape, latent, **knobs)
        x = torch.rand(batch, *shape)
        times = {variant: [] for variant in VARIANTS}
        for _ in range(args.rounds):
            for variant, (precision, layout) in VARIANTS.items():
                times[variant].append(time_step(model, x, precision, layout))
        median = {variant: statistics.median(t) for variant, t in times.items()}
        flops = model.train_flops_per_sample()
        precision = resolve_precision("auto", cpu, flops, has_conv(model))  # as Loop does
        auto = f"{precision} {'NHWC' if use_channels_last(cpu, model, precision) else 'NCHW'}"
        with _old_rule():  # before native_bf16: oneDNN's word, and NHWC only in bf16
            before = resolve_precision("auto", cpu, flops, has_conv(model))
        auto = f"{auto} (before: {before} {'NHWC' if before == 'bf16' else 'NCHW'})"
        rows.append((name, median, auto))
        print(f"{name}: " + ", ".join(f"{v} {t:.1f} ms" for v, t in median.items()) + f"; auto: {auto}", flush=True)
    lines = ["# fp32 against bf16 autocast, NCHW against NHWC, on this CPU (benchmarks/precision_ab.py)", "",
             f"Machine: {machine_line()}. Load average before {load_before:.1f}, after {os.getloadavg()[0]:.1f}.",
             "CPU features: " + ", ".join(f"{k} {v}" for k, v in features.items()) + ".", "",
             f"One Adam step on random inputs, {args.threads} thread(s), median of {args.rounds} interleaved rounds "
             "of 4 timed steps, ms per step. `auto` is what `--precision auto` and the automatic layout pick for "
             "the model on this CPU (aeopt/train/precision.py); before: what they picked while oneDNN's word "
             "decided bf16.", "",
             "| model | " + " | ".join(VARIANTS) + " | bf16 / best fp32 | auto picks |",
             "| --- |" + " --- |" * (len(VARIANTS) + 2)]
    lines += [f"| {n} | " + " | ".join(f"{m[v]:.1f}" for v in VARIANTS)
              + f" | {m['bf16 NHWC'] / min(m['fp32 NCHW'], m['fp32 NHWC']):.2f}x | {auto} |" for n, m, auto in rows]
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
