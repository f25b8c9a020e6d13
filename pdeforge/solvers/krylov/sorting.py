"""Ordering a dataset's linear systems so that neighbours are similar (SKR, Algorithm 1).

``greedy_order``: greedy nearest neighbour from system 0, distance the Euclidean
(Frobenius) norm of the difference of the feature vectors (the paper's sorting).
``scalable_order``: for large N, project the features on their first few principal
components, cut that space into cells along the first components (a boustrophedon walk of
a grid of cells), and sort greedily inside each cell starting next to where the previous
cell ended. Both return a permutation of range(N).
"""

from __future__ import annotations

import numpy as np

from pdeforge.errors import SolverInputError

#: greedy_order is exact up to this many systems; above, scalable_order is used.
GREEDY_MAX = 4000


def _as_features(features) -> np.ndarray:
    F = np.asarray(features, dtype=np.float64)
    if F.ndim == 0:
        raise SolverInputError("features must have one row per system, got a scalar")
    if F.ndim == 1:
        F = F[:, None]
    if F.ndim != 2:
        F = F.reshape(F.shape[0], -1)
    if not np.all(np.isfinite(F)):
        raise SolverInputError("features contain NaN or inf")
    return F


def _reduce(F: np.ndarray, dims: int) -> np.ndarray:
    """Principal-component coordinates (at most ``dims``): distances approximately kept."""
    if F.shape[1] <= dims:
        return F - F.mean(axis=0)
    Fc = F - F.mean(axis=0)
    if F.shape[0] <= F.shape[1]:
        # N x N Gram matrix: cheaper than an SVD of N x d when N < d
        gram = Fc @ Fc.T
        vals, vecs = np.linalg.eigh(gram)
        idx = np.argsort(vals)[::-1][:dims]
        return vecs[:, idx] * np.sqrt(np.maximum(vals[idx], 0))
    _, s, vt = np.linalg.svd(Fc, full_matrices=False)
    return Fc @ vt[:dims].T


def greedy_order(features, start: int = 0) -> np.ndarray:
    """Greedy nearest-neighbour tour through all systems, beginning at ``start``.

    Features with many columns are first reduced to at most 256 principal components
    (the Gram matrix of the features is kept exactly when N <= 256).
    """
    F = _as_features(features)
    n = F.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if F.shape[1] > 256:
        F = _reduce(F, 256)
    if not 0 <= int(start) < n:
        raise SolverInputError(f"start must index one of the {n} systems, got {start}")
    sq = np.einsum("ij,ij->i", F, F)
    order = np.empty(n, dtype=np.int64)
    remaining = np.ones(n, dtype=bool)
    cur = int(start)
    for step in range(n):
        order[step] = cur
        remaining[cur] = False
        if step == n - 1:
            break
        cand = np.flatnonzero(remaining)
        d2 = sq[cand] - 2 * (F[cand] @ F[cur]) + sq[cur]
        cur = int(cand[np.argmin(d2)])
    return order


def scalable_order(features, cell_size: int = 256, components: int = 2) -> np.ndarray:
    """Approximate nearest-neighbour ordering for large N (PCA cells + greedy inside).

    Args:
        features: (N, d) feature vectors.
        cell_size: target number of systems per cell.
        components: principal components used to lay out the cells (1 or 2).
    """
    F = _as_features(features)
    n = F.shape[0]
    if n <= cell_size:
        return greedy_order(F)
    Z = _reduce(F, max(components, 16))
    n_cells = int(np.ceil(n / cell_size))
    if components == 1 or n_cells < 4:
        strips, per_strip = n_cells, 1
    else:
        strips = int(np.ceil(np.sqrt(n_cells)))
        per_strip = int(np.ceil(n_cells / strips))
    # strips along PC1 (equal counts), cells along PC2 inside each strip, snake order
    strip_of = np.empty(n, dtype=np.int64)
    strip_of[np.argsort(Z[:, 0], kind="stable")] = np.arange(n) * strips // n
    order: list[np.ndarray] = []
    last: np.ndarray | None = None
    for s in range(strips):
        members = np.flatnonzero(strip_of == s)
        key = Z[members, 1] if Z.shape[1] > 1 else Z[members, 0]
        members = members[np.argsort(key, kind="stable")]
        if s % 2 == 1:
            members = members[::-1]
        for chunk in np.array_split(members, per_strip):
            if chunk.size == 0:
                continue
            sub = Z[chunk]
            start = 0 if last is None else int(np.argmin(((sub - last) ** 2).sum(axis=1)))
            local = greedy_order(sub, start=start)
            order.append(chunk[local])
            last = Z[chunk[local[-1]]]
    result = np.concatenate(order)
    assert result.size == n
    return result


def sort_systems(features, method: str = "auto") -> np.ndarray:
    """The solve order: ``greedy`` (exact), ``scalable``, ``none`` or ``auto`` (by size)."""
    F = _as_features(features)
    if method == "none":
        return np.arange(F.shape[0])
    if method == "greedy" or (method == "auto" and F.shape[0] <= GREEDY_MAX):
        return greedy_order(F)
    if method in ("scalable", "auto"):
        return scalable_order(F)
    raise SolverInputError(f"unknown sorting {method!r}; use greedy, scalable, none or auto")


def tour_length(features, order) -> float:
    """Sum of distances between consecutive systems in ``order``."""
    F = _as_features(features)[np.asarray(order)]
    return float(np.linalg.norm(np.diff(F, axis=0), axis=1).sum())
