"""Unstructured pruning on the `digits` conv: does it pay on disk, and what does it cost in quality?

  python benchmarks/shrink_unstructured.py [--epochs 40]    # writes results/shrink_unstructured.md

One conv run on digits (1 thread), then `aeopt.shrink` with: int8 alone; 50% unstructured with the
old fixed fine-tuning (3 rounds x 2 epochs) and with the default (the run's epochs shared by the
rounds); each of those plus int8; and 50% structured + int8 for comparison. Size = the deployable
model file (model.safetensors, stored sparse when pruned, or the int8 ONNX full graph); PSNR on the
whole digits test split through `aeopt.load` of each run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aeopt  # noqa: E402
from benchmarks.common import machine_line  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "shrink_unstructured.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    quiet = dict(log=lambda message: None)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        original = aeopt.train(data="digits", model="conv", epochs=args.epochs, threads=1, out=str(root / "conv"),
                               progress=False, log=lambda message: None)
        base = original.metrics["test"]["psnr"]
        base_size = (original.path / "model.safetensors").stat().st_size
        plans = {
            "int8": ("conv", dict(quantize="int8")),
            "50% unstructured, 3 x 2 epochs (old default)": ("conv", dict(prune=0.5, finetune_epochs=2)),
            "50% unstructured, default fine-tuning": ("conv", dict(prune=0.5)),
            "50% unstructured, 3 x 2 epochs + int8": ("conv", dict(prune=0.5, finetune_epochs=2, quantize="int8")),
            "50% unstructured, default + int8": ("conv", dict(prune=0.5, quantize="int8")),
            "50% structured, default + int8": ("conv", dict(prune=0.5, structured=True, quantize="int8")),
        }
        rows = [("original", args.epochs, base_size, base)]
        for n, (label, (source, options)) in enumerate(plans.items()):
            metrics = aeopt.shrink(root / source, root / f"s{n}", **options, **quiet)
            psnr = aeopt.evaluate(root / f"s{n}")["test"]["psnr"]
            epochs = metrics["shrink"]["finetune_epochs"] if "prune" in options else ""
            rows.append((label, epochs, metrics["size_bytes"], psnr))
            print(label, metrics["size_bytes"], f"{psnr - base:+.2f} dB", flush=True)
    lines = [f"# Unstructured pruning on the digits conv\n\n{machine_line()}\n",
             f"`python benchmarks/shrink_unstructured.py --epochs {args.epochs}`: one conv trained {args.epochs} "
             "epochs on digits (1 thread), shrunk by `aeopt.shrink`; size = the deployable model file "
             "(safetensors, sparse when pruned, or the int8 ONNX full graph); PSNR on the digits test split "
             "through `aeopt.load`. Fine-tuning epochs are per round (3 rounds).\n",
             "| run | fine-tune epochs/round | size KB | smaller vs original | test PSNR dB | dB vs original |",
             "|---|---|---|---|---|---|"]
    for label, epochs, size, psnr in rows:
        name = f"original ({epochs} epochs)" if label == "original" else label
        lines.append(f"| {name} | {'' if label == 'original' else epochs} | {size / 1e3:.1f} | "
                     f"{base_size / size:.2f}x | {psnr:.2f} | {psnr - base:+.2f} |")
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
