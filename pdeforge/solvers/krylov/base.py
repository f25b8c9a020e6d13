"""Shared pieces of the Krylov solvers: the result record, operators, input checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from pdeforge.errors import SolverInputError

Preconditioner = Callable[[np.ndarray], np.ndarray]


@dataclass
class KrylovResult:
    """Outcome of one linear solve.

    Attributes:
        x: the solution.
        iterations: matrix-vector products with A spent on this system (recycling
            carry-over and restarts included).
        residual: final true relative residual ||b - A x|| / ||b||.
        converged: residual <= rtol.
        history: relative residual estimate after each iteration.
    """

    x: np.ndarray
    iterations: int
    residual: float
    converged: bool
    history: list[float] = field(default_factory=list)


def identity(v: np.ndarray) -> np.ndarray:
    return v


def rows_times(coef: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """coef^T [B_1; B_2; ...] for row blocks B_i (vectors as rows), without stacking them.

    A stacked copy of the blocks costs more than the product at large n (fresh pages), and
    so does a temporary per block: the blocks are accumulated into one output by BLAS
    gemm with beta = 1 (in the transposed, column-major view of the row-major arrays).
    Measured on the recycled CG's Ritz update at 64^3 (k = 5-10 rows from 15 vectors):
    60 ms a call with a temporary per block and numpy's sum.
    """
    from scipy.linalg.blas import get_blas_funcs

    dtype = np.result_type(coef, *blocks)
    n = blocks[0].shape[1]
    out = np.empty((coef.shape[1], n), dtype=dtype)
    if out.size == 0:
        return out
    (gemm,) = get_blas_funcs(("gemm",), (out,))
    start = 0
    for i, B in enumerate(blocks):
        c = np.asarray(coef[start : start + B.shape[0]], dtype=dtype)
        start += B.shape[0]
        Bt = np.asarray(B, dtype=dtype).T  # (n, rows), Fortran-ordered view
        # out^T (n, k) = B^T (n, rows) @ c (rows, k) [+ out^T]: in place in out's memory
        gemm(1.0, Bt, c, beta=0.0 if i == 0 else 1.0, c=out.T, overwrite_c=True)
    return out


# |x|^2 of a vector whose 2-norm lies in this range neither underflows nor overflows
_SAFE_NORM = (2.0**-450, 2.0**450)


def vector_norm(x: np.ndarray) -> float:
    """The 2-norm of a vector, also where its squares under- or overflow.

    ``np.linalg.norm`` is sqrt(x . x): for entries below ~1e-154 (a right-hand side or an
    Arnoldi vector of a system scaled near the limits of double) the squares underflow
    to 0 and a nonzero vector gets norm 0, which Arnoldi takes for a breakdown; whether
    BLAS's own nrm2 rescales depends on the machine's kernel. Here the plain product is
    kept where it is safe and the vector is rescaled by its largest entry otherwise.
    """
    with np.errstate(over="ignore", under="ignore"):
        s = float(np.linalg.norm(x))
    if _SAFE_NORM[0] < s < _SAFE_NORM[1]:
        return s
    big = float(np.max(np.abs(x))) if x.size else 0.0
    if big == 0.0 or not np.isfinite(big):
        return s if big == 0.0 else big
    return big * float(np.linalg.norm(x / big))


#: the normwise backward error ||r|| / (||A|| ||x|| + ||b||) (infinity norms; Rigal and
#: Gaches 1967, Higham, "Accuracy and Stability of Numerical Algorithms", 7.1) at which a
#: solve is at the rounding floor of double precision: x is the exact solution of a
#: system within this relative distance of the given one, and more steps cannot lower the
#: residual further
FLOOR_BACKWARD_ERROR = 64 * np.finfo(np.float64).eps


def at_rounding_floor(A, x: np.ndarray, b: np.ndarray, r: np.ndarray) -> bool:
    """Whether the true residual ``r = b - A x`` is at double precision's floor
    (``FLOOR_BACKWARD_ERROR``). A restarted solver that checks this where its true
    residual has not halved since the last check stops there, not converged, instead of
    spending every product up to maxiter on an rtol below what doubles can reach
    (helmholtz3d 12^3 with rtol 1e-16 ran 20000 products a system, residuals ~1e-15)."""
    if not sp.issparse(A) and not isinstance(A, np.ndarray):
        return False  # no norm of an abstract operator
    a = abs(A)
    a_norm = float(np.max(a.sum(axis=1))) if A.shape[0] else 0.0
    scale = a_norm * float(np.max(np.abs(x), initial=0.0)) + float(np.max(np.abs(b), initial=0.0))
    return float(np.max(np.abs(r), initial=0.0)) <= FLOOR_BACKWARD_ERROR * scale


def relative_residual(A, x: np.ndarray, b: np.ndarray) -> float:
    bnorm = vector_norm(b)
    return vector_norm(b - A @ x) / (bnorm if bnorm > 0 else 1.0)


class UnsolvableSystemError(SolverInputError):
    """A system that has no solution to compute: NaN or inf in it, a zero row, a singular
    factorisation. ``system`` is its index in a sequence (set by ``solve_sequence``), so
    that a dataset can store that sample as not converged and solve the others."""

    system: int | None = None


def check_system(A, b: np.ndarray, check_matrix: bool = True) -> np.ndarray:
    """Validate one system; returns b as a 1-D array. Raises ValueError with the fix.

    ``check_matrix=False`` skips the O(nnz) matrix checks (a matrix already checked).
    """
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise SolverInputError(f"matrix must be square, got shape {A.shape}")
    b = np.asarray(b)
    if b.ndim != 1 or b.shape[0] != A.shape[0]:
        raise SolverInputError(
            f"right-hand side has shape {b.shape}, expected ({A.shape[0]},) to match the matrix"
        )
    if not np.all(np.isfinite(b)):
        raise UnsolvableSystemError(
            "right-hand side contains NaN or inf; fix the data that produced it")
    if sp.issparse(A) and check_matrix:
        csr = A.tocsr()
        if not np.all(np.isfinite(csr.data)):
            raise UnsolvableSystemError("matrix contains NaN or inf entries")
        empty = np.diff(csr.indptr) == 0
        if empty.any():
            zero_rows = np.flatnonzero(empty)
        else:  # rows whose stored entries are all zero (one pass over the data)
            zero_rows = np.flatnonzero(np.add.reduceat(np.abs(csr.data), csr.indptr[:-1]) == 0)
        if zero_rows.size:
            raise UnsolvableSystemError(
                f"matrix is singular: row(s) {zero_rows[:5].tolist()} are zero; "
                "check the assembly (boundary conditions, masks)"
            )
    return b


def result_dtype(A, b: np.ndarray) -> np.dtype:
    return np.result_type(A.dtype, b.dtype, np.float64)
