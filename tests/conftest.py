"""Shared fixtures: tiny datasets written by the real runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pdeforge.datasets.runner import generate

# keep BLAS single-threaded in subprocesses started by tests (2-core CI machine)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def darcy_file(tmp_path_factory) -> Path:
    """12 piecewise Darcy samples at 16x16 in 3 shards."""
    path = tmp_path_factory.mktemp("data") / "darcy.nc"
    generate("darcy", 12, path, resolution=16, seed=3, shard_size=4, progress=False)
    return path


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m pdeforge ARGS`` in a subprocess (real exit codes and stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "pdeforge", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def run_clis(
    commands: list[tuple[str, ...]], timeout: float = 240, **kwargs
) -> list[subprocess.CompletedProcess]:
    """:func:`run_cli` for independent commands, started together (a command's time is
    mostly the interpreter's imports, so two cores run two at once); results in order."""
    argvs = [[sys.executable, "-m", "pdeforge", *map(str, args)] for args in commands]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         **kwargs)
        for argv in argvs
    ]
    results = []
    try:
        for argv, proc in zip(argvs, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


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
