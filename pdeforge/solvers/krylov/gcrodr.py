"""GCRO-DR(m, k): GMRES with deflated restarting and Krylov subspace recycling.

Parks, de Sturler, Mackey, Johnson, Maiti, "Recycling Krylov subspaces for sequences of
linear systems", SIAM J. Sci. Comput. 28(5), 2006 (Algorithm 2.1), in the flexible form
of Carvalho, Gratton, Lago and Vasseur, "A flexible generalized conjugate residual method
with inner orthogonalization and deflated restarting", SIAM J. Matrix Anal. Appl. 32(4),
2011: the recycle space U_k is kept in the coordinates of the solution (with C_k = A U_k
orthonormal), not in the right-preconditioned ones, so that it stays valid when the
preconditioner changes from one system to the next. It is kept from one cycle to the next
and from one system to the next:

* carry-over to a new matrix (lines 5-8 of the paper's algorithm): [Q, R] = qr(A_new U_k);
  C_k = Q; U_k = U_k R^-1; x += U_k C_k^H r; r -= C_k C_k^H r. Products with A only: in
  preconditioned coordinates the carry-over costs k applications of the preconditioner
  too (k spilu solves, 33 ms each at 512^2, against 1.5 ms for a product with A);
* each cycle runs m - k steps of flexible Arnoldi (``arnoldi.py``) with (I - C_k C_k^H) A
  M^-1, keeping Z = M^-1 V: A Z_{m-k} = C_k B_k + V_{m-k+1} H_{m-k};
* the minimal-residual update over span[U_k, Z_{m-k}]. Because C_k^H r = 0, the block
  least-squares problem reduces to GMRES's min ||beta e1 - H y2|| and y1 = -B_k y2 (with
  the unnormalised U_k), so the update is x += Z y2 - U_k B_k y2, with no further
  application of the preconditioner;
* a new U_k from the k harmonic Ritz vectors of smallest magnitude with respect to
  span[U_k, Z]: G^H G z = theta G^H W^H V_hat z with G = [[D_k, B_k], [0, H]],
  W = [C_k, V_{m-k+1}], V_hat = [U_k D_k, Z_{m-k}], then [Q, R] = qr(G P_k),
  C_k = W Q, U_k = V_hat P_k R^-1. Without a preconditioner this is Parks et al.'s
  problem exactly; with one, W^H U_k mixes the residual and solution spaces, as in the
  flexible variants (Carvalho et al.; HPDDM's default "strategy A"): the space is still
  exact in C_k = A U_k, only the choice of the k directions kept is approximate.
* The first cycle of the first system is GMRES(m) followed by the harmonic Ritz problem
  (H_m + h_{m+1,m}^2 H_m^-H e_m e_m^T) z = theta z.

Real matrices stay in real arithmetic: a complex-conjugate pair of harmonic Ritz vectors
contributes the real and imaginary parts of one of them (the same real 2-D space).
Written here because neither scipy nor pyamg has GCRO-DR (scipy's gcrotmk is GCROT(m, k),
which recycles a space chosen by a different, residual-based criterion).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from pdeforge.solvers.krylov.arnoldi import arnoldi_cycle
from pdeforge.solvers.krylov.base import (
    KrylovResult,
    Preconditioner,
    check_system,
    identity,
    relative_residual,
    result_dtype,
    rows_times,
)

#: a column of R (in U = Y R^-1) smaller than this relative to the largest is dropped
RANK_TOL = 1e-10
#: ``give_up_after``: a solve whose residual is still above this fraction of its start
#: after that many products is abandoned
STALL = 0.9


def smallest_eigvecs(theta: np.ndarray, Z: np.ndarray, k: int, real: bool) -> np.ndarray:
    """Columns spanning the eigenvectors of the k eigenvalues of smallest magnitude.

    For ``real`` problems, a conjugate pair is represented by the real and imaginary
    parts of one member; a pair cut by the k-th position is dropped whole (k - 1 columns).
    """
    ok = np.isfinite(theta)
    theta, Z = theta[ok], Z[:, ok]
    order = np.argsort(np.abs(theta), kind="stable")
    if not real:
        return Z[:, order[:k]]
    cols: list[np.ndarray] = []
    used = np.zeros(theta.size, dtype=bool)
    for i in order:
        if len(cols) >= k:
            break
        if used[i]:
            continue
        used[i] = True
        if abs(theta[i].imag) <= 1e-12 * max(1.0, abs(theta[i])):
            cols.append(Z[:, i].real)
            continue
        if len(cols) + 2 > k:
            break
        partner = int(np.argmin(np.where(used, np.inf, np.abs(theta - np.conj(theta[i])))))
        used[partner] = True
        cols += [Z[:, i].real, Z[:, i].imag]
    if not cols:
        return np.zeros((Z.shape[0], 0))
    return np.stack(cols, axis=1)


def _new_recycle_space(
    P: np.ndarray, Vhat: list[np.ndarray], GP: np.ndarray, W: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """U = Vhat P R^-1 and C = W Q from [Q, R] = qr(G P), dropping rank-deficient directions.

    Rows are vectors: Vhat and W are lists of row blocks (not stacked into a copy); P is
    (rows of Vhat, k), GP is G P. P R^-1 is formed first (k x k work), so U takes one
    pass over Vhat.
    """
    Q, R = np.linalg.qr(GP)
    d = np.abs(np.diag(R))
    keep = d > RANK_TOL * (d.max() if d.size else 1.0)
    Q, R = Q[:, keep], R[np.ix_(keep, keep)]
    return rows_times(P[:, keep] @ _upper_inverse(R), Vhat), rows_times(Q, W)


def _upper_inverse(R: np.ndarray) -> np.ndarray:
    """R^-1 of a small upper triangular R (k x k)."""
    return sla.solve_triangular(R, np.eye(R.shape[0], dtype=R.dtype), check_finite=False)


def _orthonormal_rows(AU: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, U T) with C = T AU orthonormal rows, by Cholesky QR twice (CholQR2).

    The carry-over's qr(A_new U) of a tall block: LAPACK's Householder QR of 262144 x 20
    took 85 ms (scipy) and 205 ms (numpy) with one thread, against ~10 ms for the Gram
    matrix G = AU AU^H (one GEMM). T = Lambda^-1/2 W^H from G = W Lambda W^H makes C T-
    orthonormal to eps kappa(AU)^2, and a second pass restores it to eps (Fukaya,
    Nakatsukasa, Yanagisawa, Yamamoto, "CholeskyQR2", 2014); it runs only when the first
    left C C^H further than 1e-12 from I (A_new U is close to orthonormal along a sorted
    sequence: the previous C = A_old U was). Directions with singular values below 1e-6
    of the largest are dropped (their C would be noise).
    """
    for _ in range(3):
        G = AU @ AU.conj().T
        lam, W = np.linalg.eigh(G)
        keep = lam > 1e-12 * lam.max()
        T = (W[:, keep] / np.sqrt(lam[keep])).conj().T
        AU, U = T @ AU, T @ U
        if np.abs(AU @ AU.conj().T - np.eye(AU.shape[0])).max() <= 1e-12:
            break
    return AU, U


class GCRODR:
    """GCRO-DR(m, k) solver that keeps its recycle space between calls of :meth:`solve`.

    Args:
        restart: m, the dimension of the search space per cycle (recycled + Krylov).
        recycle: k, the dimension of the recycled space.

    Example:
        >>> solver = GCRODR(restart=40, recycle=20)
        >>> results = [solver.solve(A, b, rtol=1e-8) for A, b in systems]  # doctest: +SKIP
    """

    def __init__(self, restart: int = 40, recycle: int = 20) -> None:
        if not 0 <= recycle < restart:
            raise ValueError(f"need 0 <= recycle < restart, got recycle={recycle}, "
                             f"restart={restart}")
        self.restart = int(restart)
        self.recycle = int(recycle)
        self.U: np.ndarray | None = None  # (k, n) rows, in the solution's coordinates
        self.C: np.ndarray | None = None
        self._plain_work: int | None = None
        self._losses = 0
        self.carry = True  # carry the recycle space to the next system
        self.stopped: str | None = None  # why carrying was switched off, if it was
        self._workspace: np.ndarray | None = None

    def _basis(self, n: int, dtype) -> np.ndarray:
        """The buffer of the Arnoldi basis V, (restart + 1, n), and of the flexible
        cycle's Z = M^-1 V, (restart, n), in one allocation kept between cycles and
        solves."""
        if self._workspace is None or self._workspace.shape[1] != n or \
                self._workspace.dtype != dtype:
            self._workspace = np.empty((2 * self.restart + 1, n), dtype=dtype)
        return self._workspace

    def _cycle(self, A, M, r: np.ndarray, steps: int, target: float, C, give_up):
        """One (flexible, when M is not the identity) Arnoldi cycle in the kept buffers."""
        buf = self._basis(r.shape[0], np.result_type(r.dtype, np.float64))
        return arnoldi_cycle(
            lambda v: A @ v, r, steps, target, C=C, workspace=buf[: self.restart + 1],
            give_up=give_up, precondition=None if M is identity else M,
            zspace=buf[self.restart + 1:])

    def reset(self) -> None:
        """Forget the recycle space (the next solve starts with a GMRES cycle)."""
        self.U = self.C = None

    def solve(
        self,
        A,
        b: np.ndarray,
        *,
        rtol: float = 1e-8,
        maxiter: int = 10_000,
        M: Preconditioner | None = None,
        x0: np.ndarray | None = None,
        give_up_after: int | None = None,
        M_work: float = 0.0,
    ) -> KrylovResult:
        """Solve A x = b, recycling from previous calls, and update the recycle space.

        ``maxiter`` caps matrix-vector products with A (carry-over included).
        ``give_up_after``: abandon the solve (reported not converged, from its current
        iterate) once this many products are spent with the residual still above
        ``STALL`` of its start: a caller trying a reused preconditioner passes the
        products a fresh one needed for a whole solve; one that has not cut the residual
        by a tenth in that many is unfit for this matrix (measured: neighbours' spilu
        factors on advection-diffusion 128^2 left the residual at 1.0 for 30 products and
        ran 200, against 5-6 with a fresh factor; on Helmholtz 100^2 those that converged
        (33-41 products) had cut it to 0.3-0.6 after 5, those that did not (157, 200+)
        were at 0.9-1.0).
        ``M_work``: the cost of one application of M per unknown in CSR-matvec flops
        (``Preconditioner.work``), for the policy that stops carrying (:meth:`_judge`).
        """
        b = check_system(A, b)
        M = identity if M is None else M
        dtype = result_dtype(A, b)
        real = not np.iscomplexobj(np.zeros(0, dtype=dtype))
        n = b.shape[0]
        if self.U is not None and (self.U.shape[1] != n or self.U.dtype != dtype):
            self.reset()  # a system of another size or field: nothing to carry over
        bnorm = float(np.linalg.norm(b)) or 1.0
        target = rtol * bnorm
        x = np.zeros(n, dtype=dtype) if x0 is None else np.array(x0, dtype=dtype)
        matvecs = 0
        if x0 is not None:
            r = b - A @ x
            matvecs += 1
        else:
            r = b.astype(dtype)
        history = [float(np.linalg.norm(r)) / bnorm]
        krylov_steps = 0
        stall_norm = STALL * history[0] * bnorm

        def stalled(spent: int, res: float) -> bool:
            return give_up_after is not None and spent >= give_up_after and res > stall_norm

        def give_up(spent: int):
            """The check of a cycle started after ``spent`` products (None: never)."""
            if give_up_after is None:
                return None
            return lambda steps, res: stalled(spent + steps, res)

        def project(r: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """x += U C^H r; r -= C C^H r (minimal residual over span U)."""
            coef = (self.C if real else self.C.conj()) @ r
            return r - coef @ self.C, x + coef @ self.U

        if not self.carry:
            self.U = self.C = None
        carried = self.U is not None and self.U.shape[0] > 0
        if carried:
            # carry-over: C = qr(A_new U), one sparse product with the block of U
            AU = np.ascontiguousarray((A @ self.U.T).T)
            matvecs += self.U.shape[0]
            self.C, self.U = _orthonormal_rows(AU, self.U)
            r, x = project(r, x)
            history.append(float(np.linalg.norm(r)) / bnorm)
        elif history[-1] * bnorm > target:
            # first system: one GMRES(m) cycle, then harmonic Ritz vectors of H_m
            cyc = self._cycle(A, M, r, min(self.restart, max(maxiter - matvecs, 1)), target,
                              None, give_up(matvecs))
            matvecs += cyc.steps
            krylov_steps += cyc.steps
            j = cyc.steps
            if j:
                Zj = cyc.V[:j] if cyc.Z is None else cyc.Z
                x = x + cyc.y @ Zj
                r = r - (cyc.H @ cyc.y) @ cyc.V
                history += [h / bnorm for h in cyc.history]
                k = min(self.recycle, j) if (self.carry or history[-1] * bnorm > target) else 0
                if k:
                    Hm = cyc.H[:j, :j]
                    hlast = cyc.H[j, j - 1]
                    em = np.zeros(j)
                    em[-1] = 1.0
                    f = np.linalg.solve(Hm.conj().T, em)
                    Haug = Hm.copy()
                    Haug[:, -1] += abs(hlast) ** 2 * f
                    theta, Z = sla.eig(Haug)
                    P = smallest_eigvecs(theta, Z, k, real).astype(dtype, copy=False)
                    if P.shape[1]:
                        self.U, self.C = _new_recycle_space(P, [Zj], cyc.H @ P, [cyc.V])
        while matvecs < maxiter:
            rnorm = float(np.linalg.norm(r))
            if rnorm > target and stalled(matvecs, rnorm):
                break
            if rnorm <= target:
                true_r = b - A @ x  # confirm with the true residual before stopping
                matvecs += 1
                if np.linalg.norm(true_r) <= target:
                    break
                r = true_r
                if self.C is not None and self.C.shape[0]:
                    r, x = project(r, x)
            k = 0 if self.C is None else self.C.shape[0]
            steps = min(self.restart - k, maxiter - matvecs)
            if steps <= 0:
                break
            cyc = self._cycle(A, M, r, steps, target, self.C if k else None,
                              give_up(matvecs))
            matvecs += cyc.steps
            krylov_steps += cyc.steps
            j = cyc.steps
            if j == 0:
                break
            y2 = cyc.y
            Zj = cyc.V[:j] if cyc.Z is None else cyc.Z
            if k:
                y1 = -(cyc.Bk @ y2)
                x = x + rows_times(np.concatenate([y2, y1])[:, None], [Zj, self.U])[0]
            else:
                x = x + y2 @ Zj
            r = r - (cyc.H @ y2) @ cyc.V
            history += [h / bnorm for h in cyc.history]
            if self.carry or history[-1] * bnorm > target:
                # a space that neither restarts this solve nor goes to the next system
                # is not computed (its eigenproblem and products cost ~10 % of a short
                # solve with a strong preconditioner)
                self._update_recycle_space(cyc, Zj, k, real, dtype)
        res = relative_residual(A, x, b)
        nnz_row = A.nnz / n if hasattr(A, "nnz") else n
        self._judge(matvecs + krylov_steps * M_work / (2.0 * nnz_row), carried)
        return KrylovResult(x, matvecs, res, res <= rtol, history)

    def _judge(self, work: float, carried: bool) -> None:
        """Stop recycling when it does not save work (counted, not timed).

        ``work``: the solve's products with A plus its applications of the preconditioner
        weighted by their cost, in products with A (the carry-over costs products only).
        The first solve of a sequence starts without a recycled space (GMRES(m), then
        deflated restarts); if two systems in a row need at least as much work with the
        carried space (carry-over included) as that one did, the space is no longer
        carried between systems: each starts afresh, still with deflated restarting inside
        (what pays with near-exact ILU preconditioners, benchmarks/skr.py).
        """
        if not carried:
            if self._plain_work is None:
                self._plain_work = work
            return
        if self._plain_work is not None and work >= self._plain_work:
            self._losses += 1
            self.carry = self._losses < 2
            if not self.carry:
                self.stopped = ("GCRO-DR stopped carrying its space between systems: two "
                                "carried solves needed no less work than a fresh one")
        else:
            self._losses = 0

    def _update_recycle_space(self, cyc, Zj: np.ndarray, k: int, real: bool, dtype) -> None:
        """Harmonic Ritz vectors of smallest magnitude over span[U, Z] (Parks et al. 2.4;
        ``Zj``: the cycle's M^-1 V_j, or V_j itself without a preconditioner)."""
        j = cyc.steps
        kk = min(self.recycle, k + j)
        if kk == 0:
            return
        if k:
            # Vhat = [U D_k, Z_j] with D_k normalising U's rows: D_k is applied to the
            # small factors below, never to a copy of U
            Dk = 1.0 / np.linalg.norm(self.U, axis=1)
            G = np.zeros((k + j + 1, k + j), dtype=dtype)
            G[:k, :k] = np.diag(Dk)
            G[:k, k:] = cyc.Bk
            G[k:, k:] = cyc.H
            # W = [C; V_{j+1}] is the cycle's basis buffer Q (one block)
            W = [cyc.Q]
            Vhat = [self.U, Zj]
            # W^H Vhat = [[C^H U D_k, C^H V_j], [V^H U D_k, V^H V_j]] with C^H V_j = 0 and
            # V^H V_j = I by construction (Parks et al. 2006, section 2.4): only the
            # first block column takes products over n, one GEMM with Q. With a
            # preconditioner the Krylov block is taken in its coordinates (V_j, not
            # Z_j), as flexible GMRES-DR does, and U in the solution's (module docstring)
            WhV = np.zeros((k + j + 1, k + j), dtype=dtype)
            QU = cyc.Q @ self.U.T if real else (cyc.Q @ self.U.conj().T).conj()
            WhV[:, :k] = QU * Dk
            WhV[k:, k:] = np.eye(j + 1, j)
        else:
            G = cyc.H
            W = [cyc.V]
            Vhat = [Zj]
            WhV = np.eye(j + 1, j, dtype=dtype)  # V^H V_j of the Arnoldi basis
        GhG = G.conj().T @ G
        try:
            theta, Z = sla.eig(GhG, G.conj().T @ WhV)
        except (np.linalg.LinAlgError, ValueError):
            return  # keep the current space
        P = smallest_eigvecs(theta, Z, kk, real).astype(dtype, copy=False)
        if P.shape[1]:
            scaled = P.copy()  # Vhat P with Vhat's first block U D_k: D_k scales P's rows
            if k:
                scaled[:k] *= Dk[:, None]
            self.U, self.C = _new_recycle_space(scaled, Vhat, G @ P, W)
