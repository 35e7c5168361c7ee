"""Shrink benchmark: size, params, latency, throughput and PSNR of each deployable form of a run.

Usage: python benchmarks/shrink.py [--models conv,seed] [--limit 12000] [--epochs 5] [--finetune-epochs 1]
Trains each model once on Fashion-MNIST (cached in benchmarks/.cache, ignored by git), shrinks it in
several ways with `aeopt.shrink`, then times every form back to back in this one process with 2 threads
(the machine is shared, so only same-run ratios are meaningful) and writes benchmarks/results/shrink.md.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import aeopt
from aeopt.evaluate import evaluate_model
from aeopt.shrink.bench import bench_forward, build_forms, machine
from aeopt.shrink.pipeline import size_bytes

CACHE = Path(__file__).parent / ".cache"
RESULTS = Path(__file__).parent / "results" / "shrink.md"


def variants(args) -> dict[str, dict]:
    quick = dict(rounds=1, finetune_epochs=args.finetune_epochs)
    return {"pruned 50% structured": dict(prune=0.5, structured=True, **quick),
            "pruned 80% structured": dict(prune=0.8, structured=True, **quick),
            "pruned 50% struct + int8": dict(prune=0.5, structured=True, quantize="int8", **quick),
            "int8 (static QDQ)": dict(quantize="int8")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="conv,seed")
    parser.add_argument("--limit", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = []
    for name in args.models.split(","):
        run = CACHE / name
        if not (run / "metrics.json").is_file():
            aeopt.train(data="fashion-mnist", model=name, latent_dim=32, limit=args.limit, epochs=args.epochs,
                        out=str(run), overwrite=True, progress=False)
        dataset = aeopt.load_data("fashion-mnist", limit=args.limit)
        runs = {"original": run}
        for label, settings in variants(args).items():
            out = CACHE / f"{name}-{label.replace(' ', '_').replace('%', '').replace('+', 'and')}"
            if not (out / "metrics.json").is_file():
                aeopt.shrink(run, out, overwrite=True, **settings)
            runs[label] = out
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for label, path in runs.items():
                loaded = aeopt.load(path)
                psnr = evaluate_model(loaded.model, dataset, pca=False)["test"]["psnr"]
                is_int8 = bool(loaded.config.extra.get("onnx"))
                forms = ("onnx_int8",) if is_int8 else ("eager_fp32", "eager_bf16", "onnx_fp32")
                folder = Path(tmp) / label.replace(" ", "_")
                folder.mkdir()
                built = build_forms(path, folder, threads=args.threads, forms=forms)
                size = size_bytes(path, loaded.config)
                params = aeopt.load(path, runtime="torch").model.num_params()
                for form, forward in built.items():
                    timing = bench_forward(forward, tuple(loaded.data_info["sample_shape"]))
                    rows.append((label, form, size, params, timing, psnr))
        base = next(r for r in rows if r[0] == "original" and r[1] == "eager_fp32")
        lines += [f"\n## {name} (Fashion-MNIST, latent 32, trained {args.epochs} epochs on {args.limit} samples)\n",
                  "| form | runtime | size MB | size vs orig | params | batch-1 ms | batch-256 samples/s | "
                  "throughput vs eager fp32 | test PSNR dB | dB vs orig |", "|" + "---|" * 10]
        for label, form, size, params, timing, psnr in rows:
            lines.append(f"| {label} | {form} | {size / 1e6:.3f} | {base[2] / size:.2f}x smaller | {params:,} | "
                         f"{timing['batch1_latency_ms']:.3f} | {timing['batch256_samples_per_s']:.0f} | "
                         f"{timing['batch256_samples_per_s'] / base[4]['batch256_samples_per_s']:.2f}x | "
                         f"{psnr:.2f} | {psnr - base[5]:+.2f} |")
        print("\n".join(lines), flush=True)
    info = machine()
    header = ["# Shrink benchmark", "",
              f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {args.threads} threads. "
              "The machine was SHARED with other engineers' jobs (load average ~10 on 2 cores): every form "
              "of a model was timed back to back in one process, so compare ratios within a table only.",
              f"Command: `python benchmarks/shrink.py --models {args.models} --limit {args.limit} --epochs "
              f"{args.epochs} --finetune-epochs {args.finetune_epochs}` (pruning: 1 round, "
              f"{args.finetune_epochs} fine-tuning epoch(s); int8: ONNX Runtime static QDQ, 512 calibration samples)."]
    RESULTS.write_text("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
