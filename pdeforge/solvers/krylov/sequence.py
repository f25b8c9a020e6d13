"""``solve_sequence``: solve the N similar linear systems of a dataset, fast.

Methods:

* ``skr``: sort the systems (``sorting.py``) and solve them in that order with a
  recycling solver: recycled CG (``rcg.py``) when the matrices and the preconditioner are
  SPD (none, Jacobi, AMG), GCRO-DR (``gcrodr.py``) otherwise (ILU is not symmetric).
  Preconditioners are reused along the order.
* ``gcrodr``: GCRO-DR in the given order (recycling without sorting).
* ``gmres``: independent GMRES(restart) per system (pdeforge's own), preconditioner built
  per system: the SKR paper's baseline.
* ``direct``: sparse LU per system (SuperLU).
* ``auto``: sparse LU or ``skr`` (AMG for SPD, ILU otherwise) by matrix class, dimension
  and size (:func:`auto_choice`), thresholds measured with benchmarks/skr.py. A fixed
  rule rather than a timing trial, so that the same file comes out on any machine.

Every result is checked with the true residual; a system that misses ``rtol`` within
``maxiter`` products is reported (``converged`` False), never passed off as converged.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdeforge.errors import PdeforgeError, SolverInputError
from pdeforge.solvers.krylov.base import (
    KrylovResult,
    UnsolvableSystemError,
    check_system,
    relative_residual,
)
from pdeforge.solvers.krylov.gcrodr import GCRODR
from pdeforge.solvers.krylov.gmres import gmres
from pdeforge.solvers.krylov.ilu0 import applies as ilu0_applies
from pdeforge.solvers.krylov.preconditioners import (
    CHEAP_KINDS,
    KINDS,
    Preconditioner,
    PreconditionerCache,
    build_preconditioner,
)
from pdeforge.solvers.krylov.rcg import RecycledCG
from pdeforge.solvers.krylov.sorting import sort_systems

METHODS = ("skr", "gcrodr", "gmres", "direct", "auto")
#: ``auto`` uses sparse LU up to these sizes (see :func:`auto_choice`)
AUTO_DIRECT_SPD_2D = 5_000
AUTO_DIRECT_2D = 5_000
#: nonsymmetric 2D with a symmetric pattern: sparse LU (minimum degree, ``lu_options``) up
#: to this size, the largest measured (512^2)
AUTO_DIRECT_2D_PATTERN = 300_000
#: ``auto`` uses PCG with Jacobi for SPD 3D systems up to this size, skr with AMG above
AUTO_JACOBI_SPD_3D = 100_000
#: direct solves of systems sharing one matrix go in blocks of this many bytes of solutions
DIRECT_BLOCK_BYTES = 16 << 20
#: the preconditioners that keep CG's: SPD for an SPD matrix (ILU(0) of a symmetric
#: matrix is its incomplete Cholesky; the threshold ILU, with its pivoting, is not)
SPD_PRECONDITIONERS = ("none", "jacobi", "amg", "ilu0")
#: most steps of iterative refinement of a direct solve whose residual is above rtol
REFINEMENT_STEPS = 3


@dataclass
class SequenceResult:
    """Solutions and per-system statistics, all in the ORIGINAL order of the inputs."""

    solutions: np.ndarray
    iterations: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    seconds: np.ndarray
    order: np.ndarray
    method: str
    preconditioner: str
    spd: bool
    preconditioner_builds: int = 0
    recycling: str = "not used"  # "on", or why the adaptive policy switched it off
    reuse: str = "not used"  # preconditioner reuse: "on", or why it was switched off
    sort_seconds: float = 0.0
    #: which systems were solved: all of them, except in the partial result that an
    #: interrupted call leaves on its exception (``exc.partial``), where the others have
    #: zero solutions, residual NaN and converged False
    solved: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.solved is None:
            self.solved = np.ones(len(self.residuals), dtype=bool)

    @property
    def total_seconds(self) -> float:
        """Everything: solves and sorting."""
        return float(self.seconds.sum() + self.sort_seconds)


def is_symmetric(A) -> bool:
    """A == A^T to rounding (complex symmetric counts: Helmholtz with absorbing walls)."""
    A = sp.csr_matrix(A)
    return bool(abs(A - A.T).max() <= 1e-12 * (abs(A).max() or 1.0))


def has_symmetric_pattern(A) -> bool:
    """Whether A's nonzero pattern equals its transpose's (values aside): the stencils of
    every PDE family here, symmetric or not (advection, absorbing walls)."""
    # row i's column indices equal column i's row indices: the CSR and CSC structures
    # agree (one conversion from whichever the matrix is in; 0.5 ms at 128^2 against 1.8
    # for comparing P with P^T)
    if not (sp.issparse(A) and A.format in ("csr", "csc")):
        A = sp.csr_matrix(A)
    if A.nnz and not A.data.all():  # stored zeros are not part of the pattern
        A = A.copy()
        A.eliminate_zeros()
    other = A.tocsc() if A.format == "csr" else A.tocsr()
    other.sort_indices()
    A = A if A.has_sorted_indices else A.sorted_indices()
    return bool(np.array_equal(A.indptr, other.indptr)
                and np.array_equal(A.indices, other.indices))


#: SuperLU's partial pivoting threshold for a symmetric pattern: a diagonal pivot is kept
#: unless it is below this fraction of its column's largest entry, so the minimum-degree
#: order on A^T + A survives (threshold pivoting, Duff, Erisman & Reid: element growth at
#: most 1 + 1/threshold a step)
LU_PIVOT_THRESHOLD = 0.1


def lu_options(A, spd: bool) -> dict:
    """Keywords of ``scipy.sparse.linalg.splu`` for ``A``.

    SPD: minimum degree on A^T + A, no pivoting, symmetric mode. Symmetric pattern (not
    SPD): the same order with threshold pivoting (``LU_PIVOT_THRESHOLD``). scipy's default
    (COLAMD, an order for A^T A, pivot threshold 1.0) made up to twice the fill on these
    matrices: measured with one BLAS thread, factor + solve with 1.7-1.9x fewer nonzeros
    in L + U and 1.2-1.6x faster (Helmholtz 100^2 31 against 38-47 ms, 512^2 1.9-2.2
    against 3.2-3.5 s; advection-diffusion 128^2 53-61 against 74-82 ms), residuals
    1e-11 to 1e-12 either way. Other patterns: scipy's default.
    """
    if spd:
        return dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                    options={"SymmetricMode": True})
    if has_symmetric_pattern(A):
        return dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=LU_PIVOT_THRESHOLD)
    return {}


def is_spd(A, symmetric: bool | None = None) -> bool:
    """Symmetric with a positive diagonal that dominates every row (Gershgorin => SPD).

    Sufficient, cheap, and true for the finite-volume diffusion matrices; a symmetric
    indefinite matrix (Helmholtz) fails it and goes to GCRO-DR. ``symmetric`` passes an
    :func:`is_symmetric` result already computed.
    """
    A = sp.csr_matrix(A)
    if np.iscomplexobj(A.data):
        return False
    if not (is_symmetric(A) if symmetric is None else symmetric):
        return False
    d = A.diagonal()
    if np.any(d <= 0):
        return False
    off = np.asarray(abs(A).sum(axis=1)).ravel() - np.abs(d)
    return bool(np.all(d >= off * (1 - 1e-12)) and np.any(d > off * (1 + 1e-12)))


#: default features compare the matrices' values on the union of their sparsity patterns
#: while it holds at most this many times the largest pattern's entries (a parameter sweep
#: that cancels some entries, stored zeros, masks that differ by a few cells); beyond it the
#: matrices do not share a stencil and their values say nothing about their closeness
UNION_GROWTH = 1.5


def _canonical_patterns(matrices: Sequence) -> list:
    """Each matrix as CSR with duplicates summed, sorted indices and no stored zeros (a
    copy where it lacks one of them: the caller's matrix is not changed)."""
    out = []
    for A in matrices:
        A = sp.csr_matrix(A)  # shares a CSR matrix's arrays: sorting them in place
        # re-sorted the caller's indices
        if not A.has_canonical_format or (A.nnz and not A.data.all()):
            A = A.copy()
            A.sum_duplicates()
            A.eliminate_zeros()
        out.append(A)
    return out


def _pattern_union(mats: list) -> np.ndarray | None:
    """Linear indices (row * n + column) of the union of the canonical patterns, None when
    every matrix has matrix 0's pattern (their values compare entry by entry as stored) or
    "too different" when the union exceeds ``UNION_GROWTH`` times the largest pattern."""
    first = mats[0]
    if all(A is first or (A.nnz == first.nnz and np.array_equal(A.indptr, first.indptr)
                          and np.array_equal(A.indices, first.indices)) for A in mats):
        return None
    n = first.shape[1]
    keys = {}
    for A in mats:
        if id(A) not in keys:
            rows = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr))
            keys[id(A)] = rows * n + A.indices
    union = np.unique(np.concatenate(list(keys.values())))
    if len(union) > UNION_GROWTH * max(A.nnz for A in mats):
        return "too different"
    return union


def patterns_comparable(matrices: Sequence) -> bool:
    """Whether :func:`default_features` can compare the matrices' values."""
    return not isinstance(_pattern_union(_canonical_patterns(matrices)), str)


def default_features(matrices: Sequence, rhs: np.ndarray) -> np.ndarray:
    """The matrices' values (absolute values of real matrices; real and imaginary parts of
    complex ones), then the right-hand sides. Matrices of one sparsity pattern give their
    stored values; patterns that differ a little (:data:`UNION_GROWTH`: cancelled or
    stored-zero entries, a few masked cells) give their values on the union of the
    patterns, an entry a matrix lacks counting as 0."""
    mats = _canonical_patterns(matrices)
    union = _pattern_union(mats)
    if isinstance(union, str):
        raise SolverInputError(
            "the matrices have different sparsity patterns, so their values cannot be "
            "compared: pass features=... (one vector per system, e.g. the PDE coefficient)"
        )
    rows = []
    for A in mats:
        values = A.data
        if union is not None:  # scattered onto the union, 0 where the matrix has no entry
            keys = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr))
            values = np.zeros(len(union), dtype=A.dtype)
            values[np.searchsorted(union, keys * A.shape[1] + A.indices)] = A.data
        rows.append(np.abs(values) if not np.iscomplexobj(values) else
                    np.concatenate([values.real, values.imag]))
    F = np.stack(rows)
    B = rhs.real if not np.iscomplexobj(rhs) else np.concatenate([rhs.real, rhs.imag], axis=1)
    return np.concatenate([F, B], axis=1)


class _Strategy:
    """One way of solving systems one after the other, keeping state between them."""

    def __init__(self, method: str, preconditioner: str | None, spd: bool, rtol: float,
                 restart: int, recycle: int, maxiter: int, reuse: bool) -> None:
        self.method, self.spd, self.rtol, self.maxiter = method, spd, rtol, maxiter
        self.restart, self.recycle = restart, recycle
        # a sparse LU uses no preconditioner, whatever was passed
        self.kind = "none" if preconditioner is None or method == "direct" else preconditioner
        reuse = reuse and method not in ("gmres", "cg")  # independent solves: fresh builds
        self.cache = PreconditionerCache(self.kind) if reuse else None
        self.builds = 0
        self._factored_matrix = self._lu = None
        if method in ("skr", "gcrodr"):
            symmetric_pre = self.kind in SPD_PRECONDITIONERS
            self.solver = (RecycledCG(recycle) if (spd and symmetric_pre and method == "skr")
                           else GCRODR(restart, recycle))
        else:
            self.solver = None

    def forget(self) -> None:
        """Drop what the solves so far left for the next ones: the recycled space and a
        kept preconditioner (after an iteration that overflowed, they may hold it)."""
        if self.solver is not None:
            self.solver.reset()
        if self.cache is not None:
            self.cache = PreconditionerCache(self.kind)

    @property
    def label(self) -> str:
        if self.method == "skr":
            return "skr-rcg" if isinstance(self.solver, RecycledCG) else "skr-gcrodr"
        return self.method

    @property
    def recycling(self) -> str:
        if self.solver is None:
            return "not used"
        if not self.recycle:
            return "off (recycle=0)"
        return self.solver.stopped or "on"

    @property
    def reuse(self) -> str:
        if self.cache is None or self.kind in CHEAP_KINDS:
            return "not used"
        return self.cache.stopped or "on"

    def _preconditioner(self, A) -> Preconditioner:
        if self.cache is None:
            self.builds += self.kind != "none"
            return build_preconditioner(self.kind, A)
        before = self.cache.builds
        pre = self.cache.get(A)
        self.builds += (self.cache.builds - before) if self.kind != "none" else 0
        return pre

    def _factor(self, A) -> None:
        if A is not self._factored_matrix:  # the same matrix again reuses its LU
            csc = sp.csc_matrix(A)
            try:
                lu = spla.splu(csc, **lu_options(csc, self.spd))
            except RuntimeError as exc:
                raise UnsolvableSystemError(
                    f"matrix is singular ({exc}); check the assembly") from None
            self._factored_matrix, self._lu = A, lu

    def solve_many(self, A, B: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Direct solves of the rows of ``B`` with one matrix into ``X``: (residuals, ok).

        One factorisation and a tight loop of triangular solves, each checked by its true
        residual while it is in cache. SuperLU's block solve is slower per right-hand side
        (1.28 against 0.63 ms on Poisson 128^2), and block residuals over fresh
        temporaries cost more than the loop's Python (both measured).
        """
        self._factor(A)
        res = np.empty(len(B))
        for j, b in enumerate(B):
            X[j] = self._lu.solve(b)
            res[j] = relative_residual(A, X[j], b)
            if not res[j] <= self.rtol:
                res[j] = self._refine(A, X[j], b, res[j])
        # judged against rtol itself: a floor of 1e-10 here reported residuals of 2e-12
        # as converged at rtol 1e-12
        return res, np.isfinite(res) & (res <= self.rtol)

    def _refine(self, A, x: np.ndarray, b: np.ndarray, res: float) -> float:
        """Iterative refinement of the LU solution ``x`` (in place) with the same
        factors while its residual is above rtol and still falling (at most
        ``REFINEMENT_STEPS``); returns the final relative residual. One step usually
        takes a residual near the rounding floor of an ill-conditioned solve down to
        machine precision times the growth of the factors."""
        for _ in range(REFINEMENT_STEPS):
            trial = x + self._lu.solve(b - A @ x)
            new = relative_residual(A, trial, b)
            if not new < res:
                break
            x[:], res = trial, new
            if res <= self.rtol:
                break
        return res

    def solve(self, A, b) -> tuple[np.ndarray, int, float, bool]:
        """One iterative solve (direct solves go through :meth:`solve_many`)."""
        A = sp.csr_matrix(A)
        pre = self._preconditioner(A)
        limit, give_up_after = self.maxiter, None
        if self.cache is not None:  # a reused preconditioner gets a bounded attempt
            limit = self.cache.attempt_limit(self.maxiter, self.restart)
            if self.cache.reused:
                # and is abandoned early when it makes no headway (GCRO-DR's STALL)
                give_up_after = self.cache.baseline
        out = self._iterate(A, b, pre, limit, None, give_up_after)
        spent = out.iterations
        # (going on from the attempt's iterate costs a product for its residual: with
        # fewer than two of maxiter left, the attempt's result stands, not converged)
        if (not out.converged and self.cache is not None and self.cache.reused
                and self.maxiter - spent >= 2):
            # the neighbour's factorisation does not suit this matrix: rebuild, go on
            # from the attempt's iterate
            self.cache.invalidate()
            pre = self._preconditioner(A)
            if isinstance(self.solver, GCRODR):
                # the space the failed attempt harvested was chosen under the unfit
                # preconditioner: carrying it costs its k products for little (measured on
                # advection-diffusion 512^2 with ILU: 29 products for the retry against 8)
                self.solver.reset()
            out = self._iterate(A, b, pre, self.maxiter - spent, out.x)
            spent += out.iterations
        if self.cache is not None:
            self.cache.report(out.iterations)
        return out.x, spent, out.residual, out.converged

    def _iterate(self, A, b, pre: Preconditioner, maxiter: int, x0,
                 give_up_after: int | None = None):
        if self.method == "cg":  # plain PCG (auto's choice for cheap SPD 3D stencils)
            count = [0]
            M = None if pre.apply is None else spla.LinearOperator(
                A.shape, matvec=pre.apply, dtype=A.dtype)
            # (the residual of a given x0 is a product of the budget)
            x, _ = spla.cg(A, b, x0=x0, rtol=self.rtol,
                           maxiter=max(maxiter - (x0 is not None), 1), M=M,
                           callback=lambda _: count.__setitem__(0, count[0] + 1))
            res = relative_residual(A, x, b)
            return KrylovResult(x, count[0] + (x0 is not None), res, res <= self.rtol)
        if self.method == "gmres":
            return gmres(A, b, rtol=self.rtol, restart=self.restart, maxiter=maxiter,
                         M=pre.apply, x0=x0)
        if isinstance(self.solver, RecycledCG):
            return self.solver.solve(A, b, rtol=self.rtol, maxiter=maxiter, M=pre.apply,
                                     M_diag=pre.diag, M_work=pre.work, x0=x0)
        return self.solver.solve(A, b, rtol=self.rtol, maxiter=maxiter, M=pre.apply, x0=x0,
                                 give_up_after=give_up_after, M_work=pre.work)


#: without a stated dimension, ``auto`` takes matrices with more nonzeros a row than this
#: for 3D: a 7-point stencil over m^3 unknowns has 7 - 6/m (5.5 at m = 4), a 5-point one
#: fewer than 5
THREE_D_NNZ_ROW = 5.25


def auto_choice(spd: bool, n: int, nnz_per_row: float, preconditioner: str | None = None,
                symmetric: bool = False, shared: bool = False, symmetric_pattern: bool = True,
                dim: int | None = None):
    """(method, preconditioner) that ``auto`` uses for a matrix class and size.

    ``dim``: the discretisation's spatial dimension (None: guessed from ``nnz_per_row``,
    ``THREE_D_NNZ_ROW``).

    A fixed rule, so that a dataset does not depend on the machine's timings. It follows
    the winners of benchmarks/skr.py (benchmarks/results/skr_*.md, one BLAS thread,
    2-core machine) and of size sweeps of lognormal Darcy (20 systems in 2D, 10 in 3D):

    * 2D, every system with one matrix (``shared``: Poisson, thermal): sparse LU, one
      factorisation and a triangular solve per right-hand side.
    * SPD, 2D: sparse LU up to 5k unknowns, above, ``skr`` with AMG (its hierarchy
      refreshed along the order, :func:`~.preconditioners.refresh_preconditioner`):
      Darcy 32^2-64^2 LU 3.2-8.8 ms against 8.3-12.8, 80^2 19.6 against 17.1, 128^2 60.6
      against 27.7 ms a system.
    * SPD, 3D: CG with Jacobi (``cg``: scipy's PCG) up to 100k unknowns, ``skr`` with AMG
      above: Darcy 24^3 and 32^3 13.6 and 42.7 ms against 31.2 and 72.8 ms, 48^3 280
      against 266 ms, 64^3 1.00 s against 0.56 s a system (large preset, best of 2).
    * nonsymmetric, 2D, with a symmetric pattern (``symmetric_pattern``: every family's
      stencil): sparse LU ordered by minimum degree on A^T + A (``lu_options``) up to
      ``AUTO_DIRECT_2D_PATTERN`` unknowns: advection-diffusion 128^2, 256^2, 512^2 47, 254,
      1797 ms a system against 47, 313, 1987 for GMRES with a fresh spilu (4 systems,
      best of 2). Above, and for other patterns above 5k unknowns (where scipy's COLAMD
      LU lost: advection-diffusion 128^2 74-82 ms against 47-58), GMRES with a fresh ILU
      per system.
    * symmetric indefinite or complex symmetric (Helmholtz), 2D: sparse LU (512^2:
      1.65 s/system, while GMRES+ILU ran for minutes).
    * 3D, not SPD: ``skr`` (GCRO-DR) with ILU(0), rebuilt per system: Helmholtz 32^3
      0.29 s/system against 0.81 s with spilu reused along the order (0.94 s for gcrotmk,
      4.7 s for sparse LU); 64^3 7.4 s against 18.1 s with spilu, 8.6 s for gcrotmk+ILU(0)
      and 96 s for scipy GMRES+spilu (benchmarks/results/skr_large.md). Matrices whose
      pattern ILU(0) does not accept (fill beyond 7-point stencils) get spilu.
    """
    three_d = dim >= 3 if dim is not None else nnz_per_row > THREE_D_NNZ_ROW
    if shared and not three_d:
        return ("direct", None)
    if spd:
        if not three_d:
            return ("direct", None) if n <= AUTO_DIRECT_SPD_2D else ("skr",
                                                                       preconditioner or "amg")
        if n <= AUTO_JACOBI_SPD_3D and (preconditioner or "jacobi") in SPD_PRECONDITIONERS:
            return ("cg", preconditioner or "jacobi")  # (skr takes a threshold ILU to
            # GCRO-DR)
        return ("skr", preconditioner or "amg")
    if not three_d:
        if symmetric or n <= AUTO_DIRECT_2D or (symmetric_pattern and
                                                 n <= AUTO_DIRECT_2D_PATTERN):
            return ("direct", None)
        return ("gmres", preconditioner or "ilu")
    return ("skr", preconditioner or "ilu0")


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, made once: ``threadpool_limits``
    scans every loaded library on each call (2.2 ms with torch loaded, measured; a
    sequence of 30 small direct solves takes 90 ms), the limit itself costs 20 us. By the
    first solve numpy's and scipy's BLAS, the ones the solvers use, are loaded."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def solve_sequence(
    matrices,
    rhs,
    features=None,
    method: str = "skr",
    rtol: float = 1e-8,
    restart: int = 40,
    recycle: int = 20,
    preconditioner: str | None = None,
    *,
    maxiter: int = 10_000,
    spd: bool | None = None,
    sorting: str = "auto",
    reuse_preconditioner: bool = True,
    progress: Callable[[int], None] | None = None,
    blas_threads: int | None = 1,
    dim: int | None = None,
) -> SequenceResult:
    """Solve A_i x_i = b_i for i = 0..N-1.

    Args:
        matrices: N sparse matrices of one size (or a single matrix for all systems).
        rhs: N right-hand sides, shape (N, n) (or one vector for all systems).
        features: one vector per system driving the sort (default:
            :func:`default_features`, the matrices' values on their common sparsity
            pattern followed by the right-hand side).
        method: ``skr``, ``gcrodr``, ``gmres``, ``direct`` or ``auto``.
        rtol: relative residual target ||b - A x|| / ||b||.
        restart: GMRES / GCRO-DR cycle length m.
        recycle: recycled dimension k.
        preconditioner: ``none``/None, ``jacobi``, ``ilu``, ``ilu0``, ``amg``, or ``auto``
            (:func:`auto_preconditioner`: AMG for SPD matrices, else ILU; with ``method=
            "auto"`` the same as None, auto's own choice). ``direct`` uses none (reported
            as "none"), and ``auto`` uses it only where it picks an iterative method.
        maxiter: cap on matrix-vector products per system.
        spd: whether the matrices are SPD (default: :func:`is_spd` on every distinct
            matrix: a sequence that leaves the SPD class, e.g. a shift sweep past the
            smallest eigenvalue, goes to GCRO-DR as a whole). ``True`` skips that check
            but for matrix 0's symmetry (a nonsymmetric matrix 0 is refused).
            Complex data count as not SPD (the recycled CG is real); complex right-hand
            sides with real matrices are solved in complex arithmetic.
        sorting: ``auto``, ``greedy``, ``scalable`` or ``none`` (skr and auto only).
        reuse_preconditioner: reuse a factorisation / hierarchy along the order.
        progress: called with 1 after each system.
        blas_threads: BLAS threads while solving (None: leave as is). The Krylov kernels
            are tall-skinny BLAS-2/3 products; on a small machine multi-threaded OpenBLAS
            made them up to 10x slower (measured: GCRO-DR on Darcy 64^2), and parallelism
            comes from Dask workers anyway.
        dim: spatial dimension of the discretisation (1, 2 or 3), for ``auto``'s rule
            (:func:`auto_choice`); None: guessed from the nonzeros a row.

    Returns:
        :class:`SequenceResult`, every array in the original order.

    Raises:
        SolverInputError (a ValueError): mismatched sizes, NaN/inf, features of the wrong
            shape, unknown options, a zero row, or a matrix the sparse LU (``direct``) or
            the threshold ILU (``ilu``) finds exactly singular. A numerically singular
            matrix is not detected as such: its system ends with a large residual and
            ``converged`` False, as does any system not solved to ``rtol`` within
            ``maxiter`` (never an exception).
    """
    if blas_threads is not None:
        with _blas_controller().limit(limits=blas_threads, user_api="blas"):
            return solve_sequence(
                matrices, rhs, features, method, rtol, restart, recycle, preconditioner,
                maxiter=maxiter, spd=spd, sorting=sorting,
                reuse_preconditioner=reuse_preconditioner, progress=progress,
                blas_threads=None, dim=dim,
            )
    if method not in METHODS:
        raise SolverInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if preconditioner is not None and (not isinstance(preconditioner, str)
                                       or preconditioner not in (*KINDS, "auto")):
        given = (f"unknown preconditioner {preconditioner!r}" if isinstance(preconditioner, str)
                 else f"preconditioner must be a name, got a {type(preconditioner).__name__} "
                 "(objects are not taken: the sequence builds and reuses its own)")
        raise SolverInputError(f"{given}; choose one of {', '.join(KINDS)} or auto")
    if (isinstance(rtol, bool) or not isinstance(rtol, int | float | np.floating)
            or not 0 < rtol < 1):
        raise SolverInputError(f"rtol must be a number in (0, 1), got {rtol!r}")
    if dim is not None and (isinstance(dim, bool) or dim not in (1, 2, 3)):
        raise SolverInputError(f"dim must be 1, 2 or 3 (or None), got {dim!r}")
    for name, value, low in (("restart", restart, 1), ("recycle", recycle, 0),
                             ("maxiter", maxiter, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise SolverInputError(f"{name} must be an integer >= {low}, got {value!r}")
    mats = [matrices] if sp.issparse(matrices) or (
        isinstance(matrices, np.ndarray) and matrices.ndim == 2) else list(matrices)
    if not mats:
        raise SolverInputError(
            "no systems to solve: pass at least one matrix and one right-hand side")
    mats = _as_sparse(mats)
    n = mats[0].shape[0]
    for i, A in enumerate(mats):
        if A.shape[0] != A.shape[1]:  # _as_sparse made every matrix 2-D
            raise SolverInputError(f"matrix {i} has shape {A.shape}: the matrices must be square")
        if A.shape != (n, n):
            raise SolverInputError(f"matrix {i} has shape {A.shape} but matrix 0 has {(n, n)}: the "
                                   "systems of one sequence must have one size; solve sequences of "
                                   "different sizes in separate calls")
    if isinstance(rhs, list | tuple) and not all(np.ndim(r) == 0 for r in rhs):
        # a sequence of vectors (a list of numbers is one vector, shared by all systems)
        for i, r in enumerate(rhs):
            if np.shape(r) != (n,):
                raise SolverInputError(f"system {i}: right-hand side has shape {np.shape(r)}, "
                                       f"expected ({n},) to match the matrix")
    if sp.issparse(rhs):
        rhs = rhs.toarray()
    B = np.asarray(rhs)
    if B.dtype.kind not in "biufc":
        raise SolverInputError(f"right-hand sides must be numbers, got dtype {B.dtype}")
    _refuse_extended(B.dtype, "the right-hand sides")
    B = B.astype(np.result_type(B.dtype, np.float64), copy=False)  # solved in double
    if B.ndim == 1:
        B = B[None, :]
    if B.ndim != 2 or B.shape[1] != n:
        raise SolverInputError(f"right-hand sides have shape {B.shape}, expected ({n},) or "
                               f"(N, {n}) to match the matrices")
    N = max(len(mats), B.shape[0])
    if len(mats) == 1 and N > 1:
        mats = mats * N
    if B.shape[0] == 1 and N > 1:
        B = np.repeat(B, N, axis=0)
    if len(mats) != B.shape[0]:
        raise SolverInputError(f"{len(mats)} matrices but {B.shape[0]} right-hand sides")
    complex_mats = [np.iscomplexobj(A.data) for A in mats]
    if (np.iscomplexobj(B) or any(complex_mats)) and not all(complex_mats):
        # a real operator with complex data, or real matrices in a sequence with complex
        # ones: all solved in complex arithmetic (sparse LU and the Krylov solvers work in
        # the matrices' field, and the solutions share one array: a real first matrix
        # made it real, cutting the complex systems' solutions to their real parts while
        # their residuals were reported converged; the recycled CG is real, so such
        # sequences go to GCRO-DR). A matrix shared by several systems stays shared.
        mats = _as_sparse(mats, np.complex128)
        spd = False
    for i, A in enumerate(mats):
        try:  # a matrix shared by many systems (one PDE, many sources) is checked once
            check_system(A, B[i], check_matrix=A is not mats[i - 1] or i == 0)
        except ValueError as exc:
            raise _for_system(exc, i) from None
    if spd and np.iscomplexobj(mats[0].data):
        raise SolverInputError("spd=True with complex matrices: the recycled CG works in real "
                               "arithmetic; leave spd unset (complex Hermitian systems are solved "
                               "with GCRO-DR)")
    symmetric = is_symmetric(mats[0]) if (spd is None or spd or method == "auto") else None
    if spd and not symmetric:  # the CG would run to maxiter on it and end unconverged
        raise SolverInputError("spd=True but matrix 0 is not symmetric: leave spd unset (the "
                               "class is then detected) or pass spd=False")
    if spd is None:  # every distinct matrix: one outside the class would break the CG
        distinct = list({id(A): A for A in mats[1:] if A is not mats[0]}.values())
        spd = is_spd(mats[0], symmetric) and all(is_spd(A) for A in distinct)
    spd = bool(spd)
    F = None if features is None else _check_features(features, N)
    if preconditioner == "auto":
        preconditioner = None if method == "auto" else auto_preconditioner(spd, mats[0])
    given = (mats, B)  # the systems as given, to judge the scaled-back solutions on
    B, scales = _scaled(B)
    matrix_scales = None

    dtype = np.result_type(mats[0].dtype, B.dtype, np.float64)
    X = np.zeros((N, n), dtype=dtype)
    its = np.zeros(N, dtype=np.int64)
    res = np.zeros(N)
    conv = np.zeros(N, dtype=bool)
    secs = np.zeros(N)
    solved = np.zeros(N, dtype=bool)

    def make(meth: str, pre: str | None) -> _Strategy:
        return _Strategy(meth, pre, spd, rtol, restart, recycle, maxiter, reuse_preconditioner)

    def run(strategy: _Strategy, i: int) -> None:
        t = time.perf_counter()
        try:
            X[i], its[i], res[i], conv[i] = strategy.solve(mats[i], B[i])
        except ValueError as exc:
            # a preconditioner that cannot be built for this matrix (ILU(0)'s zero pivot,
            # AMG on a nonsymmetric one) or a singular factor: which system, as the input
            # checks say it (only exc.partial told)
            if isinstance(exc, PdeforgeError) or "infs or NaNs" not in str(exc):
                raise _for_system(exc, i) from exc
            # the iteration overflowed (scipy refused the NaN/inf it made: a matrix of
            # extreme entries, --velocity 1e37): this system is reported not converged,
            # its residual NaN, and what the next systems would reuse dropped
            strategy.forget()
            X[i], its[i], res[i], conv[i] = np.nan, 0, np.nan, False
        except RuntimeError as exc:  # spilu's singular factor, as above
            if "singular" not in str(exc):
                raise
            raise _for_system(exc, i) from exc
        secs[i] = time.perf_counter() - t
        solved[i] = True
        if progress is not None:
            progress(1)

    if method == "auto":
        nnz_row = sp.csr_matrix(mats[0]).nnz / n
        shared = all(A is mats[0] for A in mats)
        pattern = spd or symmetric or has_symmetric_pattern(mats[0])
        choice = auto_choice(spd, n, nnz_row, preconditioner, symmetric, shared, pattern, dim)
        if choice == ("skr", "ilu0") and preconditioner is None and not ilu0_applies(mats[0]):
            choice = ("skr", "ilu")  # a pattern with fill: the threshold ILU (reported in
            # SequenceResult.preconditioner)
        if choice[0] == "skr" and F is None and N > 1 and not patterns_comparable(mats):
            # nothing to sort by (the values of different patterns do not compare) and
            # nothing asked for sorting: recycle along the given order
            choice = ("gcrodr", choice[1])
        strategy = make(*choice)
    else:
        strategy = make(method, preconditioner)
    if strategy.method != "direct":  # the sparse LU needs no scaling
        mats, matrix_scales = _scaled_matrices(mats)

    # only a recycling sequence cares about the order: independent solves skip the sort
    t0 = time.perf_counter()
    if strategy.method == "skr" and N > 1:
        order = sort_systems(default_features(mats, B) if F is None else F, sorting)
    else:
        order = np.arange(N)
    sort_seconds = time.perf_counter() - t0

    def result() -> SequenceResult:
        solutions = _unscaled(X, scales, matrix_scales)
        residuals, converged = np.where(solved, res, np.nan), conv & solved
        if scales is not None or matrix_scales is not None:
            # a solution scaled back can overflow to inf or underflow to zero or to
            # subnormals that lost digits (A * 1e-200 with b * 1e200): the scaled
            # systems' residuals are those of the solutions as returned
            scaled = np.zeros(N, dtype=bool)
            for factors in (scales, matrix_scales):
                if factors is not None:
                    scaled |= factors != 1.0
            for i in np.flatnonzero(solved & scaled):
                with np.errstate(all="ignore"):
                    r = relative_residual(given[0][i], solutions[i], given[1][i])
                residuals[i] = r
                converged[i] = bool(np.isfinite(r) and r <= rtol)  # the verdict of r
        return SequenceResult(
            solutions=solutions, iterations=its, residuals=residuals,
            converged=converged, seconds=secs, order=order, method=strategy.label,
            preconditioner=strategy.kind, spd=spd, preconditioner_builds=strategy.builds,
            sort_seconds=sort_seconds, recycling=strategy.recycling, reuse=strategy.reuse,
            solved=solved.copy(),
        )

    try:
        _solve_all(strategy, order, mats, B, X, res, conv, secs, solved, run, progress)
    except BaseException as exc:
        # Ctrl-C, a kill signal turned into an exception, an error in a progress callback
        # or a solver: the systems solved so far travel on the exception, not lost
        exc.partial = result()
        raise
    return result()


def _for_system(exc: Exception, i: int) -> SolverInputError:
    """``exc`` about system ``i`` as the error to raise: "system i: ...", an
    :class:`UnsolvableSystemError` (with ``system = i``) where the system has no solution
    to compute, else a :class:`SolverInputError`."""
    if isinstance(exc, UnsolvableSystemError):
        err = UnsolvableSystemError(f"system {i}: {exc}")
        err.system = i
        return err
    return SolverInputError(f"system {i}: {exc}")


def auto_preconditioner(spd: bool, A) -> str:
    """The preconditioner ``"auto"`` stands for with an iterative method: AMG (smoothed
    aggregation) for SPD matrices; for the others ILU(0) on 3D stencils that it accepts
    (``auto``'s choice there, :func:`auto_choice`), the threshold ILU (spilu) otherwise
    (nonsymmetric, indefinite and complex matrices, where AMG does not apply)."""
    if spd:
        return "amg"
    three_d = A.nnz / max(A.shape[0], 1) > 6
    return "ilu0" if three_d and ilu0_applies(A) else "ilu"


def _check_features(features, n_systems: int) -> np.ndarray:
    """``features`` as an (N, d) float array, checked whatever the method (a method that
    does not sort ignores them, but a wrong argument is still the user's mistake)."""
    try:
        F = np.asarray(features)
        if np.iscomplexobj(F) and F.ndim:  # as default_features does: real, imaginary
            F = np.concatenate([F.real.reshape(len(F), -1), F.imag.reshape(len(F), -1)], 1)
        F = F.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise SolverInputError(f"features must be numbers, one row per system ({exc}): pass "
                               "an (N, d) array") from None
    if F.ndim == 0 or F.shape[0] != n_systems:
        raise SolverInputError(f"features has {F.shape[0] if F.ndim else 0} rows for "
                               f"{n_systems} systems: pass one row per system")
    if F[0].size == 0:
        raise SolverInputError("features have no columns: pass at least one number per "
                               "system, or leave features=None")
    if not np.all(np.isfinite(F)):
        raise SolverInputError("features contain NaN or inf: fix the values they were made "
                               "from, or leave features=None")
    return F


def _refuse_extended(dtype: np.dtype, what: str) -> None:
    """Extended precision (float128, complex256) is beyond scipy's sparse LU, ILU and
    BLAS: it failed there with "cannot upcast" or "unsupported in linalg"."""
    dtype = np.dtype(dtype)
    if dtype.itemsize > {"f": 8, "c": 16}.get(dtype.kind, np.inf):
        raise SolverInputError(
            f"{what}: {dtype} values, beyond double precision, in which the solvers work; "
            "convert with .astype(np.float64) (or np.complex128)")


def _as_sparse(mats: list, least: type = np.float64) -> list:
    """The matrices as CSR of at least dtype ``least`` (float64: double precision, real or
    complex; complex128 for complex data), each distinct matrix object converted once, so
    that a matrix shared by several systems stays one object (one check, one LU); CSR
    matrices already of that dtype are kept as they are. Dense arrays get the sparse
    matrices' checks (NaN, zero rows), and single precision data is solved in double
    (SuperLU and spilu factor in the matrix's precision: float32 gave residuals of 1e-7 and
    type errors with float64 right-hand sides)."""
    converted: dict[int, object] = {}
    out = []
    for i, A in enumerate(mats):
        key = id(A)
        if key not in converted:
            shape = getattr(A, "shape", None)
            if shape is None or len(shape) != 2:
                raise SolverInputError(f"matrix {i} is not a 2-D matrix (got {type(A).__name__} of "
                                       f"shape {shape}): pass scipy.sparse matrices or 2-D arrays")
            dtype = np.result_type(A.dtype, least)
            _refuse_extended(dtype, f"matrix {i}")
            if sp.issparse(A) and A.format == "csr" and A.dtype == dtype:
                # kept, unless an array is a strided view (e.g. ``.real`` of a complex
                # matrix): pyamg's compiled kernels read such data as if contiguous (AMG
                # on one made no progress in 500 products, measured), so it is copied
                views = (A.data, A.indices, A.indptr)
                contiguous = all(a.flags.c_contiguous for a in views)
                # and one with unsorted or duplicate indices too: scipy sorts such a
                # matrix's arrays in place in many operations (abs(A) among them),
                # which rewrote the caller's matrix
                converted[key] = A if contiguous and A.has_canonical_format else A.copy()
            else:
                converted[key] = sp.csr_matrix(A, dtype=dtype)
        out.append(converted[key])
    return out


def _scaled(B: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(B, None), or B's rows scaled by powers of two, and the scales, where a row's
    largest entry lies outside [2^-400, 2^400]: the 2-norm of a right-hand side of entries
    near 1e-170 underflows to 0, and it was taken for a zero right-hand side (x = 0,
    "converged"). A power of two scales exactly, so the solution is the same, scaled."""
    big = np.abs(B).max(axis=1) if B.size else np.zeros(len(B))
    off = (big > 0) & ((big < 2.0**-400) | (big > 2.0**400))
    if not off.any():
        return B, None
    scales = np.ones(len(B))
    scales[off] = np.exp2(np.round(np.log2(big[off])))
    return B / scales[:, None], scales


def _scaled_matrices(mats: list) -> tuple[list, np.ndarray | None]:
    """(mats, None), or the matrices scaled by powers of two where a matrix's largest
    entry lies outside [2^-400, 2^400], and each system's scale: with entries near 1e200
    the Arnoldi process's Givens rotations overflowed (square of a norm) and GMRES ended
    in "array must not contain infs or NaNs". A power of two scales exactly and leaves
    the relative residual of every iterate as it was. A matrix shared by several systems
    stays one object."""
    scaled: dict[int, tuple[object, float]] = {}
    for A in mats:
        if id(A) not in scaled:
            size = np.abs(A.data[A.data != 0])
            s = 1.0
            if size.size and (size.max() < 2.0**-400 or size.max() > 2.0**400):
                big, small = np.log2(size.max()), np.log2(size.min())
                # unless the scaling would flush the smallest entries to subnormals
                # (a range of more than ~2^1020: then left as it is)
                if small - np.round(big) > -1020:
                    s = float(np.exp2(np.round(big)))
            scaled[id(A)] = (A / s if s != 1.0 else A, s)
    factors = np.array([scaled[id(A)][1] for A in mats])
    if np.all(factors == 1.0):
        return mats, None
    return [scaled[id(A)][0] for A in mats], factors


def _unscaled(X: np.ndarray, rhs_scales: np.ndarray | None,
              matrix_scales: np.ndarray | None) -> np.ndarray:
    """The solutions of the original systems: x = y rhs_scale / matrix_scale, with the
    powers of two combined as exponents (their quotient as one float could underflow,
    e.g. 2^-420 / 2^700)."""
    if rhs_scales is None and matrix_scales is None:
        return X
    e = np.zeros(len(X), dtype=np.int64)
    if rhs_scales is not None:
        e += np.rint(np.log2(rhs_scales)).astype(np.int64)
    if matrix_scales is not None:
        e -= np.rint(np.log2(matrix_scales)).astype(np.int64)
    with np.errstate(over="ignore", under="ignore"):  # judged by solve_sequence's result
        if not np.iscomplexobj(X):
            return np.ldexp(X, e[:, None])
        out = np.empty_like(X)
        out.real, out.imag = np.ldexp(X.real, e[:, None]), np.ldexp(X.imag, e[:, None])
    return out


def _solve_all(strategy, order, mats, B, X, res, conv, secs, solved, run, progress) -> None:
    """Solve every system (in ``order``; blocks of one LU for ``direct``), marking each in
    ``solved`` as it is done."""
    N, n = X.shape
    if strategy.method != "direct":
        for i in order:
            run(strategy, int(i))
    else:  # unsorted (order is 0..N-1): each run of systems sharing one matrix object is
        # solved with one LU, in blocks of about DIRECT_BLOCK_BYTES of solutions written
        # straight into their rows (a copy more of fresh memory cost ~10 % of a small
        # system); progress per block
        width = max(1, DIRECT_BLOCK_BYTES // (n * X.itemsize))
        pos = 0
        while pos < N:
            end = pos + 1
            while end < N and mats[end] is mats[pos]:
                end += 1
            for lo in range(pos, end, width):
                sl = slice(lo, min(end, lo + width))
                t = time.perf_counter()
                try:
                    res[sl], conv[sl] = strategy.solve_many(mats[pos], B[sl], X[sl])
                except SolverInputError as exc:  # an exactly singular matrix
                    raise _for_system(exc, pos) from None
                secs[sl] = (time.perf_counter() - t) / (sl.stop - sl.start)
                solved[sl] = True
                if progress is not None:
                    for _ in range(sl.start, sl.stop):
                        progress(1)
            pos = end
