"""The one user-facing error type: the CLI prints its message on one line and exits with code 2."""


class AeoptError(ValueError):
    """A problem with the user's input (file, name, number) that the user can fix.

    The message must say what is wrong and how to fix it, in one line.
    """
