"""Registry of problem families (``pdeforge generate PROBLEM``)."""

from __future__ import annotations

from typing import Any

from pdeforge.datasets.problems.base import Option, ProblemFamily, sample_rng
from pdeforge.datasets.problems.darcy import Darcy, Darcy3D
from pdeforge.datasets.problems.elliptic import (
    AdvectionDiffusion,
    Helmholtz,
    Helmholtz3D,
    Poisson,
    Thermal,
)
from pdeforge.datasets.problems.nlse import NLSE
from pdeforge.errors import PdeforgeError

PROBLEMS: dict[str, type[ProblemFamily]] = {
    cls.name: cls
    for cls in (Darcy, Darcy3D, Helmholtz, Helmholtz3D, AdvectionDiffusion, Poisson, Thermal,
                NLSE)
}


def available() -> list[str]:
    return sorted(PROBLEMS)


def get_problem(name: str) -> type[ProblemFamily]:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise PdeforgeError(
            f"unknown problem {name!r}; available problems: {', '.join(available())}"
        ) from None


def build_problem(name: str, resolution: int | None = None, **options: Any) -> ProblemFamily:
    return get_problem(name)(resolution, **options)


__all__ = ["PROBLEMS", "Option", "ProblemFamily", "available", "build_problem", "get_problem",
           "sample_rng"]
