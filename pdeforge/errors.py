"""User-facing errors.

Every error a user can cause (bad option, bad file, mismatched resume) is raised as a
:class:`PdeforgeError` whose message names the problem and the fix. The CLI prints these
as one line without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


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


class Terminated(BaseException):  # noqa: N818 - named like KeyboardInterrupt, its twin
    """SIGTERM arrived (a batch scheduler's time limit, ``kill``) inside
    :func:`sigterm_raises`.

    A ``BaseException`` like ``KeyboardInterrupt``, so that no ``except Exception`` on the
    way swallows it: the code that keeps finished work (e.g. the generation runner's shards)
    turns it into :class:`Interrupted` with exit status 143.
    """


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread instead of
    killing the process at once, so that ``finally`` blocks run (locks, temporary files,
    Dask clusters) and the user is told what was kept. Outside the main thread (where
    Python cannot install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        # once: a second SIGTERM during the clean-up ends the process as it would have
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        # None: a handler installed from C, which Python cannot restore
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def output_directory(path: str | os.PathLike, flag: str = "--out-dir") -> Path:
    """``path`` as a directory that exists and can be written (made if needed), or a
    :class:`PdeforgeError` that says what is wrong with it, before any work is done."""
    if not str(path).strip():
        raise PdeforgeError(f"{flag} is empty; give the directory to write to")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise PdeforgeError(f"{flag} {out} exists and is not a directory; give another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file on the way, no permission, a read-only file system
        raise PdeforgeError(
            f"{flag} {out} cannot be created ({exc.strerror or exc}); give a directory "
            "you can write to"
        ) from None
    try:  # a trial file: permissions alone miss /sys, /proc and read-only mounts as root
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise PdeforgeError(
            f"{flag} {out} is not writable ({exc.strerror or exc}); give a directory you "
            "can write to"
        ) from None
    return out
