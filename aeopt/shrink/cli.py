"""Commands: `aeopt shrink`, `aeopt export`, `aeopt bench`, `aeopt encode`, `aeopt decode`."""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from ..errors import AeoptError


def cmd_shrink(args: argparse.Namespace) -> None:
    from .pipeline import shrink

    metrics = shrink(args.run, args.out, prune=args.prune, structured=args.structured, quantize=args.quantize,
                     distill_to=args.distill_to, rounds=args.prune_rounds, finetune_epochs=args.finetune_epochs,
                     distill_epochs=args.distill_epochs, student_alone=not args.no_student_alone,
                     quant_mode=args.quant_mode, overwrite=args.overwrite)
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


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_run

    diff = export_run(args.run, args.onnx, part=args.part)
    print(f"wrote {args.onnx} ({args.part}, dynamic batch); parity vs torch: max abs diff {diff:.2e}")


def cmd_bench(args: argparse.Namespace) -> None:
    from .bench import FORMS, bench

    forms = tuple(args.forms.split(",")) if args.forms else FORMS
    bench(args.run, threads=args.threads, forms=forms, big_batch=args.batch, min_seconds=args.seconds)
    print(f"wrote {Path(args.run) / 'bench.json'}")


def _read_npy(path: str) -> np.ndarray:
    if not str(path).endswith(".npy") or not Path(path).is_file():
        raise AeoptError(f"no such .npy file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise AeoptError(f"{path} is not a plain .npy array ({err})") from None


def _write_npy(path: str, array: np.ndarray) -> None:
    from ..runs import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def cmd_encode(args: argparse.Namespace) -> None:
    """x (.npy, data space) -> z (.npy)."""
    import torch

    from ..apply import _prepare
    from ..runs import load

    run = load(args.run, runtime=args.runtime)
    x = _prepare(_read_npy(args.input), run.data_info)
    with torch.no_grad():
        z = run.model.encode(x)
    _write_npy(args.output, z.float().numpy())
    print(f"wrote {len(z)} code(s) of size {z.shape[1]} to {args.output}")


def cmd_decode(args: argparse.Namespace) -> None:
    """z (.npy) -> x_hat (.npy, data space, the run's table scaler undone)."""
    import torch

    from ..apply import _unscale
    from ..runs import load

    run = load(args.run, runtime=args.runtime)
    z = _read_npy(args.input).astype(np.float32)
    if z.ndim != 2 or z.shape[1] != run.model.latent_dim:
        raise AeoptError(f"codes must have shape (N, {run.model.latent_dim}), got {z.shape}")
    with torch.no_grad():
        x_hat = run.model.decode(torch.from_numpy(z))
    _write_npy(args.output, _unscale(x_hat.float().numpy(), run.data_info))
    print(f"wrote {len(x_hat)} reconstruction(s) to {args.output}")


def add_commands(sub) -> None:
    p = sub.add_parser("shrink", help="prune / quantize / distill a run into a new run directory")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prune", type=float, metavar="F", help="fraction of weights (or channels) to remove")
    p.add_argument("--structured", action="store_true", help="remove whole channels: smaller and faster")
    p.add_argument("--quantize", choices=("int8",), help="post-training int8 (ONNX Runtime)")
    p.add_argument("--distill-to", metavar="MODEL_SPEC",
                   help="student to train from this run, e.g. conv:width=8 (also trained alone, for comparison)")
    p.add_argument("--out", required=True, metavar="NEW", help="the new run directory")
    p.add_argument("--prune-rounds", type=int, default=3, help="prune + fine-tune rounds (default 3)")
    p.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs per round (default 2)")
    p.add_argument("--distill-epochs", type=int, help="student epochs (default: the teacher's)")
    p.add_argument("--no-student-alone", action="store_true",
                   help="with --distill-to, skip training the same student without the teacher (by default it "
                        "is trained too, same epochs and seed, and reported beside the distilled one)")
    p.add_argument("--quant-mode", default="static", choices=("static", "mixed", "dynamic"),
                   help="static: calibrated int8 everywhere (fastest); mixed: linear layers dynamic")
    p.add_argument("--overwrite", action="store_true", help="replace NEW if it exists")
    p.set_defaults(func=cmd_shrink)

    p = sub.add_parser("export", help="export a run's model to ONNX (dynamic batch, parity-checked)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--onnx", required=True, metavar="FILE")
    p.add_argument("--part", default="full", choices=("full", "encoder", "decoder"),
                   help="full: x -> (x_hat, z); encoder: x -> z; decoder: z -> x_hat")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="latency / throughput / memory of eager, compiled, ONNX and int8 forms")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256, help="the large batch (default 256)")
    p.add_argument("--forms", help="comma list of eager_fp32,eager_bf16,compiled,onnx_fp32,onnx_int8")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum timing seconds per measurement")
    p.set_defaults(func=cmd_bench)

    for name, func, what in (("encode", cmd_encode, "x (.npy) -> codes z (.npy)"),
                             ("decode", cmd_decode, "codes z (.npy) -> reconstructions (.npy)")):
        p = sub.add_parser(name, help=what)
        p.add_argument("run", metavar="RUN")
        p.add_argument("input", metavar="INPUT")
        p.add_argument("output", metavar="OUTPUT")
        p.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                       help="auto: the run's format; onnx: ONNX Runtime")
        p.set_defaults(func=func)
