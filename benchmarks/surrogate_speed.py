"""Surrogate vs reference solver: time per Darcy sample at several resolutions.

Peers in one run, per resolution: the reference solver as `pdeforge generate` runs it
(``solver=auto``, pdeforge's measured choice per size: sparse LU on small grids, sorted +
recycled CG with AMG above; ``AUTO_*`` in pdeforge/solvers/krylov/sequence.py), the
sorted + recycled Krylov path (``solver=skr``, AMG), and MgNO in its paper configuration
(572,661 parameters; the weights do not change the cost) batched (``--n`` samples per
forward pass) and one sample at a time. Solver times are wall times of the family's
``solve_inputs`` on ``--n`` coefficient fields, per sample: assembly, sorting and solves,
what a user waits for instead of the surrogate (the solve alone, as the solver reports
it, is kept in the JSON); surrogate times are wall times of forward passes after a
warm-up. The speedups are solver time / surrogate time; JSON and markdown in
benchmarks/results/.

    python benchmarks/surrogate_speed.py [--resolutions 32 64 128 256] [--n 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pdeforge import operators
from pdeforge.cli import positive_int, writable_dir
from pdeforge.datasets.problems import build_problem
from pdeforge.runtime import tune_cpu_allocator


def solver_ms(resolution: int, n: int, solver: str) -> tuple[float, float]:
    """(wall ms per sample of solve_inputs: assembly + sorting + solves, reported solve ms
    per sample)."""
    problem = build_problem("darcy", resolution, solver=solver, preconditioner="auto")
    coefficients = np.stack([problem.sample_coefficient(0, i) for i in range(n)])
    start = time.perf_counter()
    out = problem.solve_inputs({"coefficient": coefficients})
    wall = time.perf_counter() - start
    if not out["converged"].all():
        raise SystemExit(f"solver {solver} did not converge on every sample at {resolution}^2")
    return 1e3 * wall / n, 1e3 * float(np.mean(out["solve_seconds"]))


def surrogate_ms(model: torch.nn.Module, resolution: int, batch: int, repeats: int = 3) -> float:
    x = torch.randn(batch, 1, resolution, resolution)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return 1e3 * (time.perf_counter() - start) / (repeats * batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", type=positive_int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--n", type=positive_int, default=32, help="samples per resolution")
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if min(args.resolutions) < 8:
        ap.error(f"--resolutions must be at least 8, got {min(args.resolutions)}")
    tune_cpu_allocator()
    model = operators.build("mgno").eval()
    rows = []
    for res in tqdm(args.resolutions, desc="resolutions"):
        row = {"resolution": res, "unknowns": res * res}
        for peer in ("auto", "skr"):
            row[f"{peer}_ms"], row[f"{peer}_solve_only_ms"] = solver_ms(res, args.n, peer)
        row["mgno_batched_ms"] = surrogate_ms(model, res, args.n)
        row["mgno_single_ms"] = surrogate_ms(model, res, 1)
        for peer in ("auto", "skr"):
            row[f"speedup_batched_vs_{peer}"] = row[f"{peer}_ms"] / row["mgno_batched_ms"]
            row[f"speedup_single_vs_{peer}"] = row[f"{peer}_ms"] / row["mgno_single_ms"]
        rows.append(row)
    payload = {"benchmark": "surrogate_speed", "n": args.n,
               "machine": {"platform": platform.platform(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()},
               "model": {"name": "mgno", "parameters": model.count_parameters()},
               "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "surrogate_speed.json").write_text(json.dumps(payload, indent=2))
    lines = ["Darcy, ms per sample (CPU, "
             f"{torch.get_num_threads()} threads); MgNO paper configuration "
             f"({model.count_parameters():,} parameters), batches of {args.n}; solver "
             "times: wall time of assembly, sorting and solves", "",
             "| grid | solver auto | solver skr | MgNO batched | MgNO single | speedup batched "
             "vs auto | speedup single vs auto |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['resolution']}^2 | {r['auto_ms']:.2f} | {r['skr_ms']:.2f} | "
                     f"{r['mgno_batched_ms']:.2f} | {r['mgno_single_ms']:.2f} | "
                     f"{r['speedup_batched_vs_auto']:.2f}x | {r['speedup_single_vs_auto']:.2f}x |")
    (args.out / "surrogate_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
