"""Operator cost: parameters and forward+backward time per sample, every registry model.

Each model is built with its registry defaults (1 input and 1 output channel, 2D; MgNO's
defaults are the paper's Darcy-rough configuration) and timed on random inputs at each
resolution: a forward pass, a relative-L2 loss and a backward pass, median over repeats,
divided by the batch size. The dense FNO is the peer: every row also gives its time as a
ratio to the FNO's in the same run. MG-TFNO's compression against the dense FNO of the
same width and modes is recorded too. Progress is shown with tqdm. glibc's allocator is
tuned for training (``pdeforge.runtime``) unless ``--no-tune-allocator`` is given.

    python benchmarks/operators.py [--resolutions 64 128] [--batch 8] [--repeats 5]
        [--device cpu|cuda] [--no-tune-allocator] [--tag SUFFIX] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pdeforge import operators
from pdeforge.cli import positive_int, writable_dir
from pdeforge.runtime import tune_cpu_allocator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + loss + backward pass over ``repeats`` (2 warm-ups)."""
    times = []
    for i in range(repeats + 2):
        model.zero_grad(set_to_none=True)
        _sync(x.device)
        start = time.perf_counter()
        out = model(x)
        loss = ((out - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).mean()
        loss.backward()
        _sync(x.device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", type=positive_int, nargs="+", default=[64, 128])
    ap.add_argument("--batch", type=positive_int, default=8)
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    ap.add_argument(
        "--no-tune-allocator",
        action="store_true",
        help="keep glibc's default malloc settings (see pdeforge.runtime)",
    )
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    args = ap.parse_args()
    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:  # an unknown name, or no such device here
        ap.error(f"--device {args.device}: {str(exc).splitlines()[0]}")
    tuned = False if args.no_tune_allocator else tune_cpu_allocator()
    torch.manual_seed(0)

    rows = []
    names = operators.available()
    jobs = [(n, r) for r in args.resolutions for n in names]
    for name, res in tqdm(jobs, desc="operators", unit="model"):
        model = operators.build(name, in_channels=1, out_channels=1, dim=2).to(device).train()
        x = torch.randn(args.batch, 1, res, res, device=device)
        y = torch.randn(args.batch, 1, res, res, device=device)
        seconds = time_fwd_bwd(model, x, y, args.repeats)
        row = {
            "model": name,
            "resolution": res,
            "parameters": model.count_parameters(),
            "fwd_bwd_ms_per_sample": 1e3 * seconds / args.batch,
        }
        if name == "mgtfno":
            row["compression"] = model.compression()
        rows.append(row)
    for row in rows:
        fno = next(r for r in rows if r["model"] == "fno" and r["resolution"] == row["resolution"])
        row["time_vs_fno"] = row["fwd_bwd_ms_per_sample"] / fno["fwd_bwd_ms_per_sample"]
        row["parameters_vs_fno"] = row["parameters"] / fno["parameters"]

    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    )
    payload = {
        "benchmark": "operators",
        "machine": {
            "platform": platform.platform(),
            "device": device_name or device.type,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "allocator_tuned": tuned,
        },
        "batch": args.batch,
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"operators_{device.type}{args.tag}"
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    lines = [
        f"Operators, registry defaults, 2D, batch {args.batch}, forward+backward "
        f"(device: {payload['machine']['device']}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, allocator tuned: {tuned})",
        "",
        "| model | grid | parameters | params / FNO | fwd+bwd ms/sample | time / FNO |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['resolution']}^2 | {r['parameters']:,} | "
            f"{r['parameters_vs_fno']:.2f} | {r['fwd_bwd_ms_per_sample']:.1f} | "
            f"{r['time_vs_fno']:.2f} |"
        )
    mg = next(r for r in rows if r["model"] == "mgtfno")["compression"]
    lines += [
        "",
        f"MG-TFNO (Tucker rank 0.1, 1 patching level): {mg['spectral_parameters']:,} spectral "
        f"weights vs {mg['dense_spectral_parameters']:,} for the dense FNO of the same width, "
        f"modes and inputs ({mg['spectral_compression']:.1f}x fewer); {mg['parameters']:,} vs "
        f"{mg['dense_parameters']:,} parameters in all ({mg['compression']:.1f}x; its inputs "
        "include the patching's coarse context, one channel per level, so its lifting has "
        "more weights than the FNO row's).",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
