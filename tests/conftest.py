"""Shared fixtures: tiny datasets written by the real runner."""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pdeforge.datasets.runner import generate

# keep BLAS single-threaded in subprocesses started by tests (2-core CI machine)
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def darcy_file(tmp_path_factory) -> Path:
    """12 piecewise Darcy samples at 16x16 in 3 shards."""
    path = tmp_path_factory.mktemp("data") / "darcy.nc"
    generate("darcy", 12, path, resolution=16, seed=3, shard_size=4, progress=False)
    return path


class _Servers:
    """Pre-imported interpreters that fork each CLI command (``tests/cli_server.py``)."""

    def __init__(self) -> None:
        self.free: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def take(self) -> subprocess.Popen:
        with self.lock:
            if self.free:
                return self.free.pop()
        return subprocess.Popen(
            [sys.executable, "-m", "tests.cli_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def give_back(self, server: subprocess.Popen) -> None:
        with self.lock:
            self.free.append(server)

    def close(self) -> None:
        for server in self.free:  # idle, holding nothing: no need for its 3 s teardown
            server.kill()
            server.wait(timeout=30)


_SERVERS = _Servers()
SERVER_START = 120  # seconds a new server may take for its imports
atexit.register(_SERVERS.close)


# set to 1 for fresh interpreters instead of the server's forks: slower, but each command
# then loads only what it imports, with its own hash seed and import-time settings
FRESH_INTERPRETERS = os.environ.get("PDEFORGE_TESTS_FRESH_INTERPRETERS") == "1"


def run_cli(*args: str, timeout: float = 120, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``python -m pdeforge ARGS`` as its own process (real exit status, stdout, stderr),
    forked from a server that has done the imports (``tests/cli_server.py``), or a fresh
    interpreter with ``PDEFORGE_TESTS_FRESH_INTERPRETERS=1``; in the caller's working
    directory and environment (or ``cwd``, ``env``), as ``subprocess.run``."""
    argv = [sys.executable, "-m", "pdeforge", *map(str, args)]
    if FRESH_INTERPRETERS:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
        )
    server = _SERVERS.take()
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        request = {
            "argv": argv[3:],
            "cwd": str(Path(cwd or os.getcwd()).resolve()),
            "env": dict(os.environ if env is None else env),
            "stdout": str(out),
            "stderr": str(err),
            "timeout": timeout,
        }
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        # the server answers within the command's timeout once it has done its imports
        # (SERVER_START): a server that hangs or dies is killed and named, not waited for
        ready, _, _ = select.select([server.stdout], [], [], timeout + SERVER_START)
        line = server.stdout.readline() if ready else ""
        if not line:
            server.kill()
            server.wait()
            raise RuntimeError(
                "the CLI test server died or hung (tests/cli_server.py); its error is above"
            )
        _SERVERS.give_back(server)
        answer = json.loads(line)
        stdout, stderr = out.read_text(), err.read_text()
    if answer.get("timeout"):
        raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
    return subprocess.CompletedProcess(argv, answer["returncode"], stdout, stderr)


def run_clis(
    commands: list[tuple[str, ...]], timeout: float = 240, **kwargs
) -> list[subprocess.CompletedProcess]:
    """:func:`run_cli` for independent commands, two at a time (two cores); results in
    order."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda c: run_cli(*c, timeout=timeout, **kwargs), commands))


@pytest.fixture(scope="session")
def darcy16(tmp_path_factory) -> Path:
    """24 piecewise Darcy samples at 16x16."""
    path = tmp_path_factory.mktemp("train") / "darcy16.nc"
    generate("darcy", 24, path, resolution=16, seed=5, shard_size=24, progress=False)
    return path


@pytest.fixture(scope="session")
def darcy32(tmp_path_factory) -> Path:
    """8 other Darcy samples at 32x32, for evaluation at another resolution."""
    path = tmp_path_factory.mktemp("train") / "darcy32.nc"
    generate("darcy", 8, path, resolution=32, seed=11, shard_size=8, progress=False)
    return path


@pytest.fixture(autouse=True)
def _keep_the_hash_seed_unset():
    """Dask's Nanny puts PYTHONHASHSEED=6640 into this process's environment when a test
    starts local worker processes; a later CLI command then asked the fork server for
    other interpreter settings than it started with, and failed (an order-dependent
    failure of the suite, not of pdeforge)."""
    before = os.environ.get("PYTHONHASHSEED")
    yield
    if before is None:
        os.environ.pop("PYTHONHASHSEED", None)
    else:
        os.environ["PYTHONHASHSEED"] = before
