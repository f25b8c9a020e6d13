"""GCRO-DR(m, k): GMRES with deflated restarting and Krylov subspace recycling.

Parks, de Sturler, Mackey, Johnson, Maiti, "Recycling Krylov subspaces for sequences of
linear systems", SIAM J. Sci. Comput. 28(5), 2006 (Algorithm 2.1). The recycle space U_k
(with C_k = B U_k orthonormal, B = A M^-1 the right-preconditioned operator) is kept from
one cycle to the next and from one system to the next:

* carry-over to a new operator (lines 5-8 of the paper's algorithm):
  [Q, R] = qr(B_new U_k); C_k = Q; U_k = U_k R^-1; x += M^-1 U_k C_k^H r; r -= C_k C_k^H r;
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

With an expensive preconditioner (spilu) the cycles are flexible, as in Carvalho,
Gratton, Lago and Vasseur, "A flexible generalized conjugate residual method with inner
orthogonalization and deflated restarting", SIAM J. Matrix Anal. Appl. 32(4), 2011: the
Arnoldi cycle keeps Z = M^-1 V, and the space is kept in the solution's coordinates too
(Us = M^-1 U, A Us = C_k), updated from [Us D_k, Z] with the coefficients of U's update.
No update then applies M, and a solve whose predecessor converged in one cycle carries
the space in the solution's coordinates, C_k = qr(A_new Us), with products with A only
(the new M's coordinates of that space are unknown; its harmonic Ritz problems use W^H Us
in place of W^H U, HPDDM's "strategy A"). Where solves restart, deflation inside the solve
needs U in the new M's coordinates and the carry-over applies M to it, as above.

Real matrices stay in real arithmetic: a complex-conjugate pair of harmonic Ritz vectors
contributes the real and imaginary parts of one of them (the same real 2-D space).
Written here because neither scipy nor pyamg has GCRO-DR (scipy's gcrotmk is GCROT(m, k),
which recycles a space chosen by a different, residual-based criterion).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from pdeforge.errors import SolverInputError
from pdeforge.solvers.krylov.arnoldi import arnoldi_cycle
from pdeforge.solvers.krylov.base import (
    KrylovResult,
    Preconditioner,
    at_rounding_floor,
    check_system,
    identity,
    relative_residual,
    result_dtype,
    rows_times,
    vector_norm,
)
from pdeforge.solvers.krylov.preconditioners import GEMM_WEIGHT

#: a column of R (in U = Y R^-1) smaller than this relative to the largest is dropped
RANK_TOL = 1e-10
#: ``give_up_after``: a solve whose residual is still above this fraction of its start
#: after that many products is abandoned
STALL = 0.9
#: ... and one whose first EARLY_STEPS Arnoldi steps left the residual above EARLY_STALL
#: of where they started, at once: no headway at all (see :meth:`GCRODR.solve`)
EARLY_STEPS, EARLY_STALL = 2, 0.98
#: Residual replacement (van der Vorst and Ye, "Residual replacement strategies for Krylov
#: subspace iterative methods for the convergence of true residuals", SIAM J. Sci.
#: Comput. 22(3), 2000): the updated residual r - C B_k y - V H y drifts from b - A x by
#: the rounding of A U = C, which the R^-1 of each new U amplifies when the recycled
#: vectors are near-null directions; the drift grows with the residual norm the cycles
#: start from. So once the updated residual has fallen by this factor since r was last the
#: true one, it is replaced by b - A x (one product) and projected again. Measured on a
#: bidiagonal matrix with eigenvalues 1e-3-7e-3 and 1-3 (condition 2.5e8), GCRO-DR(25, 10)
#: to rtol 1e-10 on six right-hand sides: first solves 54-55 products with it; without,
#: 56-380 and two that stagnated (updated residual 7e-10, true 3e-5 and 9e-4) until the
#: 10^4 cap. Replacing after every cycle did no better (55-59).
REPLACEMENT = 1e-4


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
    P: np.ndarray, spaces: list[list[np.ndarray] | None], GP: np.ndarray, W: list[np.ndarray]
) -> tuple[list[np.ndarray | None], np.ndarray]:
    """U = Vhat P R^-1 for each Vhat in ``spaces`` and C = W Q, from [Q, R] = qr(G P),
    dropping rank-deficient directions.

    Rows are vectors: each Vhat and W are lists of row blocks (not stacked into a copy);
    P is (rows of Vhat, k), GP is G P. P R^-1 is formed first (k x k work), so each U
    takes one pass over its Vhat. ``spaces`` holds the same search space in the
    solution's and in the preconditioned coordinates (None: not tracked).
    """
    Q, R = np.linalg.qr(GP)
    d = np.abs(np.diag(R))
    keep = d > RANK_TOL * (d.max() if d.size else 1.0)
    Q, R = Q[:, keep], R[np.ix_(keep, keep)]
    coef = P[:, keep] @ _upper_inverse(R)
    return [None if V is None else rows_times(coef, V) for V in spaces], rows_times(Q, W)


def _upper_inverse(R: np.ndarray) -> np.ndarray:
    """R^-1 of a small upper triangular R (k x k)."""
    return sla.solve_triangular(R, np.eye(R.shape[0], dtype=R.dtype), check_finite=False)


def _orthonormal_rows(
    AU: np.ndarray, Us: list[np.ndarray | None]
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """(C, [U T for U in Us]) with C = T AU orthonormal rows, by Cholesky QR twice
    (CholQR2); ``Us``: the space in the solution's and preconditioned coordinates.

    The carry-over's qr(A_new U) of a tall block: LAPACK's Householder QR of 262144 x 20
    took 85 ms (scipy) and 205 ms (numpy) with one thread, against ~10 ms for the Gram
    matrix G = AU AU^H (one GEMM). T = Lambda^-1/2 W^H from G = W Lambda W^H makes the
    rows of C = T AU orthonormal to eps kappa(AU)^2, and a second pass to eps (Fukaya,
    Nakatsukasa, Yanagisawa, Yamamoto, "CholeskyQR2", 2014); it runs only when the first
    left C C^H further than 1e-12 from I (A_new U is close to orthonormal along a sorted
    sequence: the previous C = A_old U was). Directions with singular values below 1e-6
    of the largest are dropped (their C would be noise).
    """
    for _ in range(3):
        G = AU @ AU.conj().T
        lam, W = np.linalg.eigh(G)
        keep = lam > 1e-12 * lam.max()
        if not keep.any():  # A U = 0 to rounding: nothing to carry
            return AU[:0], [None if U is None else U[:0] for U in Us]
        T = (W[:, keep] / np.sqrt(lam[keep])).conj().T
        AU, Us = T @ AU, [None if U is None else T @ U for U in Us]
        if np.abs(AU @ AU.conj().T - np.eye(AU.shape[0])).max() <= 1e-12:
            break
    return AU, Us


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
            raise SolverInputError(
                f"need 0 <= recycle < restart (GCRO-DR(m, k) keeps k of its m Krylov "
                f"vectors), got recycle={recycle}, restart={restart}: lower recycle (its "
                "default is 20) or raise restart")
        self.restart = int(restart)
        self.recycle = int(recycle)
        #: the recycle space as (k, n) rows in the coordinates of the last preconditioner
        #: M, as Parks et al.'s U_k (the solution's are M^-1 U), None where unknown
        #: (carried to a new M in the solution's coordinates)
        self.U: np.ndarray | None = None
        #: the same space in the solution's coordinates, kept by flexible solves only
        self.Us: np.ndarray | None = None
        self.C: np.ndarray | None = None
        self._M = None  # the preconditioner of the last solve
        self._cycles = 0  # Arnoldi cycles the last solve ran
        self._last_krylov: int | None = None  # Krylov steps the last solve needed
        self._plain_work: float | None = None
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

    def _cycle(self, A, M, flexible: bool, r: np.ndarray, steps: int, target: float, C,
               give_up):
        """One Arnoldi cycle in the kept buffers, flexible (Z = M^-1 V kept) or not."""
        buf = self._basis(r.shape[0], np.result_type(r.dtype, np.float64))
        op = (lambda v: A @ v) if flexible else (lambda v: A @ M(v))
        return arnoldi_cycle(op, r, steps, target, C=C, workspace=buf[: self.restart + 1],
                             give_up=give_up, precondition=M if flexible else None,
                             zspace=buf[self.restart + 1:])

    @property
    def space(self) -> np.ndarray | None:
        """The recycled space's rows in either coordinates (None: nothing recycled)."""
        return self.U if self.U is not None else self.Us

    def reset(self) -> None:
        """Forget the recycle space (the next solve starts with a GMRES cycle)."""
        self.Us = self.U = self.C = None
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
        were at 0.9-1.0). Such a solve is also abandoned as soon as its first
        ``EARLY_STEPS`` Arnoldi steps cut the residual by less than 2 % (measured, two
        steps with a sorted neighbour's spilu: advection-diffusion 128^2 0.99-1.00 of the
        start in 9 of 10 pairs, none of which converged in 200 products; Darcy 80^2
        0.88-0.94 and Helmholtz 100^2 0.50-0.90 in every pair that converged, the
        slowest in 59 products; only one of 15 Helmholtz pairs, 0.90 and 107 products,
        was near the line).
        ``M_work``: the cost of one application of M per unknown in CSR-matvec flops
        (``Preconditioner.work``), for the policy that stops carrying (:meth:`_judge`).
        """
        b = check_system(A, b)
        M = identity if M is None else M
        dtype = result_dtype(A, b)
        real = not np.iscomplexobj(np.zeros(0, dtype=dtype))
        n = b.shape[0]
        space = self.space
        if space is not None and (space.shape[1] != n or space.dtype != dtype):
            self.reset()  # a system of another size or field: nothing to carry over
        bnorm = vector_norm(b) or 1.0
        target = rtol * bnorm
        x = np.zeros(n, dtype=dtype) if x0 is None else np.array(x0, dtype=dtype)
        matvecs = 0
        if x0 is not None:
            r = b - A @ x
            matvecs += 1
        else:
            r = b.astype(dtype)
        history = [vector_norm(r) / bnorm]
        krylov_steps = 0
        stall_norm = STALL * history[0] * bnorm

        abandoned = [False]  # set by the first cycle's early check

        def stalled(spent: int, res: float) -> bool:
            return give_up_after is not None and (
                abandoned[0] or (spent >= give_up_after and res > stall_norm))

        def give_up(spent: int):
            """The check of a cycle started after ``spent`` products (None: never)."""
            if give_up_after is None:
                return None
            if krylov_steps:
                return lambda steps, res: stalled(spent + steps, res)
            early = EARLY_STALL * vector_norm(r)  # the first cycle's start

            def check(steps: int, res: float) -> bool:
                abandoned[0] = abandoned[0] or (steps >= EARLY_STEPS and res > early)
                return stalled(spent + steps, res)

            return check

        # Flexible cycles keep Z = M^-1 V and the space in the solution's coordinates too:
        # the updates then need no application of M, but each harmonic Ritz update takes
        # a second pass over the basis (one GEMM). That pays where an application of M
        # costs more than the GEMM: spilu (near-exact), not ILU(0) or Jacobi (measured on
        # Helmholtz 100^2 with ILU(0): 13 % slower flexible, the same products).
        m = self.restart
        flexible = M is not identity and M_work > 2.0 * m * self.recycle * GEMM_WEIGHT

        def project(r: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """x += U C^H r; r -= C C^H r (minimal residual over span U)."""
            coef = (self.C if real else self.C.conj()) @ r
            dx = coef @ self.Us if flexible else M(coef @ self.U)
            return r - coef @ self.C, x + dx

        if not self.carry or (not flexible and self.U is None):
            self.reset()  # (a space known in the solution's coordinates only: dropped)
        carried_rows = 0 if self.space is None else self.space.shape[0]
        if carried_rows and self._last_krylov is not None:
            # with a strong preconditioner the last system needed few Krylov steps: keep
            # the most useful half of that many (rows by harmonic Ritz value, smallest
            # first). Carrying all of them made the next solve slower, not only dearer:
            # spilu on advection-diffusion 512^2, 7 carried, 9 and 16 applications of M
            # against 7 fresh; 128^2, 5 carried, 5 and 10 against 5
            keep_k = max(1, min(carried_rows, self._last_krylov // 2))
            self.Us = None if self.Us is None else self.Us[:keep_k]
            self.U = None if self.U is None else self.U[:keep_k]
        carried = bool(carried_rows)
        carry_solves = 0
        if carried:
            if not flexible:
                U = np.stack([M(u) for u in self.U])  # as Parks et al.: C = qr(A M^-1 U)
                carry_solves = U.shape[0]
            elif M is self._M and self.Us is not None:
                U = self.Us  # (a reused preconditioner: both coordinates still hold)
            elif self.U is not None and (self.Us is None or self._cycles > 1):
                # solves that restart: deflation inside the solve needs the space in
                # the new M's coordinates (exact harmonic Ritz problems), which costs k
                # applications of M (measured with ILU(0) on advection-diffusion 128^2:
                # 134-216 products a system with them, 344-521 without)
                U = np.stack([M(u) for u in self.U])
                carry_solves = U.shape[0]
            else:
                # one-cycle solves (a strong preconditioner): the space is carried in the
                # solution's coordinates with products with A only (k spilu solves are
                # 33 ms each at 512^2, a product with A 1.5 ms)
                U, self.U = self.Us, None
            AU = np.ascontiguousarray((A @ U.T).T)  # one sparse product with the block
            matvecs += U.shape[0]
            self.C, (U, self.U) = _orthonormal_rows(AU, [U, self.U])
            self.Us = U if flexible else None
            r, x = project(r, x)
            history.append(vector_norm(r) / bnorm)
        self._M = M
        cycles = 0
        if not carried and history[-1] * bnorm > target:
            # first system: one GMRES(m) cycle, then harmonic Ritz vectors of H_m
            cyc = self._cycle(A, M, flexible, r, min(m, max(maxiter - matvecs, 1)), target,
                              None, give_up(matvecs))
            cycles += 1
            matvecs += cyc.steps
            krylov_steps += cyc.steps
            j = cyc.steps
            if j:
                x = x + (cyc.y @ cyc.Z if flexible else M(cyc.y @ cyc.V[:j]))
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
                        spaces = [[cyc.V[:j]], [cyc.Z] if flexible else None]
                        (self.U, self.Us), self.C = _new_recycle_space(
                            P, spaces, cyc.H @ P, [cyc.V])
        synced = history[0] * bnorm  # the residual norm when r was last the true one
        while matvecs < maxiter:
            rnorm = vector_norm(r)
            if rnorm > target and stalled(matvecs, rnorm):
                break
            if rnorm <= target or rnorm < REPLACEMENT * synced:
                # confirm with the true residual before stopping, and replace the updated
                # one by it once it has fallen by REPLACEMENT since the last replacement
                true_r = b - A @ x
                matvecs += 1
                true_norm = vector_norm(true_r)
                if true_norm <= target:
                    break
                if true_norm > 0.5 * synced and at_rounding_floor(A, x, b, true_r):
                    break  # an rtol below what double precision reaches
                r = true_r
                if self.C is not None and self.C.shape[0]:
                    r, x = project(r, x)
                synced = vector_norm(r)
            k = 0 if self.C is None else self.C.shape[0]
            steps = min(m - k, maxiter - matvecs)
            if steps <= 0:
                break
            cyc = self._cycle(A, M, flexible, r, steps, target, self.C if k else None,
                              give_up(matvecs))
            cycles += 1
            matvecs += cyc.steps
            krylov_steps += cyc.steps
            j = cyc.steps
            if j == 0:
                break
            y2 = cyc.y
            coef = np.concatenate([y2, -(cyc.Bk @ y2)])[:, None] if k else y2[:, None]
            if flexible:
                x = x + rows_times(coef, [cyc.Z] + ([self.Us] if k else []))[0]
            else:
                x = x + M(rows_times(coef, [cyc.V[:j]] + ([self.U] if k else []))[0])
            r = r - (cyc.H @ y2) @ cyc.V
            history += [h / bnorm for h in cyc.history]
            if self.carry or history[-1] * bnorm > target:
                # a space that neither restarts this solve nor goes to the next system
                # is not computed (its eigenproblem and products cost ~10 % of a short
                # solve with a strong preconditioner)
                self._update_recycle_space(cyc, k, real, dtype)
        self._cycles, self._last_krylov = cycles, krylov_steps
        res = relative_residual(A, x, b)
        if not res <= history[0]:
            # never an iterate worse than the start (or NaN): on a singular, inconsistent
            # system the recycled space's R^-1 amplified rounding and the updated residual
            # parted from the true one (true relative residuals 154 and 2897 from a start
            # of 1, where our GMRES ended at 0.065 and 0.29)
            x = np.zeros(n, dtype=dtype) if x0 is None else np.array(x0, dtype=dtype)
            res = history[0]
        nnz_row = A.nnz / n if hasattr(A, "nnz") else n
        self._judge(matvecs + (krylov_steps + carry_solves) * M_work / (2.0 * nnz_row),
                    carried)
        return KrylovResult(x, matvecs, res, res <= rtol, history)

    def _judge(self, work: float, carried: bool) -> None:
        """Stop recycling when it does not save work (counted, not timed).

        ``work``: the solve's products with A plus its applications of the preconditioner
        weighted by their cost, in products with A (the carry-over's included).
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

    def _update_recycle_space(self, cyc, k: int, real: bool, dtype) -> None:
        """Harmonic Ritz vectors of smallest magnitude over span[U, V] (Parks et al. 2.4),
        kept in the preconditioned coordinates (U, from [U, V]) and, after a flexible
        cycle, in the solution's (Us, from [Us, Z] with the same coefficients)."""
        j = cyc.steps
        kk = min(self.recycle, k + j)
        if kk == 0:
            return
        flexible = cyc.Z is not None
        if k:
            # the space in the preconditioned coordinates of this solve's M (exact, as
            # Parks et al.) or, where unknown after a carry-over to a new M, in the
            # solution's (HPDDM's "strategy A": W^H U then mixes two spaces; with ILU(0)
            # on advection-diffusion 128^2 it took 2.5x the products of the exact)
            Ub = self.U if self.U is not None else self.Us
            # Vhat = [Ub D_k, V_j] with D_k normalising Ub's rows: D_k is applied to the
            # small factors below, never to a copy of U
            Dk = 1.0 / np.linalg.norm(Ub, axis=1)
            G = np.zeros((k + j + 1, k + j), dtype=dtype)
            G[:k, :k] = np.diag(Dk)
            G[:k, k:] = cyc.Bk
            G[k:, k:] = cyc.H
            # W = [C; V_{j+1}] is the cycle's basis buffer Q (one block)
            W = [cyc.Q]
            spaces = [None if self.U is None else [self.U, cyc.V[:j]],
                      [self.Us, cyc.Z] if flexible else None]
            # W^H Vhat = [[C^H U D_k, C^H V_j], [V^H U D_k, V^H V_j]] with C^H V_j = 0 and
            # V^H V_j = I by construction (Parks et al. 2006, section 2.4): only the
            # first block column takes products over n, one GEMM with Q
            WhV = np.zeros((k + j + 1, k + j), dtype=dtype)
            QU = cyc.Q @ Ub.T if real else (cyc.Q @ Ub.conj().T).conj()
            WhV[:, :k] = QU * Dk
            WhV[k:, k:] = np.eye(j + 1, j)
        else:
            G = cyc.H
            W = [cyc.V]
            spaces = [[cyc.V[:j]], [cyc.Z] if flexible else None]
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
            (self.U, self.Us), self.C = _new_recycle_space(scaled, spaces, G @ P, W)
