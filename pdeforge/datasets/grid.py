"""Where a grid axis's points lie in its domain.

A uniform axis of n points is one of three kinds (DESIGN.md, "Dimensions and
coordinates"):

* periodic: x_0 + i L / n, one period L = n h (coordinate attribute ``periodic = 1``);
* cell: the centres of n equal cells, the domain reaching half a step past the end
  points (attribute ``grid = "cell"``);
* vertex: the end points are the domain's ends (attribute ``grid = "vertex"``).

Which kind decides what another resolution of the same domain is, the interpolation
between resolutions and the strides that keep the kind. The attributes say it; an axis
without them is guessed from its first point (cell centres when it sits half a step past
a multiple of the step, as on [0, 1]), which is right for grids anchored at a multiple of
their step and can be wrong for others (vertices of [-1, 1] with 32 points look like
cell centres): ``pdeforge check`` warns where it guesses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PERIODIC, CELL, VERTEX = "periodic", "cell", "vertex"
#: the coordinate attribute naming a non-periodic axis's kind
GRID_ATTR = "grid"
GRID_KINDS = (CELL, VERTEX)


def is_cell_centred(values: np.ndarray) -> bool:
    """Whether a uniform grid's first point sits half a spacing past a multiple of the
    spacing (cell centres, e.g. (i + 1/2) / n on [0, 1]): the guess for an axis that does
    not say its kind."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or not np.all(np.isfinite(values[[0, -1]])):
        return False
    h = (values[-1] - values[0]) / (len(values) - 1)
    return bool(h) and abs(values[0] / h - math.floor(values[0] / h) - 0.5) < 1e-6


def declared_kind(attrs: Mapping[str, Any] | None) -> str | None:
    """The kind a coordinate's attributes declare (``periodic = 1`` first), or None."""
    if not attrs:
        return None
    periodic = attrs.get("periodic")
    if periodic is not None and _number(periodic) == 1:
        return PERIODIC
    kind = attrs.get(GRID_ATTR)
    if isinstance(kind, bytes):
        kind = kind.decode("utf-8", "replace")
    return kind if kind in GRID_KINDS else None


def axis_kind(values: np.ndarray | None, attrs: Mapping[str, Any] | None = None
              ) -> str | None:
    """The kind of an axis with coordinate ``values`` and attributes ``attrs``: declared,
    else guessed (:func:`is_cell_centred`); None without coordinates (or one point)."""
    if values is None or len(values) < 2:
        return None
    return declared_kind(attrs) or (CELL if is_cell_centred(values) else VERTEX)


def axis_extent(values: np.ndarray, kind: str | None) -> tuple[float, float]:
    """The domain [lo, hi] a uniform axis of kind ``kind`` covers: its end points
    (vertices, or an unknown kind), half a step beyond them (cell centres), or one period
    from the first point."""
    values = np.asarray(values, dtype=np.float64)
    h = (values[-1] - values[0]) / (len(values) - 1)
    if kind == PERIODIC:
        return float(values[0]), float(values[-1] + h)
    if kind == CELL:
        return float(values[0] - h / 2), float(values[-1] + h / 2)
    return float(values[0]), float(values[-1])


def axis_points(kind: str | None, lo: float, hi: float, n: int) -> np.ndarray:
    """The ``n`` points of an axis of kind ``kind`` on the domain [lo, hi]."""
    if kind == PERIODIC:
        return lo + np.arange(n) * ((hi - lo) / n)
    if kind == CELL:
        return lo + (np.arange(n) + 0.5) * ((hi - lo) / n)
    return np.linspace(lo, hi, n)


def subsampled_size(n: int, kind: str | None, stride: int) -> int | None:
    """Points left of an axis of ``n`` points subsampled by ``stride``, or None where the
    result is not a grid of the same kind on the same domain: a periodic axis (n points
    of one period) and a cell-centred one (n cells) need a stride dividing n, a vertex
    axis (both ends kept) one dividing its n - 1 intervals. An axis of unknown kind
    (no coordinate variable) keeps every stride-th point."""
    if kind in (PERIODIC, CELL):
        return n // stride if n % stride == 0 else None
    if kind == VERTEX:
        return (n - 1) // stride + 1 if (n - 1) % stride == 0 else None
    return -(-n // stride)


def subsample_starts(kinds: Sequence[str | None], stride: int) -> tuple[int, ...]:
    """The first point kept on each axis: on a cell axis an odd stride s starting at cell
    (s - 1) / 2 keeps exactly the centres of the coarse cells, (s j + s / 2) h;
    elsewhere the first point (a periodic axis's origin, a vertex axis's end). An even
    stride has no such start on a cell axis: its points are off the coarse cells'
    centres by half a fine step."""
    return tuple((stride - 1) // 2 if k == CELL and stride % 2 == 1 else 0 for k in kinds)


def _number(value: Any) -> float | None:
    try:
        return float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        return None
