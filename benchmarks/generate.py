"""Dataset generation throughput: the pdeforge runner against a hand-rolled loop.

Peers, in one run, on the same Darcy problem (piecewise coefficient, 64x64 by default):
  * ``loop``: what a user would write by hand: call the solver sample after sample and
    keep the arrays in memory (no file, no shards, no resume).
  * ``runner_w1``: ``pdeforge generate`` in one process (sharded, atomic, validated file).
  * ``runner_w2``: the same on a local Dask cluster with 2 worker processes.
  * ``runner_w2_lzf``: ``runner_w2`` writing lzf-compressed fields (bytes on disk).
Reports samples per second, ratios against the loop, and bytes per sample on disk. The
runner's times include everything a user waits for: starting the Dask cluster, writing
and validating shards, assembling and validating the final file.

    python benchmarks/generate.py [--n 2048] [--resolution 64] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from pdeforge.cli import positive_int, writable_dir
from pdeforge.datasets.problems import build_problem
from pdeforge.datasets.runner import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=positive_int, default=2048)
    ap.add_argument("--resolution", type=positive_int, default=64)
    ap.add_argument("--shard-size", type=positive_int, default=64)
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    prob = build_problem("darcy", args.resolution)
    prob.generate(0, list(range(4)))  # warm-up: imports, caches
    t0 = time.perf_counter()
    prob.generate(0, list(range(args.n)), progress=tqdm(total=args.n, desc="loop").update)
    loop_s = time.perf_counter() - t0

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, kw in (("runner_w1", {"workers": 1}), ("runner_w2", {"workers": 2}),
                          ("runner_w2_lzf", {"workers": 2, "compression": "lzf"})):
            path = Path(tmp) / f"{label}.nc"
            res = generate("darcy", args.n, path, resolution=args.resolution,
                           shard_size=args.shard_size, progress=True, **kw)
            runs[label] = {
                "seconds": res.seconds,
                "samples_per_second": args.n / res.seconds,
                "bytes_per_sample": path.stat().st_size / args.n,
                "speedup_vs_loop": loop_s / res.seconds,
            }
    result = {
        "benchmark": "generate",
        "problem": "darcy (piecewise, cell-centred FV, solver auto)",
        "n": args.n,
        "resolution": args.resolution,
        "shard_size": args.shard_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "loop": {"seconds": loop_s, "samples_per_second": args.n / loop_s},
        "runs": runs,
        "ratio_w2_over_w1": runs["runner_w2"]["samples_per_second"]
        / runs["runner_w1"]["samples_per_second"],
    }
    path = args.out / f"generate_darcy_{args.resolution}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
