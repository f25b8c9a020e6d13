"""GMRES(m) and GCRO-DR(m, k) against scipy and exact algebra."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdeforge.solvers.krylov import GCRODR, gmres
from pdeforge.solvers.krylov.gcrodr import smallest_eigvecs


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_gmres_matches_direct_and_scipy(convection_sequence, dtype):
    A = convection_sequence[1][0].astype(dtype)
    rng = np.random.default_rng(0)
    b = rng.standard_normal(A.shape[0]).astype(dtype)
    if dtype == np.complex128:
        A = (A + 1j * sp.eye(A.shape[0]) * 50).tocsr()
        b = b + 1j * rng.standard_normal(A.shape[0])
    out = gmres(A, b, rtol=1e-9, restart=30)
    assert out.converged and out.residual <= 1e-9
    exact = spla.spsolve(A.tocsc(), b)
    assert np.abs(out.x - exact).max() <= 1e-6 * np.abs(exact).max()
    count = [0]
    spla.gmres(A, b, rtol=1e-9, restart=30, maxiter=10_000,
               callback=lambda _: count.__setitem__(0, count[0] + 1),
               callback_type="pr_norm")
    # ours also counts the true-residual product at each restart: at most one per cycle
    assert count[0] <= out.iterations <= count[0] + count[0] // 30 + 2


def test_gcrodr_without_recycling_is_gmres(convection_sequence):
    A = convection_sequence[1][0]
    b = np.ones(A.shape[0])
    ref = gmres(A, b, rtol=1e-8, restart=20)
    out = GCRODR(restart=20, recycle=0).solve(A, b, rtol=1e-8)
    assert out.converged
    np.testing.assert_allclose(out.history[1:21], ref.history[1:21], rtol=1e-8)
    assert abs(out.iterations - ref.iterations) <= ref.iterations // 20 + 2


def test_harmonic_ritz_finds_smallest_eigenvalues_of_a_diagonal_matrix():
    small = np.array([1e-3, 2e-3, 3e-3, 4e-3, 5e-3])
    lam = np.concatenate([small, np.linspace(1.0, 2.0, 395)])
    A = sp.diags(lam).tocsr()
    b = np.ones(lam.size)
    solver = GCRODR(restart=30, recycle=5)
    solver.solve(A, b, rtol=1e-10)
    Q, _ = np.linalg.qr(solver.U.T)
    ritz = np.sort(np.linalg.eigvalsh(Q.T @ (lam[:, None] * Q)))
    np.testing.assert_allclose(ritz, small, rtol=1e-4)


def test_recycled_space_is_consistent(convection_sequence):
    """C = A U with orthonormal C after a solve (the invariant of Parks et al.)."""
    A = convection_sequence[1][0]
    solver = GCRODR(restart=30, recycle=10)
    solver.solve(A, np.ones(A.shape[0]), rtol=1e-8)
    C, U = solver.C, solver.U
    np.testing.assert_allclose(C @ C.T, np.eye(C.shape[0]), atol=1e-10)
    np.testing.assert_allclose((A @ U.T).T, C, atol=1e-8 * np.abs(C).max())


def test_flexible_cycles_with_the_identity_match_the_unpreconditioned_solver(
        convection_sequence):
    """With M = I passed as a function with a high cost (so the flexible path runs), the
    solution-space basis Z equals V: every iterate, count and recycled space must match
    the plain path, in both coordinates."""
    _, mats = convection_sequence
    b = np.ones(mats[0].shape[0])
    plain, flexible = GCRODR(30, 10), GCRODR(30, 10)
    for A in mats[:4]:
        p = plain.solve(A, b, rtol=1e-9)
        f = flexible.solve(A, b, rtol=1e-9, M=lambda v: v.copy(), M_work=1e6)
        assert flexible.Us is not None and plain.Us is None
        assert p.converged and f.converged and p.iterations == f.iterations
        np.testing.assert_allclose(f.history, p.history, rtol=1e-6, atol=1e-14)
        np.testing.assert_allclose(f.x, p.x, rtol=0, atol=1e-9 * np.abs(p.x).max())
        for U in (flexible.U, flexible.Us):
            np.testing.assert_allclose(U, plain.U, atol=1e-8 * np.abs(plain.U).max())


@pytest.mark.parametrize("kind", ["ilu", "jacobi"])
def test_recycled_space_stays_in_solution_coordinates_across_preconditioners(
        convection_sequence, kind):
    """Each system gets its own preconditioner; C = A M^-1 U (= A Us) stays orthonormal
    after every solve. With spilu (flexible cycles) every application of M is an Arnoldi
    step or the carry-over's, none an update's."""
    from pdeforge.solvers.krylov.preconditioners import build_preconditioner

    _, mats = convection_sequence
    b = np.ones(mats[0].shape[0])
    solver = GCRODR(restart=30, recycle=8)
    for A in mats:
        carried = solver.space.shape[0] if (solver.space is not None and solver.carry) else 0
        pre = build_preconditioner(kind, A)
        calls = [0]

        def M(v, apply=pre.apply, calls=calls):
            calls[0] += 1
            return apply(v)

        out = solver.solve(A, b, rtol=1e-9, M=M, M_work=pre.work)
        assert out.converged and out.residual <= 1e-9
        exact = spla.spsolve(A.tocsc(), b)
        assert np.abs(out.x - exact).max() <= 1e-6 * np.abs(exact).max()
        # products = carried vectors + Arnoldi steps (one M each) + true-residual checks;
        # M's other applications: none, or one per carried vector where the solves restart
        # (the space is then carried in the new M's coordinates, gcrodr.py)
        steps = out.iterations - carried - np.array([1, 2])
        # spilu costs more than the flexible cycles' extra GEMM, Jacobi less
        assert not solver.carry or (solver.Us is not None) == (kind == "ilu")
        if kind == "ilu":
            assert calls[0] in set(steps) | set(steps + carried)
        else:  # one application a step, one an update (one a cycle), k the carry-over
            assert calls[0] > steps.max()
        if solver.C is not None:  # C = A x (the space's solution-coordinate rows)
            C = solver.C
            U = solver.Us if solver.Us is not None else np.stack([M(u) for u in solver.U])
            np.testing.assert_allclose(C @ C.T, np.eye(C.shape[0]), atol=1e-10)
            np.testing.assert_allclose((A @ U.T).T, C, atol=1e-8)


def test_recycling_pays_off_on_a_sequence(convection_sequence):
    _, mats = convection_sequence
    b = np.ones(mats[0].shape[0])
    plain = [gmres(A, b, rtol=1e-8, restart=40).iterations for A in mats]
    solver = GCRODR(restart=40, recycle=20)
    outs = [solver.solve(A, b, rtol=1e-8) for A in mats]
    for A, out in zip(mats, outs, strict=True):
        assert out.converged
        assert np.linalg.norm(b - A @ out.x) <= 1e-8 * np.linalg.norm(b) * 1.0001
    assert np.mean([o.iterations for o in outs[1:]]) < 0.85 * np.mean(plain[1:])


@pytest.mark.parametrize("seed", range(6))
def test_first_solve_reaches_a_tight_tolerance_on_an_ill_conditioned_system(seed):
    """Residual replacement: the updated residual of GCRO-DR drifts from b - A x when its
    recycled vectors are near-null directions (here eigenvalues 1e-3-7e-3 next to 1-3,
    condition 2.5e8); without replacement two of these six first solves stagnated with
    the updated residual at 7e-10 and the true one at 3e-5 and 9e-4."""
    n = 300
    lam = np.concatenate([[1e-3, 3e-3, 5e-3, 7e-3], np.linspace(1.0, 3.0, n - 4)])
    A = sp.diags([lam, 0.2 * np.ones(n - 1)], [0, 1]).tocsr()
    b = np.random.default_rng(seed).standard_normal(n)
    out = GCRODR(restart=25, recycle=10).solve(A, b, rtol=1e-10)
    assert out.converged
    assert np.linalg.norm(b - A @ out.x) <= 1e-10 * np.linalg.norm(b)
    # deflated restarts: restarted GMRES(25) takes 600-940 products on these
    assert out.iterations < 200


def test_same_system_twice_converges_faster():
    """Nonsymmetric, with a few small outlying eigenvalues: what recycling deflates."""
    n = 300
    rng = np.random.default_rng(3)
    lam = np.concatenate([[1e-3, 3e-3, 5e-3, 7e-3], np.linspace(1.0, 3.0, n - 4)])
    A = sp.diags([lam, 0.2 * np.ones(n - 1)], [0, 1]).tocsr()
    solver = GCRODR(restart=25, recycle=10)
    first = solver.solve(A, rng.standard_normal(n), rtol=1e-10)
    second = solver.solve(A, rng.standard_normal(n), rtol=1e-10)
    assert first.converged and second.converged
    assert second.iterations < first.iterations


def test_complex_indefinite_system():
    n = 400
    rng = np.random.default_rng(4)
    lap = sp.diags([2 * np.ones(n), -np.ones(n - 1), -np.ones(n - 1)], [0, 1, -1]) * n**2
    A = (lap.tocsr() - (30.0**2) * sp.eye(n, format="csr")
         + 1j * 30.0 * sp.eye(n, format="csr")).tocsr()  # damped Helmholtz
    b = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    solver = GCRODR(restart=40, recycle=10)
    out = solver.solve(A, b, rtol=1e-9, maxiter=20_000)
    assert out.converged and np.iscomplexobj(out.x)
    exact = spla.spsolve(A.tocsc(), b)
    assert np.abs(out.x - exact).max() <= 1e-5 * np.abs(exact).max()


def test_nonconvergence_is_reported(convection_sequence):
    A = convection_sequence[1][0]
    out = GCRODR(restart=10, recycle=4).solve(A, np.ones(A.shape[0]), rtol=1e-12, maxiter=15)
    assert not out.converged and out.iterations <= 15 and out.residual > 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("solver", ["gmres", "gcrodr"])
def test_an_rtol_below_double_precision_stops_at_the_rounding_floor(
        convection_sequence, solver, dtype):
    """rtol 1e-17 cannot be reached in doubles: the solve stops, not converged, once the
    true residual is at the rounding floor and no longer falls (it ran to maxiter), and
    its solution is as good as the direct one."""
    A = convection_sequence[1][0].astype(dtype)
    b = np.random.default_rng(2).standard_normal(A.shape[0]).astype(dtype)
    run = (lambda **kw: gmres(A, b, restart=20, **kw)) if solver == "gmres" else (
        lambda **kw: GCRODR(restart=20, recycle=5).solve(A, b, **kw))
    reachable = run(rtol=1e-10, maxiter=20_000)
    out = run(rtol=1e-17, maxiter=20_000)
    assert reachable.converged and not out.converged
    assert out.iterations < 10 * reachable.iterations
    assert out.residual < 1e-13
    exact = spla.spsolve(A.tocsc(), b)
    assert np.abs(out.x - exact).max() <= 1e-10 * np.abs(exact).max()


@pytest.mark.parametrize("early", [True, False])
def test_a_stalled_solve_is_given_up_after_the_products_allowed(
        convection_sequence, monkeypatch, early):
    """give_up_after: a preconditioner factored for the opposite flow leaves the residual
    near its start; the solve stops after exactly that many products, or (``early``)
    after EARLY_STEPS when those cut the residual by less than 1 - EARLY_STALL, reported
    not converged, its residual the true one of the returned iterate. A solve that makes
    headway (its own factor) is not stopped."""
    from pdeforge.solvers.krylov import gcrodr
    from pdeforge.solvers.krylov.preconditioners import build_preconditioner

    from .conftest import convection_diffusion

    if not early:
        monkeypatch.setattr(gcrodr, "EARLY_STEPS", 10**9)
    Ks, _ = convection_sequence
    A = convection_diffusion(Ks[0], 400.0)
    wrong = build_preconditioner("ilu", convection_diffusion(Ks[3], -400.0)).apply
    b = np.ones(A.shape[0])
    endless = GCRODR(40, 10).solve(A, b, rtol=1e-8, maxiter=300, M=wrong)
    assert not endless.converged and endless.iterations == 300
    assert endless.history[6] > gcrodr.STALL  # the opposite flow's factor: no headway
    assert endless.history[2] > gcrodr.EARLY_STALL
    out = GCRODR(40, 10).solve(A, b, rtol=1e-8, maxiter=300, M=wrong, give_up_after=6)
    assert not out.converged and out.iterations == (2 if early else 6)
    true = np.linalg.norm(b - A @ out.x) / np.linalg.norm(b)
    assert out.residual == pytest.approx(true, rel=1e-10) and true > gcrodr.STALL
    own = build_preconditioner("ilu", A).apply
    fine = GCRODR(40, 10).solve(A, b, rtol=1e-8, maxiter=300, M=own, give_up_after=2)
    assert fine.converged and fine.residual <= 1e-8


def test_smallest_eigvecs_keeps_conjugate_pairs_together():
    theta = np.array([0.1 + 0.2j, 0.1 - 0.2j, 0.05, 3.0])
    Z = np.eye(4, dtype=complex)
    Z[:, 0] = [1, 1j, 0, 0]
    Z[:, 1] = [1, -1j, 0, 0]
    P = smallest_eigvecs(theta, Z, 3, real=True)
    assert P.shape == (4, 3) and np.isrealobj(P)
    P2 = smallest_eigvecs(theta, Z, 2, real=True)
    assert P2.shape == (4, 1)  # the pair would be cut: dropped whole


def test_bad_inputs():
    A = sp.eye(5).tocsr()
    with pytest.raises(ValueError, match="right-hand side has shape"):
        gmres(A, np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        GCRODR().solve(A, np.array([1, 2, np.nan, 4, 5.0]))
    with pytest.raises(ValueError, match="recycle < restart"):
        GCRODR(restart=10, recycle=10)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_rows_times_accumulates_blocks_in_place(dtype):
    """coef^T [B_1; B_2] by BLAS gemm with beta = 1: equal to the stacked product, for
    real and complex blocks and coefficients of either kind."""
    from pdeforge.solvers.krylov.base import rows_times

    rng = np.random.default_rng(3)
    blocks = [rng.standard_normal((r, 300)).astype(dtype) for r in (3, 5)]
    if dtype == np.complex128:
        blocks = [b + 1j * rng.standard_normal(b.shape) for b in blocks]
    for coef in (rng.standard_normal((8, 4)), rng.standard_normal((8, 4)) + 1j):
        ref = coef.T @ np.vstack(blocks)
        out = rows_times(coef, blocks)
        np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13)
        assert out.flags.c_contiguous
        np.testing.assert_allclose(rows_times(coef[:3], blocks[:1]), coef[:3].T @ blocks[0],
                                   rtol=1e-13, atol=1e-13)
