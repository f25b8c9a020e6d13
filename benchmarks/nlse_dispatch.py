"""NLSE step cost on a CPU: how much of a DOP853 stage loop is Python's dispatch.

The solver's stage loop (``nlse._stages``: per stage one ``addmm`` combining the
stored stages, the phase product, ifft, |psi|^2 psi, fft, the way back; 11 stages a step)
runs here twice on the same soliton states (L = 50, M = 512, the NLSE benchmark's
solitons, h = 0.03): as the solver runs it (eager torch, called from Python) and as the same
ATen calls from C++ (``torch.utils.cpp_extension.load_inline``, the GIL released for the
whole loop), for chunks of 16, 32 and 64 trajectories on 1 and 2 threads (each thread
its own single-threaded chunk, as the solver's pool runs them). Both must give the same
stages bit for bit (checked). Throughput in trajectory-stage-loops per second, best of
``--repeats`` interleaved runs; the ratio of the best C++ configuration to the best eager
one is what taking Python out of the loop could win. Also the eager time of each kernel
of one stage. glibc's allocator is tuned as in benchmarks/nlse.py. JSON in
benchmarks/results/nlse_dispatch.json.

A third peer (``--inductor``): the same stage loop through ``torch.compile`` (inductor,
C++ wrapper), written on real views so that inductor fuses each stage's combination with
its phase product, the cubic, and the way back with the stored stage (three generated
kernels a stage between the two FFTs, which stay ATen calls): what fusing the passes
over memory could win without a hand-written kernel. Its stages agree with the solver's
to rounding (another order of the same operations), checked to 1e-13 of their size.

Needs a C++ compiler and ninja (``pip install ninja``); the C++ build takes about 40 s
the first time (cached by torch afterwards), inductor about 20 s a chunk size.

    python benchmarks/nlse_dispatch.py [--steps 200] [--repeats 3] [--inductor]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from nlse import L, M, exact, soliton_parameters

from pdeforge.cli import positive_int, writable_dir
from pdeforge.runtime import tune_cpu_allocator
from pdeforge.solvers import nlse

CHUNKS = (16, 32, 64)
THREADS = (1, 2)
H = 0.03  # about the NLSE benchmark's step at conserve, rtol 7e-8 (T = 20 in ~600 steps)

CPP = r"""
#include <torch/extension.h>
#include <vector>

// The stage loop of nlse._stages, call for call.
void stages(torch::Tensor y_row, std::vector<torch::Tensor> coefs,
            std::vector<torch::Tensor> blocks, std::vector<torch::Tensor> ph,
            std::vector<torch::Tensor> back, std::vector<torch::Tensor> k_rows,
            torch::Tensor arg_row, torch::Tensor staged, double h, int64_t n, int64_t m) {
  auto arg = torch::view_as_complex(arg_row.view({n, m, 2}));
  for (size_t st = 1; st < blocks.size(); ++st) {
    at::addmm_out(arg_row, y_row, coefs[st], blocks[st], 1.0, h);
    at::mul_out(staged, ph[st], arg);
    auto psi = at::fft_ifft(staged, c10::nullopt, -1);
    auto cubic = at::conj_physical(psi).mul_(psi).mul_(psi);
    at::mul_out(k_rows[st], back[st], at::fft_fft(cubic, c10::nullopt, -1));
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("stages", &stages, pybind11::call_guard<pybind11::gil_scoped_release>());
}
"""


class Chunk:
    """One chunk's state and stage buffers, laid out as ``_solve_ip_chunk`` lays them."""

    def __init__(self, ctx: nlse._IPContext, psi0: np.ndarray) -> None:
        n, m = psi0.shape
        self.n, self.m, self.ctx = n, m, ctx
        self.y = torch.fft.fft(torch.as_tensor(psi0), dim=-1)
        self.K = torch.zeros(nlse.dop853.N_STAGES, n, m, dtype=torch.complex128)
        slots = self.K.unbind(0)
        self.k_rows = [slots[i] for i in nlse.STAGE_SLOTS]
        ctx.rate(self.y, ctx.mask_i_s, self.k_rows[0])
        flat = torch.view_as_real(self.K).reshape(len(self.K), -1)
        # (slots, coefficients) per stage, as _solve_ip_chunk makes them
        self.blocks = [None] + [(flat[lo:hi], c[None]) for lo, hi, c in ctx.stages[1:]]
        # the C++ loop's form of them: two lists, stage 0 a placeholder (unused)
        self.slots = [flat[:1]] + [b for b, _ in self.blocks[1:]]
        self.coefs = [torch.zeros(1, 1, dtype=torch.float64)] + [c for _, c in self.blocks[1:]]
        self.y_row = torch.view_as_real(self.y).reshape(1, -1)
        self.arg_row = torch.empty(1, n * m * 2, dtype=torch.float64)
        self.arg = torch.view_as_complex(self.arg_row.view(n, m, 2))  # made once, as there
        self.staged = torch.empty_like(self.y)
        ph, back = ctx.phases(H)
        self.ph, self.back = list(ph.unbind(0)), list(back.unbind(0))
        # the inductor peer's operands: real views, h a tensor (a float would be baked in)
        self.flat = flat
        self.ph_real, self.back_real = torch.view_as_real(ph), torch.view_as_real(back)
        self.h = torch.tensor(H, dtype=torch.float64)

    def eager(self) -> None:
        """The solver's own stage loop (``nlse._stages``)."""
        nlse._stages(self.ctx, self.blocks, self.y_row, self.arg_row, self.arg, self.staged,
                     self.ph, self.back, self.k_rows, H)

    def compiled(self, ext) -> None:
        ext.stages(self.y_row, self.coefs, self.slots, self.ph, self.back, self.k_rows,
                   self.arg_row, self.staged, H, self.n, self.m)

    def fused(self, loop) -> None:
        """The stage loop compiled by inductor (:func:`inductor_loop`)."""
        loop(self.flat, self.y_row, self.ph_real, self.back_real, self.h)


def _cmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a b for complex numbers stored as (..., 2) real pairs (inductor generates code for
    real arithmetic only; complex operands would fall back to ATen, one kernel each)."""
    ar, ai, br, bi = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    return torch.stack([ar * br - ai * bi, ar * bi + ai * br], dim=-1)


def inductor_loop(ctx: nlse._IPContext, n: int, m: int):
    """``nlse._stages`` for a chunk of n trajectories as one ``torch.compile`` graph.

    The tableau's coefficients are Python floats (constants in the generated code); the
    stages are written into the slots of the chunk's stage buffer in place, as the
    solver's loop writes them."""
    stages = [None] + [(lo, hi, c.tolist()) for lo, hi, c in ctx.stages[1:]]

    def loop(flat, y_row, ph, back, h):
        slots = flat.view(len(flat), n, m, 2)
        y = y_row.view(n, m, 2)
        # the new stages by slot (written into the buffer once, at the end: a write into
        # the input per stage made inductor copy more, measured 0.55-0.76x slower)
        staged_by_slot = {nlse.STAGE_SLOTS[0]: slots[nlse.STAGE_SLOTS[0]]}
        for st in range(1, len(stages)):
            lo, hi, coef = stages[st]
            arg = y
            for i, a in enumerate(coef):
                if a != 0.0:
                    arg = arg + (h * a) * staged_by_slot[lo + i]
            staged = _cmul(ph[st], arg)
            psi = torch.view_as_real(torch.fft.ifft(torch.view_as_complex(staged), dim=-1))
            cubic = psi * (psi[..., 0] ** 2 + psi[..., 1] ** 2)[..., None]
            rate = torch.view_as_real(torch.fft.fft(torch.view_as_complex(cubic), dim=-1))
            staged_by_slot[nlse.STAGE_SLOTS[st]] = _cmul(back[st], rate)
        slots.copy_(torch.stack([staged_by_slot[i] for i in range(len(slots))]))

    import torch._inductor.config as inductor_config

    inductor_config.cpp_wrapper = True  # the graph's calls made from C++, not Python
    return torch.compile(loop, dynamic=False, fullgraph=True)


def throughput(run, chunks: list[Chunk], steps: int) -> float:
    """Trajectory-stage-loops per second, one thread per chunk."""

    def work(chunk: Chunk) -> None:
        for _ in range(steps):
            run(chunk)

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(chunks) * chunks[0].n * steps / (time.perf_counter() - start)


def kernel_times(chunk: Chunk, reps: int) -> dict[str, float]:
    """Eager microseconds of each kernel of one stage (stage 10: an 8-slot combination)."""
    c, st = chunk, 10
    if c.blocks[st][0].shape[0] != 8:
        raise RuntimeError("DOP853's stage 10 no longer combines 8 slots")
    c.eager()  # every buffer holds a real stage's values (no uninitialised memory)
    arg = c.arg
    psi = torch.fft.ifft(c.staged, dim=-1)
    calls = {
        "addmm (stage combination)": lambda: torch.addmm(
            c.y_row, c.blocks[st][1], c.blocks[st][0], alpha=H, out=c.arg_row),
        "phase product": lambda: torch.mul(c.ph[st], arg, out=c.staged),
        "ifft": lambda: torch.fft.ifft(c.staged, dim=-1),
        "|psi|^2 psi": lambda: torch.conj_physical(psi).mul_(psi).mul_(psi),
        "fft": lambda: torch.fft.fft(psi, dim=-1),
        "way back product": lambda: torch.mul(c.back[st], psi, out=c.k_rows[st]),
    }
    out = {}
    for name, call in calls.items():
        for _ in range(10):
            call()
        start = time.perf_counter()
        for _ in range(reps):
            call()
        out[name] = (time.perf_counter() - start) / reps * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=positive_int, default=200, help="stage loops per measurement")
    ap.add_argument("--repeats", type=positive_int, default=3, help="interleaved runs (best kept)")
    ap.add_argument("--out", type=writable_dir, default=str(Path(__file__).parent / "results"))
    ap.add_argument("--inductor", action="store_true",
                    help="add the torch.compile (inductor) peer (about 20 s a chunk size)")
    args = ap.parse_args()
    tuned = tune_cpu_allocator()  # as benchmarks/nlse.py and pdeforge generate run
    if shutil.which("ninja") is None:
        try:
            import ninja  # noqa: F401  (the PyPI wheel puts the binary on the venv's path)
        except ImportError:
            raise SystemExit(
                "nlse_dispatch: the C++ peer needs ninja: pip install ninja") from None
    from torch.utils.cpp_extension import load_inline

    print("building the C++ stage loop (about 40 s the first time)...", flush=True)
    start = time.perf_counter()
    ext = load_inline("pdeforge_bench_nlse_stages", cpp_sources=[CPP],
                      extra_cflags=["-O2"], verbose=False)
    build_seconds = time.perf_counter() - start

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # each chunk single-threaded, as in the solver's pool
    ctx = nlse._IPContext(nlse.wavenumbers(M, L), np.ones(M), 1.0, torch.device("cpu"))
    psi0 = exact(soliton_parameters(2 * max(CHUNKS)), 0.0)

    # same stages bit for bit
    a, b = Chunk(ctx, psi0[:16]), Chunk(ctx, psi0[:16])
    a.eager()
    b.compiled(ext)
    identical = bool(torch.equal(a.K, b.K))
    if not identical:
        raise SystemExit("nlse_dispatch: the C++ loop's stages differ from the solver's")
    loops: dict[int, object] = {}
    compile_seconds, inductor_difference = 0.0, None
    if args.inductor:
        print("compiling the stage loop with inductor (about 20 s a chunk size)...",
              flush=True)
        start = time.perf_counter()
        for n in CHUNKS:
            loops[n] = inductor_loop(ctx, n, M)
            Chunk(ctx, psi0[:n]).fused(loops[n])  # compiled at the first call
        compile_seconds = time.perf_counter() - start
        c = Chunk(ctx, psi0[:16])
        c.fused(loops[16])
        inductor_difference = float((c.K - a.K).abs().max() / a.K.abs().max())
        if not inductor_difference <= 1e-13:
            raise SystemExit(f"nlse_dispatch: the inductor loop's stages differ from the "
                             f"solver's by {inductor_difference:.1e} of their size")

    best: dict[tuple[str, int, int], float] = {}
    for repeat in range(args.repeats):
        for n in CHUNKS:
            for workers in THREADS:
                chunks = [Chunk(ctx, psi0[i * n:(i + 1) * n]) for i in range(workers)]
                peers = [("eager", Chunk.eager), ("C++", lambda c: c.compiled(ext))]
                if args.inductor:
                    peers.append(("inductor", lambda c: c.fused(loops[c.n])))
                for label, run in peers[:: 1 if repeat % 2 == 0 else -1]:  # alternate
                    for c in chunks:  # warm every chunk
                        run(c)
                    rate = throughput(run, chunks, args.steps)
                    key = (label, n, workers)
                    best[key] = max(best.get(key, 0.0), rate)
                    print(f"run {repeat + 1}: {label:8s} chunk {n:2d}, {workers} thread(s): "
                          f"{rate:8.0f} trajectory-stage-loops/s", flush=True)
    kernels = {n: kernel_times(Chunk(ctx, psi0[:n]), 500) for n in CHUNKS}
    torch.set_num_threads(threads_before)

    rows = [
        {"method": label, "chunk": n, "threads": workers,
         "trajectory_stage_loops_per_s": round(rate, 1),
         "vs_eager_same_config": round(rate / best[("eager", n, workers)], 3)}
        for (label, n, workers), rate in sorted(best.items(), key=lambda kv: kv[0][1:])
    ]
    best_eager = max((r for (lbl, *_), r in best.items() if lbl == "eager"))
    best_cpp = max((r for (lbl, *_), r in best.items() if lbl == "C++"))
    best_inductor = max((r for (lbl, *_), r in best.items() if lbl == "inductor"),
                        default=None)
    payload = {
        "workload": {"L": L, "M": M, "h": H, "stages_per_loop": nlse.dop853.N_STAGES - 1,
                     "steps_per_measurement": args.steps, "repeats": args.repeats},
        "machine": {"processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "allocator_tuned": tuned},
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 1),
        "bitwise_identical": identical,
        "rows": rows,
        "best_eager": round(best_eager, 1),
        "best_cpp": round(best_cpp, 1),
        "best_cpp_over_best_eager": round(best_cpp / best_eager, 3),
        "inductor": None if best_inductor is None else {
            "compile_seconds": round(compile_seconds, 1),
            "largest_stage_difference_over_largest_stage": inductor_difference,
            "best": round(best_inductor, 1),
            "best_over_best_eager": round(best_inductor / best_eager, 3),
        },
        "eager_kernel_us_one_stage": {
            str(n): {k: round(v, 1) for k, v in t.items()} for n, t in kernels.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nlse_dispatch.json").write_text(json.dumps(payload, indent=2) + "\n")
    for r in rows:
        print(f"{r['method']:8s} chunk {r['chunk']:2d} threads {r['threads']}: "
              f"{r['trajectory_stage_loops_per_s']:8.0f}/s "
              f"({r['vs_eager_same_config']:.2f}x eager)")
    print(f"best C++ / best eager: {best_cpp / best_eager:.2f}x")
    if best_inductor is not None:
        print(f"best inductor / best eager: {best_inductor / best_eager:.2f}x "
              f"(compiled in {compile_seconds:.0f} s)")
    for n, t in kernels.items():
        print(f"chunk {n}: " + ", ".join(f"{k} {v:.0f} us" for k, v in t.items()))


if __name__ == "__main__":
    main()
