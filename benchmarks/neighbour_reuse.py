"""Can a neighbour's factorisation precondition the next system? The best case of reuse.

    python benchmarks/neighbour_reuse.py [--family advection-diffusion --resolution 256]
        [--systems 20] [--neighbours 4] [--products 300]

Sorts the first ``--systems`` samples of a family as ``skr`` does, factors the first
system of the order exactly (splu, the options of ``method="direct"``) and runs scipy's
GMRES(60) on the next ``--neighbours`` systems of the order preconditioned by that
factor, up to ``--products`` products, against a fresh factor + solve of each (the peer,
in the same run). If even the exact inverse of a neighbour does not bring a system to
the tolerance in far fewer products than a factorisation costs, no reused or recycled
approximation of it can (DESIGN.md, "Where reuse cannot pay"). Writes
benchmarks/results/neighbour_reuse_<family>_<resolution>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from pdeforge.cli import positive_float, positive_int, writable_dir
from pdeforge.datasets.problems import available, build_problem
from pdeforge.solvers.krylov import is_spd
from pdeforge.solvers.krylov.base import relative_residual
from pdeforge.solvers.krylov.sequence import lu_options
from pdeforge.solvers.krylov.sorting import sort_systems

OPTIONS = {"helmholtz": {"boundary": "dirichlet", "k0": 40.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="advection-diffusion",
                    choices=[f for f in available() if f != "nlse"])
    ap.add_argument("--resolution", type=positive_int, default=256)
    ap.add_argument("--systems", type=positive_int, default=20)
    ap.add_argument("--neighbours", type=positive_int, default=4)
    ap.add_argument("--products", type=positive_int, default=300,
                    help="products allowed, rounded up to whole GMRES restart cycles "
                    "(scipy stops only there)")
    ap.add_argument("--rtol", type=positive_float, default=1e-8)
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if args.systems < 2:
        ap.error("--systems must be at least 2: the first is factored, the next are solved")

    options = OPTIONS.get(args.family, {})
    prob = build_problem(args.family, args.resolution, **options)
    samples = [prob.build(0, i) for i in tqdm(range(args.systems), desc="build")]
    order = sort_systems(np.stack([s.features for s in samples]))
    mats = [samples[i].A.tocsc() for i in order]
    rhs = [samples[i].b for i in order]
    kw = lu_options(mats[0], is_spd(mats[0]))
    restart = 60
    rows = []
    with threadpool_limits(1):
        t0 = time.perf_counter()
        lu = spla.splu(mats[0], **kw)
        factor_s = time.perf_counter() - t0
        for j in tqdm(range(1, min(args.systems, args.neighbours + 1)), desc="neighbours"):
            A, b = mats[j], rhs[j]
            t0 = time.perf_counter()
            fresh = spla.splu(A, **kw).solve(b)
            fresh_s = time.perf_counter() - t0
            count = []
            M = spla.LinearOperator(A.shape, matvec=lu.solve, dtype=A.dtype)
            t0 = time.perf_counter()
            x, _ = spla.gmres(A, b, M=M, rtol=args.rtol, restart=restart,
                              maxiter=-(-args.products // restart),
                              callback=count.append,
                              callback_type="pr_norm")
            reuse_s = time.perf_counter() - t0
            residual = relative_residual(A, x, b)
            rows.append({
                "neighbour": j,
                "products": len(count),
                "relative_residual": residual,
                "converged": residual <= args.rtol,
                "reuse_seconds": reuse_s,
                "fresh_lu_seconds": fresh_s,
                "fresh_lu_residual": relative_residual(A, fresh, b),
                "reuse_over_fresh_time": reuse_s / fresh_s,
            })
            tqdm.write(f"neighbour {j}: {len(count)} products, residual "
                       f"{rows[-1]['relative_residual']:.2e}, {reuse_s:.2f} s against a "
                       f"fresh LU's {fresh_s:.2f} s")
    result = {"family": args.family, "resolution": args.resolution, "options": options,
              "n": mats[0].shape[0], "systems_sorted": args.systems, "rtol": args.rtol,
              "gmres_restart": restart, "products_cap": args.products,
              "products_limit": -(-args.products // restart) * restart,
              "neighbours_asked": args.neighbours,
              "factor_seconds": factor_s, "neighbours": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"neighbour_reuse_{args.family}_{args.resolution}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
