"""Finite-volume diffusion operator: symmetry, definiteness, accuracy, convergence order."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from pdeforge.solvers.diffusion import (
    diffusion_matrix,
    grid_points,
    grid_spacing,
    unknown_mask,
)


def _manufactured(x: np.ndarray, y: np.ndarray):
    """u = sin(pi x) sin(pi y) (zero on the boundary), K = exp(0.5 sin(2 pi x) cos(3 pi y))."""
    X, Y = np.meshgrid(x, y, indexing="ij")
    g = 0.5 * np.sin(2 * np.pi * X) * np.cos(3 * np.pi * Y)
    K = np.exp(g)
    Kx = K * 0.5 * 2 * np.pi * np.cos(2 * np.pi * X) * np.cos(3 * np.pi * Y)
    Ky = K * 0.5 * np.sin(2 * np.pi * X) * (-3 * np.pi) * np.sin(3 * np.pi * Y)
    u = np.sin(np.pi * X) * np.sin(np.pi * Y)
    ux = np.pi * np.cos(np.pi * X) * np.sin(np.pi * Y)
    uy = np.pi * np.sin(np.pi * X) * np.cos(np.pi * Y)
    lap = -2 * np.pi**2 * u
    f = -(Kx * ux + Ky * uy + K * lap)
    return K, f, u


def _error(n: int, scheme: str) -> float:
    x = grid_points(n, scheme)
    K, f, u = _manufactured(x, x)
    mask = unknown_mask(K.shape, scheme)
    A = diffusion_matrix(K, scheme)
    uh = spla.spsolve(A.tocsc(), f[mask])
    return float(np.max(np.abs(uh - u[mask])))


@pytest.mark.parametrize("scheme", ["cell", "vertex"])
def test_second_order_convergence(scheme):
    sizes = (64, 128) if scheme == "cell" else (33, 65)
    e1, e2 = (_error(n, scheme) for n in sizes)
    h1, h2 = (grid_spacing(n, scheme) for n in sizes)
    order = np.log(e1 / e2) / np.log(h1 / h2)
    assert e2 < 2e-3
    assert order >= 1.9, f"observed order {order:.3f} (errors {e1:.3e}, {e2:.3e})"


@pytest.mark.parametrize("scheme", ["cell", "vertex"])
@pytest.mark.parametrize("n", [8, 17])
def test_symmetric_positive_definite(scheme, n):
    rng = np.random.default_rng(0)
    K = np.exp(rng.standard_normal((n, n)))
    A = diffusion_matrix(K, scheme)
    dense = A.toarray()
    assert np.array_equal(dense, dense.T)
    assert np.linalg.eigvalsh(dense).min() > 0
    assert A.shape[0] == unknown_mask(K.shape, scheme).sum()


@pytest.mark.parametrize("scheme", ["cell", "vertex"])
def test_matches_independent_dense_assembly_and_solve(scheme):
    """At 16x16: compare with a loop-by-loop dense assembly and numpy's dense solve."""
    n = 16
    rng = np.random.default_rng(1)
    K = np.exp(rng.standard_normal((n, n)))
    h = grid_spacing(n, scheme)
    mask = unknown_mask(K.shape, scheme)
    ids = -np.ones((n, n), dtype=int)
    ids[mask] = np.arange(mask.sum())
    dense = np.zeros((mask.sum(), mask.sum()))
    for i in range(n):
        for j in range(n):
            if not mask[i, j]:
                continue
            p = ids[i, j]
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                a, b = i + di, j + dj
                if 0 <= a < n and 0 <= b < n:
                    t = 2 * K[i, j] * K[a, b] / (K[i, j] + K[a, b]) / h**2
                    dense[p, p] += t
                    if mask[a, b]:
                        dense[p, ids[a, b]] -= t
                else:  # cell scheme only: Dirichlet wall at h/2
                    dense[p, p] += 2 * K[i, j] / h**2
    A = diffusion_matrix(K, scheme)
    np.testing.assert_allclose(A.toarray(), dense, rtol=1e-13, atol=0)
    f = np.ones(mask.sum())
    np.testing.assert_allclose(spla.spsolve(A.tocsc(), f), np.linalg.solve(dense, f),
                               rtol=1e-10)


def test_constant_coefficient_is_five_point_laplacian():
    n = 6
    A = diffusion_matrix(np.ones((n, n)), "vertex").toarray()
    h = 1 / (n - 1)
    m = n - 2
    T = 2 * np.eye(m) - np.eye(m, k=1) - np.eye(m, k=-1)
    lap = (np.kron(T, np.eye(m)) + np.kron(np.eye(m), T)) / h**2
    np.testing.assert_allclose(A, lap, rtol=1e-13)


def test_three_dimensional_assembly_is_symmetric_and_consistent():
    K = np.full((5, 6, 7), 2.0)
    A = diffusion_matrix(K, "cell")
    assert A.shape == (210, 210)
    assert abs(A - A.T).max() == 0
    # constant u = 1 feels only the boundary faces: row sums are the wall terms
    row = np.asarray(A.sum(axis=1)).reshape(5, 6, 7)
    assert row[2, 3, 3] == pytest.approx(0.0, abs=1e-9)
    assert row[0, 3, 3] == pytest.approx(2 * 2.0 * 5**2)


def test_bad_coefficient_rejected():
    with pytest.raises(ValueError, match="strictly positive"):
        diffusion_matrix(-np.ones((4, 4)))
    with pytest.raises(ValueError, match="finite"):
        diffusion_matrix(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="scheme"):
        diffusion_matrix(np.ones((4, 4)), "edge")
