"""``pdeforge demo`` / ``make demo``: the main path end to end on small defaults.

1. generate a Darcy dataset with the Krylov solver (sorted + recycled CG, ``--solver skr``)
   and check it;
2. train MgNO on it (Lightning, best checkpoint by validation error);
3. evaluate the checkpoint on a test file of fresh samples (another seed);
4. query the surrogate on those fresh inputs, compare with the reference solver;
5. print a short report and save a figure (input, solver, surrogate, error).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pdeforge.errors import PdeforgeError, output_directory


def save_figure(path: Path, coefficient, solution, prediction, title: str) -> Path:
    """Input, reference solution, surrogate and error of one sample as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    error = prediction - solution
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), constrained_layout=True)
    panels = [
        (coefficient, "input: coefficient K", "viridis"),
        (solution, "reference solver u", "magma"),
        (prediction, "surrogate u", "magma"),
        (error, "surrogate - solver", "RdBu_r"),
    ]
    vmax = float(max(abs(error.min()), abs(error.max()))) or 1.0
    for ax, (data, label, cmap) in zip(axes, panels, strict=True):
        kwargs = {"vmin": -vmax, "vmax": vmax} if cmap == "RdBu_r" else {}
        if cmap == "magma":
            kwargs = {"vmin": float(solution.min()), "vmax": float(solution.max())}
        image = ax.imshow(data.T, origin="lower", extent=(0, 1, 0, 1), cmap=cmap, **kwargs)
        ax.set_title(label)
        ax.set_xlabel("x")
        fig.colorbar(image, ax=ax, shrink=0.85)
    axes[0].set_ylabel("y")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(
    out_dir: str | Path = "demo-output",
    *,
    n: int = 600,
    n_test: int = 64,
    resolution: int = 32,
    epochs: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    from pdeforge.datasets.check import check_file
    from pdeforge.datasets.runner import generate
    from pdeforge.surrogate import Surrogate
    from pdeforge.train.cli import checkpoint_paths, run_cli
    from pdeforge.train.evaluate import evaluate

    out = output_directory(out_dir)
    t0 = time.perf_counter()
    train_file, test_file = out / "darcy_train.nc", out / "darcy_test.nc"
    print(
        f"[1/5] generating {n} + {n_test} Darcy samples at {resolution}x{resolution} with "
        "the Krylov solver (sorted + recycled CG)",
        flush=True,
    )
    options = {"solver": "skr", "preconditioner": "amg"}
    # demo files are scratch: a re-run with other settings replaces them
    gen = generate(
        "darcy", n, train_file, resolution=resolution, seed=seed, options=options, overwrite=True
    )
    generate(
        "darcy",
        n_test,
        test_file,
        resolution=resolution,
        seed=seed + 1,
        options=options,
        overwrite=True,
    )
    for f in (train_file, test_file):
        report = check_file(f)
        if not report.ok:
            raise PdeforgeError(f"generated file failed `pdeforge check`:\n{report.format()}")
    print(
        f"      {gen.n_samples / max(gen.seconds, 1e-9):.0f} samples/s; both files pass "
        "`pdeforge check`",
        flush=True,
    )

    print(f"[2/5] training MgNO for {epochs} epochs (Lightning)", flush=True)
    t_train = time.perf_counter()
    cli = run_cli(
        [
            "fit",
            "--model.model=mgno",
            '--model.model_kwargs={"channels": 16, "n_layers": 4, "levels": 4}',
            "--model.loss=l2",
            "--model.lr=3e-3",
            "--model.scheduler=onecycle",
            f"--data.path={train_file}",
            "--data.split=[0.9, 0.1, 0.0]",
            "--data.batch_size=16",
            f"--trainer.max_epochs={epochs}",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            f"--trainer.default_root_dir={out / 'runs'}",
            f"--trainer.logger.init_args.save_dir={out / 'runs'}",
            "--trainer.enable_model_summary=false",
        ]
    )
    train_seconds = time.perf_counter() - t_train
    best = Path(checkpoint_paths(cli.trainer)[0])

    print(f"[3/5] evaluating {best.name} on {n_test} fresh samples", flush=True)
    metrics = evaluate(best, test_file, progress=False)

    print("[4/5] querying the surrogate and comparing with the solver", flush=True)
    surrogate = Surrogate.load(best, "cpu")
    from pdeforge.datasets.readers import open_dataset

    with open_dataset(test_file) as ds:
        fresh = ds[["coefficient"]].load()
    comparison = surrogate.compare(fresh)
    # the fastest classical peer on these inputs too: at small grids a sparse direct solve
    # beats the recycled Krylov solver that made the data (README, surrogate_speed.md), so
    # a speedup over the latter alone would flatter the surrogate
    from pdeforge.datasets.problems import build_problem

    direct = build_problem("darcy", resolution,
                           **{**options, "solver": "direct", "preconditioner": "auto"})
    direct_seconds = float(
        np.mean(direct.solve_inputs({"coefficient": fresh["coefficient"].values})["solve_seconds"])
    )

    print("[5/5] figure", flush=True)
    k = 0
    figure = save_figure(
        out / "demo.png",
        fresh["coefficient"].values[k],
        comparison.solution["solution"].values[k],
        comparison.prediction["solution"].values[k],
        f"Darcy {resolution}x{resolution}, fresh sample: MgNO surrogate relative L2 "
        f"{comparison.per_sample_rel_l2[k]:.2%}",
    )
    report = {
        "test_rel_l2": metrics["rel_l2"],
        "test_rel_h1": metrics["rel_h1"],
        "n_test": metrics["n_samples"],
        "surrogate": repr(surrogate),
        "solver_ms_per_sample": 1e3 * comparison.solver_seconds,
        "surrogate_ms_per_sample": 1e3 * comparison.surrogate_seconds,
        "speedup": comparison.speedup,
        "direct_ms_per_sample": 1e3 * direct_seconds,
        "speedup_vs_direct": direct_seconds / comparison.surrogate_seconds,
        "train_seconds": train_seconds,
        "checkpoint": str(best),
        "figure": str(figure),
        "wall_seconds": time.perf_counter() - t0,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print()
    print(f"  surrogate        {report['surrogate']}")
    print(
        f"  test error       relative L2 {metrics['rel_l2']:.2%}, relative H1 "
        f"{metrics['rel_h1']:.2%} on {metrics['n_samples']} fresh samples"
    )
    print(
        f"  time per sample  solver {report['solver_ms_per_sample']:.2f} ms (skr, as "
        f"generated), sparse direct {report['direct_ms_per_sample']:.2f} ms, surrogate "
        f"{report['surrogate_ms_per_sample']:.2f} ms (batched, CPU): speedup "
        f"{comparison.speedup:.1f}x over skr, {report['speedup_vs_direct']:.1f}x over the "
        "direct solve"
    )
    print(f"  figure           {figure}")
    print(f"  checkpoint       {best}")
    print(f"demo finished in {report['wall_seconds']:.0f} s (training {train_seconds:.0f} s)")
    return report
