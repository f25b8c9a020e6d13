"""Restarted GMRES(m) with right preconditioning (Saad & Schultz 1986).

The baseline of the SKR paper and pdeforge's non-recycling iterative method. Minimises
||b - A M^-1 y|| over a Krylov space of dimension m, then restarts from the true residual.
With right preconditioning the minimised residual is the true residual of x = M^-1 y, so
``rtol`` refers to ||b - A x|| / ||b||.
"""

from __future__ import annotations

import numpy as np

from pdeforge.solvers.krylov.arnoldi import arnoldi_cycle
from pdeforge.solvers.krylov.base import (
    KrylovResult,
    Preconditioner,
    at_rounding_floor,
    check_system,
    identity,
    relative_residual,
    result_dtype,
    vector_norm,
)


def gmres(
    A,
    b: np.ndarray,
    *,
    rtol: float = 1e-8,
    restart: int = 40,
    maxiter: int = 10_000,
    M: Preconditioner | None = None,
    x0: np.ndarray | None = None,
) -> KrylovResult:
    """Solve A x = b with GMRES(restart).

    Args:
        A: square matrix (sparse, dense or anything with ``@``).
        b: right-hand side.
        rtol: target relative residual ||b - A x|| / ||b||.
        restart: Krylov dimension m per cycle.
        maxiter: cap on matrix-vector products (the true residual's at each restart
            included).
        M: right preconditioner, a callable v -> M^-1 v.
        x0: initial guess (default zero).

    Returns:
        KrylovResult; ``converged`` is False if ``maxiter`` ran out first.
    """
    b = check_system(A, b)
    M = identity if M is None else M
    dtype = result_dtype(A, b)
    x = np.zeros(b.shape[0], dtype=dtype) if x0 is None else np.array(x0, dtype=dtype)
    bnorm = vector_norm(b) or 1.0
    target = rtol * bnorm
    matvecs = 0
    r = b - A @ x if x0 is not None else b.astype(dtype)
    matvecs += x0 is not None
    history = [vector_norm(r) / bnorm]
    true_before = history[0]  # the true residual at the last restart

    # a cycle that continues ends with a product for the true residual; the last one
    # (budget spent) does not: the reported residual below is then a check of the result,
    # not part of the solve (as in every solver here), so maxiter = 1 still takes a step
    while history[-1] * bnorm > target and matvecs < maxiter:
        # flexible storage (Z = M^-1 V kept, ``arnoldi.py``): the update x += Z y needs
        # no further application of M, one fewer per cycle
        steps = min(restart, maxiter - matvecs)
        cyc = arnoldi_cycle(lambda v: A @ v, r, steps, target,
                            precondition=None if M is identity else M)
        matvecs += cyc.steps
        if cyc.steps == 0:
            break
        x = x + cyc.y @ (cyc.V[: cyc.steps] if cyc.Z is None else cyc.Z)
        history += [h / bnorm for h in cyc.history[:-1]]
        if matvecs >= maxiter:
            history.append(cyc.history[-1] / bnorm)
            break
        r = b - A @ x  # true residual at each restart
        matvecs += 1
        history.append(vector_norm(r) / bnorm)
        if (history[-1] * bnorm > target and history[-1] > 0.5 * true_before
                and at_rounding_floor(A, x, b, r)):
            break  # an rtol below what double precision reaches (``at_rounding_floor``)
        true_before = history[-1]
    res = relative_residual(A, x, b)
    return KrylovResult(x, matvecs, res, res <= rtol, history)
