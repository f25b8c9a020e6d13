"""Finite-volume discretisation of the diffusion operator -div(K grad u) on [0, 1]^d.

Two-point flux approximation (the 5-point stencil in 2D, 7-point in 3D) with harmonic face
means of the coefficient, homogeneous Dirichlet boundary u = 0. The matrix is symmetric
positive definite for K > 0 and is scaled like the differential operator (entries ~ K/h^2),
so ``A u = f`` with ``f`` sampled at the unknowns.

Two grids (``scheme``):

* ``"cell"``: n cells per axis of width h = 1/n, unknowns at the cell centres
  x_i = (i + 1/2) h. The flux through an interior face is K_f (u_i+1 - u_i)/h with
  K_f = 2 K_i K_i+1 / (K_i + K_i+1); through a boundary face, K_i (0 - u_i)/(h/2).
* ``"vertex"``: n points per axis x_i = i h, h = 1/(n - 1), boundary points included in the
  grid and fixed at zero, unknowns at the interior points; the dual cell of a vertex is
  bounded by the mid-points, with K_f the harmonic mean of the two vertex values (the
  discretisation behind the FNO Darcy benchmark data).

Both are second-order accurate for smooth K (checked in tests/solvers/test_diffusion.py on
a manufactured solution). Assembly is vectorised over all faces of one axis at a time.
Written here because scipy has no variable-coefficient finite-volume assembler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

SCHEMES = ("cell", "vertex")


def grid_points(n: int, scheme: str) -> np.ndarray:
    """Coordinates of the ``n`` grid points of one axis of [0, 1]."""
    if scheme == "cell":
        return (np.arange(n) + 0.5) / n
    if scheme == "vertex":
        return np.linspace(0.0, 1.0, n)
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def grid_spacing(n: int, scheme: str) -> float:
    return 1.0 / n if scheme == "cell" else 1.0 / (n - 1)


def unknown_mask(shape: Sequence[int], scheme: str) -> np.ndarray:
    """Boolean mask of the grid points that are unknowns (all for cells, interior for vertices)."""
    mask = np.ones(tuple(shape), dtype=bool)
    if scheme == "vertex":
        for axis in range(len(shape)):
            idx = [slice(None)] * len(shape)
            idx[axis] = 0
            mask[tuple(idx)] = False
            idx[axis] = -1
            mask[tuple(idx)] = False
    return mask


def harmonic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2 a b / (a + b) of positive arrays, as 2 / (1/a + 1/b) where a b overflows
    (coefficients above ~1e154: a finite mean, not inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = 2.0 * a * b / (a + b)
    big = ~np.isfinite(out)
    if big.any():
        a, b = np.broadcast_to(a, out.shape)[big], np.broadcast_to(b, out.shape)[big]
        with np.errstate(divide="ignore", over="ignore"):
            out[big] = 2.0 / (1.0 / a + 1.0 / b)
    return out


Walls = Mapping[tuple[int, int], str]
WALL_TYPES = ("dirichlet", "neumann")


def _wall_slice(ndim: int, axis: int, side: int) -> tuple:
    sl = [slice(None)] * ndim
    sl[axis] = 0 if side == 0 else -1
    return tuple(sl)


def diffusion_matrix(
    coefficient: np.ndarray,
    scheme: str = "cell",
    *,
    walls: Walls | None = None,
    active: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Matrix of -div(K grad .) over the unknowns (homogeneous boundary data).

    Args:
        coefficient: K > 0 at every grid point, shape (n_1, ..., n_d), on the unit cube.
        scheme: ``"cell"`` or ``"vertex"`` (see module docstring).
        walls: ``{(axis, side): "dirichlet" | "neumann"}`` for side 0 (x_axis = 0) and 1
            (x_axis = 1); missing walls are Dirichlet. Cell scheme only for Neumann.
        active: cell scheme only: boolean mask of the cells in the domain. Faces between
            an active and an inactive cell are insulated (zero flux); the unknowns are
            the active cells (a plate with a slot, say).

    Returns:
        CSR matrix of size (number of unknowns)^2, unknowns in C (row-major) order of
        the grid restricted to :func:`unknown_mask` (and ``active``). Non-zero boundary
        data enter the right-hand side through :func:`wall_rhs`.
    """
    K = np.asarray(coefficient, dtype=np.float64)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if not np.all(np.isfinite(K)) or np.any(K <= 0):
        raise ValueError("coefficient must be finite and strictly positive everywhere")
    shape = K.shape
    min_n = 2 if scheme == "cell" else 3
    if any(n < min_n for n in shape):
        raise ValueError(f"grid {shape} too small for the {scheme} scheme (>= {min_n} per axis)")
    walls = dict(walls or {})
    if scheme == "vertex" and (active is not None or any(
            w != "dirichlet" for w in walls.values())):
        raise ValueError("Neumann walls and masks need the cell scheme")
    if any(w not in WALL_TYPES for w in walls.values()):
        raise ValueError(f"wall types are {WALL_TYPES}, got {sorted(set(walls.values()))}")
    act = np.ones(shape, dtype=bool) if active is None else np.asarray(active, dtype=bool)
    if act.shape != shape:
        raise ValueError(f"active mask has shape {act.shape}, coefficient {shape}")
    index = np.arange(K.size).reshape(shape)
    diag = np.zeros(shape)
    rows, cols, vals = [], [], []
    for axis, n in enumerate(shape):
        h = grid_spacing(n, scheme)
        lo = [slice(None)] * K.ndim
        hi = [slice(None)] * K.ndim
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        t = harmonic_mean(K[lo], K[hi]) / h**2 * (act[lo] & act[hi])
        diag[lo] += t
        diag[hi] += t
        a, b = index[lo].ravel(), index[hi].ravel()
        rows += [a, b]
        cols += [b, a]
        vals += [-t.ravel(), -t.ravel()]
        if scheme == "cell":
            # Dirichlet walls at distance h/2 from the first and last cells
            for side in (0, 1):
                if walls.get((axis, side), "dirichlet") == "dirichlet":
                    sl = _wall_slice(K.ndim, axis, side)
                    diag[sl] += 2.0 * K[sl] / h**2 * act[sl]
    rows.append(index.ravel())
    cols.append(index.ravel())
    vals.append(diag.ravel())
    A = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(K.size, K.size),
    )
    keep_mask = unknown_mask(shape, scheme) & act
    if not keep_mask.all():
        keep = np.flatnonzero(keep_mask.ravel())
        A = A[keep][:, keep]
    A.sum_duplicates()
    A.sort_indices()
    return A.tocsr()


def wall_rhs(
    coefficient: np.ndarray,
    dirichlet: Mapping[tuple[int, int], np.ndarray] | None = None,
    neumann: Mapping[tuple[int, int], np.ndarray] | None = None,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """Right-hand-side contributions of non-zero wall data, cell scheme, on the full grid.

    Args:
        coefficient: K on the cells.
        dirichlet: ``{(axis, side): g}`` with g the wall value at the face centres
            (shape of the grid without ``axis``); adds 2 K g / h^2 to the wall cells.
        neumann: ``{(axis, side): q}`` with q the inward flux K du/dn into the domain;
            adds q / h to the wall cells.
        active: mask of active cells (contributions to inactive cells are dropped).

    Returns:
        Array of the grid's shape; restrict it with the unknowns' mask.
    """
    K = np.asarray(coefficient, dtype=np.float64)
    out = np.zeros(K.shape, dtype=np.result_type(
        K, *(np.asarray(v) for v in (dirichlet or {}).values()),
        *(np.asarray(v) for v in (neumann or {}).values())))
    for (axis, side), g in (dirichlet or {}).items():
        h = 1.0 / K.shape[axis]
        sl = _wall_slice(K.ndim, axis, side)
        out[sl] += 2.0 * K[sl] * np.asarray(g) / h**2
    for (axis, side), q in (neumann or {}).items():
        h = 1.0 / K.shape[axis]
        out[_wall_slice(K.ndim, axis, side)] += np.asarray(q) / h
    if active is not None:
        out = out * np.asarray(active, dtype=bool)
    return out
