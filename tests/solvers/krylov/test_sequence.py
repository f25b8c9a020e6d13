"""solve_sequence: every method against a direct solve, original order, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdeforge.solvers.krylov import is_spd, solve_sequence

CASES = [
    ("skr", None), ("skr", "jacobi"), ("skr", "ilu"), ("skr", "ilu0"), ("skr", "amg"),
    ("gcrodr", None), ("gcrodr", "ilu"), ("gcrodr", "ilu0"), ("gmres", "jacobi"),
    ("gmres", "ilu0"), ("direct", None), ("auto", None),
]


def _check(res, mats, rhs, rtol):
    N = len(mats)
    assert res.solutions.shape == (N, mats[0].shape[0])
    assert sorted(res.order.tolist()) == list(range(N))
    for i, A in enumerate(mats):  # original order: solution i solves system i
        true = np.linalg.norm(rhs[i] - A @ res.solutions[i]) / np.linalg.norm(rhs[i])
        assert true <= rtol * 1.001, (i, true)
        assert res.residuals[i] == pytest.approx(true, rel=1e-6, abs=1e-15)
        exact = spla.spsolve(A.tocsc(), rhs[i])
        cond_bound = 1e4  # generous bound on ||A^-1|| ||A|| for these small grids
        assert np.linalg.norm(res.solutions[i] - exact) <= cond_bound * rtol * np.linalg.norm(
            exact)
    assert res.converged.all()


@pytest.mark.parametrize(("method", "pre"), CASES)
def test_spd_sequence(darcy_sequence, method, pre):
    Ks, mats = darcy_sequence
    rng = np.random.default_rng(0)
    rhs = 1.0 + 0.1 * rng.standard_normal((len(mats), mats[0].shape[0]))
    res = solve_sequence(mats, rhs, features=np.stack([k.ravel() for k in Ks]),
                         method=method, preconditioner=pre, rtol=1e-8)
    _check(res, mats, rhs, 1e-8)
    assert res.spd
    if method == "skr":  # CG needs a symmetric preconditioner: ILU goes to GCRO-DR, while
        # ILU(0) of a symmetric matrix is symmetric (IC(0)) and stays with CG
        assert res.method == ("skr-gcrodr" if pre == "ilu" else "skr-rcg")


@pytest.mark.parametrize(("method", "pre"), [c for c in CASES if c[1] != "amg"])
def test_nonsymmetric_sequence(convection_sequence, method, pre):
    _, mats = convection_sequence
    rhs = np.ones((len(mats), mats[0].shape[0]))
    res = solve_sequence(mats, rhs, method=method, preconditioner=pre, rtol=1e-7)
    _check(res, mats, rhs, 1e-7)
    assert not res.spd
    if method == "skr":
        assert res.method == "skr-gcrodr"


def test_sorting_is_used_and_results_come_back_in_original_order(darcy_sequence):
    Ks, mats = darcy_sequence
    perm = [5, 0, 7, 2, 1, 6, 3, 4]
    shuffled = [mats[i] for i in perm]
    b = np.ones(mats[0].shape[0])
    res = solve_sequence(shuffled, b, method="skr", rtol=1e-9)
    ref = solve_sequence(mats, b, method="direct", rtol=1e-9)
    for j, i in enumerate(perm):
        np.testing.assert_allclose(res.solutions[j], ref.solutions[i], rtol=1e-6, atol=1e-12)
    assert res.order[0] == 0


def test_single_matrix_many_rhs():
    A = sp.diags([4.0 * np.ones(50), -np.ones(49), -np.ones(49)], [0, 1, -1]).tocsr()
    rhs = np.random.default_rng(0).standard_normal((6, 50))
    res = solve_sequence(A, rhs, method="skr", rtol=1e-10)
    for i in range(6):
        np.testing.assert_allclose(A @ res.solutions[i], rhs[i], atol=1e-8)


def test_spd_detection(darcy_sequence, convection_sequence):
    assert is_spd(darcy_sequence[1][0])
    assert not is_spd(convection_sequence[1][0])
    helmholtz_like = (darcy_sequence[1][0] - 2000.0 * sp.eye(576)).tocsr()
    assert not is_spd(helmholtz_like)


def test_nonconverged_systems_are_reported(convection_sequence):
    _, mats = convection_sequence
    res = solve_sequence(mats[:3], np.ones(576), method="gcrodr", rtol=1e-10, maxiter=20)
    assert not res.converged.any()
    assert np.all(res.residuals > 1e-10)


def test_bad_inputs(darcy_sequence):
    _, mats = darcy_sequence
    n = mats[0].shape[0]
    with pytest.raises(ValueError, match="3 matrices but 2 right-hand sides"):
        solve_sequence(mats[:3], np.ones((2, n)))
    with pytest.raises(ValueError, match=r"system 1: right-hand side has shape \(10,\)"):
        solve_sequence(mats[:2], [np.ones(n), np.ones(10)])
    bad = np.ones((2, n))
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="system 1: right-hand side contains NaN"):
        solve_sequence(mats[:2], bad)
    singular = mats[0].tolil()
    singular[4, :] = 0
    with pytest.raises(ValueError, match=r"singular: row\(s\) \[4\]"):
        solve_sequence([mats[1], singular.tocsr()], np.ones((2, n)))
    numerically_singular = sp.csr_matrix(np.array([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(ValueError, match="singular"):
        solve_sequence(numerically_singular, np.ones(2), method="direct")
    with pytest.raises(ValueError, match="unknown method"):
        solve_sequence(mats[:2], np.ones(n), method="magic")
    with pytest.raises(ValueError, match="unknown preconditioner"):
        solve_sequence(mats[:2], np.ones(n), preconditioner="ssor")
    with pytest.raises(ValueError, match="matrix 1 has shape .* separate calls"):
        solve_sequence([mats[0], sp.eye(5).tocsr()], [np.ones(n), np.ones(5)])
    with pytest.raises(ValueError, match="matrix 0 has shape .* must be square"):
        solve_sequence(sp.random(6, 5, density=0.5, format="csr"), np.ones(6))
    with pytest.raises(ValueError, match="no systems to solve"):
        solve_sequence([], [])


@pytest.mark.parametrize("method", ["skr", "gcrodr", "gmres", "direct", "auto"])
def test_complex_right_hand_sides_with_real_matrices(darcy_sequence, method):
    """A real operator with complex data (e.g. a time-harmonic source): every method
    solves it, the real and imaginary parts as the two real systems would give them."""
    _, mats = darcy_sequence
    n = mats[0].shape[0]
    rng = np.random.default_rng(0)
    rhs = rng.standard_normal((3, n)) + 1j * rng.standard_normal((3, n))
    res = solve_sequence(mats[:3], rhs, method=method, rtol=1e-9)
    assert np.iscomplexobj(res.solutions) and res.converged.all()
    for A, b, x in zip(mats[:3], rhs, res.solutions, strict=True):
        exact = spla.spsolve(A.tocsc(), b.real) + 1j * spla.spsolve(A.tocsc(), b.imag)
        assert np.linalg.norm(b - A @ x) <= 1e-9 * np.linalg.norm(b) * 1.0001
        np.testing.assert_allclose(x, exact, rtol=0, atol=1e-6 * np.abs(exact).max())


@pytest.mark.parametrize("method", ["skr", "gcrodr", "gmres", "direct", "auto"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_real_and_complex_matrices_in_one_sequence(method, dtype):
    # a real matrix first made the solutions real: the complex systems' solutions lost
    # their imaginary parts (true residual 0.51) and were reported converged
    n = 10
    A = sp.diags([-1.0, 4.0, -1.5], [-1, 0, 1], shape=(n, n), format="csr", dtype=dtype)
    S = sp.diags([-1.0, 4.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr", dtype=dtype)
    mats = [A, (A + 1j * sp.eye(n)).tocsr(), S, (S + 0.5j * sp.eye(n)).tocsr()]
    b = np.ones((len(mats), n))
    res = solve_sequence(mats, b, method=method, rtol=1e-10)
    assert np.iscomplexobj(res.solutions) and res.converged.all()
    for M, x, rb in zip(mats, res.solutions, res.residuals, strict=True):
        true = np.linalg.norm(1.0 - M.astype(np.complex128) @ x) / np.sqrt(n)
        assert true <= 1e-10 * 1.0001 and true == pytest.approx(rb, rel=1e-3, abs=1e-15)
        np.testing.assert_allclose(x, spla.spsolve(M.astype(np.complex128).tocsc(), b[0]),
                                   rtol=1e-8)


def test_a_preconditioner_that_cannot_be_built_names_its_system():
    # ILU(0)'s zero pivot on the third system raised a plain ValueError without saying
    # which system (only exc.partial told)
    from pdeforge.errors import SolverInputError

    n = 20
    S = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    mats = [S, 1.1 * S, (S - 3 * sp.eye(n)).tocsr()]
    with pytest.raises(SolverInputError, match="system 2: ilu0 broke down") as info:
        solve_sequence(mats, np.ones((3, n)), method="gmres", preconditioner="ilu0")
    assert info.value.partial.solved.tolist() == [True, True, False]


def test_recycling_switch_off_is_reported(darcy_sequence):
    """The adaptive policy never changes a method silently: the result says so."""
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    res = solve_sequence(mats, b, method="skr", rtol=1e-8)
    assert res.method == "skr-rcg"
    assert "plain PCG" in res.recycling
    assert solve_sequence(mats[:2], b, method="direct").recycling == "not used"


def test_preconditioner_reuse_follows_counted_costs(darcy_sequence):
    """Reuse goes on while the extra iterations cost less than a build, stops otherwise."""
    from pdeforge.solvers.krylov import PreconditionerCache
    from pdeforge.solvers.krylov.preconditioners import BUILD_ITERATIONS

    A = darcy_sequence[1][0]
    cache = PreconditionerCache("ilu")
    pre = cache.get(A)
    assert not cache.reused and cache.builds == 1
    assert pre.build_iterations == BUILD_ITERATIONS["ilu"]  # a 5-point stencil: 2D
    pre.build_iterations = 30.0
    cache.report(10)
    cache.get(A)
    assert cache.reused
    assert cache.attempt_limit(10_000, 40) == 10 + 30  # the build's cost bounds the attempt
    cache.report(35)  # 25 extra iterations < 30: keep it
    cache.get(A)
    assert cache.reused and cache.builds == 1
    cache.report(45)  # 35 extra > 30: rebuild for the next matrix
    cache.get(A)
    assert not cache.reused and cache.builds == 2
    # the first reuse after each build losing twice: reuse is switched off for good
    for _ in range(2):
        cache.current.build_iterations = 2.0
        cache.report(10)
        cache.get(A)
        assert cache.reused
        cache.report(13)  # 3 extra > 2
        cache.get(A)
        assert not cache.reused
    assert cache.stopped is not None and "reuse off" in cache.stopped
    for _ in range(2):
        cache.report(10)
        cache.get(A)
        assert not cache.reused


def test_reuse_state_is_reported(darcy_sequence):
    _, mats = darcy_sequence
    rhs = np.ones((len(mats), mats[0].shape[0]))
    out = solve_sequence(mats, rhs, method="skr", preconditioner="amg", rtol=1e-8)
    assert out.reuse == "on" or out.reuse.startswith("preconditioner reuse off")
    assert 1 <= out.preconditioner_builds <= len(mats)
    _check(out, mats, rhs, 1e-8)
    out = solve_sequence(mats, rhs, method="skr", preconditioner="jacobi", rtol=1e-8)
    assert out.reuse == "not used"


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_direct_blocks_of_a_shared_matrix(monkeypatch, dtype):
    """Systems sharing one matrix are solved by one LU in blocks (several blocks here):
    every solution, residual and flag matches a per-system direct solve, in the original
    order, with progress reported once per system."""
    from pdeforge.solvers.krylov import sequence

    monkeypatch.setattr(sequence, "DIRECT_BLOCK_BYTES", 3 * 60 * 16)  # 3 rows a block
    rng = np.random.default_rng(1)
    A = (sp.diags([4.0 * np.ones(60), -np.ones(59), -1.5 * np.ones(59)], [0, 1, -1])
         .astype(dtype).tocsr())
    rhs = rng.standard_normal((8, 60)).astype(dtype)
    rhs[5] = 0.0  # a zero source: solution 0, residual 0
    ticks = []
    out = solve_sequence([A] * 8, rhs, method="direct", rtol=1e-10, progress=ticks.append)
    assert len(ticks) == 8
    exact = spla.spsolve(A.tocsc(), rhs.T).T
    np.testing.assert_allclose(out.solutions, exact, rtol=1e-12, atol=1e-14)
    for i in range(8):
        true = np.linalg.norm(rhs[i] - A @ out.solutions[i]) / max(np.linalg.norm(rhs[i]), 1)
        assert out.residuals[i] == pytest.approx(true, rel=1e-6, abs=1e-15)
    assert out.converged.all() and (out.iterations == 0).all()
    assert out.solutions.dtype == np.result_type(dtype, np.float64)


def test_auto_3d_nonsymmetric_takes_ilu0_where_it_applies():
    """auto on 3D-like (> 6 entries a row) nonsymmetric matrices: ILU(0) on a 7-point
    stencil, spilu when the pattern has fill for ILU(0); both solve to rtol."""
    m = 10  # 7 - 6/m entries a row on average: above auto's 3D threshold of 6
    T = sp.diags([-1.3 * np.ones(m - 1), 2.0 * np.ones(m), -0.7 * np.ones(m - 1)], [-1, 0, 1])
    eye = sp.eye(m)
    A7 = (sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye)
          + sp.kron(sp.kron(eye, eye), T)).tocsr()  # 7-point, nonsymmetric
    n = A7.shape[0]
    wide = sp.diags([0.2 * np.ones(n - 2)], [2]) + sp.diags([0.1 * np.ones(n - 3)], [-3])
    A_fill = (A7 + wide).tocsr()  # extra diagonals: ILU(0) would change off-diagonals
    rhs = np.ones((2, n))
    for A, pre in ((A7, "ilu0"), (A_fill, "ilu")):
        out = solve_sequence([A, A.copy()], rhs, method="auto", rtol=1e-9)
        assert out.method == "skr-gcrodr" and out.preconditioner == pre
        _check(out, [A, A], rhs, 1e-9)


def test_a_reused_preconditioner_that_makes_no_headway_is_dropped_early(convection_sequence):
    """The neighbour's spilu factor for the opposite flow: the reused attempt is given up
    after the products the first solve needed (not after the attempt limit, a build's
    worth more), the system is rebuilt and solved, and the count says so."""
    from pdeforge.solvers.krylov.preconditioners import BUILD_ITERATIONS

    from .conftest import convection_diffusion

    Ks, _ = convection_sequence
    mats = [convection_diffusion(Ks[0], 400.0), convection_diffusion(Ks[3], -400.0)]
    rhs = np.ones((2, mats[0].shape[0]))
    out = solve_sequence(mats, rhs, features=np.array([[0.0], [1.0]]), method="skr",
                         preconditioner="ilu", rtol=1e-8)
    _check(out, mats, rhs, 1e-8)
    assert out.preconditioner_builds == 2
    first, second = out.iterations[out.order[0]], out.iterations[out.order[1]]
    # given up after `first` products, then a fresh solve of about as many
    assert second <= 2 * first + 3 < first + BUILD_ITERATIONS["ilu"]


@pytest.mark.parametrize("method", ["skr", "gmres", "direct"])
def test_an_interrupted_sequence_leaves_its_solved_systems_on_the_exception(method):
    """A progress callback that fails after 3 systems (as Ctrl-C would): the exception
    carries those 3 solutions, equal to an uninterrupted run's, and marks the rest unsolved."""
    rng = np.random.default_rng(3)
    n = 60
    base = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    mats = [base + sp.diags(rng.uniform(0, 0.5, n)) for _ in range(6)]
    rhs = rng.standard_normal((6, n))
    full = solve_sequence(mats, rhs, method=method, rtol=1e-10)
    calls = []

    def stop(_):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        solve_sequence(mats, rhs, method=method, rtol=1e-10, progress=stop)
    part = info.value.partial
    done = part.order[:3] if method == "skr" else np.arange(3)
    # one LU serves a block of systems: direct may have solved more before the 3rd call
    assert part.solved[done].all() and (part.solved.sum() == 3 or method == "direct")
    ok = part.solved
    np.testing.assert_allclose(part.solutions[ok], full.solutions[ok], rtol=1e-12)
    assert part.converged[ok].all() and (part.residuals[ok] <= 1e-10).all()
    rest = ~ok
    assert rest.any() or method == "direct"
    assert np.isnan(part.residuals[rest]).all() and not part.converged[rest].any()
    assert full.solved.all()


def test_lu_options_follow_the_pattern_and_pivot_where_the_diagonal_fails():
    """Minimum degree on A^T + A for symmetric patterns (with threshold pivoting unless
    SPD), scipy's default otherwise; the direct solve stays exact on an indefinite
    matrix whose diagonal has zeros (pivoting must leave the diagonal there)."""
    from pdeforge.solvers.krylov.sequence import has_symmetric_pattern, lu_options

    n = 40
    lap = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    adv = lap + sp.diags([-0.3, 0.3], [-1, 1], shape=(n, n))  # nonsymmetric values
    upper = lap + sp.diags([0.5], [3], shape=(n, n))  # an entry without its mirror
    assert has_symmetric_pattern(lap) and has_symmetric_pattern(adv)
    assert not has_symmetric_pattern(upper)
    rng = np.random.default_rng(1)
    for _ in range(50):  # against P == P^T on random patterns, stored zeros left out
        m = int(rng.integers(2, 12))
        M = sp.random(m, m, density=0.3, random_state=rng, format="csr")
        M = M + M.T if rng.random() < 0.5 else M
        if M.nnz and rng.random() < 0.3:
            M.data[rng.integers(M.nnz)] = 0.0
        P = sp.csr_matrix(M, copy=True)
        P.eliminate_zeros()
        P.data[:] = 1.0
        expected = (P != P.T).nnz == 0
        assert has_symmetric_pattern(M) == has_symmetric_pattern(M.tocsc()) == expected
    assert lu_options(lap, True)["diag_pivot_thresh"] == 0.0
    assert lu_options(adv, False) == {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.1}
    assert lu_options(upper, False) == {}
    # blocks [[0, 1], [1, 0]] down the diagonal plus 1e-8 lap: diagonal pivots of 2e-8
    # (without pivoting, measured: residual 9e-9; with the threshold: 1e-16)
    block = sp.kron(sp.eye(n // 2), sp.csr_matrix([[0.0, 1.0], [1.0, 0.0]]))
    A = sp.csr_matrix(block + 1e-8 * lap)
    b = rng.standard_normal(n)
    res = solve_sequence(A, b, method="direct", rtol=1e-10)
    assert res.converged.all()
    np.testing.assert_allclose(res.solutions[0], spla.spsolve(sp.csc_matrix(A), b),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("method", "pre"), [("skr", None), ("skr", "ilu"), ("gmres", None),
                                             ("gmres", "ilu"), ("direct", None), ("auto", None)])
def test_single_precision_and_dense_inputs_are_solved_in_double(darcy_sequence, method, pre):
    """float32 matrices (sparse or dense numpy) and right-hand sides: solved in float64 to
    rtol; spilu and SuperLU would otherwise factor in single precision."""
    _, mats = darcy_sequence
    n = mats[0].shape[0]
    singles = [mats[0].astype(np.float32), mats[1].toarray().astype(np.float32)]
    rhs = np.ones((2, n), dtype=np.float32)
    res = solve_sequence(singles, rhs, method=method, preconditioner=pre, rtol=1e-10)
    assert res.solutions.dtype == np.float64 and res.converged.all()
    for A, x in zip(mats[:2], res.solutions, strict=True):
        b = np.ones(n)
        exact = spla.spsolve(A.astype(np.float32).astype(np.float64).tocsc(), b)
        np.testing.assert_allclose(x, exact, rtol=1e-7)


def test_right_hand_sides_near_the_limits_of_double_are_not_taken_for_zero(darcy_sequence):
    """A right-hand side of entries 1e-170 (its 2-norm underflows) or 1e+170 (overflows)
    gives the solution of the ones vector, scaled, not x = 0 marked converged."""
    _, mats = darcy_sequence
    n = mats[0].shape[0]
    ref = spla.spsolve(mats[0].tocsc(), np.ones(n))
    for scale in (1e-170, 1e170):
        for method in ("skr", "gmres", "gcrodr", "direct"):
            res = solve_sequence(mats[:2], scale * np.ones(n), method=method, rtol=1e-9)
            assert res.converged.all(), (scale, method)
            np.testing.assert_allclose(res.solutions[0] / scale, ref, rtol=1e-6)


def test_more_bad_inputs_get_clear_errors(darcy_sequence, convection_sequence):
    _, mats = darcy_sequence
    n = mats[0].shape[0]
    b = np.ones(n)
    for kwargs, match in [
        (dict(restart=0), "restart must be an integer >= 1"),
        (dict(restart=2.5), "restart must be an integer >= 1"),
        (dict(recycle=-1), "recycle must be an integer >= 0"),
        (dict(maxiter=0), "maxiter must be an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            solve_sequence(mats[:2], b, **kwargs)
    dense = mats[0].toarray()
    dense[3, 3] = np.nan
    with pytest.raises(ValueError, match="system 0: matrix contains NaN or inf"):
        solve_sequence([dense], b)
    with pytest.raises(ValueError, match="right-hand sides have shape"):
        solve_sequence(mats[:2], np.ones((2, n, 1)))
    complex_spd = [sp.csr_matrix(A, dtype=np.complex128) for A in mats[:2]]
    with pytest.raises(ValueError, match="spd=True with complex matrices"):
        solve_sequence(complex_spd, b, spd=True)
    _, conv = convection_sequence
    with pytest.raises(ValueError, match="spd=True but matrix 0 is not symmetric"):
        solve_sequence(conv[:2], b, spd=True)
    with pytest.raises(ValueError, match=r"recycle < restart .*recycle=20, restart=10.*default"):
        solve_sequence(conv[:2], b, restart=10)
    with pytest.raises(ValueError, match=r"amg .*Hermitian.* is not .* use 'ilu'"):
        solve_sequence(conv[:2], b, preconditioner="amg")
    # a complex Hermitian positive definite matrix is what amg serves: GCRO-DR with it
    shift = 1j * sp.triu(mats[0], 1)
    hermitian = (mats[0] + shift - shift.T).tocsr()
    res = solve_sequence([hermitian], b, preconditioner="amg", rtol=1e-9)
    assert res.method == "skr-gcrodr" and res.converged.all()
    res = solve_sequence(mats[:2], b, method="gcrodr", recycle=0)
    assert res.recycling == "off (recycle=0)" and res.converged.all()


def test_ilu0_takes_a_stencil_with_stored_zeros_or_in_bsr(darcy_sequence):
    _, mats = darcy_sequence
    A = mats[0]
    n = A.shape[0]
    stored = (A + sp.csr_matrix(([1.0], ([0], [n - 1])), shape=(n, n))).tocsr()
    stored.data[stored.indptr[1] - 1] = 0.0  # (0, n-1): a stored zero off the stencil
    assert stored.nnz == A.nnz + 1
    for M in (stored, A.tobsr(blocksize=(2, 2))):
        res = solve_sequence([M, M], np.ones(n), preconditioner="ilu0", rtol=1e-9)
        assert res.converged.all()


def test_spd_is_decided_on_every_matrix_not_the_first(darcy_sequence):
    # a shift sweep past the smallest eigenvalue: matrix 0 is SPD, the others indefinite;
    # the recycled CG would break down on them (it did: residuals 10.6, 1.0, 1.0)
    _, mats = darcy_sequence
    L = mats[0]
    lam_min = spla.eigsh(L.tocsc(), k=1, sigma=0, which="LM", return_eigenvectors=False)[0]
    sweep = [L] + [(L - s * lam_min * sp.eye(L.shape[0])).tocsr() for s in (1.5, 2.5, 3.5)]
    rhs = np.random.default_rng(0).standard_normal((4, L.shape[0]))
    res = solve_sequence(sweep, rhs, method="skr", rtol=1e-8)
    assert not res.spd and res.method == "skr-gcrodr"
    _check(res, sweep, rhs, 1e-8)


def test_strided_matrix_data_is_copied_before_amg(darcy_sequence):
    # .real of a complex matrix is a strided view of its data: pyamg read it as
    # contiguous and the V-cycle made no progress in 500 products
    _, mats = darcy_sequence
    strided = mats[0].astype(np.complex128).real
    assert not strided.data.flags.c_contiguous
    b = np.ones(mats[0].shape[0])
    for method in ("skr", "gmres"):
        res = solve_sequence([strided], b, method=method, preconditioner="amg", maxiter=500)
        assert res.converged.all() and res.iterations[0] < 40, (method, res.iterations)


def test_preconditioner_auto_is_amg_for_spd_and_ilu_otherwise(darcy_sequence,
                                                              convection_sequence):
    _, spd = darcy_sequence
    _, conv = convection_sequence
    b = np.ones(spd[0].shape[0])
    for mats, method, expected in [(spd, "skr", "amg"), (spd, "gmres", "amg"),
                                   (conv, "skr", "ilu"), (conv, "gcrodr", "ilu"),
                                   (spd, "direct", "none"), (conv, "direct", "none")]:
        res = solve_sequence(mats[:3], b, method=method, preconditioner="auto")
        assert res.preconditioner == expected, (method, res.preconditioner)
        _check(res, mats[:3], np.tile(b, (3, 1)), 1e-8)
    # with method="auto" it is auto's own choice, as None
    a = solve_sequence(conv[:3], b, method="auto", preconditioner="auto")
    n = solve_sequence(conv[:3], b, method="auto")
    assert (a.method, a.preconditioner) == (n.method, n.preconditioner)


def test_direct_reports_no_preconditioner(convection_sequence):
    _, conv = convection_sequence
    res = solve_sequence(conv[:2], np.ones(conv[0].shape[0]), method="direct",
                         preconditioner="ilu")
    assert res.preconditioner == "none" and res.converged.all()


def test_auto_recycles_in_the_given_order_when_patterns_differ_and_no_features():
    # ~9 entries a row (taken for 3D: auto picks skr), two different patterns, no
    # features: nothing to sort by, so GCRO-DR along the given order, not an error
    rng = np.random.default_rng(3)
    n = 300
    mats = [(sp.random(n, n, density=0.03, random_state=rng) + 10 * sp.eye(n)).tocsr()
            for _ in range(3)]
    assert mats[0].nnz != mats[1].nnz
    rhs = rng.standard_normal((3, n))
    res = solve_sequence(mats, rhs, method="auto")
    assert res.method == "gcrodr"
    _check(res, mats, rhs, 1e-8)
    with pytest.raises(ValueError, match="different sparsity patterns.*features="):
        solve_sequence(mats, rhs, method="skr")  # asked to sort: says how


def _stencil_sweep(m: int = 8):
    """Lap + c Adv for c = 0, 0.1, 0.2: one stencil, but c = 0 cancels Adv's entries (scipy
    drops them, so matrix 0 stores fewer)."""
    T = sp.diags([-np.ones(m - 1), 2 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1])
    lap = (sp.kron(T, sp.eye(m)) + sp.kron(sp.eye(m), T)).tocsr()
    n = m * m
    adv = (sp.diags([np.ones(n - 1)], [1]) - sp.diags([np.ones(n - 1)], [-1])).tocsr()
    return lap, adv, [(lap + c * adv).tocsr() for c in (0.0, 0.1, 0.2)]


def test_default_features_compare_values_on_the_union_of_close_patterns():
    from pdeforge.solvers.krylov.sequence import default_features

    lap, adv, mats = _stencil_sweep()
    assert mats[0].nnz < mats[1].nnz == mats[2].nnz
    rhs = np.random.default_rng(5).standard_normal((3, lap.shape[0]))
    F = default_features(mats, rhs)
    # every matrix on the union pattern (matrix 1's): matrix 0 has zeros where Adv is
    union = abs(mats[1]).tocsr()
    union.sort_indices()
    for i, A in enumerate(mats):
        want = np.abs(np.asarray(A[union.nonzero()]).ravel())
        np.testing.assert_array_equal(F[i, : union.nnz], want)
        np.testing.assert_array_equal(F[i, union.nnz:], rhs[i])
    assert np.count_nonzero(F[0, : union.nnz]) == mats[0].nnz
    # one matrix given with stored zeros (BSR blocks) and without: the same features
    bsr = lap.tobsr(blocksize=(2, 2))
    stored = bsr.data.copy()
    assert bsr.nnz > lap.nnz and np.count_nonzero(stored == 0) > 0
    csr_with_zeros = lap.copy()
    csr_with_zeros.data[0] = 0.0  # a stored zero in a CSR matrix too
    F2 = default_features([bsr, lap.tocsr(), lap.tocsc(), csr_with_zeros],
                          rhs[[0, 0, 0, 0]])
    assert np.array_equal(F2[0], F2[1]) and np.array_equal(F2[1], F2[2])
    # entry (0, 0), the union's first, stored as 0 in matrix 3: its feature is 0
    assert F2[3][0] == 0 and F2[1][0] != 0 and np.array_equal(F2[3][1:], F2[1][1:])
    np.testing.assert_array_equal(bsr.data, stored)  # the caller's matrices are not changed
    assert csr_with_zeros.data[0] == 0.0 and csr_with_zeros.nnz == lap.nnz
    # and skr sorts and solves the sweep
    res = solve_sequence(mats, rhs, method="skr")
    _check(res, mats, rhs, 1e-8)


@pytest.mark.parametrize("method", ["skr", "gcrodr", "gmres", "direct", "auto"])
def test_features_are_checked_whatever_the_method(darcy_sequence, method):
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    with pytest.raises(ValueError, match="features has 2 rows for 3 systems"):
        solve_sequence(mats[:3], b, features=np.ones((2, 4)), method=method)
    with pytest.raises(ValueError, match="features contain NaN"):
        solve_sequence(mats[:3], b, features=[[1.0], [np.nan], [2.0]], method=method)
    with pytest.raises(ValueError, match="features must be numbers"):
        solve_sequence(mats[:3], b, features=["a", "b", "c"], method=method)
    with pytest.raises(ValueError, match="features have no columns"):
        solve_sequence(mats[:3], b, features=np.ones((3, 0)), method=method)


@pytest.mark.parametrize("maxiter", [1, 5, 47])
def test_gmres_keeps_within_maxiter(convection_sequence, maxiter):
    _, conv = convection_sequence
    res = solve_sequence(conv[:2], np.ones(conv[0].shape[0]), method="gmres", rtol=1e-12,
                         maxiter=maxiter, restart=10)
    # every product of the budget is a Krylov step: the last cycle's true residual is
    # the report's check, not a product of the solve (maxiter = 1 took no step before)
    assert np.all(res.iterations == maxiter) and not res.converged.any()
    assert np.all(res.residuals < 1.0)


@pytest.mark.parametrize("maxiter", [1, 2, 3, 5])
@pytest.mark.parametrize(("method", "pre"), [("skr", "amg"), ("gcrodr", "amg"),
                                             ("skr", "ilu"), ("gcrodr", "ilu0"),
                                             ("gmres", "jacobi"), ("auto", None)])
def test_no_method_spends_more_than_maxiter_products(darcy_sequence, maxiter, method, pre):
    # a reused preconditioner's failed attempt went on from its iterate with a budget of
    # 0 (scipy's cg took 1) plus that iterate's residual: maxiter + 2 products
    _, mats = darcy_sequence
    res = solve_sequence(mats[:6], np.ones(mats[0].shape[0]), method=method,
                         preconditioner=pre, rtol=1e-14, maxiter=maxiter)
    assert np.all(res.iterations <= maxiter), res.iterations


def test_an_exactly_singular_matrix_is_named_by_its_system(darcy_sequence):
    _, mats = darcy_sequence
    # a zero column (no zero row, which is refused before any solve): a zero pivot in
    # any arithmetic
    no_column = mats[1].tolil()
    no_column[:, 5] = 0.0
    with pytest.raises(ValueError, match=r"system 1: matrix is singular"):
        solve_sequence([mats[0], no_column.tocsr()], np.ones(mats[0].shape[0]),
                       method="direct")
    # two equal rows: singular, but whether SuperLU's pivot comes out exactly 0 depends
    # on the BLAS kernels' rounding (5e-12 on an AMD EPYC VM). Whatever it finds, a
    # right-hand side that the equal rows contradict is never stored as solved.
    equal_rows = mats[1].tolil()
    equal_rows[5, :] = equal_rows[4, :]
    b = np.ones(mats[0].shape[0])
    b[5] = 2.0
    try:
        res = solve_sequence([mats[0], equal_rows.tocsr()], b, method="direct")
    except ValueError as exc:
        assert "system 1: matrix is singular" in str(exc)
    else:
        assert res.converged[0] and not res.converged[1]
        assert res.residuals[1] > 1e-3


@pytest.mark.parametrize("method", ["skr", "gcrodr", "gmres"])
def test_an_iterative_solve_of_an_inconsistent_singular_system_ends_no_worse_than_zero(method):
    # a Laplacian whose first row repeats the second, random right-hand sides (no exact
    # solution): GCRO-DR's recycled space amplified rounding and ended at true relative
    # residuals 154 and 2897; no iterate may be worse than the start (x = 0: 1.0)
    m = 6
    T = sp.diags([-np.ones(m - 1), 2 * np.ones(m), -np.ones(m - 1)], [-1, 0, 1])
    L = (sp.kron(T, sp.eye(m)) + sp.kron(sp.eye(m), T)).tolil()
    L[0, :] = L[1, :]
    L = L.tocsr()
    B = np.random.default_rng(8).standard_normal((2, m * m))
    res = solve_sequence([L, L], B, method=method, maxiter=300)
    assert not res.converged.any()
    for i in range(2):
        true = np.linalg.norm(B[i] - L @ res.solutions[i]) / np.linalg.norm(B[i])
        assert true <= 1.0 and res.residuals[i] == pytest.approx(true, rel=1e-9)


@pytest.mark.parametrize("factor", [1e200, 1e-200])
@pytest.mark.parametrize("method", ["skr", "gcrodr", "gmres", "direct"])
def test_matrix_entries_near_the_limits_of_double_are_solved(convection_sequence, factor,
                                                              method):
    # entries near 1e200: GMRES's Givens rotations overflowed ("array must not contain
    # infs or NaNs"); the matrices are scaled by powers of two, the solutions back
    _, conv = convection_sequence
    mats = [conv[0] * factor, conv[1] * (3 * factor)]
    rhs = np.ones((2, conv[0].shape[0]))
    res = solve_sequence(mats, rhs, method=method, rtol=1e-8)
    assert res.converged.all()
    for i, A in enumerate(mats):
        exact = spla.spsolve(conv[i].tocsc(), rhs[i]) / (factor * (1, 3)[i])
        # max-abs, not 2-norms: squares of entries near 1e200 overflow
        assert np.abs(res.solutions[i] - exact).max() <= 1e-5 * np.abs(exact).max()
        true = np.linalg.norm(rhs[i] - A @ res.solutions[i]) / np.linalg.norm(rhs[i])
        assert true <= 1e-8 * 1.001 and res.residuals[i] == pytest.approx(true, rel=1e-6)


@pytest.mark.parametrize("method", ["skr", "gmres", "direct"])
def test_right_hand_side_and_matrix_scales_are_combined_without_underflow(method):
    # 2^-420 / 2^700 as one float is 0: x came back 0, "converged". The right-hand side
    # lies in an eigenspace, so that a Krylov method solves it in one step whatever the
    # condition number (2^1000): with b = 1 too, whether GMRES got there depended on the
    # BLAS kernels' rounding (it did on an earlier CI machine, not on an AMD EPYC one).
    d = np.r_[2.0**700, np.full(59, 2.0**-300)]
    b = np.r_[0.0, np.full(59, 2.0**-420)]
    res = solve_sequence([sp.diags(d).tocsr()], b, method=method)
    np.testing.assert_allclose(res.solutions[0], b / d, rtol=1e-12)
    assert res.converged.all()


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_vector_norm_neither_underflows_nor_overflows(dtype):
    from pdeforge.solvers.krylov.base import vector_norm

    for scale in (2.0**-1000, 2.0**-600, 1.0, 2.0**600, 2.0**1000):
        x = np.full(59, scale, dtype=dtype)
        x[3] *= -2
        assert vector_norm(x) == pytest.approx(scale * np.sqrt(62), rel=1e-14)
    assert vector_norm(np.zeros(5, dtype)) == 0.0
    assert np.isnan(vector_norm(np.array([1.0, np.nan], dtype)))
    assert vector_norm(np.array([1.0, np.inf], dtype)) == np.inf


def test_complex_features_are_split_into_real_and_imaginary_parts(darcy_sequence):
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    # system 1's feature is far from 0's in its imaginary part only: sorted last
    res = solve_sequence(mats[:3], b, features=[0.0, 5j, 0.1], method="skr")
    assert res.order.tolist() == [0, 2, 1] and res.converged.all()


def _tridiagonal(n: int = 50) -> sp.csr_matrix:
    return sp.diags([-np.ones(n - 1), 4 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1]).tocsr()


@pytest.mark.parametrize(("a", "b"), [(1e-200, 1e200), (1e200, 1e-200), (1e10, 1e-306)])
@pytest.mark.parametrize("method", ["gmres", "direct"])
def test_a_solution_scaled_back_out_of_range_is_not_reported_converged(method, a, b):
    """The scaled systems were solved, but x = y * scale overflowed to inf, underflowed to
    0, or to subnormals that kept 8 digits: reported converged with the scaled system's
    residual (3e-9, 2e-16; review). The residual is now that of the solution returned."""
    A = _tridiagonal()
    rhs = np.ones(A.shape[0]) * b
    res = solve_sequence(A * a, rhs, method=method, rtol=1e-8)
    x = res.solutions[0]
    with np.errstate(all="ignore"):  # max-abs scaled before the norms, as a user would
        s = 1 / np.abs(rhs).max()
        true = np.linalg.norm((rhs - (A * a) @ x) * s) / np.linalg.norm(rhs * s)
    assert not res.converged[0]
    assert not true <= 1e-8  # the case is a real failure, not a reporting one
    if np.isfinite(true):
        assert res.residuals[0] == pytest.approx(true, rel=1e-6)
    else:
        assert not np.isfinite(res.residuals[0])


def test_direct_judges_its_residual_against_rtol_itself():
    """A direct solve counted as converged any residual up to 1e-10 whatever rtol (2e-12
    at rtol 1e-12: review). Near-singular shifted Laplacians leave LU residuals growing
    with 1 / gap; converged must say whether each is within rtol."""
    m = 20
    e = np.ones(m)
    T = sp.diags([-e[:-1], 2 * e, -e[:-1]], [-1, 0, 1])
    L = (sp.kron(sp.identity(m), T) + sp.kron(T, sp.identity(m))).tocsr()
    smallest = 4 * 2 * np.sin(np.pi / (2 * (m + 1))) ** 2  # 2 * (2 - 2 cos(pi / (m+1)))
    b = np.random.default_rng(0).standard_normal(m * m)
    seen = set()
    for gap in (1e-3, 1e-5, 1e-6, 1e-7):
        A = (L - (smallest + gap) * sp.identity(m * m)).tocsr()
        for method in ("direct", "auto"):
            res = solve_sequence(A, b, method=method, rtol=1e-12)
            true = np.linalg.norm(b - A @ res.solutions[0]) / np.linalg.norm(b)
            assert res.residuals[0] == pytest.approx(true, rel=1e-6)
            assert res.converged[0] == (true <= 1e-12), (gap, method, true)
            seen.add(bool(res.converged[0]))
    assert seen == {True, False}  # both verdicts occur over the gaps


def test_one_right_hand_side_given_as_a_list_of_numbers():
    """A list of numbers is one vector for every system (it was read as N systems of
    shape ())."""
    A = _tridiagonal(6)
    b = np.arange(1.0, 7.0)
    want = solve_sequence([A, 2 * A], b, method="direct").solutions
    for given in (b.tolist(), tuple(b.tolist())):
        res = solve_sequence([A, 2 * A], given, method="direct")
        np.testing.assert_array_equal(res.solutions, want)


def test_the_caller_s_matrices_are_not_changed():
    """A CSR matrix with unsorted indices had them sorted in place (scipy's abs(A) does it
    to the matrix it is given)."""
    A = sp.csr_matrix((np.array([1.0, 4.0, 2.0, 5.0]), np.array([1, 0, 0, 1]),
                       np.array([0, 2, 4])), shape=(2, 2))
    before = A.indices.copy(), A.data.copy()
    res = solve_sequence([A, 2 * A], np.ones((2, 2)), method="skr")
    assert res.converged.all()
    np.testing.assert_array_equal(A.indices, before[0])
    np.testing.assert_array_equal(A.data, before[1])


def test_options_of_the_wrong_type_are_refused_with_what_to_pass(darcy_sequence):
    _, mats = darcy_sequence
    b = np.ones(mats[0].shape[0])
    with pytest.raises(ValueError, match="preconditioner must be a name, got a function"):
        solve_sequence(mats[:2], b, preconditioner=lambda v: v)
    with pytest.raises(ValueError, match=r"rtol must be a number in \(0, 1\), got '1e-8'"):
        solve_sequence(mats[:2], b, rtol="1e-8")


def test_auto_keeps_a_threshold_ilu_away_from_cg():
    """CG needs an SPD preconditioner; spilu's factors are not symmetric: auto chose
    scipy's CG with it on small SPD 3D systems (review)."""
    from pdeforge.solvers.krylov.sequence import auto_choice

    assert auto_choice(True, 10_000, 7.0, "ilu", symmetric=True)[0] != "cg"
    assert auto_choice(True, 10_000, 7.0, "ilu0", symmetric=True) == ("cg", "ilu0")
    assert auto_choice(True, 10_000, 7.0, None, symmetric=True) == ("cg", "jacobi")


def test_extended_precision_is_refused_with_the_conversion():
    """float128 failed inside scipy ("cannot upcast", "unsupported in linalg"); single
    precision is solved in double as before (review)."""
    A = _tridiagonal(6)
    with pytest.raises(ValueError, match=r"matrix 0: float128 values, beyond double "
                                         r"precision.*astype\(np.float64\)"):
        solve_sequence(A.astype(np.longdouble), np.ones(6), method="direct")
    with pytest.raises(ValueError, match="the right-hand sides: complex256 values"):
        solve_sequence(A, np.ones(6, dtype=np.clongdouble), method="gmres")
    assert solve_sequence(A.astype(np.float32), np.ones(6, np.float32)).converged.all()
