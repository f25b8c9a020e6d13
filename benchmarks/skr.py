"""SKR benchmark: pdeforge's sorted + recycled solves against scipy, pyamg and splu.

    python benchmarks/skr.py [--preset quick|large|full|paper-ilu0] [--budget SECONDS]
                             [--family NAME ...] [--repeats R]

Writes benchmarks/results/skr_<preset>.json and .md (speedups, not absolute times, are
the figures to compare). Same as `pdeforge bench skr`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pdeforge import cli


def main() -> None:
    """The command line of ``pdeforge bench skr`` (its flags, checks and messages); the
    results go beside this script unless ``--out`` says otherwise."""
    args = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(Path(__file__).parent / "results")]
    sys.exit(cli.main(["bench", "skr", *args]))


if __name__ == "__main__":
    main()
