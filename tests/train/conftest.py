"""The shipped configs the training tests run."""

from __future__ import annotations

from pathlib import Path

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("darcy_*.yaml"))
