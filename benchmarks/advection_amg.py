"""Does algebraic multigrid for nonsymmetric systems beat a fresh LU on advection-diffusion?

    python benchmarks/advection_amg.py [--resolution 512] [--systems 2]
        [--amg air sa-nonsymmetric] [--products 300]

The ``advection-diffusion`` family's matrices are first-order upwind M-matrices with an
independent random flow per sample (cell Peclet numbers up to about 10 at 512^2), so no
neighbour's factorisation or Krylov space preconditions the next system (DESIGN.md,
"Where reuse cannot pay"). What is left to an iterative method is a preconditioner built
per system that is cheaper than the LU. pyamg, the one algebraic multigrid among the
dependencies, offers two for nonsymmetric matrices: ``air`` (approximate ideal
restriction, Manteuffel et al., SIAM J. Sci. Comput. 2019, made for upwind
advection-dominated discretisations) and ``sa-nonsymmetric`` (smoothed aggregation with
``symmetry="nonsymmetric"``). One V-cycle of each, built on the system's own matrix,
preconditions scipy's GMRES(``--restart``) up to ``--products`` products on the first
``--systems`` samples, against a fresh sparse LU (``method="direct"``'s options) of each
in the same run. ``solve_over_lu`` is the time of the GMRES solve alone over the LU's: the
bound of what any reuse of a hierarchy could reach if building it were free. Writes
benchmarks/results/advection_amg_<resolution>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyamg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from pdeforge.cli import positive_float, positive_int, writable_dir
from pdeforge.datasets.problems import build_problem
from pdeforge.solvers.krylov.base import relative_residual
from pdeforge.solvers.krylov.sequence import lu_options

BUILDERS = {
    "air": lambda A: pyamg.air_solver(A),
    "sa-nonsymmetric": lambda A: pyamg.smoothed_aggregation_solver(A, symmetry="nonsymmetric"),
}


def preconditioned_gmres(A, b, ml, rtol: float, restart: int, products: int) -> dict:
    """scipy GMRES(restart) with one V-cycle of ``ml``, at most ``products`` products."""
    count = [0]

    def tick(_):
        count[0] += 1

    t0 = time.perf_counter()
    x, _ = spla.gmres(A, b, M=ml.aspreconditioner(cycle="V"), rtol=rtol, restart=restart,
                      maxiter=-(-products // restart), callback=tick, callback_type="pr_norm")
    seconds = time.perf_counter() - t0
    residual = relative_residual(A, x, b)
    return {"gmres_seconds": seconds, "products": count[0], "residual": residual,
            "converged": residual <= rtol}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=positive_int, default=512)
    ap.add_argument("--systems", type=positive_int, default=2)
    ap.add_argument("--amg", choices=tuple(BUILDERS), nargs="+", default=list(BUILDERS))
    ap.add_argument("--restart", type=positive_int, default=60)
    ap.add_argument("--products", type=positive_int, default=300,
                    help="products allowed, rounded up to whole GMRES restart cycles "
                    "(scipy stops only there)")
    ap.add_argument("--rtol", type=positive_float, default=1e-8)
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    prob = build_problem("advection-diffusion", args.resolution)
    rows = []
    with threadpool_limits(1):
        for index in tqdm(range(args.systems), desc="systems"):
            s = prob.build(0, index)
            A, b = sp.csr_matrix(s.A), s.b
            t0 = time.perf_counter()
            x = spla.splu(A.tocsc(), **lu_options(A, False)).solve(b)
            lu_seconds = time.perf_counter() - t0
            row = {"index": index, "diffusivity": float(s.inputs["diffusivity"]),
                   "lu_seconds": lu_seconds, "lu_residual": relative_residual(A, x, b),
                   "amg": []}
            tqdm.write(f"system {index} (nu {row['diffusivity']:.3g}): LU {lu_seconds:.2f} s, "
                       f"residual {row['lu_residual']:.1e}")
            for name in args.amg:
                t0 = time.perf_counter()
                ml = BUILDERS[name](A)
                build = time.perf_counter() - t0
                run = preconditioned_gmres(A, b, ml, args.rtol, args.restart, args.products)
                run.update(amg=name, levels=len(ml.levels), build_seconds=build,
                           time_over_lu=(build + run["gmres_seconds"]) / lu_seconds,
                           solve_over_lu=run["gmres_seconds"] / lu_seconds)
                row["amg"].append(run)
                verdict = "converged" if run["converged"] else "NOT converged"
                tqdm.write(
                    f"  {name}: build {build:.2f} s ({run['levels']} levels), GMRES "
                    f"{run['products']} products {run['gmres_seconds']:.2f} s, residual "
                    f"{run['residual']:.1e} ({verdict})"
                    f"; {run['time_over_lu']:.1f}x the LU's time ({run['solve_over_lu']:.2f}x "
                    "for the solve alone)"
                )
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"advection_amg_{args.resolution}.json"
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    path.write_text(json.dumps({"benchmark": "advection_amg", "pyamg": pyamg.__version__,
                                "arguments": arguments, "systems": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
