"""NLSE output density: dense output against steps cut to end on every output time.

The workload of benchmarks/nlse.py (``--n`` single solitons, L = 50, M = 512, T = 20,
state error norm, no filter, ``--rtol``) with ``--snapshots`` output times each, solved in
one process with the solver's default (an output inside a step is interpolated with
DOP853's dense output unless ending the step on it is cheaper, ``nlse.LAND_FRACTION``)
and with every output ending a step (``LAND_FRACTION = 0``, how the solver stepped before
dense output: the peer). The lower bound is the same run with two output times. Reported:
rate evaluations (counted: the work), seconds (best of ``--runs``), the largest error
against the exact solitons over all output times, and the largest difference between the
two methods' outputs. JSON in benchmarks/results/nlse_outputs.json.

    python benchmarks/nlse_outputs.py [--n 64] [--rtol 3e-9] [--snapshots 101 401 1001]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from nlse import OURS, L, T, exact, soliton_parameters

from pdeforge.cli import positive_int, writable_dir
from pdeforge.solvers import nlse

PEER = "every output a step end"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=positive_int, default=64)
    ap.add_argument("--rtol", type=float, default=3e-9)
    ap.add_argument("--snapshots", type=int, nargs="+", default=[101, 401, 1001])
    ap.add_argument("--runs", type=positive_int, default=2)
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    params = soliton_parameters(args.n)
    psi0 = exact(params, 0.0)
    original_rate, default_fraction = nlse._IPContext.rate, nlse.LAND_FRACTION
    evaluations = [0]

    def counting_rate(self, *a):
        evaluations[0] += 1
        return original_rate(self, *a)

    def run(times: np.ndarray, land_fraction: float) -> tuple[np.ndarray, int, float]:
        nlse.LAND_FRACTION = land_fraction
        best = np.inf
        try:
            for _ in range(args.runs):
                evaluations[0] = 0
                start = time.perf_counter()
                psi = nlse.solve(
                    psi0, length=L, times=times, rtol=args.rtol, atol=args.rtol / 100, **OURS
                )
                best = min(best, time.perf_counter() - start)
        finally:
            nlse.LAND_FRACTION = default_fraction
        return psi, evaluations[0], best

    nlse._IPContext.rate = counting_rate
    rows = {}
    try:
        _, bound_evals, bound_s = run(np.array([0.0, T]), default_fraction)
        for snapshots in args.snapshots:
            times = np.linspace(0.0, T, snapshots)
            truth = np.stack([exact(params, t) for t in times], axis=1)
            row = {}
            out = {}
            for label, fraction in (
                ("dense output", default_fraction),
                ("every output a step end", 0.0),
            ):
                psi, evals, seconds = run(times, fraction)
                out[label] = psi
                row[label] = {
                    "rate_evaluations": evals,
                    "seconds": seconds,
                    "max_error_vs_exact": float(np.abs(psi - truth).max()),
                }
            row["evaluations_saved"] = (
                row["every output a step end"]["rate_evaluations"]
                / row["dense output"]["rate_evaluations"]
            )
            row["speedup"] = (
                row["every output a step end"]["seconds"] / row["dense output"]["seconds"]
            )
            row["max_difference"] = float(
                np.abs(out["dense output"] - out["every output a step end"]).max()
            )
            rows[snapshots] = row
            print(
                f"{snapshots} outputs: dense {row['dense output']['rate_evaluations']} "
                f"evaluations, every output a step end {row[PEER]['rate_evaluations']} "
                f"({row['speedup']:.2f}x time); two outputs {bound_evals}",
                flush=True,
            )
    finally:
        nlse._IPContext.rate = original_rate
    payload = {
        "benchmark": "nlse_outputs",
        "n": args.n,
        "rtol": args.rtol,
        "threads": torch.get_num_threads(),
        "two_outputs": {"rate_evaluations": bound_evals, "seconds": bound_s},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nlse_outputs.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
