"""Quality per compute on Fashion-MNIST at latent 32: PCA, the `seed` model and the default `conv`.

  python benchmarks/quality.py [--conv-epochs 10] [--seed-epochs 3] [--limit N] [--device cpu]

Prints and writes benchmarks/results/quality.md: test MSE, PSNR, SSIM, params, training GFLOP per
sample, training wall time. Both models train with aeopt's default recipe (AdamW, cosine, bce).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_line  # noqa: E402

import aeopt  # noqa: E402
from aeopt.evaluate.evaluate import pca_reconstruction, quality  # noqa: E402
from aeopt.runs import atomic_write_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conv-epochs", type=int, default=10)
    parser.add_argument("--seed-epochs", type=int, default=3)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", help="folder of Fashion-MNIST's IDX files (default: the Debian package's)")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "quality.md"))
    args = parser.parse_args()

    data = aeopt.load_data("fashion-mnist", data_dir=args.data_dir, limit=args.limit)
    started = time.perf_counter()
    x_pca = pca_reconstruction(data, args.latent, data.x_test)
    pca = quality(x_pca, data.x_test, is_image=True, peak=1.0)
    rows = [("PCA", pca, 0, 0.0, time.perf_counter() - started, "-")]
    print(f"PCA-{args.latent}: test mse {pca['mse']:.5f} ({pca['psnr']:.2f} dB)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for model, epochs in (("conv", args.conv_epochs), ("seed", args.seed_epochs)):
            result = aeopt.train(data="fashion-mnist", model=model, latent_dim=args.latent, epochs=epochs,
                                 limit=args.limit, out=f"{tmp}/{model}", dataset=data, device=args.device,
                                 log=lambda m: None)
            m = result.metrics
            rows.append((model, m["test"], m["params"], m["train_flops_per_sample"], m["train_seconds"],
                         f"{epochs} epochs, {m['precision']}"))
            print(f"{model}: test mse {m['test']['mse']:.5f} ({m['test']['psnr']:.2f} dB) in {m['train_seconds']:.0f} s",
                  flush=True)

    lines = ["# Quality per compute: Fashion-MNIST, latent 32", "",
             f"Machine: {machine_line()}, device {args.device}.",
             f"Command: `python benchmarks/quality.py --conv-epochs {args.conv_epochs} --seed-epochs {args.seed_epochs}"
             f"{f' --limit {args.limit}' if args.limit else ''} --device {args.device}`", "",
             "| model | test MSE | PSNR (dB) | vs PCA (dB) | SSIM | params | train GFLOP/sample | train time (s) | recipe |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, q, params, flops, seconds, recipe in rows:
        lines.append(f"| {name} | {q['mse']:.5f} | {q['psnr']:.2f} | {q['psnr'] - pca['psnr']:+.2f} | {q['ssim']:.4f} | "
                     f"{params:,} | {flops / 1e9:.3f} | {seconds:.0f} | {recipe} |")
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(Path(args.results), text)


if __name__ == "__main__":
    main()
