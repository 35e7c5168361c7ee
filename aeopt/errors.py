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


def describe_failure(err: Exception) -> str:
    """`Type: first line of the message` (at most 200 characters), for one-line fallback warnings."""
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return f"{type(err).__name__}: {first_line}"
