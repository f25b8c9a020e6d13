"""Run ``python -m pdeforge ARGS`` as forks of an interpreter that has already imported it.

Test infrastructure, not part of pdeforge. A CLI test wants a real process: its own exit
status, its own stdout and stderr, the interpreter's own handling of an exception that
escapes. Starting one costs the imports of torch, Lightning, xarray and Dask, which on a
slow 2-core machine take 5-13 s a command, most of the suite's time. This server imports
them once; each command is a ``fork()`` of it that sets the caller's working directory,
environment and output files, then runs ``pdeforge.__main__`` exactly as ``python -m``
does. What ends the command (``sys.exit``, an uncaught exception, a signal) ends the
forked process the way it ends a fresh interpreter: threads joined, atexit handlers run,
the traceback printed, the same exit status. Only the interpreter's teardown of its
modules is skipped (3 s of every command with torch loaded, on the slow machine), once
open HDF5 files are closed as that teardown would close them.

Protocol: one JSON request a line on stdin, ``{"argv", "cwd", "env", "stdout",
"stderr", "timeout"}``; one JSON answer a line on the server's answer pipe
(``{"returncode"}`` as ``subprocess`` reports it, negative for a signal, or
``{"timeout": true}`` after the command was killed). Forking is safe because the server
starts no thread: it checks that before it serves.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import tempfile
import threading
import time
import traceback
import types

# what the commands import; each is imported at most once, here
PRELOAD = (
    "torch",
    "pytorch_lightning",
    "xarray",
    "h5py",
    "h5netcdf",
    "scipy.sparse.linalg",
    "pyamg",
    "dask.distributed",
    "matplotlib",
    "pdeforge.cli",
    "pdeforge.train.cli",
    "pdeforge.surrogate",
    "pdeforge.datasets.runner",
)


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _child(request: dict, answers: int) -> None:
    """Be ``python -m pdeforge ARGV``, then exit with its status (never returns)."""
    os.close(answers)
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(request["cwd"])
    # sys.path as python -m builds it: the working directory, then PYTHONPATH's entries
    sys.path[0] = request["cwd"]
    sys.path[1:1] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # a fresh interpreter seeds NumPy's and torch's global generators from the OS (the
    # random module reseeds itself after a fork); without this every command would
    # draw the same numbers, and a command that forgets its seed would look reproducible
    import numpy
    import torch

    numpy.random.seed()  # noqa: NPY002 - the legacy global generator is the point
    torch.seed()
    tempfile.tempdir = None  # cached by the server: find it from this command's TMPDIR
    # what `python -m` runs, in a new empty __main__ that stays after the module ends
    # (run_module would restore the server's __main__ and argv[0] before the atexit
    # handlers and the threads left running see them)
    server_main = sys.modules["__main__"]  # noqa: F841 - keeps this function's globals
    sys.modules["__main__"] = types.ModuleType("__main__")
    sys.argv = ["-m", *request["argv"]]  # as python -m: argv[0] becomes the module's path
    code = 0
    try:
        runpy._run_module_as_main("pdeforge", alter_argv=True)
    except SystemExit as exc:  # as the interpreter reads it
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # the interpreter prints it, then dies by SIGINT
        traceback.print_exc()
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        os._exit(128 + signal.SIGINT)  # SIGINT blocked: the interpreter's status then
    except BaseException:
        traceback.print_exc()
        code = 1
    _finish()
    os._exit(code)


def _finish() -> None:
    """What the interpreter does at exit before tearing its modules down."""
    threading._shutdown()  # join non-daemon threads
    atexit._run_exitfuncs()
    import h5py

    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        fid.close()
    sys.stdout.flush()
    sys.stderr.flush()


def _interpreter_settings(env) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONPATH"}


def serve() -> None:
    # a Ctrl-C to pytest's process group is for the commands (each restores Python's
    # handler) and pytest, not for the server, which would print a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in PRELOAD:
        __import__(name)
    if threading.active_count() != 1:
        raise RuntimeError(
            f"the CLI server started threads ({threading.enumerate()}) while "
            "importing; forking it would be unsafe: drop that import"
        )
    answers = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the server itself prints nothing
    startup = _interpreter_settings(os.environ)
    for line in sys.stdin:
        request = json.loads(line)
        asked = _interpreter_settings(request["env"])
        if asked != startup:  # read at an interpreter's start, too late for a fork
            raise RuntimeError(
                f"a command asks for the interpreter settings {asked}, the "
                f"server started with {startup}: run it with subprocess"
            )
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, answers)  # ends the forked process
        deadline = time.monotonic() + request["timeout"]
        answer: dict = {}
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                answer["returncode"] = _returncode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                answer["timeout"] = True
                break
            time.sleep(0.005)
        os.write(answers, (json.dumps(answer) + "\n").encode())


if __name__ == "__main__":
    serve()
