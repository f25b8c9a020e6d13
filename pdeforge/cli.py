"""The ``pdeforge`` command line: generate, check, info, train, evaluate, bench, demo.

User errors (:class:`~pdeforge.errors.PdeforgeError`, bad arguments) print one line
``pdeforge: error: ...`` and exit 2 without a traceback; ``check`` exits 1 for a file that
violates the format. Heavy imports happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pdeforge.errors import Interrupted, PdeforgeError, Terminated, sigterm_raises

EXIT_USAGE = 2
EXIT_INVALID = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer above 0 (also used by the scripts in benchmarks/)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def writable_dir(text: str) -> Path:
    """argparse type: a folder that exists (made if needed) and can be written (also used
    by the scripts in benchmarks/): found at the start, not once the work is done."""
    from pdeforge.errors import output_directory

    try:
        return output_directory(text, "--out")
    except PdeforgeError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--out ")) from None


def case_setting(text: str) -> tuple[str, int | float]:
    """argparse type: NAME=VALUE, the value an integer where written as one, else a
    number."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. m=512), got {text!r}")
    try:
        number: int | float = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name.strip()}: expected a number, got {value!r}") from None
    return name.strip(), number


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (also used by the scripts in benchmarks/)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _add_generate(sub: argparse._SubParsersAction) -> None:
    from pdeforge.datasets.format import COMPRESSIONS, FIELD_DTYPES
    from pdeforge.datasets.problems import PROBLEMS
    from pdeforge.datasets.runner import DEFAULT_SHARD_SIZE

    gen = sub.add_parser(
        "generate", help="generate a dataset with a reference solver",
        description="Generate N samples of a problem family into one dataset file. Work is "
        "sharded; re-running the same command resumes an interrupted run.",
    )
    problems = gen.add_subparsers(dest="problem", metavar="PROBLEM", required=True,
                                  parser_class=_Parser)
    for name, cls in sorted(PROBLEMS.items()):
        p = problems.add_parser(name, help=cls.description, description=cls.description)
        p.add_argument("--n", type=positive_int, required=True, help="number of samples")
        p.add_argument("--out", required=True, type=Path, help="output dataset file (.nc)")
        p.add_argument("--resolution", type=positive_int, default=None,
                       help=f"grid points per axis (default {cls.default_resolution}, "
                       f"from {cls.min_resolution} to {cls.max_resolution})")
        p.add_argument("--seed", type=_nonnegative_int, default=0, help="base seed (default 0)")
        par = p.add_mutually_exclusive_group()
        par.add_argument("--workers", type=positive_int, default=1,
                         help="local Dask worker processes (default 1: in this process)")
        par.add_argument("--scheduler", default=None,
                         help="address of a running Dask scheduler, e.g. tcp://host:8786")
        p.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE,
                       help=f"samples per shard (default {DEFAULT_SHARD_SIZE})")
        p.add_argument("--dtype", choices=FIELD_DTYPES, default="float32",
                       help="field dtype (default float32)")
        p.add_argument("--compression", choices=COMPRESSIONS, default="none",
                       help="per-chunk compression (default none)")
        p.add_argument("--strict", action="store_true",
                       help="fail instead of recording non-converged samples")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an existing output or partial run made with another config "
                       "(an output complete with this config is kept, a partial run of it "
                       "resumed)")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        cls.add_arguments(p)
        p.set_defaults(func=_cmd_generate, family=cls)


def _cmd_generate(args: argparse.Namespace) -> int:
    from pdeforge.datasets.runner import generate
    from pdeforge.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # this process and the local Dask workers (runner.py)

    result = generate(
        args.problem, args.n, args.out, resolution=args.resolution, seed=args.seed,
        options=args.family.options_from_namespace(args), workers=args.workers,
        scheduler=args.scheduler, shard_size=args.shard_size, dtype=args.dtype,
        compression=args.compression, strict=args.strict, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if result.already_complete:
        print(f"{result.path} is already complete with this config; nothing to do")
    else:
        # the rate of the samples solved in this run (a resumed run found the others)
        done = result.samples_computed
        rate = done / result.seconds if result.seconds > 0 else float("inf")
        print(f"wrote {result.path}: {result.n_samples} samples in {result.seconds:.1f} s "
              f"({done} solved in this run, {rate:.1f} samples/s; {result.shards_computed} "
              f"of {result.shards_total} shards computed in this run)")
        if result.solver_used:
            print(f"solver ran: {', '.join(result.solver_used)}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from pdeforge.datasets.check import check_file

    status = 0
    for path in args.files:
        report = check_file(path, scan_data=not args.quick)
        print(report.format())
        status = status or (0 if report.ok else EXIT_INVALID)
    return status


def _cmd_info(args: argparse.Namespace) -> int:
    from pdeforge.datasets.info import describe, format_description

    d = describe(args.file)
    print(json.dumps(d, indent=2, allow_nan=False) if args.json else format_description(d))
    return 0


def _cmd_bench_skr(args: argparse.Namespace) -> int:
    from pdeforge.bench import run_preset

    run_preset(args.preset, args.out, args.budget, args.family, args.repeats)
    print(f"results: {args.out}/skr_{args.preset}.json and .md")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main path end to end on small defaults."""
    from pdeforge.demo import run_demo

    run_demo(args.out_dir, n=args.n, n_test=args.n_test, resolution=args.resolution,
             epochs=args.epochs, seed=args.seed)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pdeforge.train.cli import train_main

    return train_main(args.lightning_args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pdeforge.train.evaluate import evaluate

    result = evaluate(args.checkpoint, args.data, resolution=args.resolution, stride=args.stride,
                      batch_size=args.batch_size, device=args.device, resample=args.resample,
                      progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_nlse(args: argparse.Namespace) -> int:
    from pdeforge.nlse_report import run_case

    strength = args.filter_strength
    if strength is not None and not (math.isfinite(strength) and strength >= 0):
        raise PdeforgeError(f"--filter-strength must be a number >= 0 (0: no filter), got "
                            f"{strength:g}")
    report = run_case(args.case, args.out_dir, rtol=args.rtol, atol=args.atol,
                      method=args.method, dealias=args.dealias,
                      filter_strength=args.filter_strength, params=dict(args.set or []))
    print(json.dumps(report, indent=2))
    print(f"figures and data in {Path(args.out_dir)}{os.sep}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from pdeforge.surrogate import query

    out = args.out or str(Path(args.input).with_suffix("")) + "_pred.nc"
    result = query(args.checkpoint, args.input, out, batch_size=args.batch_size,
                   device=args.device, overwrite=args.overwrite, resample=args.resample,
                   progress=not args.no_progress)
    mode = result["grid_mode"]
    where = "" if mode == "training grid" else (
        f", {mode} (trained on {result['training_grid']})")
    print(f"wrote {result['out']}: {result['n_samples']} prediction(s) with {result['model']} "
          f"({1e3 * result['seconds_per_sample']:.2f} ms per sample{where})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pdeforge import __version__

    parser = _Parser(prog="pdeforge", description="Classical PDE solvers -> datasets -> "
                     "neural-operator surrogates.")
    parser.add_argument("--version", action="version", version=f"pdeforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    _add_generate(sub)
    chk = sub.add_parser("check", help="validate dataset files against the format")
    chk.add_argument("files", nargs="+", metavar="FILE", help="dataset file(s) to validate")
    chk.add_argument("--quick", action="store_true",
                     help="structure only; skip scanning the data for NaN/inf")
    chk.set_defaults(func=_cmd_check)
    inf = sub.add_parser("info", help="summarise a dataset file")
    inf.add_argument("file", metavar="FILE", help="dataset file")
    inf.add_argument("--json", action="store_true", help="print JSON")
    inf.set_defaults(func=_cmd_info)
    bench = sub.add_parser("bench", help="run a benchmark (JSON and markdown results)")
    bench_sub = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True,
                                     parser_class=_Parser)
    skr = bench_sub.add_parser("skr", help="sorted + recycled Krylov solves against scipy, "
                               "pyamg and splu on the linear problem families")
    skr.add_argument("--preset", choices=["quick", "large", "full", "paper-ilu0"],
                     default="quick",
                     help="quick: minutes; large: 3D and 512^2, tens of minutes; full: the "
                     "paper's sizes with 200 systems and the large sizes, hours; paper-ilu0: "
                     "Darcy and Helmholtz at the paper's sizes with its ILU(0), 200 systems "
                     "(default quick)")
    skr.add_argument("--budget", type=positive_float, default=60.0,
                     help="seconds per peer and configuration before extrapolating")
    skr.add_argument("--family", action="append",
                     help="only this family of the preset (repeatable): darcy, darcy3d, "
                     "helmholtz, helmholtz3d, advection-diffusion, poisson, thermal")
    skr.add_argument("--repeats", type=positive_int, default=1,
                     help="runs of each peer that fits in half the budget, in rounds; the "
                     "best time is kept; above 1, auto and the fastest other peer, and skr "
                     "and gcrotmk, also run in back-to-back pairs (default 1)")
    skr.add_argument("--out", type=writable_dir, default="benchmarks/results",
                     help="results folder (default benchmarks/results)")
    skr.set_defaults(func=_cmd_bench_skr)
    train = sub.add_parser(
        "train", add_help=False, help="train an operator (LightningCLI: fit|validate|test)",
        description="pdeforge train fit --config configs/darcy_mgno.yaml [--preset cpu-small]; "
        "`pdeforge train fit --help` lists every option.")
    train.add_argument("lightning_args", nargs=argparse.REMAINDER)
    train.set_defaults(func=_cmd_train)
    ev = sub.add_parser("evaluate", help="metrics of a checkpoint on a dataset file (JSON)")
    ev.add_argument("checkpoint", metavar="CKPT", help="checkpoint from `pdeforge train fit`")
    ev.add_argument("--data", required=True, metavar="FILE", help="dataset file")
    sub_grid = ev.add_mutually_exclusive_group()
    sub_grid.add_argument("--resolution", type=positive_int, default=None,
                          help="evaluate on the grid subsampled to R points per axis")
    sub_grid.add_argument("--stride", type=positive_int, default=None,
                          help="evaluate on every k-th point of each axis (grids that are "
                          "not square; the training's --data.subsample k is taken as there)")
    ev.add_argument("--batch-size", type=positive_int, default=32,
                    help="samples per forward pass of the surrogate (default 32)")
    ev.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ev.add_argument("--resample", action="store_true",
                    help="on another grid: interpolate the inputs to the training grid, "
                    "predict there and interpolate back (instead of running the model "
                    "zero-shot)")
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ev.set_defaults(func=_cmd_evaluate)
    qu = sub.add_parser("query", help="predict with a trained surrogate into a dataset file")
    qu.add_argument("checkpoint", metavar="CKPT", help="checkpoint from `pdeforge train fit`")
    qu.add_argument("--input", required=True, metavar="FILE",
                    help="dataset file with the input variables, or a .npy array "
                    "(grid), (channels, grid) or (batch, channels, grid)")
    qu.add_argument("--out", metavar="FILE", help="output dataset (default INPUT_pred.nc)")
    qu.add_argument("--batch-size", type=positive_int, default=64,
                    help="samples per forward pass of the surrogate (default 64)")
    qu.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    qu.add_argument("--resample", action="store_true",
                    help="on another grid: interpolate to the training grid, predict there, "
                    "interpolate back (instead of running the model zero-shot)")
    qu.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    qu.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    qu.set_defaults(func=_cmd_query)
    nl = sub.add_parser("nlse", help="run a canonical NLSE case and save its figures",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Cases (figures, trajectory and <case>_report.json):\n"
                        "  soliton                 2 sech(2(x + 10)) e^{ix}, L 50, to t = 10; "
                        "error vs exact\n"
                        "  two-solitons            eta 1 and 1.2 colliding at v +-1, L 200; "
                        "measured vs analytic shifts\n"
                        "  akhmediev               breather a = 0.25 from t = -5 to 5; error "
                        "vs exact\n"
                        "  modulation-instability  plane wave + 1e-8 cos(Kx), K = sqrt(2), to "
                        "t = 25; growth rate vs theory\n"
                        "  gaussian-noise          the reference package's Gaussian plus noise")
    nl.add_argument("case", choices=["soliton", "two-solitons", "akhmediev",
                                     "modulation-instability", "gaussian-noise"])
    nl.add_argument("--out-dir", default="nlse-output", help="default nlse-output")
    nl.add_argument("--set", metavar="NAME=VALUE", type=case_setting, action="append",
                    help="a setting of the case (repeatable): the grid and times (m, "
                    "t_end, n_times; length, but for akhmediev and modulation-instability, "
                    "whose period sets it; akhmediev: t_start) and the case's own (soliton: "
                    "eta, velocity, x0; two-solitons: eta1, eta2, v1, v2, x1, x2; akhmediev: "
                    "a; modulation-instability: amplitude, k, epsilon, periods; "
                    "gaussian-noise: amplitude, width, noise, seed), e.g. --set m=512 "
                    "--set t_end=5")
    nl.add_argument("--rtol", type=float, default=1e-10,
                    help="relative tolerance of the adaptive time step (default 1e-10): "
                         "each step keeps the RMS over the Fourier coefficients of their "
                         "errors over atol + rtol |coefficient| below 1 (a local error: "
                         "the error at the end accumulates), so where --atol is the larger "
                         "term it alone sets the steps: loosen both to trade accuracy for "
                         "speed")
    nl.add_argument("--atol", type=float, default=1e-12,
                    help="absolute tolerance of the adaptive time step (default 1e-12)")
    nl.add_argument("--method", choices=["ip-dop853", "scipy-dop853"], default="ip-dop853")
    nl.add_argument("--no-dealias", dest="dealias", action="store_false",
                    help="do not mask the nonlinear term with the 2/3 rule")
    nl.add_argument("--filter-strength", type=float, default=36.0,
                    help="strength of the exponential filter of the nonlinear term "
                         "(default 36; 0 switches it off). With --no-dealias and 0 the "
                         "collocation system conserves mass and energy, also for fields "
                         "with content up to the Nyquist wavenumber (gaussian-noise)")
    nl.set_defaults(func=_cmd_nlse)
    demo = sub.add_parser("demo", help="run the main path end to end on small defaults")
    demo.add_argument("--out-dir", default="demo-output",
                      help="where the demo writes its files (default demo-output)")
    demo.add_argument("--n", type=positive_int, default=600,
                      help="training samples (default 600)")
    demo.add_argument("--n-test", type=positive_int, default=64,
                      help="fresh test samples (default 64)")
    demo.add_argument("--resolution", type=positive_int, default=32,
                      help="grid points per axis (default 32)")
    demo.add_argument("--epochs", type=positive_int, default=30,
                      help="training epochs (default 30)")
    demo.add_argument("--seed", type=_nonnegative_int, default=0, help="seed (default 0)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"pdeforge: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # while the parser imports the families (scipy, ...):
        # a 20-line traceback of importlib for a Ctrl-C in the first second
        print("pdeforge: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["train"]:  # everything after `train` belongs to LightningCLI (--help too)
        args = argparse.Namespace(func=_cmd_train, lightning_args=argv[1:])
    else:
        args, extra = parser.parse_known_args(argv)
        if extra:  # the help to see is the subcommand's (argparse named the top level's)
            where = " ".join(["pdeforge"] + [
                str(getattr(args, key)) for key in ("command", "problem", "benchmark")
                if getattr(args, key, None)
            ])
            print(f"pdeforge: error: unrecognized arguments: {' '.join(extra)} (see {where} "
                  "--help)", file=sys.stderr)
            return EXIT_USAGE
    warnings.showwarning = _show_warning
    try:
        # Lightning handles SIGTERM itself in `train` (train/cli.py)
        with contextlib.nullcontext() if args.func is _cmd_train else sigterm_raises():
            return int(args.func(args) or 0)
    except Interrupted as exc:
        print(f"pdeforge: {exc}", file=sys.stderr)
        return exc.exit_code
    except PdeforgeError as exc:
        print(f"pdeforge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pdeforge: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("pdeforge: stopped by SIGTERM", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # e.g. `pdeforge info FILE | head`: the reader left early
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, KeyError, RuntimeError) as exc:
        # HDF5 failing to read a file's bytes (a checksum, a header) where the read is
        # xarray's (query's inputs): the files the command was given, not a traceback
        from pdeforge.datasets.check import DAMAGED_FIX, _first_line, is_hdf5_damage

        if not is_hdf5_damage(exc):
            raise
        given = [str(v) for key in ("file", "files", "data", "input", "checkpoint")
                 for v in (lambda x: x if isinstance(x, list) else [x])(getattr(args, key, None))
                 if v is not None]
        print(f"pdeforge: error: reading {' or '.join(given) or 'a file'} failed: "
              f"{_first_line(exc, 160)}; {DAMAGED_FIX}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
