"""`aeopt optimize`: the command line of the search."""
from __future__ import annotations

import argparse

from ..errors import Interrupted, caused_by_ctrl_c
from ..optimize import optimize
from ..optimize.api import DEFAULT_TRIALS
from .flags import add_common_flags, defaults_of


def add_commands(subparsers) -> None:
    d = defaults_of(optimize)
    p = subparsers.add_parser("optimize", help="search architectures and recipes: the Pareto front of error vs cost")
    p.add_argument("--data", required=True, help="data spec: digits | fashion-mnist | npy:PATH | ...")
    p.add_argument("--data-dir", help="folder holding fashion-mnist's IDX files")
    p.add_argument("--out", required=True, help="output folder (holds the study: rerun to continue it)")
    p.add_argument("--trials", type=int, help=f"trials to add in this call, over all workers (default "
                   f"{DEFAULT_TRIALS} without --budget)")
    p.add_argument("--budget", help="wall time for the whole call, e.g. 90s, 10m, 1.5h (a fifth for the search, the "
                   "rest retraining chosen front members)")
    p.add_argument("--objectives", default=d["objectives"],
                   help=f"one error (mse, mae) and one or two costs (params, flops, latency); default {d['objectives']}")
    p.add_argument("--latent-dim", type=int, help="fix the code size (default: searched)")
    p.add_argument("--storage", help="Optuna storage: default SQLite study.db in --out (with --workers N, the journal "
                   "file study.journal); journal:PATH; or postgresql://user:pw@host/db to share one study between "
                   "machines (pip install aeopt[postgres])")
    p.add_argument("--workers", type=int, default=d["workers"], help="local worker processes sharing the study")
    p.add_argument("--tolerance", type=float, default=d["tolerance"],
                   help=f"recommend the cheapest model within this fraction of the best error (default {d['tolerance']})")
    p.add_argument("--space", help="YAML file narrowing or widening the search space")
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"most epochs per search trial (default "
                   f"{d['epochs']}; rungs at E/3, E/9, ...)")
    p.add_argument("--subset", type=int, default=d["subset"], help=f"training samples per search trial (default "
                   f"{d['subset']})")
    p.add_argument("--final-epochs", type=int, help="most epochs for retraining a front member (default 3x "
                   "--epochs; with --budget, as many as the time allows, up to 100)")
    p.add_argument("--max-front", type=int, default=d["max_front"], help=f"most front members to retrain: the "
                   f"best, the recommended, the cheapest, the knee of the front, others spread along the cost "
                   f"(default {d['max_front']})")
    p.add_argument("--seed", type=int, default=d["seed"], help="data split and initial weights")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--device", default=d["device"], choices=("auto", "cpu", "cuda"))
    add_common_flags(p)  # without --overwrite a rerun continues the study: finished trials are kept
    p.set_defaults(func=cmd_optimize)


def cmd_optimize(args: argparse.Namespace) -> None:
    try:
        result = optimize(
            args.data, out=args.out, objectives=args.objectives, trials=args.trials, budget=args.budget,
            latent_dim=args.latent_dim, storage=args.storage, workers=args.workers, tolerance=args.tolerance,
            space=args.space, epochs=args.epochs, subset=args.subset, final_epochs=args.final_epochs,
            max_front=args.max_front, seed=args.seed, threads=args.threads, data_dir=args.data_dir,
            device=args.device, progress=not args.quiet, overwrite=args.overwrite,
            log=(lambda message: None) if args.quiet else print)
    except BaseException as err:
        if not caused_by_ctrl_c(err):
            raise
        raise Interrupted("the finished trials are kept in the study: rerun the same command (without "
                          "--overwrite) to continue it") from None
    pick = result.recommended
    print(f"front: {len(result.front)} model(s); recommended: trial {pick['trial']} val mse {pick['mse']:.5f} "
          f"test mse {pick['test_mse']:.5f}, {pick['params']:,} params, "
          f"{pick['train_flops_per_sample'] / 1e6:.2f} MFLOP/sample; run: {result.path / pick['run']}; "
          f"report: {result.path / 'report.md'}")
