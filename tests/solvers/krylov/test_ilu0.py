"""ILU(0) against a textbook zero-fill elimination, on every family's stencil."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pdeforge.datasets.problems import build_problem
from pdeforge.solvers.krylov import build_preconditioner
from pdeforge.solvers.krylov.ilu0 import ILU0, ILU0Error


def textbook_ilu0(A: sp.spmatrix) -> np.ndarray:
    """Saad, Iterative Methods, Algorithm 10.4 (IKJ ILU(0)) on a dense copy: L U."""
    dense = A.toarray().astype(np.result_type(A.dtype, np.float64))
    n = dense.shape[0]
    pattern = dense != 0
    lu = dense.copy()
    for i in range(1, n):
        for k in range(i):
            if pattern[i, k]:
                lu[i, k] /= lu[k, k]
                for j in range(k + 1, n):
                    if pattern[i, j]:
                        lu[i, j] -= lu[i, k] * lu[k, j]
    return (np.tril(lu, -1) + np.eye(n)) @ np.triu(lu)


FAMILIES = [
    ("darcy", 12, {"coefficient": "lognormal"}),
    ("helmholtz", 12, {"boundary": "dirichlet", "k0": 3.0}),  # real, indefinite
    ("helmholtz", 12, {"k0": 3.0}),  # absorbing boundary: complex symmetric
    ("advection-diffusion", 12, {}),  # nonsymmetric
    ("thermal", 12, {}),  # masked grid
    ("darcy3d", 8, {"coefficient": "lognormal"}),  # 7-point
]


@pytest.mark.parametrize(("family", "resolution", "options"), FAMILIES)
def test_equals_textbook_ilu0(family, resolution, options):
    A = build_problem(family, resolution, **options).build(0, 0).A
    ilu = ILU0(A)
    expected = textbook_ilu0(sp.csr_matrix(A))
    got = ilu.matrix().toarray()
    assert np.abs(got - expected).max() <= 1e-13 * np.abs(expected).max()
    rng = np.random.default_rng(0)
    v = rng.standard_normal(A.shape[0])
    np.testing.assert_allclose(ilu.matrix() @ ilu.solve(v), v, atol=1e-12)
    w = v + 1j * rng.standard_normal(A.shape[0])  # complex vectors, real or complex factors
    np.testing.assert_allclose(ilu.matrix() @ ilu.solve(w), w, atol=1e-12)


def test_pivots_are_exact_after_at_most_depth_sweeps():
    """The pivot recurrence is triangular: capped at one sweep per level it is still exact
    (1-D Laplacian, depth n - 1), and the default stops at round-off much earlier."""
    n = 30
    A = sp.diags([-np.ones(n - 1), 2.5 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1]).tocsr()
    d = [2.5]
    for _ in range(n - 1):
        d.append(2.5 - 1.0 / d[-1])
    np.testing.assert_allclose(ILU0(A, max_sweeps=n).d, d, rtol=1e-15)
    assert ILU0(A).sweeps < n


def test_refuses_patterns_with_fill_and_zero_pivots():
    n = 6  # 9-point stencil: ILU(0) would change off-diagonal entries
    one = sp.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1])
    nine = (sp.kron(one, one) * -1 + 10 * sp.eye(n * n)).tocsr()
    with pytest.raises(ILU0Error, match="use 'ilu'"):
        ILU0(nine)
    singular = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ILU0Error, match="zero"):
        ILU0(singular)
    with pytest.raises(ValueError, match="use 'ilu'"):
        build_preconditioner("ilu0", nine)


def test_pattern_reused_across_a_sequence_gives_the_same_factors():
    """A family's matrices share one pattern, which is analysed once (cached): the
    factors of each matrix equal those built with an empty cache, and a matrix of another
    pattern (another size) is analysed afresh."""
    from pdeforge.solvers.krylov import ilu0 as module

    prob = build_problem("darcy", 10, coefficient="lognormal")
    mats = [prob.build(0, i).A for i in range(3)]
    cached = [ILU0(A) for A in mats]
    assert len(module._last_pattern) == 1
    for A, got in zip(mats, cached, strict=True):
        module._last_pattern.clear()
        fresh = ILU0(A)
        np.testing.assert_array_equal(got.d, fresh.d)
        np.testing.assert_array_equal(got.matrix().toarray(), fresh.matrix().toarray())
        np.testing.assert_allclose(got.matrix().toarray(), textbook_ilu0(sp.csr_matrix(A)),
                                   rtol=1e-13, atol=1e-13 * abs(A).max())
    other = build_problem("darcy", 11, coefficient="lognormal").build(0, 0).A
    np.testing.assert_allclose(ILU0(other).matrix().toarray(), textbook_ilu0(other),
                               rtol=1e-13, atol=1e-13 * abs(other).max())


def test_stored_zero_where_fill_would_land_is_accepted():
    """Fill reaching a stored entry is refused only when that entry is nonzero (then
    D-ILU is not ILU(0)); an explicitly stored zero there keeps the factorisation exact,
    and the check is made for every matrix of a cached pattern."""
    dense = np.array([[4.0, -1.0, -1.0], [-1.0, 4.0, 0.0], [-1.0, 0.0, 4.0]])
    rows, cols = np.nonzero(np.ones((3, 3)))
    A = sp.csr_matrix((dense[rows, cols], (rows, cols)), shape=(3, 3))  # zeros stored
    assert A.nnz == 9
    np.testing.assert_allclose(ILU0(A).matrix().toarray(), textbook_ilu0(sp.csr_matrix(dense)),
                               rtol=1e-14)
    B = A.copy()
    B.data[5] = B.data[7] = 0.5  # a_12, a_21: reached by a_10 a_02 and a_20 a_01
    with pytest.raises(ILU0Error, match="use 'ilu'"):
        ILU0(B)
