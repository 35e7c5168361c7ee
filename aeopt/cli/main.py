"""Command line: parse, call the library, print. Errors in the user's input exit with code 2.

All argparse code lives in this package, one module per command group, each exposing
`add_commands(subparsers)`; COMMAND_MODULES lists them in the order `aeopt --help` shows them.
"""
from __future__ import annotations

import importlib
import signal
import sys
from contextlib import contextmanager

from ..errors import AeoptError, Interrupted, caused_by_ctrl_c, forget_unhandled_ctrl_c

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


def _ctrl_c_hook(unraisable) -> None:
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        import _thread
        import threading

        # From another thread, a moment later: raised here, it would land in this hook and be dropped too.
        threading.Timer(0.01, _thread.interrupt_main).start()
        return
    _ctrl_c_hook.previous(unraisable)


def redeliver_ctrl_c_from_finalizers() -> None:
    """Ctrl-C that lands while Python runs a finalizer or a weakref callback (SQLAlchemy's, during garbage
    collection) is printed as "Exception ignored ... KeyboardInterrupt" and dropped: the command went on to the
    end (benchmarks/chaos.py caught it). Deliver it again to the main code instead, silently."""
    if sys.unraisablehook is not _ctrl_c_hook:
        _ctrl_c_hook.previous = sys.unraisablehook
        sys.unraisablehook = _ctrl_c_hook


_ctrl_c_seen = False


def _note_ctrl_c(signum, frame) -> None:
    global _ctrl_c_seen
    _ctrl_c_seen = True
    signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt, as without this handler


@contextmanager
def remembering_ctrl_c():
    """Ctrl-C that lands inside a C extension can come out as another error with no KeyboardInterrupt
    left in its chain (matplotlib's image resampling turned it into "ValueError: Invalid affine
    transformation matrix": benchmarks/chaos.py caught it). While open, every Ctrl-C is noted, so that
    an error after one is still reported as the interruption it is. Only where Python's own handler is
    installed (the main thread, SIGINT not ignored by the shell); the previous handler comes back after."""
    global _ctrl_c_seen
    _ctrl_c_seen = False
    try:
        installed = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if installed:
            signal.signal(signal.SIGINT, _note_ctrl_c)
    except ValueError:  # not the main thread: the handler is not ours to change
        installed = False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    redeliver_ctrl_c_from_finalizers()
    with remembering_ctrl_c():
        return _run(argv, debug)


def _run(argv: list[str], debug: bool) -> int:
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
    except BaseException as err:  # Ctrl-C (or a library failing on its way out of one): say how to go on
        if debug or isinstance(err, SystemExit) or not (caused_by_ctrl_c(err) or _ctrl_c_seen):
            raise
        hint = str(err) if isinstance(err, Interrupted) else \
            "nothing half-written was left; rerun the command to start again"
        print(f"aeopt: interrupted; {hint}", file=sys.stderr)
        forget_unhandled_ctrl_c()
        return 130
    return 0
