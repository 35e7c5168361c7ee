"""`aeopt train` and `aeopt lr-find`."""
from __future__ import annotations

import argparse
import os

from ..settings import Settings
from ..train import distributed, train
from ..train.lr_find import lr_find
from .flags import add_common_flags, add_setting_flags, defaults_of, quiet_log, settings_from_args


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            out.append(arg)
    return out


def cmd_train(args: argparse.Namespace) -> None:
    if args.nproc_per_node and "WORLD_SIZE" not in os.environ:
        code = distributed.launch(args.nproc_per_node, _without_nproc(args.argv))
        if code:
            raise SystemExit(code)
        return
    try:
        _train(args)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace) -> None:
    settings = settings_from_args(args)
    log = quiet_log if args.quiet else print
    if args.resume:
        result = train(resume=args.resume, progress=not args.quiet, log=log, **settings)
    else:
        result = train(Settings.from_flat(settings), overwrite=args.overwrite, progress=not args.quiet, log=log)
    m = result.metrics
    if not m:  # a rank other than 0 of a multi-process run: rank 0 reports
        return
    if "bpp" in m["test"]:  # a codec run: figures from real files
        from .codec import codec_line

        print(f"{codec_line(m['test'])}; run: {result.path}")
        return
    print(f"test mse {m['test']['mse']:.5f} ({m['test']['psnr']:.2f} dB) vs PCA {m['pca']['mse']:.5f} "
          f"({m['pca']['psnr']:.2f} dB); {m['params']:,} params; {m['samples_per_second']:.0f} samples/s; "
          f"run: {result.path}")


def cmd_lr_find(args: argparse.Namespace) -> None:
    settings = settings_from_args(args)
    settings.pop("lr", None)
    finding = lr_find(Settings.from_flat(settings), overwrite=args.overwrite, min_lr=args.min_lr,
                      max_lr=args.max_lr, steps=args.steps, log=quiet_log if args.quiet else print)
    print(f"suggested --lr {finding.lr:.3g}")


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train an autoencoder and write a run directory")
    p.add_argument("--config", help="YAML file of settings (keys as the flags, - or _); flags override it")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--nproc-per-node", type=int, metavar="N",
                   help="train with N processes on this machine (torch.distributed.run, DDP; gloo on CPUs, nccl on "
                        "GPUs); --batch-size is per process, so the global batch is N x it. Several machines: "
                        "torchrun --nnodes ... -m aeopt train ...")
    add_common_flags(p)
    add_setting_flags(p)
    p.set_defaults(func=cmd_train)

    d = defaults_of(lr_find)
    p = sub.add_parser("lr-find", help="learning-rate range test: plot loss vs lr and suggest --lr")
    p.add_argument("--config", help="YAML file of settings; flags override it")
    p.add_argument("--min-lr", type=float, default=d["min_lr"], help=f"start of the exponential sweep (default: "
                   f"{d['min_lr']})")
    p.add_argument("--max-lr", type=float, default=d["max_lr"], help=f"end of the sweep (default: {d['max_lr']})")
    p.add_argument("--steps", type=int, default=d["steps"], help=f"optimizer steps in the sweep (default: {d['steps']})")
    add_common_flags(p)
    add_setting_flags(p)
    p.set_defaults(func=cmd_lr_find)
