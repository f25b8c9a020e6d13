"""All five operators on the same pdeforge Darcy dataset, one recipe each, in one run.

Data (made here with `pdeforge generate`, piecewise coefficient): a training file of
``--n-train + --n-val`` samples at 64x64 (validation picks the best checkpoint), a test
file of ``--n-test`` samples at 64x64 and one at 128x128 (other seeds) for zero-shot
evaluation at twice the training resolution. Each model trains with its shipped config
(configs/darcy_<model>.yaml) for the same epoch budget; on a budget of tens of epochs the
configs' StepLR(100) would never decay, so every run uses OneCycle over the budget
(``--scheduler``), and ``--cpu-overrides`` shrinks LSM to width 32 for the CPU run (the
shipped d = 64 costs ~4x more per step). Reports test relative L2 and H1 (best
checkpoint), parameters, train seconds per epoch (validation included), inference ms per
sample; JSON and a markdown table in benchmarks/results/.

    python benchmarks/darcy_models.py [--epochs 12] [--models mgno fno ...] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from pdeforge.cli import positive_int, writable_dir
from pdeforge.datasets.runner import generate
from pdeforge.errors import ConfigMismatchError
from pdeforge.runtime import tune_cpu_allocator
from pdeforge.train.checkpoint import load_module
from pdeforge.train.cli import run_cli
from pdeforge.train.evaluate import evaluate
from pdeforge.train.module import SCHEDULERS

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["mgno", "fno", "mgtfno", "deeponet", "lsm"]
CPU_OVERRIDES = {"lsm": ['--model.model_kwargs={"width": 32, "n_stages": 4, "num_tokens": 4, '
                         '"num_basis": 12, "heads": 8, "patch_size": 4}']}


def inference_ms(module: torch.nn.Module, data: Path, device: str, batch: int = 32) -> float:
    from pdeforge.datasets.torch_dataset import TorchDataset

    ds = TorchDataset(data, module.data_info["inputs"], module.data_info["outputs"])
    x = torch.stack([ds[i][0] for i in range(min(len(ds), batch))]).to(device)
    with torch.no_grad():
        module(x)  # warm-up
        start = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            module(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / (repeats * x.shape[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=positive_int, default=12)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--n-train", type=positive_int, default=1000)
    ap.add_argument("--n-val", type=positive_int, default=100)
    ap.add_argument("--n-test", type=positive_int, default=200)
    ap.add_argument("--resolution", type=positive_int, default=64)
    ap.add_argument("--scheduler", default="onecycle", choices=SCHEDULERS)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cpu-overrides", action=argparse.BooleanOptionalAction, default=None,
                    help="smaller LSM for CPU runs (default: on for --device cpu)")
    ap.add_argument("--work", type=Path, default=Path(__file__).parent / "work" / "darcy_models",
                    help="datasets and training runs (reused by a rerun with the same sizes; "
                    "default benchmarks/work/darcy_models, git-ignored)")
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    # (before the datasets are made: a bad device was found after training, and blamed
    # on the checkpoint)
    from pdeforge.surrogate import SurrogateInputError, _check_device

    try:
        args.device = _check_device(args.device)
    except SurrogateInputError as exc:
        ap.error(f"--device: {exc}")
    tune_cpu_allocator()
    overrides = args.cpu_overrides if args.cpu_overrides is not None else args.device == "cpu"
    args.work.mkdir(parents=True, exist_ok=True)
    res = args.resolution
    train_file = args.work / f"darcy_{res}_train.nc"
    test_file = args.work / f"darcy_{res}_test.nc"
    test_fine = args.work / f"darcy_{2 * res}_test.nc"
    t0 = time.perf_counter()
    try:
        generate("darcy", args.n_train + args.n_val, train_file, resolution=res, seed=0)
        generate("darcy", args.n_test, test_file, resolution=res, seed=1)
        generate("darcy", args.n_test, test_fine, resolution=2 * res, seed=2)
    except ConfigMismatchError as exc:  # its hint names generate's flags, not this script's
        ap.error(f"{exc.args[0].split(';')[0]}; other sizes need another --work folder")
    generation_seconds = time.perf_counter() - t0
    n = args.n_train + args.n_val
    split = f"--data.split=[{args.n_train / n}, {args.n_val / n}, 0.0]"

    rows = []
    for name in args.models:
        config = ROOT / "configs" / f"darcy_{name}.yaml"
        argv = ["fit", "--config", str(config), f"--data.path={train_file}",
                f"--data.test_path={test_file}", split, f"--trainer.max_epochs={args.epochs}",
                f"--model.scheduler={args.scheduler}",
                f"--trainer.accelerator={'gpu' if args.device.startswith('cuda') else 'cpu'}",
                "--trainer.devices=1", f"--trainer.default_root_dir={args.work / 'runs'}",
                f"--trainer.logger.init_args.save_dir={args.work / 'runs'}",
                f"--trainer.logger.init_args.name={name}"]
        if overrides:
            argv += CPU_OVERRIDES.get(name, [])
        start = time.perf_counter()
        cli = run_cli(argv)
        fit_seconds = time.perf_counter() - start
        best = cli.trainer.checkpoint_callback.best_model_path
        module, _ = load_module(best, args.device)
        native = evaluate(best, test_file, device=args.device, progress=False)
        zero_shot = evaluate(best, test_fine, device=args.device, progress=False)
        row = {
            "model": name,
            "parameters": module.operator.count_parameters(),
            "model_kwargs": module.hparams.model_kwargs,
            "epochs": args.epochs,
            "train_seconds_per_epoch": fit_seconds / args.epochs,
            "inference_ms_per_sample": inference_ms(module, test_file, args.device),
            "test_rel_l2": native["rel_l2"],
            "test_rel_h1": native["rel_h1"],
            f"zero_shot_{2 * res}_rel_l2": zero_shot["rel_l2"],
            f"zero_shot_{2 * res}_rel_h1": zero_shot["rel_h1"],
            "best_checkpoint": str(best),
            "test_metrics": native,
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "test_metrics"}, indent=1))

    device_name = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                   else platform.processor() or "cpu")
    payload = {
        "benchmark": "darcy_models",
        "machine": {"platform": platform.platform(), "device": device_name,
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "data": {"resolution": res, "n_train": args.n_train, "n_val": args.n_val,
                 "n_test": args.n_test, "coefficient": "piecewise",
                 "generation_seconds": generation_seconds},
        "recipe": {"epochs": args.epochs, "scheduler": args.scheduler,
                   "cpu_overrides": CPU_OVERRIDES if overrides else {}},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"darcy_models_{'gpu' if args.device.startswith('cuda') else 'cpu'}"
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    fine = 2 * res
    lines = [
        f"Darcy {res}x{res} (piecewise), {args.n_train} train / {args.n_val} val / "
        f"{args.n_test} test, {args.epochs} epochs, {args.scheduler}, device {device_name}",
        "",
        f"| model | params | test rel L2 | test rel H1 | zero-shot {fine}^2 rel L2 | "
        "train s/epoch | inference ms/sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["test_rel_l2"]):
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {100 * r['test_rel_l2']:.2f}% | "
            f"{100 * r['test_rel_h1']:.2f}% | {100 * r[f'zero_shot_{fine}_rel_l2']:.2f}% | "
            f"{r['train_seconds_per_epoch']:.1f} | {r['inference_ms_per_sample']:.2f} |"
        )
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
