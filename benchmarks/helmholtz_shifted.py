"""Does a shifted-Laplacian multigrid preconditioner make 2D Helmholtz iterative?

    python benchmarks/helmholtz_shifted.py [--resolution 256] [--k0 40]
        [--boundary dirichlet] [--systems 2] [--shifts 0.5 1.0 positive]
        [--products 400]

The standard iterative approach to -Lap u - k^2 u = f (Erlangga, Vuik & Oosterlee,
Appl. Numer. Math. 2004): GMRES preconditioned by a multigrid cycle of the shifted
operator -Lap - (1 - i beta) k^2, whose imaginary shift makes it solvable by multigrid;
``positive`` is the older real shift -Lap + k^2 (Bayliss, Goldstein & Turkel 1983).
Here one V-cycle of pyamg's smoothed aggregation built on the shifted matrix serves as
the preconditioner of scipy's GMRES(``--restart``), up to ``--products`` products, on
the first ``--systems`` samples of the ``helmholtz`` family, against a fresh sparse LU
(``method="direct"``'s options) of each, in the same run. pyamg is the only algebraic
multigrid among the dependencies; a geometric multigrid for the shifted operator is not
part of pdeforge. Backs DESIGN.md, "Where reuse cannot pay". Writes
benchmarks/results/helmholtz_shifted_<boundary>_<resolution>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyamg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from pdeforge.cli import positive_float, positive_int, writable_dir
from pdeforge.datasets.problems import build_problem
from pdeforge.errors import PdeforgeError
from pdeforge.solvers.krylov.base import relative_residual
from pdeforge.solvers.krylov.sequence import lu_options


def shift_value(text: str) -> str:
    """A shift: ``positive`` or a real beta > 0 (as text, kept for the JSON)."""
    if text == "positive":
        return text
    try:
        beta = float(text)
    except ValueError:
        beta = float("nan")
    if not np.isfinite(beta) or beta <= 0:
        raise argparse.ArgumentTypeError(
            f"a shift is 'positive' or a number beta > 0 (-Lap - (1 - i beta) k^2), got {text!r}"
        )
    return text


def shifted_preconditioner(A: sp.csr_matrix, k2: np.ndarray, shift: str):
    """(one V-cycle of SA-AMG on the shifted operator as a LinearOperator, build seconds)."""
    t0 = time.perf_counter()
    if shift == "positive":  # -Lap + k^2 = A + 2 k^2: real SPD
        S = sp.csr_matrix(A + sp.diags(2 * k2)).real.tocsr()
        ml = pyamg.smoothed_aggregation_solver(S, symmetry="hermitian", max_coarse=500)

        def apply(v):  # the real hierarchy on the real and imaginary parts
            return ml.solve(v.real, maxiter=1, cycle="V", tol=1e-300) + 1j * ml.solve(
                np.ascontiguousarray(v.imag), maxiter=1, cycle="V", tol=1e-300
            )
    else:  # -Lap - (1 - i beta) k^2 = A + i beta k^2: complex symmetric
        S = sp.csr_matrix(A.astype(complex) + sp.diags(1j * float(shift) * k2))
        ml = pyamg.smoothed_aggregation_solver(S, symmetry="symmetric", max_coarse=500)

        def apply(v):
            return ml.solve(v, maxiter=1, cycle="V", tol=1e-300)

    seconds = time.perf_counter() - t0
    n = A.shape[0]
    return spla.LinearOperator((n, n), matvec=apply, dtype=complex), seconds, len(ml.levels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=positive_int, default=256)
    ap.add_argument("--k0", type=positive_float, default=40.0)
    ap.add_argument("--boundary", choices=("dirichlet", "absorbing"), default="dirichlet")
    ap.add_argument("--systems", type=positive_int, default=2)
    ap.add_argument("--shifts", type=shift_value, nargs="+", default=["0.5", "1.0", "positive"])
    ap.add_argument("--restart", type=positive_int, default=200)
    ap.add_argument("--products", type=positive_int, default=400,
                    help="products allowed, rounded up to whole GMRES restart cycles "
                    "(scipy stops only there)")
    ap.add_argument("--rtol", type=positive_float, default=1e-7)
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    try:
        prob = build_problem("helmholtz", args.resolution, k0=args.k0, boundary=args.boundary)
    except PdeforgeError as exc:  # (it named generate's --k-sigma, which this script lacks)
        ap.error(f"{exc} [this script: raise --resolution or lower --k0; the wave number's "
                 "spread is the family's default]")
    rows = []
    with threadpool_limits(1):
        for index in tqdm(range(args.systems), desc="systems"):
            s = prob.build(0, index)
            A, b = sp.csr_matrix(s.A), s.b.astype(complex)
            k2 = s.inputs["wavenumber"].ravel() ** 2
            t0 = time.perf_counter()
            lu = spla.splu(A.tocsc(), **lu_options(A, False))
            x = lu.solve(s.b)
            lu_seconds = time.perf_counter() - t0
            lu_res = relative_residual(A, x, s.b)
            row = {"index": index, "lu_seconds": lu_seconds, "lu_residual": lu_res, "shifts": []}
            tqdm.write(f"system {index}: LU {lu_seconds:.2f} s, residual {lu_res:.1e}")
            for shift in args.shifts:
                M, build, levels = shifted_preconditioner(A, k2, shift)
                products = [0]

                def count(_, products=products):
                    products[0] += 1

                t0 = time.perf_counter()
                y, _ = spla.gmres(
                    A.astype(complex),
                    b,
                    M=M,
                    rtol=args.rtol,
                    restart=args.restart,
                    maxiter=-(-args.products // args.restart),
                    callback=count,
                    callback_type="pr_norm",
                )
                seconds = time.perf_counter() - t0
                res = relative_residual(A, y, b)
                row["shifts"].append(
                    {
                        "shift": shift,
                        "amg_levels": levels,
                        "build_seconds": build,
                        "gmres_seconds": seconds,
                        "products": products[0],
                        "residual": res,
                        "converged": res <= args.rtol,
                        "time_over_lu": (build + seconds) / lu_seconds,
                    }
                )
                tqdm.write(
                    f"  shift {shift}: AMG build {build:.2f} s ({levels} levels), "
                    f"GMRES {products[0]} products {seconds:.2f} s, residual {res:.1e}"
                    f" ({'converged' if res <= args.rtol else 'NOT converged'}); "
                    f"{(build + seconds) / lu_seconds:.1f}x the LU's time"
                )
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"helmholtz_shifted_{args.boundary}_{args.resolution}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "helmholtz_shifted",
                "arguments": {
                    k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                },
                "systems": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
