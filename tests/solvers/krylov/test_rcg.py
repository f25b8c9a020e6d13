"""Recycled (deflated) CG on SPD systems."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdeforge.solvers.krylov import RecycledCG, build_preconditioner


def test_matches_direct_solve(darcy_sequence):
    A = darcy_sequence[1][0]
    b = np.ones(A.shape[0])
    out = RecycledCG(recycle=10).solve(A, b, rtol=1e-10)
    assert out.converged and out.residual <= 1e-10
    exact = spla.spsolve(A.tocsc(), b)
    assert np.abs(out.x - exact).max() <= 1e-7 * np.abs(exact).max()


def test_repeated_system_converges_in_fewer_iterations(darcy_sequence):
    A = darcy_sequence[1][0]
    rng = np.random.default_rng(0)
    solver = RecycledCG(recycle=10, adaptive=False)  # the mechanism, not the policy
    first = solver.solve(A, rng.standard_normal(A.shape[0]), rtol=1e-8)
    second = solver.solve(A, rng.standard_normal(A.shape[0]), rtol=1e-8)
    third = solver.solve(A, rng.standard_normal(A.shape[0]), rtol=1e-8)
    assert first.converged and second.converged and third.converged
    assert second.iterations < first.iterations
    assert third.iterations < first.iterations


def test_without_recycling_equals_plain_cg(darcy_sequence):
    A = darcy_sequence[1][2]
    b = np.ones(A.shape[0])
    out = RecycledCG(recycle=0).solve(A, b, rtol=1e-8)
    count = [0]
    spla.cg(A, b, rtol=1e-8, maxiter=10_000,
            callback=lambda _: count.__setitem__(0, count[0] + 1))
    assert abs(out.iterations - count[0]) <= 1


def test_jacobi_preconditioned_sequence(darcy_sequence):
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    solver = RecycledCG(recycle=10, adaptive=False)
    its = []
    for A in mats:
        pre = build_preconditioner("jacobi", A)
        out = solver.solve(A, b, rtol=1e-8, M=pre.apply, M_diag=pre.diag)
        assert out.converged and out.residual <= 1e-8
        its.append(out.iterations)
    plain = RecycledCG(recycle=0).solve(mats[-1], b, rtol=1e-8, M=pre.apply).iterations
    assert np.mean(its[2:]) < plain


def test_indefinite_matrix_is_not_reported_converged():
    import scipy.sparse as sp

    A = sp.diags(np.linspace(-1, 1, 51) + 1e-3).tocsr()
    out = RecycledCG(recycle=4).solve(A, np.ones(51), rtol=1e-10, maxiter=500)
    assert out.converged == (out.residual <= 1e-10)
    assert np.isfinite(out.residual)


def test_adaptive_policy_turns_recycling_off_where_it_cannot_pay(darcy_sequence):
    """A 5-point stencil without preconditioner: deflation costs more work than the
    iterations it saves, so within a few systems recycling is off and CG runs plain."""
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    solver = RecycledCG(recycle=10)
    outs = [solver.solve(A, b, rtol=1e-8) for A in mats[:5]]
    assert solver.recycle == 0 and solver.W is None
    assert "plain PCG" in solver.stopped
    plain = [RecycledCG(recycle=0).solve(A, b, rtol=1e-8).iterations for A in mats[:5]]
    assert outs[-1].iterations == plain[-1]
    assert all(o.converged for o in outs)


def test_recycling_stays_on_where_it_pays(darcy_sequence):
    """IC(0)-preconditioned Darcy: a preconditioner application costs several matvecs, so
    the cost model keeps deflation on, and the later systems need fewer products than the
    first (undeflated) one, carry-over included."""
    from pdeforge.solvers.krylov import build_preconditioner

    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    solver = RecycledCG(recycle=10)
    outs = []
    for A in mats:
        pre = build_preconditioner("ilu0", A)
        outs.append(solver.solve(A, b, rtol=1e-8, M=pre.apply, M_work=pre.work))
    assert solver.stopped is None and solver.W is not None
    assert all(o.converged for o in outs)
    assert max(o.iterations for o in outs[-3:]) < outs[0].iterations


def test_deflation_beyond_the_cache_is_not_started(darcy_sequence, monkeypatch):
    """When the deflation blocks do not fit the cache, deflating a Jacobi-CG iteration
    costs more than the iteration: recycling is not started, and every system is solved
    by plain PCG to the tolerance."""
    from pdeforge.solvers.krylov import preconditioners

    monkeypatch.setattr(preconditioners, "CACHE_BYTES", 0)
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    solver = RecycledCG(recycle=20)
    for A in mats[:3]:
        pre = build_preconditioner("jacobi", A)
        out = solver.solve(A, b, rtol=1e-8, M=pre.apply, M_diag=pre.diag, M_work=pre.work)
        assert out.converged
        assert np.linalg.norm(b - A @ out.x) <= 1e-8 * np.linalg.norm(b) * 1.001
    assert solver.stopped is not None and "deflating an iteration" in solver.stopped
    assert solver.W is None
    # in cache, the same sequence keeps deflation on
    monkeypatch.setattr(preconditioners, "CACHE_BYTES", 1 << 40)
    solver = RecycledCG(recycle=20)
    pre = build_preconditioner("jacobi", mats[0])
    solver.solve(mats[0], b, rtol=1e-8, M=pre.apply, M_diag=pre.diag, M_work=pre.work)
    assert solver.stopped is None


def test_short_first_solve_does_not_start_recycling(darcy_sequence):
    """AMG leaves CG a handful of iterations, fewer than 2k: deflation is not started
    (it cost more than it saved there, measured), the solver says why, and every system
    is solved by plain PCG to the tolerance."""
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    solver = RecycledCG(recycle=10)
    for A in mats[:3]:
        pre = build_preconditioner("amg", A)
        out = solver.solve(A, b, rtol=1e-8, M=pre.apply, M_work=pre.work)
        assert out.converged and out.iterations < 20
        plain = RecycledCG(recycle=0).solve(A, b, rtol=1e-8, M=pre.apply)
        assert out.iterations == plain.iterations
    assert solver.stopped is not None and "too few" in solver.stopped
    assert solver.W is None
    # the same preconditioner with k = 2: a first solve of >= 4 iterations starts it
    solver = RecycledCG(recycle=2)
    pre = build_preconditioner("amg", mats[0])
    first = solver.solve(mats[0], b, rtol=1e-8, M=pre.apply, M_work=pre.work)
    assert first.iterations >= 4 and solver.stopped is None


def test_ritz_update_from_cg_scalars_equals_explicit_rayleigh_ritz(darcy_sequence):
    """The Ritz update builds [W, Z]^T A [W, Z] and [W, Z]^T M [W, Z] from CG's scalars
    (Lanczos connection, deflated residuals orthogonal to W) and forms the Ritz vectors
    from W and the directions P. Checked against an explicit Rayleigh-Ritz for (A, M) on
    span[W, Z], Z the recorded preconditioned residuals, on a Jacobi sequence (M known):
    the new W's Rayleigh quotients are the k smallest explicit Ritz values, and its span
    lies in span[W, Z]."""
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    k = 4
    solver = RecycledCG(recycle=k, store=10, adaptive=False)
    pre = build_preconditioner("jacobi", mats[0])
    solver.solve(mats[0], b, rtol=1e-10, M=pre.apply, M_diag=pre.diag)
    W_old = solver.W.copy()
    pre = build_preconditioner("jacobi", mats[1])
    recorded = []

    def recording(v):
        z = pre.apply(v)
        recorded.append(z.copy())
        return z

    out = solver.solve(mats[1], b, rtol=1e-10, M=recording, M_diag=pre.diag)
    assert out.converged and out.iterations > 10
    A, Mmat = mats[1], np.diag(pre.diag)
    Z = np.array(recorded[:10])  # the preconditioned residuals of the 10 stored directions
    S = np.vstack([W_old, Z])
    explicit = sla.eigh(S @ (A @ S.T), S @ Mmat @ S.T, eigvals_only=True)[:k]
    W_new = solver.W
    quotients = np.einsum("ij,ij->i", W_new, (A @ W_new.T).T) / np.einsum(
        "ij,ij->i", W_new, W_new * pre.diag)
    np.testing.assert_allclose(np.sort(quotients), explicit, rtol=1e-6)
    # the new vectors lie in span[W_old, Z]
    Q, _ = np.linalg.qr(S.T)
    assert np.abs(W_new.T - Q @ (Q.T @ W_new.T)).max() < 1e-8 * np.abs(W_new).max()


def test_plain_cg_keeps_within_maxiter_with_a_start():
    # x0's residual is a product of the budget: maxiter = 1 with x0 spent 2
    n = 20
    A = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1]).tocsr()
    b = np.ones(n)
    for maxiter in (1, 2, 3):
        res = RecycledCG(recycle=0).solve(A, b, maxiter=maxiter, x0=0.1 * np.ones(n))
        assert res.iterations <= maxiter
        assert res.residual == pytest.approx(np.linalg.norm(b - A @ res.x) / np.linalg.norm(b))
