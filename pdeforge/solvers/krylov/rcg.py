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
the preconditioned residuals Z of the first ``store`` iterations of a solve are combined
with W in one Rayleigh-Ritz step on span[W, Z] for the pencil (A, M), M the
preconditioner, keeping the k Ritz vectors of smallest Ritz value for the next system.
The small matrices of that step come from CG's own scalars (:meth:`RecycledCG._ritz`) and
the vectors from the stored directions P and A P: no Gram product over n and no extra
matvec. Carrying W to a new matrix costs k products A_new W. The O(k n) deflation of every
iteration is what recycling costs; with a cheap preconditioner (Jacobi, none) on 5-point
stencils it costs more than the iterations it saves and the adaptive policy falls back to
plain PCG; with ILU(0) it pays (Darcy 80^2, lognormal, 200 systems: 55 against 85
iterations, ``benchmarks/results/skr_paper-ilu0.md``).
Written here because scipy's cg has no deflation or recycling.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla

from pdeforge.errors import SolverInputError
from pdeforge.solvers.krylov.base import (
    KrylovResult,
    Preconditioner,
    check_system,
    identity,
    relative_residual,
    result_dtype,
    rows_times,
    vector_norm,
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
            raise SolverInputError(f"recycle must be >= 0, got {recycle}")
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
        self._GW: np.ndarray | None = None  # W^T M W after the last Ritz update

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
        bnorm = vector_norm(b) or 1.0
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
        GW = None
        if self.W is not None and self.W.shape[0]:
            W = self.W
            # W^T M W, the M-Gram of W for the Ritz update: exact for a diagonal M or none,
            # else the one the last update left (W M-orthonormal there, in the previous
            # system's M: the neighbour's preconditioner stands in for this one's), or the
            # Euclidean one when no update left one
            if M_diag is not None:
                GW = (W * M_diag) @ W.T
            elif M is identity or self._GW is None or self._GW.shape[0] < W.shape[0]:
                GW = W @ W.T
            else:
                GW = self._GW[: W.shape[0], : W.shape[0]]
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
        history = [vector_norm(r) / bnorm]

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
        # the next recycle space: one Rayleigh-Ritz update over W and the first `store`
        # iterations after the solve (:meth:`_ritz`); W itself if nothing was stored
        W_new, AW_new = W, AW
        # the first `store` directions and their products, copied into buffers kept
        # between solves: fresh arrays for them (and np.stack-ing them) cost more than the
        # whole Rayleigh-Ritz arithmetic at n = 64^3 (page faults: 0.35 s of a 1.4 s solve)
        if self.recycle and (self._P is None or self._P.shape[1:] != (n,)
                             or self._P.dtype != dtype or self._P.shape[0] < self.store):
            self._P = np.empty((self.store, n), dtype=dtype)
            self._AP = np.empty((self.store, n), dtype=dtype)
        stored = 0
        # CG's scalars of the stored directions, from which the Ritz update takes its
        # small matrices (no Gram products): p_j^T A p_j, beta_j (p_j = deflated z_j +
        # beta_j p_j-1), r_j^T z_j, and mu_j = W A z_j (the deflation's own product)
        pAps, betas, rzs = np.empty(self.store), np.zeros(self.store), np.empty(self.store)
        mus = None if W is None else np.empty((self.store, W.shape[0]), dtype=mu.dtype)
        beta = 0.0
        while history[-1] * bnorm > target and matvecs < maxiter:
            Ap = A @ p
            matvecs += 1
            pAp = float(p @ Ap)
            if not pAp > 0:
                break  # not SPD (or breakdown): reported as not converged
            if self.recycle and stored < self.store:  # the first directions carry the
                self._P[stored] = p  # extreme spectrum
                self._AP[stored] = Ap
                pAps[stored], betas[stored], rzs[stored] = pAp, beta, rz
                if mus is not None:
                    mus[stored] = mu
                stored += 1
            alpha = rz / pAp
            x += alpha * p
            r -= alpha * Ap
            history.append(vector_norm(r) / bnorm)
            if history[-1] * bnorm <= target:
                break
            z = M(r)
            if np.shares_memory(z, r):  # no preconditioner: z must not alias r
                z = z.copy()
            rz_new = float(r @ z)
            if not rz_new > 0:
                break  # r^T M^-1 r <= 0: M is not SPD; reported as not converged
            beta = rz_new / rz
            p *= beta
            p += deflate(z)  # z is M's fresh output: deflated in place
            rz = rz_new
        res = relative_residual(A, x, b)
        iterations = len(history) - 1
        self._judge(A, iterations, 0 if W is None else W.shape[0], M_work)
        if stored and self.recycle:
            W_new, AW_new = self._ritz(
                W_new, AW_new, self._P[:stored], self._AP[:stored], GW,
                None if W is None else WAW, pAps[:stored], betas[:stored], rzs[:stored],
                None if mus is None else mus[:stored],
            )
        if self.recycle and W_new is not None:
            self.W = W_new
        self._last_iterations = iterations
        return KrylovResult(x, matvecs, res, res <= rtol, history)

    @staticmethod
    def _plain(A, b, rtol, maxiter, M, x0) -> KrylovResult:
        """Plain PCG (scipy's cg): iterations counted by its callback."""
        if x0 is not None and maxiter < 2:  # x0's residual is the budget's one product
            res = relative_residual(A, x0, b)
            return KrylovResult(np.array(x0, dtype=result_dtype(A, b)), 1, res, res <= rtol,
                                [res])
        count = [0]
        op = spla.LinearOperator(A.shape, matvec=M, dtype=result_dtype(A, b))
        # (the residual of a given x0 is a product of the budget)
        x, _ = spla.cg(A, b, x0=x0, rtol=rtol, maxiter=max(maxiter - (x0 is not None), 1),
                       M=op, callback=lambda _: count.__setitem__(0, count[0] + 1))
        res = relative_residual(A, x, b)
        start = 1.0 if x0 is None else relative_residual(A, x0, b)
        return KrylovResult(x, count[0] + (x0 is not None), res, res <= rtol, [start, res])

    def _judge(self, A, iterations: int, k: int, m_work: float = 0.0) -> None:
        """Stop recycling when it costs more work than it saves (counted, not timed).

        Work per unknown, in CSR-matvec flops (the weights of ``preconditioners.py``,
        measured): a CG iteration ~ 2 nnz/row + 10 + the preconditioner's ``work``;
        deflation adds 4k BLAS-2 flops per iteration, the carry-over k products with A,
        the Rayleigh-Ritz update ~4 k (k+s) BLAS-3 flops (the new vectors and A times
        them, from k + s stored ones). Compared with the iterations of
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
                elif (4 * self.recycle * (self.recycle + s) * GEMM_WEIGHT
                      > 0.5 * iterations * step):
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
                + 4 * k * (k + s) * GEMM_WEIGHT)
        if self._plain_iterations is not None and cost > self._plain_iterations * step:
            self._losses += 1
            if self._losses >= 2:
                self.recycle, self.W = 0, None
                self.stopped = ("recycled CG fell back to plain PCG after two systems where "
                                "deflation cost more work than it saved")
        else:
            self._losses = 0

    def _ritz(self, W, AW, P, AP, GW, WAW, pAp, beta, rz, mu):
        """Rayleigh-Ritz on span[W, Z] for the pencil (A, M): the k smallest Ritz vectors
        (as rows) and A times them, from CG's scalars and small matrices only.

        Z are the preconditioned residuals z_j = M^-1 r_j of the stored directions. With
        c_j = (W A W^T)^-1 mu_j, z_j = p_j - beta_j p_j-1 + W^T c_j, and in exact
        arithmetic (Saad, Yeung, Erhel & Guyomarc'h 2000; the Lanczos connection of CG, as
        eigCG, Stathopoulos & Orginos 2010, uses it):

        * Z^T M Z = diag(r_j^T z_j) (PCG's residuals are M^-1-orthogonal) and
          W M Z = W^T R = 0 (deflated residuals are orthogonal to W);
        * W A Z = [mu_j], and Z^T A Z = B^T diag(p^T A p) B + C^T [mu_j], B the
          bidiagonal of (p_j - beta_j p_j-1), since the directions are A-conjugate and
          A-orthogonal to W;
        * W^T M W = ``GW``.

        So the update costs no Gram product over n (at Darcy 80^2 with IC(0) the Gram
        product of [W, P] was 2.6 ms of a 20-25 ms system), and it targets the spectrum of
        the preconditioned operator (pencil (A, M) with M the preconditioner itself, which
        no product could give for ILU). The Ritz vectors, combinations of W and Z, are
        formed from W and P (z_j in terms of p_j, p_j-1 and W), with A times them from the
        stored products: no new matvecs.
        """
        if self.recycle == 0:
            return None, None
        s = len(pAp)
        k = 0 if W is None else W.shape[0]
        # Z^T A Z without the deflation term: (p_j - beta_j p_j-1)^T A (p_i - beta_i p_i-1)
        F = np.zeros((k + s, k + s))
        zz = F[k:, k:]
        zz[np.diag_indices(s)] = pAp
        zz[np.arange(1, s), np.arange(1, s)] += beta[1:] ** 2 * pAp[:-1]
        zz[np.arange(1, s), np.arange(s - 1)] = -beta[1:] * pAp[:-1]
        zz[np.arange(s - 1), np.arange(1, s)] = -beta[1:] * pAp[:-1]
        G = np.zeros((k + s, k + s))
        G[np.arange(k, k + s), np.arange(k, k + s)] = rz
        C = None
        if k:
            WAWs = (WAW + WAW.T) / 2
            C = np.linalg.solve(WAWs, mu.T)  # (k, s): c_j
            F[:k, :k] = WAWs
            F[:k, k:] = mu.T
            F[k:, :k] = mu
            zz += (C.T @ mu.T + mu @ C) / 2
            G[:k, :k] = (GW + GW.T) / 2
        # orthonormalise in the G inner product first: drops (near) dependent vectors
        g_val, g_vec = np.linalg.eigh(G)
        keep = g_val > 1e-12 * g_val.max()
        T = g_vec[:, keep] / np.sqrt(g_val[keep])
        _, Z = np.linalg.eigh(T.T @ F @ T)
        Y = T @ Z[:, : min(self.recycle, Z.shape[1])]  # G-orthonormal Ritz coefficients
        y_w, y_z = Y[:k], Y[k:]
        # as combinations of W and P: sum_j y_j z_j = W^T C y + sum_j (y_j - beta_j+1 y_j+1) p_j
        on_p = y_z.copy()
        on_p[:-1] -= beta[1:, None] * y_z[1:]
        coef = on_p if not k else np.vstack([y_w + C @ y_z, on_p])
        S = [P] if not k else [W, P]
        AS = [AP] if not k else [AW, AP]
        W_new = rows_times(coef, S)
        scale = 1.0 / np.linalg.norm(W_new, axis=1)
        W_new *= scale[:, None]
        self._GW = np.outer(scale, scale) * (Y.T @ G @ Y)  # the M-Gram of the rows
        AW_new = rows_times(coef * scale, AS)
        return W_new, AW_new
