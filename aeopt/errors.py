"""The one user-facing error type: the CLI prints its message on one line and exits with code 2."""


class AeoptError(ValueError):
    """A problem with the user's input (file, name, number) that the user can fix.

    The message must say what is wrong and how to fix it, in one line.
    """

    def __init__(self, message: str = "") -> None:
        # One line whatever the input put into it: a newline inside a quoted file name, key or cell is
        # escaped, so the CLI's one line says all of it.
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the user does next (e.g. "continue with `aeopt train --resume runs/x`")."""


def caused_by_ctrl_c(err: BaseException) -> bool:
    """Whether `err` was raised while a KeyboardInterrupt was being handled: a library's cleanup that fails
    on the way out (Optuna's trial bookkeeping raises UnboundLocalError when Ctrl-C lands at the wrong
    moment) is still the user's Ctrl-C, not a crash."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__context__ or err.__cause__
    return False


def forget_unhandled_ctrl_c() -> None:
    """Call once a Ctrl-C has been handled, before exiting with 130: without it the process can still die
    of SIGINT (exit -2, which `benchmarks/chaos.py` counts as unclean). CPython notes a KeyboardInterrupt
    that leaves any exec() of a string (dataclasses, torch.compile and others run code that way) and, at
    exit, re-raises SIGINT on itself if that note is still set, even though the program caught the
    interruption and chose its exit code. The note is cleared by the next exec() of a string that
    finishes, so one empty exec clears it."""
    exec("None")


def describe_failure(err: Exception) -> str:
    """`Type: first line of the message` (at most 200 characters), for one-line fallback warnings."""
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return f"{type(err).__name__}: {first_line}"
