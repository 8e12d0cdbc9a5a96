"""User-facing errors.

Anything raised as :class:`InterpError` is a problem with the user's input (a missing file, a bad option,
a data set that does not match a checkpoint). The CLI prints its message on one line and exits with code 2;
a notebook user gets an ordinary exception with the same message.
"""


class InterpError(Exception):
    """A problem with the user's input, reported as one line (CLI exit code 2)."""


class DataError(InterpError):
    """A data file that cannot be loaded or does not have the expected layout."""


class CheckpointError(InterpError):
    """A checkpoint that is missing, unreadable, unsafe, or does not match the data."""


class RunError(InterpError):
    """A run directory that is missing, incomplete, or has the wrong schema."""


class DataWarning(UserWarning):
    """Something in the data was repaired (e.g. non-finite values set to 0); the CLI prints it on one line."""
