"""GCRO-DR(m, k): GMRES with deflated restarting and Krylov subspace recycling.

Parks, de Sturler, Mackey, Johnson, Maiti, "Recycling Krylov subspaces for sequences of
linear systems", SIAM J. Sci. Comput. 28(5), 2006 (Algorithm 2.1). The recycle space U_k
(with C_k = B U_k orthonormal, B = A M^-1 the right-preconditioned operator) is kept from
one cycle to the next and from one system to the next:

* carry-over to a new operator (line 5-8 of the paper's algorithm):
  [Q, R] = qr(B_new U_k); C_k = Q; U_k = U_k R^-1; x += U_k C_k^H r; r -= C_k C_k^H r;
* each cycle runs m - k steps of Arnoldi with (I - C_k C_k^H) B, giving
  B V_{m-k} = C_k B_k + V_{m-k+1} H_{m-k};
* the minimal-residual update over span[U_k, V_{m-k}]. Because C_k^H r = 0, the block
  least-squares problem reduces to GMRES's min ||beta e1 - H y2|| and
  y1 = -B_k y2 (with the unnormalised U_k), so the update is x += M^-1 (V y2 - U_k B_k y2);
* a new U_k from the k harmonic Ritz vectors of smallest magnitude with respect to
  span[U_k, V]: G^H G z = theta G^H W^H V_hat z with G = [[D_k, B_k], [0, H]],
  W = [C_k, V_{m-k+1}], V_hat = [U_k D_k, V_{m-k}], then [Q, R] = qr(G P_k),
  C_k = W Q, U_k = V_hat P_k R^-1.
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


def _right_solve(Y: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Rows of Y R^-1 (columns convention), i.e. R^-T Y for row-stored vectors.

    The small k x k inverse times a (k, n) block is one GEMM; a triangular solve with n
    right-hand sides would need a transposed copy of Y first.
    """
    return _upper_inverse(R).T @ Y


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
        self.U: np.ndarray | None = None  # (k, n) rows, preconditioned coordinates
        self.C: np.ndarray | None = None
        self._last_krylov: int | None = None  # Krylov steps the last solve needed
        self._plain_matvecs: int | None = None
        self._losses = 0
        self.carry = True  # carry the recycle space to the next system
        self.stopped: str | None = None  # why carrying was switched off, if it was
        self._workspace: np.ndarray | None = None

    def _basis(self, n: int, dtype) -> np.ndarray:
        """The Arnoldi basis buffer, (restart + 1, n), kept between cycles and solves."""
        if self._workspace is None or self._workspace.shape[1] != n or \
                self._workspace.dtype != dtype:
            self._workspace = np.empty((self.restart + 1, n), dtype=dtype)
        return self._workspace

    def reset(self) -> None:
        """Forget the recycle space (the next solve starts with a GMRES cycle)."""
        self.U = self.C = None
        self._last_krylov = None

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

        def op(v: np.ndarray) -> np.ndarray:
            return A @ M(v)

        def project(r: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """x += U C^H r; r -= C C^H r (minimal residual over span U)."""
            coef = (self.C if real else self.C.conj()) @ r
            return r - coef @ self.C, x + M(coef @ self.U)

        if not self.carry:
            self.U = self.C = None
        if self.U is not None and self._last_krylov is not None:
            # carrying k vectors costs k products: with a strong preconditioner the last
            # system needed few Krylov steps, so keep only the most useful half of that
            # many (rows are ordered by harmonic Ritz value, smallest first)
            keep_k = max(1, min(self.U.shape[0], self._last_krylov // 2))
            self.U = self.U[:keep_k]
        carried = self.U is not None and self.U.shape[0] > 0
        if carried:
            BU = np.stack([op(u) for u in self.U])  # carry-over: C = qr(B_new U)
            matvecs += self.U.shape[0]
            Q, R = np.linalg.qr(BU.T)
            d = np.abs(np.diag(R))
            keep = d > RANK_TOL * d.max()
            self.C = np.ascontiguousarray(Q[:, keep].T)
            self.U = _right_solve(self.U[keep], R[np.ix_(keep, keep)])
            r, x = project(r, x)
            history.append(float(np.linalg.norm(r)) / bnorm)
        elif history[-1] * bnorm > target:
            # first system: one GMRES(m) cycle, then harmonic Ritz vectors of H_m
            cyc = arnoldi_cycle(op, r, min(self.restart, max(maxiter - matvecs, 1)), target,
                                workspace=self._basis(n, dtype), give_up=give_up(matvecs))
            matvecs += cyc.steps
            krylov_steps += cyc.steps
            j = cyc.steps
            if j:
                x = x + M(cyc.y @ cyc.V[:j])
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
                        self.U, self.C = _new_recycle_space(P, [cyc.V[:j]], cyc.H @ P,
                                                            [cyc.V])
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
            C = self.C if k else None
            cyc = arnoldi_cycle(op, r, steps, target, C=C, workspace=self._basis(n, dtype),
                                give_up=give_up(matvecs))
            matvecs += cyc.steps
            krylov_steps += cyc.steps
            j = cyc.steps
            if j == 0:
                break
            y2 = cyc.y
            if k:
                y1 = -(cyc.Bk @ y2)
                x = x + M(y2 @ cyc.V[:j] + y1 @ self.U)
            else:
                x = x + M(y2 @ cyc.V[:j])
            r = r - (cyc.H @ y2) @ cyc.V
            history += [h / bnorm for h in cyc.history]
            if self.carry or history[-1] * bnorm > target:
                # a space that neither restarts this solve nor goes to the next system
                # is not computed (its eigenproblem and products cost ~10 % of a short
                # solve with a strong preconditioner)
                self._update_recycle_space(cyc, k, real, dtype)
        res = relative_residual(A, x, b)
        self._last_krylov = krylov_steps
        self._judge(matvecs, carried)
        return KrylovResult(x, matvecs, res, res <= rtol, history)

    def _judge(self, matvecs: int, carried: bool) -> None:
        """Stop recycling when it does not save products with A (counted, not timed).

        The first solve of a sequence starts without a recycled space (GMRES(m), then
        deflated restarts); if two systems in a row need at least as many products with
        the carried space (carry-over included) as that one did, the space is no longer
        carried between systems: each starts afresh, still with deflated restarting inside
        (what pays with near-exact ILU preconditioners, benchmarks/skr.py).
        """
        if not carried:
            if self._plain_matvecs is None:
                self._plain_matvecs = matvecs
            return
        if self._plain_matvecs is not None and matvecs >= self._plain_matvecs:
            self._losses += 1
            self.carry = self._losses < 2
            if not self.carry:
                self.stopped = ("GCRO-DR stopped carrying its space between systems: two "
                                "carried solves needed no fewer products than a fresh one")
        else:
            self._losses = 0

    def _update_recycle_space(self, cyc, k: int, real: bool, dtype) -> None:
        """Harmonic Ritz vectors of smallest magnitude over span[U, V] (Parks et al. 2.4)."""
        j = cyc.steps
        kk = min(self.recycle, k + j)
        if kk == 0:
            return
        if k:
            # Vhat = [U D_k, V_j] with D_k normalising U's rows: D_k is applied to the
            # small factors below, never to a copy of U
            Dk = 1.0 / np.linalg.norm(self.U, axis=1)
            G = np.zeros((k + j + 1, k + j), dtype=dtype)
            G[:k, :k] = np.diag(Dk)
            G[:k, k:] = cyc.Bk
            G[k:, k:] = cyc.H
            # W = [C; V_{j+1}] is the cycle's basis buffer Q (one block)
            W = [cyc.Q]
            Vhat = [self.U, cyc.V[:j]]
            # W^H Vhat = [[C^H U D_k, C^H V_j], [V^H U D_k, V^H V_j]] with C^H V_j = 0 and
            # V^H V_j = I by construction (Parks et al. 2006, section 2.4): only the
            # first block column takes products over n, one GEMM with Q
            WhV = np.zeros((k + j + 1, k + j), dtype=dtype)
            QU = cyc.Q @ self.U.T if real else (cyc.Q @ self.U.conj().T).conj()
            WhV[:, :k] = QU * Dk
            WhV[k:, k:] = np.eye(j + 1, j)
        else:
            G = cyc.H
            W = [cyc.V]
            Vhat = [cyc.V[:j]]
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
