"""Recycled (deflated) preconditioned conjugate gradients for sequences of SPD systems.

Deflated CG (Saad, Yeung, Erhel, Guyomarc'h, "A deflated version of the conjugate gradient
algorithm", SIAM J. Sci. Comput. 21(5), 2000): given a subspace W (k vectors), start from
the Galerkin solution on W,

    x0 = x_-1 + W (W^T A W)^-1 W^T r_-1,

and keep every search direction A-orthogonal to W,

    p_j = z_j + beta_j p_j-1 - W (W^T A W)^-1 (A W)^T z_j,   z_j = M^-1 r_j,

so CG runs on the operator deflated of span W. When W approximates the eigenvectors of
the smallest eigenvalues, the effective condition number drops and so does the iteration
count.

Recycling along a sequence (as in Saad et al. 2000 and the RCG of Parks et al. 2006):
the first ``store`` search directions P of a solve (with A P kept from the iteration) are
combined with W in one Rayleigh-Ritz step on span[W, P] for the pencil (A, M)
(M = diag(A) for Jacobi, the identity otherwise), keeping the k Ritz vectors of smallest
Ritz value for the next system. Carrying W to a new matrix costs k products A_new W.
Measured on 5-point stencils (benchmarks/skr.py), the O(k n) work per iteration of the
deflation costs more than the iterations it saves: plain CG wins there; recycling pays
where a product with A (or the preconditioner) is expensive.
Written here because scipy's cg has no deflation or recycling.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla

from pdeforge.solvers.krylov.base import (
    KrylovResult,
    Preconditioner,
    check_system,
    identity,
    relative_residual,
    result_dtype,
    rows_times,
)
from pdeforge.solvers.krylov.preconditioners import GEMM_WEIGHT, gemv_weight

#: Recycling starts only after a first solve of at least this many iterations per
#: recycled vector (2k for k = 20: 40). Shorter solves (a strong preconditioner) leave
#: little for deflation to remove, and the carry-over, deflation and Ritz update then cost
#: more than they save, beyond what the counted work shows: measured with AMG on
#: lognormal Darcy, plain PCG 8 iterations and 13.4 ms a system at 80^2 against 10-11
#: products (carry-over included) and 18.1 ms deflated; at 64^3 10-11 iterations against
#: 13-14 products, 0.58-0.68 against 0.57-0.94 s.
MIN_FIRST_ITERATIONS_PER_RECYCLED = 2


class RecycledCG:
    """Deflated PCG that keeps a Ritz subspace between calls of :meth:`solve`.

    Args:
        recycle: k, dimension of the deflation space carried along the sequence.
        store: search directions kept for the Rayleigh-Ritz update (default 2k, >= 10).
        adaptive: stop recycling when counted work says it does not pay (``_judge``).
    """

    def __init__(self, recycle: int = 20, store: int | None = None,
                 adaptive: bool = True) -> None:
        if recycle < 0:
            raise ValueError(f"recycle must be >= 0, got {recycle}")
        self.recycle = int(recycle)
        self.store = int(store) if store is not None else max(2 * self.recycle, 10)
        self.adaptive = adaptive
        self.W: np.ndarray | None = None  # (k, n) rows
        self._last_iterations: int | None = None
        self._plain_iterations: int | None = None
        self._losses = 0
        self.stopped: str | None = None  # why recycling was switched off, if it was
        self._P: np.ndarray | None = None  # buffers of stored directions (store, n)
        self._AP: np.ndarray | None = None

    def reset(self) -> None:
        self.W = None
        self._last_iterations = None
        self._plain_iterations = None
        self._losses = 0

    def solve(
        self,
        A,
        b: np.ndarray,
        *,
        rtol: float = 1e-8,
        maxiter: int = 10_000,
        M: Preconditioner | None = None,
        M_diag: np.ndarray | None = None,
        M_work: float = 0.0,
        x0: np.ndarray | None = None,
    ) -> KrylovResult:
        """Solve the SPD system A x = b; update the deflation space.

        Args:
            M: preconditioner v -> M^-1 v (SPD).
            M_diag: the diagonal of M when M is diagonal (Jacobi), used as the inner
                product of the Ritz update; None means the Euclidean one.
            M_work: flops of one application of M per unknown, in CSR-matvec flops
                (``Preconditioner.work``), for the cost model of the adaptive policy.
            maxiter: cap on products with A (carry-over included).
        """
        b = check_system(A, b)
        M = identity if M is None else M
        dtype = result_dtype(A, b)
        n = b.shape[0]
        if self.W is not None and (self.W.shape[1] != n or self.W.dtype != dtype):
            self.W = None
        bnorm = float(np.linalg.norm(b)) or 1.0
        target = rtol * bnorm
        if self.recycle == 0:  # recycling off (policy or recycle=0): scipy's PCG, faster
            return self._plain(A, b, rtol, maxiter, M, x0)  # than this loop in Python
        x = np.zeros(n, dtype=dtype) if x0 is None else np.array(x0, dtype=dtype)
        matvecs = 0
        r = b.astype(dtype) if x0 is None else b - A @ x
        matvecs += x0 is not None
        W = AW = chol = None
        if self.W is not None and self._last_iterations is not None:
            # carrying k vectors costs k products with A: after a system that needed few
            # iterations keep only the smallest Ritz vectors (rows are sorted ascending)
            self.W = self.W[: max(1, min(self.W.shape[0], self._last_iterations // 2))]
        if self.W is not None and self.W.shape[0]:
            W = self.W
            AW = np.asarray(A @ W.T).T  # (k, n): k matvecs, one sparse-dense product
            matvecs += W.shape[0]
            WAW = W @ AW.T
            try:
                chol = sla.cho_factor((WAW + WAW.T) / 2)
            except np.linalg.LinAlgError:
                W = AW = chol = None  # W lost A-definiteness numerically: start afresh
            if chol is not None:
                coef = sla.cho_solve(chol, W @ r)
                x = x + coef @ W
                r = r - coef @ AW
        history = [float(np.linalg.norm(r)) / bnorm]

        # deflation operator z -> z - W^T (W^T A W)^-1 (A W) z as two products with
        # precomputed blocks: per iteration, 2 k n flops and no small solves in Python
        # (the small inverse first, then one C-ordered product: cho_solve on the (k, n)
        # block copied it to Fortran order, 1 ms of a 25 ms Darcy 80^2 IC(0) solve)
        WinvT = None if chol is None else sla.cho_solve(chol, np.eye(W.shape[0])) @ W
        if WinvT is not None:
            mu = np.empty(W.shape[0], dtype=np.result_type(AW, dtype))
            correction = np.empty(n, dtype=np.result_type(WinvT, mu))

        def deflate(z: np.ndarray) -> np.ndarray:
            """z deflated in place (the buffers above: no allocation per iteration)."""
            if WinvT is None:
                return z
            np.dot(AW, z, out=mu)
            np.dot(mu, WinvT, out=correction)
            z -= correction
            return z

        z = M(r)
        rz = float(r @ z)
        p = deflate(z.copy())  # p is updated in place: never r's or z's memory
        # the next recycle space: Rayleigh-Ritz over [W_new, last block of directions],
        # refreshed every `store` iterations (thick restart, as in eigCG / RCG)
        W_new, AW_new = W, AW
        # the first `store` directions and their products, copied into buffers kept
        # between solves: fresh arrays for them (and np.stack-ing them) cost more than the
        # whole Rayleigh-Ritz arithmetic at n = 64^3 (page faults: 0.35 s of a 1.4 s solve)
        if self.recycle and (self._P is None or self._P.shape[1:] != (n,)
                             or self._P.dtype != dtype or self._P.shape[0] < self.store):
            self._P = np.empty((self.store, n), dtype=dtype)
            self._AP = np.empty((self.store, n), dtype=dtype)
        stored = 0
        pAps = np.empty(self.store)
        while history[-1] * bnorm > target and matvecs < maxiter:
            Ap = A @ p
            matvecs += 1
            pAp = float(p @ Ap)
            if not pAp > 0:
                break  # not SPD (or breakdown): reported as not converged
            if self.recycle and stored < self.store:  # the first directions carry the
                self._P[stored] = p  # extreme spectrum
                self._AP[stored] = Ap
                pAps[stored] = pAp
                stored += 1
            alpha = rz / pAp
            x += alpha * p
            r -= alpha * Ap
            history.append(float(np.linalg.norm(r)) / bnorm)
            if history[-1] * bnorm <= target:
                break
            z = M(r)
            if np.shares_memory(z, r):  # no preconditioner: z must not alias r
                z = z.copy()
            rz_new = float(r @ z)
            p *= rz_new / rz
            p += deflate(z)  # z is M's fresh output: deflated in place
            rz = rz_new
        res = relative_residual(A, x, b)
        iterations = len(history) - 1
        self._judge(A, iterations, 0 if W is None else W.shape[0], M_work)
        if stored and self.recycle:
            W_new, AW_new = self._ritz(W_new, AW_new, self._P[:stored], self._AP[:stored],
                                       M_diag, None if W is None else WAW, pAps[:stored])
        if self.recycle and W_new is not None:
            self.W = W_new
        self._last_iterations = iterations
        return KrylovResult(x, matvecs, res, res <= rtol, history)

    @staticmethod
    def _plain(A, b, rtol, maxiter, M, x0) -> KrylovResult:
        """Plain PCG (scipy's cg): iterations counted by its callback."""
        count = [0]
        op = spla.LinearOperator(A.shape, matvec=M, dtype=result_dtype(A, b))
        x, _ = spla.cg(A, b, x0=x0, rtol=rtol, maxiter=max(maxiter, 1), M=op,
                       callback=lambda _: count.__setitem__(0, count[0] + 1))
        res = relative_residual(A, x, b)
        start = 1.0 if x0 is None else relative_residual(A, x0, b)
        return KrylovResult(x, count[0] + (x0 is not None), res, res <= rtol, [start, res])

    def _judge(self, A, iterations: int, k: int, m_work: float = 0.0) -> None:
        """Stop recycling when it costs more work than it saves (counted, not timed).

        Work per unknown, in CSR-matvec flops (the weights of ``preconditioners.py``,
        measured): a CG iteration ~ 2 nnz/row + 10 + the preconditioner's ``work``;
        deflation adds 4k BLAS-2 flops per iteration, the carry-over k products with A,
        the Rayleigh-Ritz update ~2 (k+s)^2 BLAS-3 flops. Compared with the iterations of
        the first (undeflated) solve of the sequence; two losing systems in a row switch
        recycling off (plain PCG from then on), and so does a first solve too short to
        repay even one Rayleigh-Ritz update at half the iterations, or shorter than
        ``MIN_FIRST_ITERATIONS_PER_RECYCLED`` x k iterations (a strong preconditioner).
        Counting BLAS-2/3 flops as sparse ones (as this did before) switched recycling off
        on Darcy 80^2 with IC(0), where it saves 20 % of the time (18.5-21 against 25.7 ms
        a system).
        """
        if not self.adaptive:
            return
        nnz_row = A.nnz / A.shape[0] if hasattr(A, "nnz") else A.shape[0]
        step = 2 * nnz_row + 10 + m_work
        n = A.shape[0]
        if k == 0:
            if self._plain_iterations is None:
                self._plain_iterations = iterations
                s = min(self.store, iterations)
                deflation = 4 * self.recycle * gemv_weight(2 * self.recycle * n * 8)
                # even halving the iterations would not repay one Rayleigh-Ritz update, or
                # the deflation of an iteration costs more than the iteration itself (it
                # would take 2x fewer iterations to break even; measured savings on these
                # families are 20-30 %): do not start recycling at all
                if iterations < MIN_FIRST_ITERATIONS_PER_RECYCLED * self.recycle:
                    self.recycle, self.W = 0, None
                    self.stopped = (f"recycled CG runs as plain PCG: the first solve took "
                                    f"{iterations} iterations, too few for a deflation "
                                    f"space to repay its overhead")
                elif 2 * (self.recycle + s) ** 2 * GEMM_WEIGHT > 0.5 * iterations * step:
                    self.recycle, self.W = 0, None
                    self.stopped = ("recycled CG runs as plain PCG: one Rayleigh-Ritz update "
                                    "would cost more than the first solve could save")
                elif deflation > step:
                    self.recycle, self.W = 0, None
                    self.stopped = ("recycled CG runs as plain PCG: deflating an iteration "
                                    "would cost more than the iteration itself")
            return
        s = min(self.store, iterations)
        cost = (iterations * (step + 4 * k * gemv_weight(2 * k * n * 8)) + k * 2 * nnz_row
                + 2 * (k + s) ** 2 * GEMM_WEIGHT)
        if self._plain_iterations is not None and cost > self._plain_iterations * step:
            self._losses += 1
            if self._losses >= 2:
                self.recycle, self.W = 0, None
                self.stopped = ("recycled CG fell back to plain PCG after two systems where "
                                "deflation cost more work than it saved")
        else:
            self._losses = 0

    def _ritz(self, W, AW, P, AP, M_diag, WAW, pAp):
        """Rayleigh-Ritz on span[W, P] for (A, M): the k smallest Ritz vectors and A times them.

        ``WAW``: W A W^T of the deflation (None when W is None); ``pAp``: p_j^T A p_j of the
        stored directions. A times the result is a combination of the stored products: no
        new matvecs. The Gram matrix of M is built block by block (no stacked copy of
        [W, P]).
        """
        if self.recycle == 0:
            return None, None
        S = [P] if W is None else [W, P]
        AS = [AP] if W is None else [AW, AP]
        # [W, P]^T A [W, P] from what the solve computed: the directions are A-conjugate
        # (P^T A P = diag(p_j^T A p_j)) and, deflated, A-orthogonal to W (W^T A P = 0),
        # so no Gram product with A [W, P] is needed (half the update's BLAS-3 work; the
        # same iterations along a Darcy 80^2 IC(0) sequence, 5-10 % less time, measured)
        k = 0 if W is None else W.shape[0]
        F = np.zeros((k + len(pAp), k + len(pAp)))
        if k:
            F[:k, :k] = (WAW + WAW.T) / 2
        F[k:, k:] = np.diag(pAp)
        G = _gram(S, S, M_diag)
        G = (G + G.T) / 2
        # orthonormalise in the G inner product first: drops (near) dependent directions
        g_val, g_vec = np.linalg.eigh(G)
        keep = g_val > 1e-12 * g_val.max()
        T = g_vec[:, keep] / np.sqrt(g_val[keep])
        _, Z = np.linalg.eigh(T.T @ F @ T)
        coef = T @ Z[:, : min(self.recycle, Z.shape[1])]
        W_new = rows_times(coef, S)
        scale = 1.0 / np.linalg.norm(W_new, axis=1)
        W_new *= scale[:, None]
        AW_new = rows_times(coef * scale, AS)
        return W_new, AW_new


#: columns per block of the Gram products: the blocks' temporaries stay in cache
_GRAM_COLUMNS = 8192


def _gram(X: list[np.ndarray], Y: list[np.ndarray], d: np.ndarray | None = None) -> np.ndarray:
    """[X_1; X_2; ...] diag(d) [Y_1; Y_2; ...]^T for row blocks, over column blocks."""
    rows = sum(x.shape[0] for x in X)
    cols = sum(y.shape[0] for y in Y)
    out = np.zeros((rows, cols), dtype=np.result_type(*X, *Y))
    n = X[0].shape[1]
    for lo in range(0, n, _GRAM_COLUMNS):
        hi = min(n, lo + _GRAM_COLUMNS)
        xs = np.concatenate([x[:, lo:hi] for x in X]) if len(X) > 1 else X[0][:, lo:hi]
        ys = np.concatenate([y[:, lo:hi] for y in Y]) if len(Y) > 1 else Y[0][:, lo:hi]
        if d is not None:
            ys = ys * d[lo:hi]
        out += xs @ ys.T
    return out
