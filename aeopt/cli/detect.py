"""`aeopt detect fit` and `aeopt detect score`: argparse only; the work is in aeopt/detect/run.py."""
from __future__ import annotations

import argparse
import sys

from .flags import add_common_flags


def _log(quiet: bool):
    def log(message: str) -> None:
        if not quiet:
            print(message, flush=True)
        elif message.lower().startswith("warning"):
            print(message, file=sys.stderr)
    return log


def _contamination(text: str):
    return text if text.strip().lower() == "auto" else _number(text)


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text  # check_contamination rejects it with the one-line message


def cmd_fit(args: argparse.Namespace) -> None:
    from ..detect.run import fit_run

    params = {k: v for k, v in (("model", args.model), ("latent_dim", args.latent_dim), ("epochs", args.epochs),
                                ("robust", args.robust), ("recon", args.recon), ("latent", args.latent),
                                ("precision", args.precision)) if v is not None}
    params.update({k: False for k, off in (("features", args.no_features), ("gradients", args.no_gradients)) if off})
    if args.width is not None or args.hidden is not None:
        params["model_options"] = {k: v for k, v in (("width", args.width), ("hidden", args.hidden)) if v is not None}
    metrics = fit_run(args.data, args.out, normal_class=args.normal_class, contamination=args.contamination,
                      score=args.score, threshold=args.threshold, overwrite=args.overwrite, data_dir=args.data_dir,
                      limit=args.limit, seed=args.seed, log=_log(args.quiet), verbose=not args.quiet, **params)
    d = metrics.get("detect")
    result = (f"test AUROC {d['auroc']:.4f}, AP {d['average_precision']:.4f}, F1 {d['f1']:.4f}" if d
              else "no test labels")
    print(f"{result}; {100 * metrics['test_flagged']:.1f}% of the test set flagged; run: {args.out}")


def cmd_score(args: argparse.Namespace) -> None:
    from ..detect.run import score_file

    result = score_file(args.run, args.data, args.out, data_dir=args.data_dir, overwrite=args.overwrite)
    if not args.quiet:
        print(f"scored {result['n']} samples, {result['flagged']} above the threshold {result['threshold']:.6g}; "
              f"wrote {args.out}")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("detect", help="anomaly detection with autoencoders (fit, score)")
    sub = p.add_subparsers(dest="detect_command", required=True, parser_class=type(p))

    f = sub.add_parser("fit", help="train a detector and write a run directory with its report")
    f.add_argument("--data", default="digits", help="data spec, as for aeopt train (default: digits)")
    f.add_argument("--data-dir", help="folder holding fashion-mnist's IDX files")
    f.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    f.add_argument("--normal-class", type=int, help="train on this class only; anomalies = the other classes")
    f.add_argument("--contamination", type=_contamination, default=0.1,
                   help="expected share of anomalies in (0, 0.5], or auto (from the score distribution)")
    f.add_argument("--score", default="auto", help="recon | latent | combined (recon + code distance, + the encoder's "
                   "feature map for conv, + orientation histograms for images) | forest | elbo (VAE) | auto")
    f.add_argument("--no-features", action="store_true", help="combined: leave out the encoder's feature map")
    f.add_argument("--no-gradients", action="store_true",
                   help="combined: leave out the images' orientation histograms (the autoencoder's parts only)")
    f.add_argument("--recon", help="reconstruction error: mse | bce | ssim | auto")
    f.add_argument("--latent", help="code density: knn | gauss")
    f.add_argument("--threshold", default="contamination",
                   help="contamination (from --contamination) | f1 (best F1 on the labelled validation split)")
    f.add_argument("--model", help="aeopt model: conv, mlp, vae, ... (default: conv for images, mlp for tables)")
    f.add_argument("--latent-dim", type=int)
    f.add_argument("--width", type=int, help="conv channels of the first stage")
    f.add_argument("--hidden", help="mlp hidden sizes, e.g. 64,32")
    f.add_argument("--epochs", type=int)
    f.add_argument("--robust", type=float, help="share of each batch's highest losses left out of training")
    f.add_argument("--precision", help="auto | fp32 | bf16")
    f.add_argument("--limit", type=int, help="use only the first N training samples")
    f.add_argument("--seed", type=int, default=0)
    add_common_flags(f)
    f.set_defaults(func=cmd_fit)

    s = sub.add_parser("score", help="score data with a detector run: CSV of index,score,is_anomaly")
    s.add_argument("run", metavar="RUN")
    s.add_argument("--data", required=True, help="data spec of the same shape as the training data")
    s.add_argument("--data-dir")
    s.add_argument("--out", required=True, metavar="FILE.csv")
    add_common_flags(s)
    s.set_defaults(func=cmd_score)
