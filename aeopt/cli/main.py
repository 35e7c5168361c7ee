"""Command line: parse, call the library, print. Errors in the user's input exit with code 2.

All argparse code lives in this package, one module per command group, each exposing
`add_commands(subparsers)`; COMMAND_MODULES lists them in the order `aeopt --help` shows them.
"""
from __future__ import annotations

import importlib
import sys

from ..errors import AeoptError, Interrupted

COMMAND_MODULES: tuple[str, ...] = (
    "aeopt.cli.train",      # train, lr-find
    "aeopt.cli.evaluate",   # evaluate, reconstruct, models, sample
    "aeopt.cli.optimize",   # optimize
    "aeopt.cli.shrink",     # shrink
    "aeopt.cli.deploy",     # export, bench, encode, decode
    "aeopt.cli.data",       # shard
    "aeopt.cli.detect",     # detect fit, detect score
    "aeopt.cli.codec",      # compress, decompress
)


def build_parser():
    from .flags import Parser  # imports torch (settings -> models): after main's Ctrl-C handling is in place

    parser = Parser(prog="aeopt", description="Build, train, evaluate and optimize autoencoders.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(argv)  # the command as typed: `train --nproc-per-node` relaunches it under torchrun
        args.func(args)
    except (AeoptError, OSError) as err:
        if debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"aeopt: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: what was finished is kept; say how to go on
        if debug:
            raise
        hint = str(err) if isinstance(err, Interrupted) else "nothing half-written was left; rerun the command to start again"
        print(f"aeopt: interrupted; {hint}", file=sys.stderr)
        return 130
    return 0
