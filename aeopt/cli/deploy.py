"""`aeopt export`, `bench`, `encode`, `decode`: a trained run deployed and applied."""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch

from ..deploy.bench import FORMS, bench
from ..deploy.export import export_run
from ..deploy.inference import load, prepare_input, unscale
from ..errors import AeoptError
from ..runs import atomic_write_bytes
from .flags import add_common_flags, refuse_existing


def cmd_export(args: argparse.Namespace) -> None:
    refuse_existing(args.onnx, args.overwrite)
    diff = export_run(args.run, args.onnx, part=args.part)
    print(f"wrote {args.onnx} ({args.part}, dynamic batch); parity vs torch: max abs diff {diff:.2e}")


def cmd_bench(args: argparse.Namespace) -> None:
    refuse_existing(Path(args.run) / "bench.json", args.overwrite)
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
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def cmd_encode(args: argparse.Namespace) -> None:
    """x (.npy, data space) -> z (.npy)."""
    refuse_existing(args.output, args.overwrite)
    run = load(args.run, runtime=args.runtime)
    x = prepare_input(_read_npy(args.input), run.data_info)
    with torch.no_grad():
        z = run.model.encode(x)
    _write_npy(args.output, z.float().numpy())
    print(f"wrote {len(z)} code(s) of size {z.shape[1]} to {args.output}")


def cmd_decode(args: argparse.Namespace) -> None:
    """z (.npy) -> x_hat (.npy, data space, the run's table scaler undone)."""
    refuse_existing(args.output, args.overwrite)
    run = load(args.run, runtime=args.runtime)
    z = _read_npy(args.input).astype(np.float32)
    if z.ndim != 2 or z.shape[1] != run.model.latent_dim:
        raise AeoptError(f"codes must have shape (N, {run.model.latent_dim}), got {z.shape}")
    with torch.no_grad():
        x_hat = run.model.decode(torch.from_numpy(z))
    _write_npy(args.output, unscale(x_hat.float().numpy(), run.data_info))
    print(f"wrote {len(x_hat)} reconstruction(s) to {args.output}")


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="export a run's model to ONNX (dynamic batch, parity-checked)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--onnx", required=True, metavar="FILE")
    p.add_argument("--part", default="full", choices=("full", "encoder", "decoder"),
                   help="full: x -> (x_hat, z); encoder: x -> z; decoder: z -> x_hat")
    add_common_flags(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="latency / throughput / memory of eager, compiled, ONNX and int8 forms")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256, help="the large batch (default 256)")
    p.add_argument("--forms", help="comma list of eager_fp32,eager_bf16,compiled,onnx_fp32,onnx_int8")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum timing seconds per measurement")
    add_common_flags(p)  # --overwrite replaces the run's bench.json
    p.set_defaults(func=cmd_bench)

    for name, func, what in (("encode", cmd_encode, "x (.npy) -> codes z (.npy)"),
                             ("decode", cmd_decode, "codes z (.npy) -> reconstructions (.npy)")):
        p = sub.add_parser(name, help=what)
        p.add_argument("run", metavar="RUN")
        p.add_argument("input", metavar="INPUT")
        p.add_argument("output", metavar="OUTPUT")
        p.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                       help="auto: the run's format; onnx: ONNX Runtime")
        add_common_flags(p)
        p.set_defaults(func=func)
