"""Preconditioners for the Krylov solvers, and their reuse along a sorted sequence.

``none``, ``jacobi`` (inverse diagonal), ``ilu`` (scipy's SuperLU incomplete LU, spilu,
drop tolerance 1e-4, fill factor 10, minimum-degree ordering on A^T + A: nearly an exact
LU on these matrices), ``ilu0`` (zero-fill ILU, the SKR paper's PETSc ILU: ``ilu0.py``),
``amg`` (pyamg smoothed aggregation, one V-cycle; for SPD systems). A factorisation or AMG
hierarchy built for one matrix serves its neighbours in the sorted order
(:class:`PreconditionerCache`) while the extra iterations it causes cost less than a new
build (a measured constant per kind, in iterations), then it is rebuilt for the current
matrix. An AMG hierarchy is not reused as is but refreshed (:func:`refresh_preconditioner`):
its aggregates and prolongators are kept, its coarse operators and smoothers are remade
from the new matrix.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pdeforge.errors import SolverInputError
from pdeforge.solvers.krylov.ilu0 import ILU0

KINDS = ("none", "jacobi", "ilu", "ilu0", "amg")
#: built afresh for every matrix, never reused: a build costs a few matvecs (ILU(0): tens
#: of vectorised sweeps), less than the iterations a neighbour's costs (measured: skr with
#: IC(0) on Darcy 80^2, 20.2 ms a system with fresh builds, 22.1 ms reusing them)
CHEAP_KINDS = ("none", "jacobi", "ilu0")


#: Work weights for the recycling policies' cost model, in units of one flop of a CSR
#: matrix-vector product, measured with one BLAS thread on the 2-core development machine
#: (AMD EPYC): CSR matvec 3.6-4.1 GFlop/s, SuperLU triangular solves (ILU apply) ~0.5,
#: dgemv 18, dgemm 37 (n = 6400 and 40000).
TRIANGULAR_WEIGHT = 7.0
#: ILU(0)'s triangular solves as compiled Gauss-Seidel sweeps (``ilu0.py``): 3.2-4.5 per
#: flop of its ``work`` (apply over matvec 4.1-5.8x on Helmholtz 100^2, Darcy 200^2,
#: advection-diffusion 128^2, Darcy 32^3 and 64^3)
SWEEP_WEIGHT = 3.5
GEMV_WEIGHT = 0.2
GEMM_WEIGHT = 0.1
#: dgemv over blocks larger than the last-level cache runs at memory speed: measured
#: deflation (two 20 x n blocks) at 7.3-8.2 GFlop/s for n = 110592 and 262144 (34 and
#: 84 MB) against 15-17 in cache, CSR 7-point matvecs there at 2.4-3.7: a weight of 0.33
#: to 0.45
GEMV_MEMORY_WEIGHT = 0.4


def _last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (Linux sysfs), 32 MiB where it cannot be read."""
    from pathlib import Path

    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        try:
            unit = {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)
            sizes.append(int(text.rstrip("KM")) * unit)
        except (ValueError, IndexError):
            continue
    return max(sizes, default=32 << 20)


CACHE_BYTES = _last_level_cache_bytes()


def gemv_weight(block_bytes: int) -> float:
    """Cost of a dgemv flop over a block of ``block_bytes`` in CSR-matvec flops."""
    return GEMV_WEIGHT if block_bytes <= CACHE_BYTES else GEMV_MEMORY_WEIGHT


#: Cost of a build in iterations of the solve it serves (build time over the time of one
#: product with A and one application), measured with one BLAS thread (2-core machine):
#: spilu 35-51 on 2D stencils (Darcy 80^2 and 200^2, Helmholtz 100^2, advection-diffusion
#: 128^2 and 256^2) and 148 on 7-point 3D (Helmholtz 24^3); pyamg SA 24-30 (Darcy 80^2,
#: 200^2, Darcy 32^3, 48^3, 64^3, Poisson 128^2: the CSR hierarchy and smoothers used here,
#: whose V-cycle is 3-4x cheaper than pyamg's BSR default with symmetric sweeps, for
#: which 5-10 was measured). Constants rather than timings, so that which
#: systems reuse a preconditioner (and so the stored solutions, to the last bit) does not
#: depend on the machine's load: a dataset comes out the same with any number of workers.
BUILD_ITERATIONS = {"ilu": 40.0, "ilu3d": 150.0, "amg": 25.0}

#: The V-cycle's smoothers: one forward Gauss-Seidel sweep before the coarse correction and
#: one backward sweep after it (its adjoint, so the V-cycle stays symmetric and serves CG),
#: where pyamg's smoothed aggregation defaults to a symmetric sweep (forward and backward)
#: on both sides. Half the sweeps for a few more iterations: measured with one BLAS thread
#: on lognormal Darcy, refreshed hierarchy plus CG to rtol 1e-8, 64^3 13 iterations and
#: 0.350 s against 11 and 0.392 s, 48^3 0.131 against 0.154 s, 200^2 0.028 against
#: 0.032 s, Poisson 256^2 0.040 against 0.043 s. Named, with the coarse solver
#: (pseudo-inverse) and the coarsest size, so that a refreshed hierarchy
#: (:func:`refresh_preconditioner`) is exactly what a build would make from the same
#: prolongators.
AMG_PRESMOOTHER = ("gauss_seidel", {"sweep": "forward"})
AMG_POSTSMOOTHER = ("gauss_seidel", {"sweep": "backward"})
AMG_COARSE_SOLVER = "pinv"
AMG_MAX_COARSE = 200
#: A refresh's time over a build's (the Galerkin products without strength of connection,
#: aggregation and prolongator smoothing), measured with one BLAS thread on lognormal
#: Darcy: 0.09-0.11 at 80^2 and 200^2, 0.19-0.27 at 64^3 (0.13-0.16 s against 0.55-0.8 s)
AMG_REFRESH_FRACTION = 0.2


@dataclass
class Preconditioner:
    """A built preconditioner: ``apply(v) = M^-1 v``; ``diag`` is M's diagonal if M is.

    ``work``: the cost of one application per unknown, in CSR-matvec flops (see the
    weights above); the recycled CG's policy weighs deflation against it.
    ``build_iterations``: the cost of building it, in iterations (one product with A and
    one application), a measured constant per kind (:data:`BUILD_ITERATIONS`): the reuse
    policy compares it with the extra iterations a reused one causes.
    """

    kind: str
    apply: Callable[[np.ndarray], np.ndarray] | None
    diag: np.ndarray | None = None
    seconds: float = 0.0
    work: float = 0.0
    build_iterations: float = 0.0
    #: what a reuse costs, in the same units (a refreshed AMG hierarchy's Galerkin
    #: products); a reuse pays while its extra iterations stay below the difference
    reuse_iterations: float = 0.0
    #: the pyamg hierarchy of an ``amg`` preconditioner (for :func:`refresh_preconditioner`)
    hierarchy: object = None

    @property
    def reuse_saving(self) -> float:
        """Iterations a reuse saves against a new build, before its extra iterations."""
        return self.build_iterations - self.reuse_iterations


def build_preconditioner(kind: str | None, A) -> Preconditioner:
    """Build preconditioner ``kind`` for matrix ``A`` (CSR/CSC)."""
    import time

    kind = "none" if kind is None else kind
    t0 = time.perf_counter()
    if kind == "none":
        pre = Preconditioner("none", None)
    elif kind == "jacobi":
        d = np.asarray(A.diagonal())
        if np.any(d == 0):
            raise SolverInputError("jacobi preconditioner: the matrix has zero diagonal entries; "
                                   "use 'ilu' or 'none'")
        inv = 1.0 / d
        pre = Preconditioner("jacobi", lambda v: inv * v, diag=d, work=1.0)
    elif kind == "ilu":
        try:
            # minimum degree on A^T + A: the PDE matrices here have a symmetric pattern,
            # and SuperLU's default COLAMD order made GMRES+ILU stall on Helmholtz
            # (3000+ iterations vs 29 at 256^2, measured)
            ilu = spla.spilu(sp.csc_matrix(A), drop_tol=1e-4, fill_factor=10,
                             permc_spec="MMD_AT_PLUS_A")
        except RuntimeError as exc:
            raise SolverInputError(f"ilu preconditioner failed ({exc}); the matrix may be "
                                   "singular: try 'jacobi' or 'none'") from None
        work = 2.0 * (ilu.L.nnz + ilu.U.nnz) / A.shape[0] * TRIANGULAR_WEIGHT
        three_d = A.nnz / A.shape[0] > 6  # 7-point stencils: ~7 entries a row, 5-point ~5
        pre = Preconditioner("ilu", ilu.solve, work=work,
                             build_iterations=BUILD_ITERATIONS["ilu3d" if three_d else "ilu"])
    elif kind == "ilu0":
        ilu0 = ILU0(A)
        pre = Preconditioner("ilu0", ilu0.solve, work=ilu0.work * SWEEP_WEIGHT)
    elif kind == "amg":
        import pyamg

        A = sp.csr_matrix(A)
        asym = abs(A - A.conj().T).max()
        if asym > AMG_ASYMMETRY * (abs(A).max() or 1.0):
            # measured: convection-diffusion 40^2 at cell Peclet 5, the V-cycle amplified
            # vectors by 2e14 and GCRO-DR ended further from b than x = 0
            raise SolverInputError(
                f"amg (smoothed aggregation) needs a symmetric (Hermitian) matrix (it is made "
                f"for positive definite ones); this one is not symmetric (max |A - A^H| = "
                f"{asym:.2g}): use 'ilu' or 'ilu0'"
            )
        with _seeded_numpy_rng():
            ml = pyamg.smoothed_aggregation_solver(
                sp.csr_matrix(A), max_coarse=AMG_MAX_COARSE, presmoother=AMG_PRESMOOTHER,
                postsmoother=AMG_POSTSMOOTHER, coarse_solver=AMG_COARSE_SOLVER)
        pre = _amg(_as_csr(ml), A)
    else:
        raise SolverInputError(f"unknown preconditioner {kind!r}; choose one of {', '.join(KINDS)}")
    pre.seconds = time.perf_counter() - t0
    return pre


#: largest max |A - A^T| / max |A| that ``amg`` accepts: symmetric up to assembly round-off
AMG_ASYMMETRY = 1e-8

#: seed of numpy's global generator during a pyamg build (see :func:`_seeded_numpy_rng`)
AMG_SEED = 20240

#: held while numpy's global generator is seeded for a pyamg build
_AMG_RNG_LOCK = threading.Lock()


@contextlib.contextmanager
def _seeded_numpy_rng(seed: int = AMG_SEED):
    """numpy's legacy global generator seeded for the block, its state restored after.

    pyamg draws the start vector of its spectral-radius estimate (the prolongation
    smoother's weight) from ``np.random`` and asks callers to seed it for reproducibility:
    unseeded, the same matrix gave slightly different prolongators from one process to
    the next, so a dataset resumed after a kill differed from an uninterrupted run in the
    last bits (caught by tests/datasets/test_runner.py once auto chose AMG for Darcy
    96^2). The caller's random state is left as it was.
    """
    # the legacy global generator on purpose: it is the one pyamg draws from. One build
    # at a time: the generator is the process's, so two threads (a Dask worker's) that
    # seeded it together drew from each other's stream, and 7 of 40 builds of the same
    # matrix in two threads differed from a serial build in the last bits
    with _AMG_RNG_LOCK:
        state = np.random.get_state()  # noqa: NPY002
        np.random.seed(seed)  # noqa: NPY002
        try:
            yield
        finally:
            np.random.set_state(state)  # noqa: NPY002


def _as_csr(ml):
    """pyamg hierarchy ``ml`` with its operators and transfers in CSR, its smoothers remade.

    pyamg's smoothed aggregation leaves the coarse operators and the prolongators of a
    scalar problem as BSR with 1 x 1 blocks, whose Gauss-Seidel and products are slower
    than CSR's: the same V-cycle (equal to round-off) took 37 against 70 ms at Darcy 64^3
    and 0.89 against 1.28 ms at 80^2 in CSR (the conversion: 10 and 1 ms).
    """
    from pyamg.relaxation.smoothing import change_smoothers

    for level in ml.levels:
        level.A = sp.csr_matrix(level.A)
        if getattr(level, "P", None) is not None:
            level.P, level.R = sp.csr_matrix(level.P), sp.csr_matrix(level.R)
    change_smoothers(ml, AMG_PRESMOOTHER, AMG_POSTSMOOTHER)
    return ml


def _amg(ml, A) -> Preconditioner:
    """The V-cycle of pyamg hierarchy ``ml`` (built or refreshed for ``A``)."""
    op = ml.aspreconditioner(cycle="V")
    # a V-cycle (a Gauss-Seidel sweep before and after, residual, transfers on every
    # level) measured at 11.5-15.6 CSR matvecs (Darcy 80^2, 200^2, 32^3, 48^3, 64^3,
    # Poisson 128^2, operator complexity 1.33-1.55, CSR hierarchy): 10 matvecs x operator
    # complexity
    work = 10.0 * ml.operator_complexity() * 2.0 * A.nnz / A.shape[0]
    build = BUILD_ITERATIONS["amg"]
    return Preconditioner("amg", lambda v: op @ v, work=work, build_iterations=build,
                          reuse_iterations=AMG_REFRESH_FRACTION * build, hierarchy=ml)


def refresh_preconditioner(pre: Preconditioner, A) -> Preconditioner:
    """``pre``, built for a neighbour of ``A``, made to serve ``A``.

    ``amg``: the aggregates and smoothed prolongators P_l of the build are kept and the
    hierarchy's operators are remade from ``A``, A_0 = A, A_{l+1} = P_l^T A_l P_l (Galerkin),
    with their smoothers and coarse solver: the combinatorial part of the setup (strength
    of connection, aggregation) and the prolongator smoothing are skipped. This is PETSc
    GAMG's reuse of the interpolation (``-pc_gamg_reuse_interpolation``); pyamg has no
    such update, hence the few lines here. Measured on lognormal Darcy neighbours in the
    sorted order (one BLAS thread, symmetric Gauss-Seidel sweeps): the refreshed V-cycle
    takes the iterations of a new build (64^3: 11 and 11, 80^2 and 200^2: 8-9 against
    9-10) where the neighbour's hierarchy as is takes 44-50, at 0.1-0.25 of a build's
    time (AMG_REFRESH_FRACTION).
    Every other kind is returned as is (a neighbour's factorisation reused unchanged).
    """
    if pre.kind != "amg" or pre.hierarchy is None:
        return pre
    import time

    from pyamg.multilevel import MultilevelSolver
    from pyamg.relaxation.smoothing import change_smoothers

    t0 = time.perf_counter()
    built = pre.hierarchy.levels
    if built[0].A.shape != A.shape:
        raise ValueError(f"cannot refresh an AMG hierarchy of {built[0].A.shape} for a "
                         f"matrix of {A.shape}: build a new one")
    levels, Al = [], sp.csr_matrix(A)
    for old in built[:-1]:
        level = MultilevelSolver.Level()
        level.A, level.P, level.R = Al, old.P, old.R
        levels.append(level)
        Al = (old.R @ Al @ old.P).tocsr()
    level = MultilevelSolver.Level()
    level.A = Al
    levels.append(level)
    ml = MultilevelSolver(levels, coarse_solver=AMG_COARSE_SOLVER)
    change_smoothers(ml, AMG_PRESMOOTHER, AMG_POSTSMOOTHER)
    out = _amg(ml, A)
    out.seconds = time.perf_counter() - t0
    return out


class PreconditionerCache:
    """Reuse one preconditioner for neighbouring matrices while reuse saves work.

    A reuse pays while the extra iterations it causes (over the count of the first solve
    after the build) stay below what it saves against a build, in iterations
    (``Preconditioner.reuse_saving``: the build's cost, less a refresh's for AMG, whose
    reuse is a refreshed hierarchy, :func:`refresh_preconditioner`). When it stops paying
    the next matrix gets a new build; when the first reuse after a build loses
    ``max_losses`` times in a row, the sequence is judged too varied for reuse and every
    matrix gets its own build (measured before AMG hierarchies were refreshed: pyamg's
    hierarchy reused as is on the next Darcy 64^3 matrix took 22 V-cycles against 10 fresh;
    the rule it replaces, rebuild at 30 % more iterations, alternated build and losing
    reuse there). Counted, not timed: the same systems reuse on any machine.
    ``CHEAP_KINDS`` are always rebuilt.

    Args:
        kind: preconditioner kind.
        slack: a reused preconditioner may take at most (1 + slack) x the baseline + one
            restart iterations before the attempt is abandoned for a rebuild
            (:meth:`attempt_limit`).
    """

    def __init__(self, kind: str | None, slack: float = 0.3, max_losses: int = 2) -> None:
        self.kind = "none" if kind is None else kind
        if self.kind not in KINDS:
            raise SolverInputError(
                f"unknown preconditioner {kind!r}; choose one of {', '.join(KINDS)}")
        self.slack = slack
        self.current: Preconditioner | None = None
        self.baseline: int | None = None
        self.builds = 0
        self.reused = False
        self.failures = 0
        self.max_failures = 2
        self.losses = 0
        self.max_losses = max_losses
        self.stopped: str | None = None  # why reuse was switched off, if it was
        self._stale = True
        self._first_reuse = False
        self._matrix = None  # the matrix the current preconditioner was built for

    def get(self, A) -> Preconditioner:
        """The preconditioner for ``A``: the current one, or a new build for ``A``."""
        self.reused = not (self.kind in CHEAP_KINDS or self._stale or self.current is None
                           or self.stopped is not None or A.shape != self._matrix.shape)
        if not self.reused:
            self.current = build_preconditioner(self.kind, A)
            self._matrix = A
            self.builds += 1
            self.baseline = None
            self._stale = False
            return self.current
        if A is self._matrix:  # one matrix for many right-hand sides: nothing to refresh
            return self.current
        return refresh_preconditioner(self.current, A)

    def invalidate(self) -> None:
        """Rebuild at the next :meth:`get` (the reused one failed on this matrix).

        After ``max_failures`` failed reuses the sequence is judged too varied for reuse
        (e.g. advection with unrelated flows) and every system gets its own build.
        """
        self._stale = True
        self.failures += 1
        if self.failures >= self.max_failures:
            self.stopped = (f"preconditioner reuse off: {self.failures} reused "
                            f"{self.kind} preconditioners failed to converge")

    def attempt_limit(self, maxiter: int, restart: int) -> int:
        """Products allowed to a solve with a reused preconditioner before giving up on it.

        At most (1 + slack) x the baseline + one restart, and no more extra iterations
        than a build costs: past that point a build would have been cheaper (measured:
        reused ILUs on advection-diffusion 512^2 with unrelated flows ran 79 and 87
        products, 5 s each, against 8 products and 1.2 s with a new build).
        """
        if not self.reused or self.baseline is None:
            return maxiter
        limit = int((1 + self.slack) * self.baseline) + restart
        if self.current is not None and self.current.build_iterations > 0:
            limit = min(limit, self.baseline + max(1, int(self.current.reuse_saving)))
        return min(maxiter, limit)

    def report(self, iterations: int) -> None:
        """Tell the cache how many iterations the last solve took."""
        if not self.reused or self.baseline is None:  # first solve after a build
            self.baseline = max(iterations, 1)
            self._first_reuse = True
            return
        if iterations - self.baseline > self.current.reuse_saving:
            self._stale = True  # a new build would have been cheaper: rebuild next time
            if self._first_reuse:
                self.losses += 1
                if self.losses >= self.max_losses:
                    self.stopped = (f"preconditioner reuse off: reusing the {self.kind} "
                                    f"preconditioner cost more than building it "
                                    f"{self.losses} times in a row")
        elif self._first_reuse:
            self.losses = 0
        self._first_reuse = False
