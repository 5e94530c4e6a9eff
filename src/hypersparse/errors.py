"""Errors the command line turns into one line on stderr and an exit code."""


class UserError(Exception):
    """Bad input the user can fix (exit code 2); the message says how."""


class DataError(UserError):
    """A data file is missing, truncated or corrupt."""


class RunDiverged(Exception):
    """Training produced a non-finite loss (exit code 1)."""
