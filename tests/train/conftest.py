"""Tiny Darcy files for training tests, written by the real runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdeforge.datasets.runner import generate

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("darcy_*.yaml"))


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
