"""NLSE batching A/B: chunks grouped by difficulty against chunks in input order.

The workload of benchmarks/nlse.py (256 solitons, L = 50, M = 512, T = 20, 101
snapshots, state error norm, no filter) at one rtol, solved alternately with the solver's
difficulty-grouped chunks and with chunks taken in input order (the ranking replaced by
the identity), ``--runs`` times each in one process; throughput is the best of the runs.
Accuracy is reported for both (the step sequences differ, so may the errors), and the
accepted steps summed over the chunks (counted, not timed: the work each chunking
does). With ``--alone``, each trajectory is also solved by itself (its own adaptive
steps) and its accepted steps counted: their sum against the grouped chunks'
trajectory-steps (chunk size times the chunk's steps) bounds what per-trajectory step
sizes inside a chunk could save (accepted steps; rejected ones are left out on both
sides). JSON in benchmarks/results/nlse_chunking.json.

    python benchmarks/nlse_chunking.py [--rtol 3e-9] [--runs 2] [--alone]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from nlse import OURS, SNAPSHOTS, L, M, T, accuracy, exact, soliton_parameters
from tqdm import tqdm

from pdeforge.cli import positive_int, writable_dir
from pdeforge.solvers import nlse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=positive_int, default=256)
    ap.add_argument("--rtol", type=float, default=3e-9)
    ap.add_argument("--runs", type=positive_int, default=2)
    ap.add_argument("--alone", action="store_true",
                    help="also count each trajectory's steps when solved alone")
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    params = soliton_parameters(args.n)
    # before the timed runs: the --alone comparison needs equal chunks
    chunk = equal_chunks(args.n) if args.alone else None
    psi0 = exact(params, 0.0)
    times = np.linspace(0.0, T, SNAPSHOTS)
    ranked = nlse._difficulty

    def input_order(ctx, flat, *_):  # hardest = first: chunks follow the input order
        return -np.arange(len(flat), dtype=float)

    rows: dict[str, dict] = {}
    for _ in range(args.runs):
        for label, rank in (("grouped by difficulty", ranked), ("input order", input_order)):
            nlse._difficulty = rank
            steps = [0]

            def count(_: float, steps: list[int] = steps) -> None:  # once per accepted
                steps[0] += 1  # step of any chunk

            try:
                start = time.perf_counter()
                psi = nlse.solve(psi0, length=L, times=times, rtol=args.rtol,
                                 atol=args.rtol / 100, progress=count, **OURS)
                seconds = time.perf_counter() - start
            finally:
                nlse._difficulty = ranked
            row = rows.setdefault(label, {"runs_seconds": []})
            row["accepted_steps_all_chunks"] = steps[0]
            row["runs_seconds"].append(seconds)
            row["trajectories_per_second"] = args.n / min(row["runs_seconds"])
            row.update(accuracy(psi, params))
            print(f"{label}: {args.n / seconds:.2f} trajectories/s, {steps[0]} chunk steps",
                  flush=True)
    gain = (rows["grouped by difficulty"]["trajectories_per_second"]
            / rows["input order"]["trajectories_per_second"])
    payload = {"benchmark": "nlse_chunking", "n": args.n, "rtol": args.rtol, "runs": args.runs,
               "threads": torch.get_num_threads(), "rows": rows,
               "grouped_over_input_order": gain}
    if args.alone:
        payload["alone"] = alone_steps(
            psi0, times, args.rtol, chunk,
            rows["grouped by difficulty"]["accepted_steps_all_chunks"])
        print(f"alone: {payload['alone']['accepted_steps_sum']} trajectory-steps against "
              f"{payload['alone']['grouped_trajectory_steps']} grouped "
              f"({payload['alone']['grouped_over_alone']:.3f}x)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nlse_chunking.json").write_text(json.dumps(payload, indent=2))
    print(f"grouped / input order: {gain:.2f}x")


def equal_chunks(n: int) -> int:
    """The solver's chunk size for n solitons; SystemExit unless the chunks are equal."""
    chunk, _ = nlse._chunking(n, M, torch.device("cpu"), None)
    if n % chunk:
        raise SystemExit(f"--alone needs equal chunks: --n {n} is not a multiple of the "
                         f"solver's chunk size {chunk} at that n")
    return chunk


def alone_steps(
    psi0: np.ndarray, times: np.ndarray, rtol: float, chunk: int, chunk_steps: int
) -> dict:
    """Accepted steps of each trajectory solved alone, against the trajectory-steps of the
    grouped chunks (``chunk`` trajectories each; ``chunk_steps``: their accepted steps
    summed over the chunks)."""
    steps = []
    for one in tqdm(psi0, desc="alone", unit="trajectory"):
        counter = [0]

        def count(_: float, counter: list[int] = counter) -> None:
            counter[0] += 1

        nlse.solve(one[None], length=L, times=times, rtol=rtol, atol=rtol / 100,
                   progress=count, **OURS)
        steps.append(counter[0])
    grouped = chunk_steps * chunk  # every trajectory of a chunk takes the chunk's steps
    return {"chunk_size": chunk, "accepted_steps_min": int(min(steps)),
            "accepted_steps_max": int(max(steps)), "accepted_steps_sum": int(sum(steps)),
            "grouped_trajectory_steps": grouped,
            "grouped_over_alone": grouped / sum(steps)}


if __name__ == "__main__":
    main()
