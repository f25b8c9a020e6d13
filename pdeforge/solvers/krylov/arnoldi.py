"""One cycle of (projected) Arnoldi with the GMRES least-squares problem kept up to date.

Builds an orthonormal basis V_{j+1} of the Krylov space of the operator (I - C C^H) B from
r / ||r||, with B V_j = C B_j + V_{j+1} H_j (Parks et al. 2006, eq. 2.6; C empty gives plain
Arnoldi). Orthogonalisation is classical Gram-Schmidt applied twice (CGS2): each step is two
BLAS-2 products with the basis, as stable as modified Gram-Schmidt and much faster in numpy
than a per-vector loop. Givens rotations triangularise H as it grows, so the residual norm
of the GMRES least-squares problem min ||beta e1 - H y|| is known after every step and
the cycle stops as soon as it reaches the target.

Vectors are stored as rows (C-contiguous), so ``V[:j] @ w`` is one gemv.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

#: relative size of a new Arnoldi vector below which the Krylov space is invariant
BREAKDOWN = 1e-14


@dataclass
class ArnoldiCycle:
    V: np.ndarray  # (j+1, n) orthonormal rows
    H: np.ndarray  # (j+1, j) upper Hessenberg
    Bk: np.ndarray | None  # (k, j) = C^H B V_j
    y: np.ndarray  # (j,) least-squares solution
    residual: float  # ||beta e1 - H y||
    steps: int
    history: list[float]


def arnoldi_cycle(
    op: Callable[[np.ndarray], np.ndarray],
    r: np.ndarray,
    max_steps: int,
    target: float,
    C: np.ndarray | None = None,
    workspace: np.ndarray | None = None,
) -> ArnoldiCycle:
    """Run up to ``max_steps`` steps from ``r``; stop when the LS residual <= ``target``.

    Args:
        op: the operator B (matrix times preconditioner).
        r: starting residual (not normalised); must be orthogonal to C's rows.
        max_steps: maximum Arnoldi steps.
        target: absolute residual norm at which to stop.
        C: (k, n) orthonormal rows to project out, or None.
        workspace: an array of at least (max_steps + 1, n) of the basis dtype to hold the
            basis (the returned ``V`` is a view of it, valid until the next cycle that
            uses it): a caller running many cycles saves a fresh allocation, whose page
            faults cost more than the orthogonalisation at large n.
    """
    dtype = np.result_type(r.dtype, np.float64)
    n = r.shape[0]
    beta = float(np.linalg.norm(r))
    if (workspace is not None and workspace.dtype == dtype and workspace.ndim == 2
            and workspace.shape[0] >= max_steps + 1 and workspace.shape[1] == n):
        V = workspace[: max_steps + 1]
    else:
        V = np.empty((max_steps + 1, n), dtype=dtype)
    H = np.zeros((max_steps + 1, max_steps), dtype=dtype)
    R = np.zeros((max_steps + 1, max_steps), dtype=dtype)  # rotated copy of H
    Bk = None if C is None else np.zeros((C.shape[0], max_steps), dtype=dtype)
    cs = np.zeros(max_steps, dtype=dtype)
    sn = np.zeros(max_steps, dtype=dtype)
    g = np.zeros(max_steps + 1, dtype=dtype)
    g[0] = beta
    V[0] = r / beta
    history = []
    steps = 0
    complex_ = np.iscomplexobj(V)
    Ch = None if C is None else (C.conj() if complex_ else C)
    for j in range(max_steps):
        w = np.asarray(op(V[j]), dtype=dtype)
        if C is not None:
            b = Ch @ w
            w = w - b @ C
            Bk[:, j] = b
        basis = V[: j + 1]
        h = (basis.conj() if complex_ else basis) @ w  # conj() copies: real needs none
        w = w - h @ basis
        h2 = (basis.conj() if complex_ else basis) @ w  # second pass of CGS2
        w = w - h2 @ basis
        h = h + h2
        if C is not None:  # keep w orthogonal to C to working accuracy
            w = w - (Ch @ w) @ C
        hn = float(np.linalg.norm(w))
        H[: j + 1, j] = h
        H[j + 1, j] = hn
        col = H[: j + 2, j].copy()
        for i in range(j):  # previous rotations
            t = cs[i] * col[i] + sn[i] * col[i + 1]
            col[i + 1] = -np.conj(sn[i]) * col[i] + cs[i] * col[i + 1]
            col[i] = t
        a = col[j]
        denom = np.hypot(abs(a), hn)
        if denom == 0:
            steps = j
            break
        if a == 0:
            cs[j], sn[j] = 0.0, 1.0
            col[j] = hn
        else:
            cs[j] = abs(a) / denom
            sn[j] = (a / abs(a)) * hn / denom
            col[j] = (a / abs(a)) * denom
        col[j + 1] = 0.0
        R[: j + 2, j] = col
        g[j + 1] = -np.conj(sn[j]) * g[j]
        g[j] = cs[j] * g[j]
        steps = j + 1
        res = abs(g[j + 1])
        history.append(float(res))
        breakdown = hn <= BREAKDOWN * max(beta, np.linalg.norm(h))
        if breakdown:
            V[j + 1] = 0.0  # (an uninitialised workspace row) enters products times ~0
        else:
            V[j + 1] = w / hn
        if res <= target or breakdown:
            break
    j = steps
    y = sla.solve_triangular(R[:j, :j], g[:j]) if j else np.zeros(0, dtype=dtype)
    return ArnoldiCycle(
        V=V[: j + 1],
        H=H[: j + 1, :j],
        Bk=None if Bk is None else Bk[:, :j],
        y=y,
        residual=float(abs(g[j])) if j else beta,
        steps=j,
        history=history,
    )
