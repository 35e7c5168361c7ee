"""`aeopt evaluate`, `reconstruct`, `models` and `sample`: reading and applying trained runs."""
from __future__ import annotations

import argparse
import json

from ..deploy.inference import evaluate, reconstruct_file
from ..deploy.sample import sample_run, write_samples
from ..models import list_models, model_description, model_knobs
from .flags import add_common_flags, refuse_existing


def cmd_evaluate(args: argparse.Namespace) -> None:
    metrics = evaluate(args.run, data=args.data, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    if "bpp" in metrics["test"]:
        from .codec import codec_line

        print(codec_line(metrics["test"]))
        return
    test, pca = metrics["test"], metrics["pca"]
    print(f"{'':14} {'MSE':>9} {'PSNR dB':>8} {'SSIM':>7}")
    for name, row in (("autoencoder", test), (f"PCA-{pca['components']}", pca)):
        ssim = "n/a" if row["ssim"] is None else f"{row['ssim']:.4f}"
        print(f"{name:14} {row['mse']:9.5f} {row['psnr']:8.2f} {ssim:>7}")
    for cls, row in test.get("per_class", {}).items():
        print(f"  class {cls:6} {row['mse']:9.5f} {row['psnr']:8.2f}")
    if "probe" in metrics:
        probe, pca_probe = metrics["probe"], metrics.get("pca_probe", {})
        print(f"linear probe {probe['linear_acc']:.4f} (PCA {pca_probe.get('linear_acc', float('nan')):.4f}), "
              f"5-NN {probe['knn_acc']:.4f} (PCA {pca_probe.get('knn_acc', float('nan')):.4f})")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    refuse_existing(args.output, args.overwrite)
    count = reconstruct_file(args.run, args.input, args.output)
    print(f"wrote {count} reconstruction(s) to {args.output}")


def cmd_models(args: argparse.Namespace) -> None:
    for name in list_models():
        knobs = ", ".join(model_knobs(name)) or "no knobs"
        print(f"{name:8} {model_description(name)}  [{knobs}]")


def cmd_sample(args: argparse.Namespace) -> None:
    refuse_existing(args.out, args.overwrite)
    x = sample_run(args.run, args.n, seed=args.seed)
    write_samples(x, args.out)
    print(f"wrote {len(x)} samples to {args.out}")


def add_commands(sub) -> None:
    p = sub.add_parser("evaluate", help="test-set quality of a run beside PCA")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", help="evaluate on other data of the same shape")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_common_flags(p, writes=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("reconstruct", help="reconstruct an image file or a .npy batch")
    p.add_argument("run", metavar="RUN")
    p.add_argument("input", metavar="INPUT", help="image file (PNG/JPEG) or .npy array")
    p.add_argument("output", metavar="OUTPUT", help=".png (images) or .npy")
    add_common_flags(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("models", help="list the registered models and their knobs")
    add_common_flags(p, writes=False)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("sample", help="generate new data from a vae / aae / vq_vae run's prior")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--out", default="samples.png", help="FILE.png (image grid) or FILE.npy (default: samples.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draws")
    add_common_flags(p)
    p.set_defaults(func=cmd_sample)
