"""AMG hierarchy refresh (kept prolongators, Galerkin operators of the new matrix)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from pdeforge.solvers.diffusion import diffusion_matrix
from pdeforge.solvers.krylov import PreconditionerCache
from pdeforge.solvers.krylov.preconditioners import (
    AMG_REFRESH_FRACTION,
    BUILD_ITERATIONS,
    build_preconditioner,
    refresh_preconditioner,
)

from .conftest import darcy_coefficients


@pytest.fixture(scope="module")
def darcy_pair():
    return [diffusion_matrix(K) for K in darcy_coefficients(48, 3, seed=3)]


def _pcg_iterations(A, b, pre) -> int:
    count = [0]
    M = spla.LinearOperator(A.shape, matvec=pre.apply, dtype=A.dtype)
    x, info = spla.cg(A, b, rtol=1e-8, maxiter=500, M=M,
                      callback=lambda _: count.__setitem__(0, count[0] + 1))
    assert info == 0
    assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
    return count[0]


def test_refresh_makes_the_galerkin_hierarchy_of_the_new_matrix(darcy_pair):
    A0, A1, _ = darcy_pair
    built = build_preconditioner("amg", A0)
    fresh = refresh_preconditioner(built, A1)
    old, new = built.hierarchy.levels, fresh.hierarchy.levels
    assert len(new) == len(old) >= 3
    assert abs(new[0].A - A1).max() == 0
    for lo, ln, ln1 in zip(old[:-1], new[:-1], new[1:], strict=True):
        assert ln.P is lo.P and ln.R is lo.R  # the build's prolongators, kept
        galerkin = (lo.P.T @ ln.A @ lo.P).toarray()
        np.testing.assert_allclose(ln1.A.toarray(), galerkin, rtol=1e-12,
                                   atol=1e-12 * abs(galerkin).max())
    # not the old operators: the coarse levels follow the new coefficient
    assert abs(new[1].A - old[1].A).max() > 1e-3 * abs(old[1].A).max()


def test_refresh_for_the_same_matrix_is_the_build(darcy_pair):
    """Same smoothers and coarse solver as a build: refreshed on the build's own matrix
    the V-cycle is the build's V-cycle."""
    A0 = darcy_pair[0]
    built = build_preconditioner("amg", A0)
    again = refresh_preconditioner(built, A0)
    v = np.random.default_rng(0).standard_normal(A0.shape[0])
    np.testing.assert_allclose(again.apply(v), built.apply(v), rtol=1e-12, atol=1e-14)
    assert again.work == pytest.approx(built.work)


def test_refreshed_v_cycle_is_symmetric_and_converges_like_a_build(darcy_pair):
    A0, A1, _ = darcy_pair
    built = build_preconditioner("amg", A0)
    fresh = refresh_preconditioner(built, A1)
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal((2, A1.shape[0]))
    assert v @ fresh.apply(u) == pytest.approx(u @ fresh.apply(v), rel=1e-10)  # CG needs it
    b = np.ones(A1.shape[0])
    its_refreshed = _pcg_iterations(A1, b, fresh)
    its_new = _pcg_iterations(A1, b, build_preconditioner("amg", A1))
    its_stale = _pcg_iterations(A1, b, built)
    assert its_refreshed <= its_new + 2
    assert its_refreshed < its_stale


def test_refresh_rejects_another_size_and_leaves_other_kinds(darcy_pair):
    A0 = darcy_pair[0]
    built = build_preconditioner("amg", A0)
    smaller = diffusion_matrix(darcy_coefficients(20, 1)[0])
    with pytest.raises(ValueError, match="cannot refresh"):
        refresh_preconditioner(built, smaller)
    ilu = build_preconditioner("ilu", A0)
    assert refresh_preconditioner(ilu, darcy_pair[1]) is ilu


def test_cache_refreshes_amg_and_rebuilds_for_a_new_size(darcy_pair):
    A0, A1, A2 = darcy_pair
    cache = PreconditionerCache("amg")
    built = cache.get(A0)
    assert not cache.reused and cache.builds == 1
    assert built.reuse_saving == pytest.approx(
        BUILD_ITERATIONS["amg"] * (1 - AMG_REFRESH_FRACTION))
    cache.report(10)
    pre = cache.get(A1)
    assert cache.reused and cache.builds == 1
    assert pre is not built and pre.hierarchy.levels[0].A is not A0
    assert abs(pre.hierarchy.levels[0].A - A1).max() == 0
    # extra iterations beyond what the refresh saves: a new build for the next matrix
    cache.report(10 + int(built.reuse_saving) + 1)
    cache.get(A2)
    assert not cache.reused and cache.builds == 2
    cache.report(10)
    smaller = diffusion_matrix(darcy_coefficients(20, 1)[0])
    pre = cache.get(smaller)
    assert not cache.reused and cache.builds == 3
    assert pre.hierarchy.levels[0].A.shape == smaller.shape


def test_amg_build_is_reproducible_and_leaves_the_global_rng_alone(darcy_pair):
    """pyamg draws from numpy's global generator: a build is seeded (the same matrix gives
    the same hierarchy in any process, whatever was drawn before), and the caller's
    random state comes back unchanged."""
    A = darcy_pair[0]
    v = np.random.default_rng(5).standard_normal(A.shape[0])
    np.random.seed(1)  # noqa: NPY002
    first = build_preconditioner("amg", A).apply(v)
    np.random.seed(2)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    second = build_preconditioner("amg", A).apply(v)
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert np.array_equal(first, second)


def test_amg_builds_in_threads_at_once_match_a_serial_build(darcy_pair):
    """A Dask worker runs its tasks in threads: builds of the same matrix at once (each
    seeding the process's one global generator) must give the serial build's V-cycle bit
    for bit (without a lock some drew from the other's stream: 7 of 40 differed)."""
    import threading

    A = darcy_pair[0]
    v = np.random.default_rng(6).standard_normal(A.shape[0])
    serial = build_preconditioner("amg", A).apply(v)
    results: list[np.ndarray] = []

    def build_many() -> None:
        for _ in range(10):
            results.append(build_preconditioner("amg", A).apply(v))

    threads = [threading.Thread(target=build_many) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 30
    assert sum(not np.array_equal(r, serial) for r in results) == 0
