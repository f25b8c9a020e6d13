"""Benchmark of dataset generation by linear solves: pdeforge's SKR against every peer.

``run_skr_benchmark`` builds the N systems of a problem family (exactly those of
``pdeforge generate``), then solves all of them with each peer in one process, under the
same BLAS thread limit:

* ``scipy-gmres``: scipy.sparse.linalg.gmres(restart=40), independent per system (the SKR
  paper's baseline), preconditioner built per system;
* ``scipy-cg`` (SPD only) and ``scipy-gcrotmk`` (recycling across calls through its CU
  list, m=40-k, k=20);
* ``splu``: sparse LU per system (once for a family with one matrix), ordered and pivoted
  for its pattern as ``method="direct"`` does (``lu_options``);
* ``pyamg``: a hierarchy per system, smoothed aggregation as a CG-accelerated solver for
  SPD matrices, AIR preconditioning scipy's GMRES(40) for real nonsymmetric ones, none
  for indefinite or complex symmetric ones (:func:`_pyamg`);
* pdeforge's ``gmres``, ``gcrodr``, ``skr`` and ``auto`` through ``solve_sequence``.

Each peer gets ``budget`` seconds per configuration; one that runs out is stopped and its
per-system time is extrapolated from the systems it finished (reported with the count).
Every solution's true residual is checked. With ``repeats`` > 1 every peer that finished
all systems within half the budget is run again, in rounds over all of them (so that a
slow spell of the machine hits every peer alike), ``FAST_REPEATS`` times as often when the
configuration's fastest peer takes under ``FAST_SECONDS`` (every peer within
``FAST_PEER_SECONDS``, so that those competing for the best time get as many runs), and
its time is the best of its runs:
on the 2-core development VM one run of a sub-100 ms solve varied by up to 30 %, more
than the 10 % margins the comparisons are about. auto and the fastest other peer, and skr
and gcrotmk with each preconditioner, then run in back-to-back pairs, alternating which
runs first, and auto / best other and skr vs gcrotmk are taken from the pairs
(:func:`_pair_peers`, :func:`paired_ratio`). All runs are kept (``runs``,
``pair_ratios``). Used by ``benchmarks/skr.py`` and ``pdeforge bench skr``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits

from pdeforge.datasets.problems import build_problem
from pdeforge.errors import PdeforgeError
from pdeforge.runtime import allocator_tuned, tune_cpu_allocator
from pdeforge.solvers.krylov import build_preconditioner, is_spd, is_symmetric, solve_sequence
from pdeforge.solvers.krylov.base import relative_residual
from pdeforge.solvers.krylov.sequence import lu_options


@dataclass
class PeerResult:
    peer: str
    preconditioner: str
    rtol: float
    systems: int  # systems actually solved (fewer than N when the budget ran out)
    seconds_per_system: float
    matvecs_per_system: float | None
    max_residual: float
    converged: int
    note: str = ""
    runs: list[float] = field(default_factory=list)  # seconds per system of every run
    #: auto and skr: the peer this one was paired with (:func:`_pair_peers`) and this
    #: one's time over that peer's in each back-to-back pair
    paired_with: str = ""
    pair_ratios: list[float] = field(default_factory=list)


@dataclass
class ConfigResult:
    family: str
    resolution: int
    n: int  # unknowns
    n_systems: int
    spd: bool
    options: dict
    peers: list[PeerResult] = field(default_factory=list)
    #: products a system allowed to every iterative peer (scipy's restart cycles and
    #: gcrotmk's outer iterations converted to products)
    maxiter: int = 10_000
    #: glibc's allocator kept freed memory in this run (``pdeforge.runtime``, applied by
    #: :func:`run_preset`); runs stored before it existed read False
    allocator_tuned: bool = False
    #: seconds each peer was allowed and the requested repeats (None: stored before
    #: they were recorded)
    budget: float | None = None
    repeats: int | None = None
    #: when the configuration finished (UTC, ISO 8601; None: stored before it was
    #: recorded): ``--family`` reruns keep the other families' earlier results
    measured: str | None = None


#: runs per requested repeat in a configuration whose fastest peer solves it in under
#: FAST_SECONDS, for every peer that takes at most FAST_PEER_SECONDS: the peers that
#: compete for the best time get the same number of runs (the best of 8 runs of splu
#: against the best of 2 of auto, the same sparse LU, made auto 1.16x "slower" on
#: Helmholtz 100^2, where splu took 0.97 s a configuration and auto 1.0 s)
FAST_REPEATS = 4
FAST_SECONDS, FAST_PEER_SECONDS = 1.0, 4.0


class _OverBudget(Exception):
    pass


#: products a system allowed to every iterative peer unless a configuration says
#: otherwise (where every Krylov peer stalls, e.g. Helmholtz 512^2 with ILU, 10^4
#: products took 500-850 s a system: PRESETS cap them lower, stated in the results)
MAXITER = 10_000


class _Capped(Exception):
    pass


class _Counter:
    """Counts the products of a scipy solve and stops it at ``cap`` (raises _Capped)."""

    def __init__(self, A, cap: int = MAXITER):
        self.A, self.count, self.cap = A, 0, cap
        self.shape, self.dtype = A.shape, A.dtype

    def matvec(self, v):
        if self.count >= self.cap:
            raise _Capped
        self.count += 1
        return self.A @ v

    def op(self):
        return spla.LinearOperator(self.shape, matvec=self.matvec, dtype=self.dtype)


def _budget_note(budget: float, done: int, total: int, order: str = "") -> str:
    """The note of a peer the time budget stopped before the end ("" when it was not)."""
    if done >= total:
        return ""
    return f"stopped by the {budget:g} s budget after {done} of {total} systems{order}"


def _scipy_iterative(kind: str, systems, pre: str, rtol: float, budget: float,
                     spd: bool, maxiter: int = MAXITER) -> PeerResult:
    """Independent scipy solves (gmres, cg) or gcrotmk recycling through CU."""
    t0 = time.perf_counter()
    mv, res, conv, done = 0, [], 0, 0
    cu: list = []
    last: list = [None]

    def keep(xk):
        last[0] = xk

    for A, b in systems:
        p = build_preconditioner(pre, A)
        M = None if p.apply is None else spla.LinearOperator(A.shape, matvec=p.apply,
                                                             dtype=A.dtype)
        # the counter stops a solve at `maxiter` products; the iterate kept is the last one
        # scipy reported (a reference, not a copy: no extra work per iteration)
        c = _Counter(A, maxiter)
        last[0] = np.zeros_like(b)

        try:
            if kind == "scipy-gmres":  # scipy's maxiter counts restart cycles
                x, _ = spla.gmres(c.op(), b, rtol=rtol, restart=40, M=M, callback=keep,
                                  callback_type="x", maxiter=-(-maxiter // 40) + 1)
            elif kind == "scipy-cg":
                x, _ = spla.cg(c.op(), b, rtol=rtol, maxiter=maxiter + 1, M=M, callback=keep)
            else:
                x, _ = spla.gcrotmk(c.op(), b, rtol=rtol, maxiter=maxiter, M=M, m=20, k=20,
                                    CU=cu, discard_C=True, callback=keep)
        except _Capped:
            x = last[0]
            # as gcrotmk's discard_C does on return: C = A U belongs to this matrix
            cu[:] = [(None, u) for _, u in cu]
        mv += c.count
        r = relative_residual(A, x, b)
        res.append(r)
        conv += r <= rtol * 1.0001
        done += 1
        if time.perf_counter() - t0 > budget:
            break
    secs = (time.perf_counter() - t0) / done
    return PeerResult(kind, pre, rtol, done, secs, mv / done, float(max(res)), int(conv),
                      note=_budget_note(budget, done, len(systems)))


def _splu(systems, rtol: float, budget: float, spd: bool) -> PeerResult:
    t0 = time.perf_counter()
    res, done, last, lu = [], 0, None, None
    for A, b in systems:
        if A is not last:
            # the ordering and pivoting a careful user picks for the matrix (the same as
            # method="direct"): minimum degree on A^T + A for a symmetric pattern
            lu = spla.splu(sp.csc_matrix(A), **lu_options(A, spd))
            last = A
        x = lu.solve(b)
        res.append(relative_residual(A, x, b))
        done += 1
        if time.perf_counter() - t0 > budget:
            break
    secs = (time.perf_counter() - t0) / done
    return PeerResult("splu", "none", rtol, done, secs, 0.0, float(max(res)),
                      int(sum(r <= rtol for r in res)),
                      note=_budget_note(budget, done, len(systems)))


def _pyamg(systems, rtol: float, budget: float, spd: bool,
           maxiter: int = MAXITER) -> PeerResult:
    """pyamg's solver per system, as its documentation recommends for the matrix class.

    SPD: a smoothed aggregation hierarchy as a CG-accelerated solver. Otherwise: an AIR
    hierarchy (approximate ideal restriction, pyamg's AMG for nonsymmetric and
    advection-dominated matrices; Manteuffel et al., SIAM J. Sci. Comput. 2019) with its
    default settings, one V-cycle preconditioning scipy's GMRES(40) (pyamg's own GMRES
    stops on the preconditioned residual: on advection-diffusion 256^2 it returned true
    residuals of 3e-6 at tol 1e-8), products capped at ``maxiter``.
    """
    import pyamg

    t0 = time.perf_counter()
    res, done, its = [], 0, 0
    last: list = [None]

    def keep(xk):
        last[0] = xk

    for A, b in systems:
        if spd:
            ml = pyamg.smoothed_aggregation_solver(sp.csr_matrix(A), max_coarse=200)
            hist: list = []
            x = ml.solve(b, tol=rtol, accel="cg", maxiter=500, residuals=hist)
            its += len(hist)
        else:
            ml = pyamg.air_solver(sp.csr_matrix(A))
            c = _Counter(A, maxiter)
            last[0] = np.zeros_like(b)
            try:
                x, _ = spla.gmres(c.op(), b, rtol=rtol, restart=40,
                                  M=ml.aspreconditioner(cycle="V"), callback=keep,
                                  callback_type="x", maxiter=-(-maxiter // 40) + 1)
            except _Capped:
                x = last[0]
            its += c.count
        res.append(relative_residual(A, x, b))
        done += 1
        if time.perf_counter() - t0 > budget:
            break
    secs = (time.perf_counter() - t0) / done
    return PeerResult("pyamg", "amg" if spd else "air", rtol, done, secs, its / done,
                      float(max(res)), int(sum(r <= rtol * 1.0001 for r in res)),
                      note=_budget_note(budget, done, len(systems)))


def _name(p: PeerResult) -> str:
    """A peer's name in the tables: peer/preconditioner (e.g. ``splu/none``)."""
    return f"{p.peer}/{p.preconditioner}"


def _label(method: str, out) -> str:
    """A peer's name: skr and auto with the strategy they ran (e.g. ``skr(skr-rcg)``)."""
    return method if method not in ("skr", "auto") else f"{method}({out.method})"


def _ours(method: str, mats, rhs, feats, pre: str | None, rtol: float, budget: float,
          spd: bool, maxiter: int = MAXITER, dim: int | None = None) -> PeerResult:
    # budget: solve a prefix of the sequence, growing until the budget is used
    N = len(mats)
    pre_arg = None if pre in (None, "auto") else pre
    t0 = time.perf_counter()
    if method == "gmres":  # independent solves: stop at the budget like scipy's peers
        parts = []
        for i in range(N):
            parts.append(solve_sequence(mats[i], rhs[i], method="gmres", rtol=rtol,
                                        preconditioner=pre_arg, spd=spd, maxiter=maxiter,
                                        dim=dim))
            if time.perf_counter() - t0 > budget:
                break
        k = len(parts)
        secs = (time.perf_counter() - t0) / k
        its = np.concatenate([p.iterations for p in parts])
        resid = np.concatenate([p.residuals for p in parts])
        conv = np.concatenate([p.converged for p in parts])
        return PeerResult("gmres", pre or "none", rtol, k, secs, float(its.mean()),
                          float(resid.max()), int(conv.sum()), note=_budget_note(budget, k, N))
    done = [0]

    def watch(_: int) -> None:
        done[0] += 1
        if time.perf_counter() - t0 > budget and done[0] < N:
            raise _OverBudget

    try:
        out = solve_sequence(mats, rhs, features=feats, method=method, rtol=rtol,
                             preconditioner=pre_arg, spd=spd, progress=watch,
                             maxiter=maxiter, dim=dim)
    except _OverBudget as exc:  # the systems solved so far come with the exception
        secs = (time.perf_counter() - t0) / done[0]
        part = exc.partial
        ok = part.solved
        # auto: the preconditioner it ran, as for a finished run below
        used = part.preconditioner if method == "auto" else (pre or "auto")
        return PeerResult(_label(method, part), used, rtol, int(ok.sum()), secs,
                          float(part.iterations[ok].mean()), float(part.residuals[ok].max()),
                          int(part.converged.sum()),
                          note=_budget_note(budget, done[0], N, " (in its sorted order)"))
    k = N
    secs = (time.perf_counter() - t0) / k
    label = _label(method, out)
    used = "auto" if pre in (None, "auto") else pre
    if method == "auto":
        used = out.preconditioner
    return PeerResult(label, used, rtol, k, secs, float(out.iterations.mean()),
                      float(out.residuals.max()), int(out.converged.sum()))


def run_skr_benchmark(
    family: str,
    resolution: int,
    n_systems: int,
    preconditioners: list[str],
    rtols: list[float],
    options: dict | None = None,
    budget: float = 60.0,
    peers: list[str] | None = None,
    log: Callable[[str], None] = print,
    repeats: int = 1,
    maxiter: int = MAXITER,
) -> ConfigResult:
    """All peers on the first ``n_systems`` samples of ``family`` at ``resolution``.

    ``repeats``: runs of each peer that fits in half the budget (best time kept).
    ``maxiter``: products a system allowed to every iterative peer; a system not solved
    within them is reported as not converged.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if maxiter < 1:
        raise ValueError(f"maxiter must be >= 1, got {maxiter}")
    prob = build_problem(family, resolution, **(options or {}))
    samples = [prob.build(0, i) for i in range(n_systems)]
    mats = [s.A for s in samples]
    rhs = np.stack([s.b for s in samples])
    feats = np.stack([s.features for s in samples])
    spd = is_spd(mats[0]) if prob.spd is None else prob.spd
    result = ConfigResult(family, resolution, mats[0].shape[0], n_systems, spd,
                          dict(options or {}), maxiter=maxiter,
                          allocator_tuned=allocator_tuned(), budget=budget, repeats=repeats)
    systems = list(zip(mats, rhs, strict=True))
    # pyamg has solvers for SPD (smoothed aggregation) and for real nonsymmetric matrices
    # (AIR), none for indefinite or complex symmetric ones (Helmholtz)
    amg_applies = spd or (not np.iscomplexobj(mats[0].data) and not is_symmetric(mats[0]))
    all_peers = peers or ["scipy-gmres", "scipy-cg", "scipy-gcrotmk", "splu", "pyamg",
                          "gmres", "gcrodr", "skr", "auto"]

    def measure(peer: str, pre: str | None, rtol: float) -> PeerResult:
        if peer == "splu":
            return _splu(systems, rtol, budget, spd)
        if peer == "pyamg":
            return _pyamg(systems, rtol, budget, spd, maxiter)
        if peer == "auto":
            return _ours("auto", mats, rhs, feats, None, rtol, budget, spd, maxiter, prob.dim)
        if peer.startswith("scipy-"):
            return _scipy_iterative(peer, systems, pre, rtol, budget, spd, maxiter)
        return _ours(peer, mats, rhs, feats, pre, rtol, budget, spd, maxiter, prob.dim)

    with threadpool_limits(limits=1, user_api="blas"):
        for rtol in rtols:
            todo = [(peer, None) for peer in ("splu", "pyamg", "auto")
                    if peer in all_peers and (peer != "pyamg" or amg_applies)]
            todo += [(peer, pre) for pre in preconditioners if pre != "amg" or spd
                     for peer in all_peers if peer not in ("splu", "pyamg", "auto")
                     and (peer != "scipy-cg" or spd)]
            runs: list[tuple[PeerResult, str, str | None]] = []
            for peer, pre in todo:
                r = measure(peer, pre, rtol)
                r.runs = [r.seconds_per_system]
                result.peers.append(r)
                runs.append((r, peer, pre))
                log(_line(result, r))
            again = [(r, peer, pre) for r, peer, pre in runs if r.systems == n_systems and
                     not r.note and r.seconds_per_system * n_systems <= budget / 2]
            # a configuration solved in under a second is at the mercy of a slow spell of
            # the machine: its peers get FAST_REPEATS times the runs (seconds at most)
            fast = repeats > 1 and min(
                (r.seconds_per_system * n_systems for r, _, _ in again),
                default=math.inf) < FAST_SECONDS
            wanted = {id(r): repeats * (FAST_REPEATS if fast and r.seconds_per_system *
                                        n_systems <= FAST_PEER_SECONDS else 1)
                      for r, _, _ in again}
            for _ in range(max(wanted.values(), default=1) - 1):
                for r, peer, pre in again:  # one round over every peer, then the next
                    if len(r.runs) < wanted[id(r)]:
                        _add_run(r, measure(peer, pre, rtol))
            if repeats > 1:
                log(f"{family} rtol={rtol:.0e}: {len(again)} peers run {repeats} times "
                    f"(peers that take under a second, {repeats * FAST_REPEATS} times), "
                    "best kept")
                pairs = 2 * repeats * (FAST_REPEATS if fast else 1)
                _pair_peers(again, measure, rtol, pairs, n_systems, log)
    result.measured = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return result


def _add_run(r: PeerResult, again: PeerResult) -> None:
    """Fold another run of r's peer into r: its time kept if best, the worst residual."""
    r.runs.append(again.seconds_per_system)
    r.seconds_per_system = min(r.seconds_per_system, again.seconds_per_system)
    r.converged = min(r.converged, again.converged)
    r.max_residual = max(r.max_residual, again.max_residual)


def _pair_peers(runs, measure, rtol: float, pairs: int, n_systems: int,
                log: Callable[[str], None]) -> None:
    """Back-to-back pairs for the two comparisons whose margins are within the noise: auto
    against the fastest other peer, and skr against scipy's gcrotmk with the same
    preconditioner. Each pair runs ``pairs`` times in alternating order; the first peer of
    a comparison keeps its time over the other's per pair in ``pair_ratios`` (and the
    other's name in ``paired_with``).

    Why: the best of a peer's runs, taken in rounds over every peer, leaves too much noise
    for the 10 % the auto target is about (and the few % by which skr and gcrotmk differ
    where both spend their time building the same preconditioners). Measured on the 2-core
    VM with the same sparse LU run as auto and as splu (Poisson 128^2 and thermal 100^2, 30
    systems, 16 rounds each): the ratio of the bests read 0.99-1.16 depending on how many
    rounds were kept, the ratio of the medians 1.10-1.20 in one run with splu always first
    and 0.99 in the next with the order alternated, where the pairs with auto first read
    1.05 (median) and those with splu first 0.95. A pair shares the machine's state of the
    moment, and :func:`paired_ratio` combines pairs of opposite order, so an order effect
    cancels. Only for peers run again (each solved every system within half the budget, so
    a pair takes the budget at most).
    """
    done = [t for t in runs if t[0].converged == t[0].systems == n_systems and not t[0].note]
    comparisons = []
    auto = next((t for t in done if t[1] == "auto"), None)
    others = [t for t in done if t[1] != "auto"]
    if auto is not None and others:
        comparisons.append((auto, min(others, key=lambda t: t[0].seconds_per_system)))
    for skr in (t for t in done if t[1] == "skr"):
        gcrot = next((t for t in done if t[1] == "scipy-gcrotmk" and t[2] == skr[2]), None)
        if gcrot is not None:
            comparisons.append((skr, gcrot))
    for first, other in comparisons:
        ratios = []
        for i in range(pairs):
            seconds = {}
            for r, peer, pre in (other, first) if i % 2 == 0 else (first, other):
                again = measure(peer, pre, rtol)
                _add_run(r, again)
                seconds[id(r)] = again.seconds_per_system
            ratios.append(seconds[id(first[0])] / seconds[id(other[0])])
        first[0].paired_with = _name(other[0])
        first[0].pair_ratios = ratios
        log(f"{_name(first[0])} / {first[0].paired_with} in {pairs} "
            f"back-to-back pairs: {paired_ratio(ratios):.3f} "
            f"(pairs {min(ratios):.3f}-{max(ratios):.3f})")


def paired_ratio(ratios: list[float]) -> float:
    """One peer's time over another's from pairs run in alternating order (ratios as
    :func:`_pair_peers` keeps them): the geometric mean of each two
    consecutive pairs (one of each order, so a penalty of running first cancels), then the
    median of those (a slow spell during one pair moves one value only)."""
    r = np.asarray(ratios, dtype=float)
    if len(r) % 2:
        r = r[:-1]
    if not len(r):
        return float(ratios[0])
    return float(np.median(np.sqrt(r[0::2] * r[1::2])))


def _line(c: ConfigResult, r: PeerResult) -> str:
    mv = "-" if r.matvecs_per_system is None else f"{r.matvecs_per_system:.0f}"
    return (f"{c.family:>20s} n={c.n:<7d} {r.peer:>18s} {r.preconditioner:>6s} "
            f"rtol={r.rtol:.0e} {r.seconds_per_system * 1e3:9.2f} ms/system  matvecs {mv:>6s}"
            f"  conv {r.converged}/{r.systems}  maxres {r.max_residual:.1e}")


def summarise(configs: list[ConfigResult]) -> list[dict]:
    """Speedups per configuration: skr vs scipy-gmres (same preconditioner, rtol), skr vs
    gcrotmk, auto vs the best peer, skr vs the best non-recycling peer."""
    rows = []
    for c in configs:
        for rtol in sorted({p.rtol for p in c.peers}):
            ps = [p for p in c.peers if p.rtol == rtol]
            ok = [p for p in ps if p.converged == p.systems]
            best = min(ok, key=lambda p: p.seconds_per_system) if ok else None
            auto = next((p for p in ps if p.peer.startswith("auto")), None)
            non_recycling = [p for p in ok if p.peer in ("scipy-gmres", "scipy-cg", "splu",
                                                         "pyamg", "gmres")]
            best_nr = min(non_recycling, key=lambda p: p.seconds_per_system, default=None)
            # over the fastest peer other than auto (what its pairs run against, so that
            # both figures of the cell share a denominator: below 1 where auto is fastest)
            others = [p for p in ok if p is not auto]
            best_other = min(others, key=lambda p: p.seconds_per_system, default=None)
            of_bests = (auto.seconds_per_system / best_other.seconds_per_system
                        if auto and best_other else None)
            # from auto's back-to-back pairs with the fastest other peer where it has them
            # (_pair_peers, paired_ratio), else the ratio of bests
            auto_over_best = paired_ratio(auto.pair_ratios) if auto and auto.pair_ratios \
                else of_bests
            for pre in sorted({p.preconditioner for p in ps}):
                skr = next((p for p in ps if p.peer.startswith("skr") and
                            p.preconditioner == pre), None)
                base = next((p for p in ps if p.peer == "scipy-gmres" and
                             p.preconditioner == pre), None)
                gcrot = next((p for p in ps if p.peer == "scipy-gcrotmk" and
                              p.preconditioner == pre), None)
                if skr is None:
                    continue
                # a time to failure is no speedup: where skr left a system unsolved, it
                # gets no ratios (old stopped runs did not collect residuals: unknown)
                solved = skr.converged == skr.systems or "not collected" in skr.note

                def ratio(peer, of="seconds_per_system", skr=skr, solved=solved):
                    if not solved or peer is None or getattr(skr, of) is None:
                        return None
                    return getattr(peer, of) / max(getattr(skr, of), 1e-300)

                rows.append({
                    "family": c.family, "n": c.n, "rtol": rtol, "preconditioner": pre,
                    "skr_ms": skr.seconds_per_system * 1e3,
                    "skr_converged": (
                        f"{skr.converged}/{skr.systems}" if not skr.note else
                        # results of runs before stopped sequences kept their residuals
                        f"time of {skr.systems} of {c.n_systems}: budget"
                        if "not collected" in skr.note else
                        f"{skr.converged}/{skr.systems} of {c.n_systems}: budget"),
                    "speedup_vs_scipy_gmres_time": ratio(base),
                    "speedup_vs_scipy_gmres_matvecs": ratio(base, "matvecs_per_system"),
                    "scipy_gmres_converged": None if base is None else (
                        f"{base.converged}/{base.systems}" + (
                            f" of {c.n_systems}: budget" if base.systems < c.n_systems
                            else "")),
                    # from skr's pairs with gcrotmk where it has them, as auto's below
                    "speedup_vs_gcrotmk": 1.0 / paired_ratio(skr.pair_ratios)
                    if solved and gcrot and skr.pair_ratios else ratio(gcrot),
                    "speedup_vs_gcrotmk_of_runs": ratio(gcrot),
                    "gcrotmk_pairs": len(skr.pair_ratios),
                    "best_peer": _name(best) if best else None,
                    "best_ms": best.seconds_per_system * 1e3 if best else None,
                    "auto_ms": auto.seconds_per_system * 1e3 if auto else None,
                    "auto_over_best": auto_over_best,
                    "auto_over_best_of_runs": of_bests,
                    "auto_pairs": len(auto.pair_ratios) if auto else 0,
                    "auto_paired_with": auto.paired_with if auto else "",
                    "skr_vs_best_non_recycling": ratio(best_nr),
                    "best_non_recycling": _name(best_nr) if best_nr else None,
                })
    return rows


def _paired_cell(value: float | None, pairs: int, paired_with: str, bests: float | None,
                 unit: str = "") -> str:
    """A table cell of a ratio that may come from back-to-back pairs (:func:`_pair_peers`):
    the value, then, when it does, the pair count (and peer) and the ratio of best runs.
    Results written before the pairs existed have none: the value alone."""
    if value is None:
        return "-"
    if not pairs:
        return f"{value:.2f}{unit}"
    peer = f" with {paired_with}" if paired_with else ""
    best = "-" if bests is None else f"{bests:.2f}{unit}"
    return f"{value:.2f}{unit} ({pairs} pairs{peer}; bests {best})"


def _replace_text(path: Path, text: str) -> None:
    """``path`` holds ``text`` or what it held before, never a part (a write stopped by
    Ctrl-C truncated the results of earlier runs)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(configs: list[ConfigResult], out: Path, name: str = "skr",
                  machine: dict | None = None) -> None:
    """JSON and markdown of a run; ``machine``: the stored run's (a rewrite keeps it),
    else this machine's."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(configs)
    payload = {
        "benchmark": name,
        "machine": machine or {"platform": platform.platform(),
                               "python": platform.python_version(), "blas_threads": 1},
        "configs": [asdict(c) for c in configs],
        "summary": rows,
    }
    _replace_text(out / f"{name}.json", json.dumps(payload, indent=2))
    lines = [
        "| family | n | rtol | prec | skr ms/sys | vs scipy GMRES(40) time (matvecs) | "
        "vs gcrotmk | best peer (ms) | auto / best other | skr vs best non-recycling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    for r in rows:
        # results written before the pairs existed have no pair fields
        gcrot = _paired_cell(r["speedup_vs_gcrotmk"], r.get("gcrotmk_pairs", 0), "",
                             r.get("speedup_vs_gcrotmk_of_runs"), "x")
        auto = _paired_cell(r["auto_over_best"], r.get("auto_pairs", 0),
                            r.get("auto_paired_with", ""), r.get("auto_over_best_of_runs"))
        lines.append(
            f"| {r['family']} | {r['n']} | {r['rtol']:.0e} | {r['preconditioner']} | "
            f"{r['skr_ms']:.1f} ({r['skr_converged']}) | "
            f"{f(r['speedup_vs_scipy_gmres_time'])}x ({f(r['speedup_vs_scipy_gmres_matvecs'])}x;"
            f" scipy conv {r['scipy_gmres_converged']}) | {gcrot} | "
            f"{r['best_peer']} ({f(r['best_ms'], '{:.1f}')}) | {auto} | "
            f"{f(r['skr_vs_best_non_recycling'])}x vs {r['best_non_recycling']} |")
    if any(r.get("auto_pairs") or r.get("gcrotmk_pairs") for r in rows):
        lines += ["", "auto / best other (the fastest peer but auto; below 1: auto is the "
                  "fastest) and skr vs gcrotmk: from back-to-back pairs of runs of the two "
                  "peers, alternating which runs first (paired_ratio: the median of the "
                  "geometric means of consecutive pairs), then the ratio of the two peers' "
                  "best runs"]
    settings = sorted({(c.budget, c.repeats) for c in configs if c.budget is not None},
                      key=str)
    if settings:
        lines += ["", "each peer allowed " + "; ".join(
            f"{b:g} s a configuration, {r} repeat{'s' * (r != 1)}" for b, r in settings)
            + " (`--budget`, `--repeats`)"]
    if len({c.measured for c in configs}) > 1:  # a --family rerun merged with older runs
        lines += ["", "measured in separate runs: " + "; ".join(
            f"{c.family} n={c.n} {c.measured or 'before dates were recorded'}"
            for c in configs)]
    untuned = [f"{c.family} n={c.n}" for c in configs if not c.allocator_tuned]
    if untuned:
        lines += ["", "run with glibc's default allocator (before ``run_preset`` tuned it; "
                  "both peers of every ratio ran in the same process): " + ", ".join(untuned)]
    capped = [c for c in configs if c.maxiter != MAXITER]
    if capped:
        lines.append("")
        lines += [f"{c.family} n={c.n}: every iterative peer capped at {c.maxiter} products "
                  "a system (a system not solved within them counts as not converged)"
                  for c in capped]
    _replace_text(out / f"{name}.md", "\n".join(lines) + "\n")


#: Helmholtz 512^2 (k0 = 40, Dirichlet: hundreds of negative eigenvalues): measured with
#: one BLAS thread, GMRES(40) + spilu still at relative residual 1.0 after 300 products
#: (40 ms an application), + ILU(0) at 0.2 (6 ms); scipy's GMRES and gcrotmk with spilu
#: ran 10^4 products (500 and 850 s) on the first system without converging. Capped so
#: that the configuration ends in minutes: a system not solved in 2000 products is
#: reported as not converged.
HELMHOLTZ_512 = {"maxiter": 2000}

#: (family, resolution, n_systems, preconditioners, rtols, options[, peers][, settings]):
#: peers a list (default every peer), settings a dict of run_skr_benchmark's keywords
PRESETS: dict[str, list[tuple]] = {
    # minutes on 2 cores: the paper's small sizes, fewer systems
    "quick": [
        ("darcy", 80, 30, ["none", "jacobi", "ilu", "ilu0", "amg"], [1e-8],
         {"coefficient": "lognormal"}),
        ("helmholtz", 100, 30, ["ilu", "ilu0"], [1e-7], {"boundary": "dirichlet"}),
        ("advection-diffusion", 128, 30, ["ilu", "ilu0"], [1e-8], {}),
        ("poisson", 128, 30, ["jacobi", "amg"], [1e-8], {}),
        ("thermal", 100, 30, ["jacobi", "amg"], [1e-8], {}),
        ("darcy3d", 32, 20, ["jacobi", "amg"], [1e-8], {"coefficient": "lognormal"}),
        ("helmholtz3d", 32, 20, ["ilu"], [1e-7], {"boundary": "dirichlet"}),
    ],
    # where iterative methods should win: 3D and 512^2 (few systems; no sparse LU in 3D,
    # which takes minutes per system there)
    "large": [
        ("darcy3d", 64, 10, ["jacobi", "ilu0", "amg"], [1e-8], {"coefficient": "lognormal"},
         ["scipy-cg", "pyamg", "scipy-gcrotmk", "skr", "auto"]),
        ("helmholtz3d", 64, 10, ["ilu", "ilu0"], [1e-7], {"boundary": "dirichlet"},
         ["scipy-gmres", "scipy-gcrotmk", "skr", "auto"]),
        # 20 systems: recycling's start-up costs (gcrotmk filling its CU list over the
        # first systems, skr's two failed reuses of a neighbour's spilu) fall on the first
        # three or four; measured with 10 (each system 1.5-2.7 s), those dominated skr vs
        # gcrotmk (0.97-1.0x) while systems 5-9 took 1.5-1.9 s with skr, 1.8-2.4 with gcrotmk
        ("advection-diffusion", 512, 20, ["ilu", "ilu0"], [1e-8], {},
         ["splu", "pyamg", "scipy-gmres", "scipy-gcrotmk", "gmres", "skr", "auto"]),
        ("helmholtz", 512, 10, ["ilu", "ilu0"], [1e-7], {"boundary": "dirichlet", "k0": 40.0},
         ["splu", "scipy-gmres", "scipy-gcrotmk", "gmres", "skr", "auto"], HELMHOLTZ_512),
    ],
    # the grid: paper sizes with >= 200 systems, then 512^2 and 64^3 (fewer systems)
    "full": [
        ("darcy", 80, 200, ["none", "jacobi", "ilu", "ilu0", "amg"], [1e-5, 1e-8],
         {"coefficient": "lognormal"}),
        ("darcy", 200, 200, ["jacobi", "ilu", "ilu0", "amg"], [1e-5, 1e-8],
         {"coefficient": "lognormal"}),
        ("helmholtz", 100, 200, ["none", "jacobi", "ilu", "ilu0"], [1e-5, 1e-7],
         {"boundary": "dirichlet"}),
        ("poisson", 256, 200, ["none", "jacobi", "ilu", "ilu0", "amg"], [1e-5, 1e-8], {}),
        ("thermal", 105, 200, ["none", "jacobi", "ilu", "ilu0", "amg"], [1e-5, 1e-8], {}),
        ("advection-diffusion", 512, 20, ["ilu", "ilu0"], [1e-8], {}),
        ("helmholtz", 512, 20, ["ilu", "ilu0"], [1e-7], {"boundary": "dirichlet", "k0": 40.0},
         HELMHOLTZ_512),
        ("darcy3d", 64, 20, ["jacobi", "ilu0", "amg"], [1e-8], {"coefficient": "lognormal"}),
        ("helmholtz3d", 64, 20, ["ilu", "ilu0"], [1e-7], {"boundary": "dirichlet"}),
    ],
    # the paper's preconditioner (PETSc's ILU(0)) at the paper's sizes, >= 200 systems
    "paper-ilu0": [
        ("darcy", 80, 200, ["ilu0"], [1e-5, 1e-8], {"coefficient": "lognormal"}),
        ("helmholtz", 100, 200, ["ilu0"], [1e-5, 1e-7], {"boundary": "dirichlet"}),
    ],
}


def run_preset(name: str, out: Path, budget: float = 60.0,
               families: list[str] | None = None, repeats: int = 1) -> list[ConfigResult]:
    """Run a preset (``quick`` or ``full``), writing JSON and markdown to ``out``.

    glibc's allocator is tuned first (``pdeforge.runtime``): every peer runs in this
    process and allocates blocks of tens of MB per system (SuperLU's factors, Krylov
    bases), which the default allocator returns to the system and page-faults again:
    measured on advection-diffusion 512^2 with spilu (10 systems), skr 2.58 and gcrotmk
    2.41 s a system with the default, 1.87-2.07 and 1.90-2.13 s tuned.
    """
    from tqdm.auto import tqdm

    tune_cpu_allocator()

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    known = list(dict.fromkeys(c[0] for c in PRESETS[name]))
    unknown = [f for f in families or [] if f not in known]
    if unknown:
        raise PdeforgeError(f"preset {name!r} has no family {', '.join(map(repr, unknown))}; "
                         f"its families: {', '.join(known)}")
    todo = [c for c in PRESETS[name] if families is None or c[0] in families]
    kept = []
    previous = out / f"skr_{name}.json"
    if families is not None and previous.exists():  # keep the other families' results
        for c in json.loads(previous.read_text())["configs"]:
            if c["family"] not in families:
                peers = [PeerResult(**p) for p in c.pop("peers")]
                kept.append(ConfigResult(**c, peers=peers))
    # this run's configurations go to skr_<name>.partial.* as they finish; the results
    # file is replaced once the run is done: a rerun stopped by Ctrl-C had cut the
    # earlier results down to the configurations it had redone
    partial, done = f"skr_{name}.partial", []
    try:
        for family, res, n_sys, pres, rtols, opts, *extra in tqdm(
                todo, desc=f"bench skr ({name})", unit="config"):
            peers = next((e for e in extra if isinstance(e, list)), None)
            settings = next((e for e in extra if isinstance(e, dict)), {})
            done.append(run_skr_benchmark(family, res, n_sys, pres, rtols, opts, budget,
                                          peers=peers, log=tqdm.write, repeats=repeats,
                                          **settings))
            write_results(done, out, partial)
    except BaseException:
        if done:
            tqdm.write(f"kept: the {len(done)} configuration(s) this run finished, in "
                       f"{out / partial}.json and .md; {previous} is as it was")
        raise
    configs = kept + done
    write_results(configs, out, f"skr_{name}")
    for suffix in (".json", ".md"):
        (out / f"{partial}{suffix}").unlink(missing_ok=True)
    return configs


def rewrite_markdown(json_path: Path) -> None:
    """Rebuild the summary and markdown table of a results file (after a format change)."""
    data = json.loads(Path(json_path).read_text())
    configs = []
    for c in data["configs"]:
        peers = [PeerResult(**p) for p in c.pop("peers")]
        configs.append(ConfigResult(**c, peers=peers))
    write_results(configs, Path(json_path).parent, Path(json_path).stem,
                  machine=data.get("machine"))
