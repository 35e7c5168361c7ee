"""The autoencoder family on Fashion-MNIST at latent 32, beside PCA-32 in the same run.

  python benchmarks/variants.py [--epochs 5] [--limit N] [--backbone conv] [--device auto]

Every variant uses the same encoder/decoder (the `conv` model, width 32, or `--backbone mlp`) and
a 32-number code; the VQ-VAE quantizes its 32 numbers with one shared 256-entry codebook
(code-dim 1), i.e. 32 x 8 = 256 bits, the same bits as the 32-number code stored at 8 bits each.
Prints and writes benchmarks/results/variants.md: test MSE / PSNR of the plain reconstruction
(clean input), linear-probe and 5-NN accuracy on the codes, each variant's own figure, wall time.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_line  # noqa: E402

import aeopt  # noqa: E402

# name, settings, whether the variant trades reconstruction for something else by design
VARIANTS = [
    ("plain", dict(model="conv"), None),
    ("denoising", dict(model="conv", noise="gaussian:0.3"), None),
    ("sparse (L1 + KL)", dict(model="conv", sparse_l1=1e-3, sparse_kl="0.05:1e-3"), None),
    ("contractive", dict(model="conv", contractive=1e-4), None),
    ("vae (beta 1)", dict(model="vae", beta=1.0, kl_warmup=1), "a smooth N(0, I) code for sampling"),
    ("vq_vae", dict(model="vq_vae", codebook_size=256, code_dim=1), "a discrete 256-bit code"),
    ("aae", dict(model="aae"), None),
]


def own_figure(m: dict) -> str:
    if "denoise" in m:
        d = m["denoise"]
        return f"denoise {d['noise']}: {d['psnr_noisy']:.1f} -> {d['psnr_out']:.1f} dB"
    if "elbo" in m["test"]:
        return f"test ELBO {m['test']['elbo']:.1f} nats (KL {m['test']['kl']:.1f})"
    if "codebook_perplexity" in m:
        return f"perplexity {m['codebook_perplexity']:.1f}, {m['codebook_used']}/{m['codebook_size']} codes"
    return f"mean abs(z) {m['mean_code_activation']:.3f}, {100 * m['near_zero_fraction']:.0f}% near 0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images")
    parser.add_argument("--backbone", default="conv", choices=("conv", "mlp"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", help="folder holding the Fashion-MNIST IDX files (default: the Debian package's)")
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results" / "variants.md"))
    args = parser.parse_args()

    data = aeopt.load_data("fashion-mnist", data_dir=args.data_dir, limit=args.limit)
    rows, pca, pca_probe = [], None, None
    chosen = VARIANTS if not args.only else [v for v in VARIANTS if v[0].split()[0] in args.only.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, settings, trade) in enumerate(chosen):
            settings = dict(settings)
            if args.backbone == "mlp":
                settings = {**settings, "model": "mlp" if settings["model"] == "conv" else settings["model"]}
                if settings["model"] != "mlp":
                    settings["backbone"] = "mlp"
            started = time.perf_counter()
            result = aeopt.train(data="fashion-mnist", latent_dim=32, epochs=args.epochs, limit=args.limit,
                                 out=f"{tmp}/{i}", dataset=data, device=args.device, progress=False,
                                 log=lambda message: None, **settings)
            wall = time.perf_counter() - started
            m = result.metrics
            pca, pca_probe = m["pca"], m["pca_probe"]
            finite = math.isfinite(m["test"]["mse"]) and all(math.isfinite(r["train_loss"]) for r in result.history)
            if m["test"]["mse"] < pca["mse"]:
                verdict = "beats PCA"
            else:
                verdict = f"trades reconstruction for {trade}" if trade else "does NOT beat PCA"
            rows.append((name, m, wall, finite, verdict))
            print(f"{name}: test mse {m['test']['mse']:.5f} ({m['test']['psnr']:.2f} dB), linear probe "
                  f"{m['probe']['linear_acc']:.4f}, {own_figure(m)}, {wall:.0f} s, {verdict}", flush=True)

    command = (f"python benchmarks/variants.py --epochs {args.epochs} --backbone {args.backbone} --device {args.device}"
               f"{f' --limit {args.limit}' if args.limit else ''}{f' --only {args.only}' if args.only else ''}")
    lines = [f"# Autoencoder variants: Fashion-MNIST, latent 32, {args.backbone} encoder/decoder", "",
             f"Machine: {machine_line()}; device of the runs: {rows[0][1]['device']}. The machine was shared "
             "with other engineers' jobs, so wall times are noisy.",
             f"Command: `{command}` ({len(data.x_train)} training images, {args.epochs} epochs each, "
             "aeopt's default recipe: AdamW, cosine, bce). Probes: logistic regression and 5-NN fitted on the "
             f"codes of the first {rows[0][1]['probe']['train_samples']} training images, scored on the test set.",
             "", "| variant | test MSE | PSNR (dB) | vs PCA (dB) | linear probe | 5-NN | own figure | params | "
                 "wall (s) | no NaN | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| PCA-32 | {pca['mse']:.5f} | {pca['psnr']:.2f} | +0.00 | {pca_probe['linear_acc']:.4f} | "
             f"{pca_probe['knn_acc']:.4f} | - | - | - | - | reference |"]
    for name, m, wall, finite, verdict in rows:
        t = m["test"]
        lines.append(f"| {name} | {t['mse']:.5f} | {t['psnr']:.2f} | {t['psnr'] - pca['psnr']:+.2f} | "
                     f"{m['probe']['linear_acc']:.4f} | {m['probe']['knn_acc']:.4f} | {own_figure(m)} | "
                     f"{m['params']:,} | {wall:.0f} | {'yes' if finite else 'NO'} | {verdict} |")
    lines += ["", "Test MSE / PSNR are on the clean test images for every variant (the denoising model too); "
                  "the VAE reconstructs from the posterior mean. Wall time covers training and evaluation "
                  "(probes, PCA, report)."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
