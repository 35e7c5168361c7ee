"""Command line: parse, call the library, print. Errors in the user's input exit with code 2.

Each command lives in a module that exposes `add_commands(subparsers)`; the core commands are
below, others (optimize, shrink, ...) sit beside their library code and are listed in COMMAND_MODULES.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from typing import Any

from .config import TrainConfig, parse_lr, read_yaml
from .errors import AeoptError

COMMAND_MODULES: tuple[str, ...] = (  # "aeopt.<module>" names that add further subcommands
    "aeopt.codec.commands",
    "aeopt.lr_find",
    "aeopt.optimize.cli",
    "aeopt.sample",
    "aeopt.shrink.cli",
)

TRAIN_HELP = {
    "data": "digits | fashion-mnist | idx:IMAGES[,LABELS] | npy:PATH | npz:PATH | images:DIR | csv:PATH",
    "data_dir": "folder holding fashion-mnist's IDX files (default: the Debian package's folder)",
    "limit": "use only the first N training samples",
    "seed": "fixes the split, the initial weights and the batch order",
    "model": "model name (see `aeopt models`)",
    "latent_dim": "size of the code z",
    "width": "conv: channels of the first stage (doubles per stage)",
    "depth": "conv: number of stride-2 stages",
    "kernel_size": "conv: kernel size",
    "norm": "batch | group | layer | none",
    "activation": "relu | leaky_relu | gelu | silu | tanh | elu",
    "decoder": "conv: transposed | upsample",
    "blocks": "conv: extra residual stride-1 convs per stage (default 0)",
    "hidden": "mlp: hidden sizes, e.g. 256,128",
    "dropout": "mlp: dropout rate",
    "backbone": "vae / vq_vae / aae: conv | mlp (default: conv for images, mlp for tables)",
    "beta": "vae: weight of the KL term (beta-VAE; 1 = the ELBO)",
    "codebook_size": "vq_vae: number of code vectors (default 256)",
    "code_dim": "vq_vae: size of one code vector; latent-dim / code-dim codes per sample (default 4)",
    "commitment": "vq_vae: commitment cost (default 0.25)",
    "adv_weight": "aae: weight of the adversarial term on the code (default 0.05)",
    "entropy": "codec: factorized | hyperprior (default factorized)",
    "lmbda": "codec: rate-distortion trade-off R + lmbda*D (bigger: better quality, more bytes)",
    "quality": "codec: 1..8, lambda presets (used when --lmbda is absent; default 3)",
    "distortion": "codec: mse | ms-ssim (default mse)",
    "patch": "codec: train on random PATCHxPATCH crops from images:DIR (images of any sizes)",
    "loss": "mse | l1 | huber | bce | ssim | mixes like mse+0.2*ssim | auto",
    "sparse_l1": "weight of the L1 penalty on the code (sparse autoencoder)",
    "l1_weights": "weight of the L1 penalty on the weights",
    "sparse_kl": "RHO:W, KL sparsity penalty: target unit activity RHO, weight W (e.g. 0.05:0.1)",
    "contractive": "weight of the encoder's squared Jacobian (Frobenius) norm (contractive AE)",
    "noise": "KIND:LEVEL input corruption for a denoising AE: gaussian:0.3 | masking:0.25 | salt_pepper:0.1",
    "kl_warmup": "vae: epochs over which the KL weight ramps from 0 to beta",
    "epochs": "passes over the training data",
    "batch_size": "samples per step",
    "optimizer": "adam | adamw | sgd | rmsprop",
    "lr": "peak learning rate, or auto (run the learning-rate range test first)",
    "weight_decay": "decoupled for adamw, L2 for the others; weights only, never biases or norms",
    "momentum": "sgd / rmsprop momentum",
    "nesterov": "sgd: Nesterov momentum",
    "schedule": "constant | cosine | onecycle | plateau",
    "clip_grad": "clip the global gradient norm to this value",
    "patience": "early stopping: epochs without validation gain (0 = off)",
    "precision": "auto | fp32 | bf16 | fp16 (autocast; weights stay fp32; fp16 on CUDA, with loss scaling)",
    "compile": "torch.compile the model (falls back to eager with a message if it fails)",
    "memory_format": "auto | channels_last | contiguous: conv activations' layout (auto: channels_last for conv "
                     "models on a GPU or in bf16, where it measured faster)",
    "cuda_graph": "on a CUDA GPU, record the training step once and replay it as a CUDA graph (where the step "
                  "allows it: not fp16, --compile, sgd/rmsprop or multi-step variants)",
    "threads": "CPU threads for torch",
    "out": "run directory to write",
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag on one line (with exit code 2), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flag_type(field: dataclasses.Field):
    if field.type in ("bool",):
        return None
    default = field.default
    if isinstance(default, bool):
        return None
    kind = str(field.type)
    if kind == "float | str":
        return parse_lr
    if kind.startswith("int"):
        return int
    if kind.startswith("float"):
        return float
    return str


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are None so a YAML file's values show through."""
    group = parser.add_argument_group("training settings (also YAML keys for --config)")
    for field in dataclasses.fields(TrainConfig):
        if field.name not in TRAIN_HELP:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = _flag_type(field)
        default_text = field.default if field.default is not dataclasses.MISSING else None
        help_text = f"{TRAIN_HELP[field.name]} (default: {default_text})"
        if kind is None:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Settings from --config, then overridden by every flag given on the command line."""
    values = read_yaml(args.config) if getattr(args, "config", None) else {}
    TrainConfig.from_dict(values, source=args.config or "config")  # reject unknown keys early
    values = {k.replace("-", "_"): v for k, v in values.items()}
    for name in TRAIN_HELP:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if values.get("patience") == 0:
        values["patience"] = None
    return values


def cmd_train(args: argparse.Namespace) -> None:
    from .train import train

    settings = config_from_args(args)
    if args.resume:
        allowed = {"epochs", "threads"}
        ignored = sorted(set(settings) - allowed)
        if ignored:
            raise AeoptError(f"--resume continues a run with its saved settings; drop {', '.join(ignored)} "
                             f"(only --epochs and --threads may change)")
        result = train(resume=args.resume, progress=not args.quiet, device=args.device,
                       log=_quiet_log if args.quiet else print, **settings)
    else:
        result = train(TrainConfig.from_dict(settings), overwrite=args.overwrite, progress=not args.quiet,
                       device=args.device, log=_quiet_log if args.quiet else print)
    m = result.metrics
    if "bpp" in m["test"]:
        print(codec_line(m["test"]) + f"; run: {result.path}")
        return
    print(f"test mse {m['test']['mse']:.5f} ({m['test']['psnr']:.2f} dB) vs PCA {m['pca']['mse']:.5f} "
          f"({m['pca']['psnr']:.2f} dB); {m['params']:,} params; {m['samples_per_second']:.0f} samples/s; "
          f"run: {result.path}")


def codec_line(test: dict) -> str:
    return (f"test: {test['images']} images, {test['bytes_per_image']:.1f} bytes/image (whole .aec files), "
            f"{test['bpp']:.4f} bpp, PSNR {test['psnr']:.2f} dB, MS-SSIM {test['ms_ssim']:.4f}")


def _quiet_log(message: str) -> None:
    """--quiet keeps warnings (they matter) and drops chatter."""
    if message.lower().startswith("warning"):
        print(message, file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate

    metrics = evaluate(args.run, data=args.data, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    if "bpp" in metrics["test"]:
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
    from .apply import reconstruct_file

    count = reconstruct_file(args.run, args.input, args.output)
    print(f"wrote {count} reconstruction(s) to {args.output}")


def cmd_models(args: argparse.Namespace) -> None:
    from .models import list_models, model_description, model_knobs

    for name in list_models():
        knobs = ", ".join(model_knobs(name)) or "no knobs"
        print(f"{name:8} {model_description(name)}  [{knobs}]")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="aeopt", description="Build, train, evaluate and optimize autoencoders.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train an autoencoder and write a run directory")
    p.add_argument("--config", help="YAML file of settings (keys as the flags, - or _); flags override it")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages, only the result line")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test-set quality of a run beside PCA")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", help="evaluate on other data of the same shape")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("reconstruct", help="reconstruct an image file or a .npy batch")
    p.add_argument("run", metavar="RUN")
    p.add_argument("input", metavar="INPUT", help="image file (PNG/JPEG) or .npy array")
    p.add_argument("output", metavar="OUTPUT", help=".png (images) or .npy")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("models", help="list the registered models and their knobs")
    p.set_defaults(func=cmd_models)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    debug = args.debug or "--debug" in argv
    try:
        args.func(args)
    except (AeoptError, OSError) as err:
        if debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"aeopt: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aeopt: interrupted; a training run continues with `aeopt train --resume RUN`", file=sys.stderr)
        return 130
    return 0
