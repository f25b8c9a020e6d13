"""User-facing errors.

Every error a user can cause (bad option, bad file, mismatched resume) is raised as a
:class:`PdeforgeError` whose message names the problem and the fix. The CLI prints these
as one line without a traceback; anything else is a bug and keeps its traceback.
"""


class PdeforgeError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class DatasetFormatError(PdeforgeError, ValueError):
    """A file is missing, unreadable, or not a pdeforge dataset (format version 1)."""


class SolverInputError(PdeforgeError, ValueError):
    """Bad matrices, right-hand sides, features or options for a linear solver."""


class ConfigMismatchError(PdeforgeError):
    """An existing output or partial run was made with a different configuration."""


class ConvergenceError(PdeforgeError):
    """Samples did not converge and the user asked for ``--strict``."""


class Interrupted(PdeforgeError):
    """The user interrupted a run (Ctrl-C, SIGTERM); what was finished is kept.

    ``exit_code``: the command's exit status, 128 + the signal's number (130 for Ctrl-C,
    143 for SIGTERM), so that a shell or a batch scheduler sees an interrupted run.
    """

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
