"""The one user-facing error type: the CLI prints its message on one line and exits with code 2."""


class AeoptError(ValueError):
    """A problem with the user's input (file, name, number) that the user can fix.

    The message must say what is wrong and how to fix it, in one line.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the user does next (e.g. "continue with `aeopt train --resume runs/x`")."""


def describe_failure(err: Exception) -> str:
    """`Type: first line of the message` (at most 200 characters), for one-line fallback warnings."""
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return f"{type(err).__name__}: {first_line}"
