"""`aeopt shrink`: distill -> prune -> quantize a run into a new run directory."""
from __future__ import annotations

import argparse

from ..shrink.pipeline import shrink
from .flags import add_common_flags, defaults_of, quiet_log


def cmd_shrink(args: argparse.Namespace) -> None:
    metrics = shrink(args.run, args.out, prune=args.prune, structured=args.structured, quantize=args.quantize,
                     distill_to=args.distill_to, rounds=args.prune_rounds, finetune_epochs=args.finetune_epochs,
                     distill_epochs=args.distill_epochs, student_alone=not args.no_student_alone,
                     quant_mode=args.quant_mode, overwrite=args.overwrite,
                     log=quiet_log if args.quiet else print)
    rows = [("before", metrics["before"])]
    for step in metrics["steps"]:
        if "student_alone" in step:   # the distilled student beside the same student trained alone
            rows += [("distilled", step["after"]), ("student alone", {**step["student_alone"], "size_bytes": None})]
    rows.append(("after", {**metrics["test"], "params": metrics["params"], "size_bytes": metrics["size_bytes"]}))
    print(f"{'':14} {'PSNR dB':>8} {'params':>10} {'size MB':>9}")
    for label, row in rows:
        size = "" if row["size_bytes"] is None else f"{row['size_bytes'] / 1e6:.3f}"
        print(f"{label:14} {row['psnr']:8.2f} {row['params']:10,} {size:>9}")
    print(f"run: {args.out} (report.md lists every step)")


def add_commands(sub) -> None:
    d = defaults_of(shrink)
    p = sub.add_parser("shrink", help="prune / quantize / distill a run into a new run directory")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prune", type=float, metavar="F",
                   help="fraction of weights (or, with --structured, channels) to remove. Unstructured (the default) "
                        "zeroes single weights and stores them sparse (values + bit mask): the float file shrinks "
                        "(50%%: 1.9x) and aeopt.load reads it back; an int8 file keeps its zeros, so there the "
                        "size comes from int8 alone (measured: benchmarks/results/shrink_unstructured.md)")
    p.add_argument("--structured", action="store_true",
                   help="remove whole channels: a smaller dense model, smaller in every format and faster")
    p.add_argument("--quantize", choices=("int8",), help="post-training int8 (ONNX Runtime)")
    p.add_argument("--distill-to", metavar="MODEL_SPEC",
                   help="student to train from this run, e.g. conv:width=8 (also trained alone, for comparison)")
    p.add_argument("--out", required=True, metavar="NEW", help="the new run directory")
    p.add_argument("--prune-rounds", type=int, default=d["rounds"], help=f"prune + fine-tune rounds (default "
                   f"{d['rounds']})")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs per round (default: the run's epochs / "
                   "rounds, so fine-tuning costs about one training; fewer lose quality: see benchmarks/results/"
                   "shrink_unstructured.md)")
    p.add_argument("--distill-epochs", type=int, help="student epochs (default: the teacher's)")
    p.add_argument("--no-student-alone", action="store_true",
                   help="with --distill-to, skip training the same student without the teacher (by default it "
                        "is trained too, same epochs and seed, and reported beside the distilled one)")
    p.add_argument("--quant-mode", default=d["quant_mode"], choices=("static", "mixed", "dynamic"),
                   help="static: calibrated int8 everywhere (fastest); mixed: linear layers dynamic")
    add_common_flags(p)  # --overwrite replaces NEW if it exists
    p.set_defaults(func=cmd_shrink)
