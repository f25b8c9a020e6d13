"""NLSE throughput and accuracy: batched interaction-picture DOP853 vs scipy DOP853.

Peers in one run, on the same trajectories (L = 50, M = 512, t in [0, 20]):
* ``ip-dop853`` (pdeforge, torch): all trajectories advance together;
* ``scipy-dop853``: solve_ivp per trajectory on the plain Fourier system (the reference
  package's approach, max_step 0.1), same tolerances.
Reports trajectories per second and the ratio, and accuracy on the exact soliton
(eta = 2, v = 1): max error at t = 20 and the drifts of mass and energy. JSON and markdown
in benchmarks/results/.

    python benchmarks/nlse.py [--n 32] [--rtol 1e-9] [--atol 1e-11]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pdeforge.datasets.problems import build_problem
from pdeforge.solvers import nlse

L, M, T = 50.0, 512, 20.0


def accuracy(method: str, rtol: float, atol: float) -> dict[str, float]:
    x = nlse.grid(M, L)
    psi0 = nlse.soliton(x, 0, eta=2.0, velocity=1.0, x0=-10.0)
    times = np.array([0.0, T])
    psi = nlse.solve(psi0, length=L, times=times, rtol=rtol, atol=atol, method=method)
    exact = nlse.soliton(x, T, eta=2.0, velocity=1.0, x0=-10.0)
    inv = nlse.invariants(psi, length=L)
    return {
        "max_error_vs_exact": float(np.abs(psi[-1] - exact).max()),
        "mass_drift": float(abs(inv["mass"][-1] - inv["mass"][0]) / inv["mass"][0]),
        "energy_drift": float(abs(inv["energy"][-1] - inv["energy"][0]) / abs(inv["energy"][0])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="trajectories")
    ap.add_argument("--rtol", type=float, default=1e-9)
    ap.add_argument("--atol", type=float, default=1e-11)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    problem = build_problem("nlse", M, length=L, t_end=T, n_times=21)
    psi0 = np.stack([problem.initial_condition(0, i) for i in range(args.n)])
    times = problem.times()
    rows = {}
    for method in ("ip-dop853", "scipy-dop853"):
        start = time.perf_counter()
        psi = nlse.solve(psi0, length=L, times=times, rtol=args.rtol, atol=args.atol, method=method)
        seconds = time.perf_counter() - start
        rows[method] = {
            "seconds": seconds,
            "trajectories_per_second": args.n / seconds,
            "soliton": accuracy(method, args.rtol, args.atol),
            "psi_end": psi[:, -1],
        }
        print(method, f"{args.n / seconds:.2f} trajectories/s")
    diff = float(
        np.abs(rows["ip-dop853"].pop("psi_end") - rows["scipy-dop853"].pop("psi_end")).max()
    )
    ratio = (
        rows["ip-dop853"]["trajectories_per_second"]
        / rows["scipy-dop853"]["trajectories_per_second"]
    )
    payload = {
        "benchmark": "nlse",
        "L": L,
        "M": M,
        "T": T,
        "n": args.n,
        "rtol": args.rtol,
        "atol": args.atol,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "methods": rows,
        "speedup_batched_vs_scipy": ratio,
        "max_difference_between_methods": diff,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nlse.json").write_text(json.dumps(payload, indent=2))
    lines = [
        f"NLSE L={L:g}, M={M}, T={T:g}, {args.n} random trajectories (nlse family ICs), "
        f"rtol={args.rtol:g}, atol={args.atol:g}",
        "",
        "| method | trajectories/s | soliton max error t=20 | mass drift | energy drift |",
        "|---|---|---|---|---|",
    ]
    for method, r in rows.items():
        s = r["soliton"]
        lines.append(
            f"| {method} | {r['trajectories_per_second']:.2f} | "
            f"{s['max_error_vs_exact']:.2e} | {s['mass_drift']:.1e} | "
            f"{s['energy_drift']:.1e} |"
        )
    lines += [
        "",
        f"batched / scipy throughput: {ratio:.1f}x; largest difference between "
        f"the two methods' trajectories at t={T:g}: {diff:.1e}",
    ]
    (args.out / "nlse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
