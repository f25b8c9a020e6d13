"""SKR benchmark: pdeforge's sorted + recycled solves against scipy, pyamg and splu.

    python benchmarks/skr.py [--preset quick|large|full|paper-ilu0] [--budget SECONDS]
                             [--family NAME ...] [--repeats R]

Writes benchmarks/results/skr_<preset>.json and .md (speedups, not absolute times, are
the figures to compare). Same as `pdeforge bench skr`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pdeforge.bench import PRESETS, run_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds per peer and configuration before extrapolating")
    ap.add_argument("--family", action="append", help="only these families")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each peer that fits in half the budget (best kept); "
                    "with R > 1 auto and skr are also paired with the fastest other "
                    "peer and gcrotmk")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    run_preset(args.preset, args.out, args.budget, args.family, args.repeats)


if __name__ == "__main__":
    main()
