"""Preconditioners for the Krylov solvers, and their reuse along a sorted sequence.

``none``, ``jacobi`` (inverse diagonal), ``ilu`` (scipy's SuperLU incomplete LU, spilu,
drop tolerance 1e-4, fill factor 10, minimum-degree ordering on A^T + A),
``amg`` (pyamg smoothed aggregation, one V-cycle; for SPD systems). A factorisation or AMG
hierarchy built for one matrix serves its neighbours in the sorted order
(:class:`PreconditionerCache`) until the iteration count has grown by ``slack`` over the
count measured right after the build, then it is rebuilt for the current matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

KINDS = ("none", "jacobi", "ilu", "amg")


@dataclass
class Preconditioner:
    """A built preconditioner: ``apply(v) = M^-1 v``; ``diag`` is M's diagonal if M is."""

    kind: str
    apply: Callable[[np.ndarray], np.ndarray] | None
    diag: np.ndarray | None = None
    seconds: float = 0.0


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
            raise ValueError("jacobi preconditioner: the matrix has zero diagonal entries; "
                             "use 'ilu' or 'none'")
        inv = 1.0 / d
        pre = Preconditioner("jacobi", lambda v: inv * v, diag=d)
    elif kind == "ilu":
        try:
            # minimum degree on A^T + A: the PDE matrices here have a symmetric pattern,
            # and SuperLU's default COLAMD order made GMRES+ILU stall on Helmholtz
            # (3000+ iterations vs 29 at 256^2, measured)
            ilu = spla.spilu(sp.csc_matrix(A), drop_tol=1e-4, fill_factor=10,
                             permc_spec="MMD_AT_PLUS_A")
        except RuntimeError as exc:
            raise ValueError(f"ilu preconditioner failed ({exc}); the matrix may be "
                             "singular: try 'jacobi' or 'none'") from None
        pre = Preconditioner("ilu", ilu.solve)
    elif kind == "amg":
        import pyamg

        ml = pyamg.smoothed_aggregation_solver(sp.csr_matrix(A), max_coarse=200)
        op = ml.aspreconditioner(cycle="V")
        pre = Preconditioner("amg", lambda v: op @ v)
    else:
        raise ValueError(f"unknown preconditioner {kind!r}; choose one of {', '.join(KINDS)}")
    pre.seconds = time.perf_counter() - t0
    return pre


class PreconditionerCache:
    """Reuse one preconditioner for neighbouring matrices while it stays effective.

    Args:
        kind: preconditioner kind.
        slack: rebuild when iterations exceed (1 + slack) x the iterations of the first
            solve after the last build. ``jacobi`` and ``none`` are always rebuilt (free).
    """

    def __init__(self, kind: str | None, slack: float = 0.3) -> None:
        self.kind = "none" if kind is None else kind
        if self.kind not in KINDS:
            raise ValueError(f"unknown preconditioner {kind!r}; choose one of {', '.join(KINDS)}")
        self.slack = slack
        self.current: Preconditioner | None = None
        self.baseline: int | None = None
        self.builds = 0
        self.reused = False
        self.failures = 0
        self.max_failures = 2
        self._stale = True

    def get(self, A) -> Preconditioner:
        """The preconditioner for ``A``: the current one, or a new build for ``A``."""
        self.reused = not (self.kind in ("none", "jacobi") or self._stale
                           or self.current is None or self.failures >= self.max_failures)
        if not self.reused:
            self.current = build_preconditioner(self.kind, A)
            self.builds += 1
            self.baseline = None
            self._stale = False
        return self.current

    def invalidate(self) -> None:
        """Rebuild at the next :meth:`get` (the reused one failed on this matrix).

        After ``max_failures`` failed reuses the sequence is judged too varied for reuse
        (e.g. advection with unrelated flows) and every system gets its own build.
        """
        self._stale = True
        self.failures += 1

    def attempt_limit(self, maxiter: int, restart: int) -> int:
        """Products allowed to a solve with a reused preconditioner before giving up on it."""
        if not self.reused or self.baseline is None:
            return maxiter
        return min(maxiter, int((1 + self.slack) * self.baseline) + restart)

    def report(self, iterations: int) -> None:
        """Tell the cache how many iterations the last solve took."""
        if self.baseline is None:
            self.baseline = max(iterations, 1)
        elif iterations > (1 + self.slack) * self.baseline:
            self._stale = True
