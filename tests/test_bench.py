"""The SKR benchmark machinery on a tiny configuration (correctness, not timings)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import pytest

from pdeforge.bench import (
    FAST_REPEATS,
    rewrite_markdown,
    run_skr_benchmark,
    write_results,
)


def test_tiny_skr_benchmark_writes_consistent_results(tmp_path):
    lines = []
    cfg = run_skr_benchmark("darcy", 12, 4, ["jacobi", "ilu"], [1e-8],
                            {"coefficient": "lognormal"}, budget=30, log=lines.append)
    peers = {(p.peer.split("(")[0], p.preconditioner) for p in cfg.peers}
    for expected in [("splu", "none"), ("pyamg", "amg"), ("scipy-gmres", "jacobi"),
                     ("scipy-cg", "jacobi"), ("scipy-gcrotmk", "ilu"), ("gmres", "ilu"),
                     ("gcrodr", "jacobi"), ("skr", "ilu")]:
        assert expected in peers, expected
    for p in cfg.peers:
        if p.peer == "scipy-cg" and p.preconditioner == "ilu":
            continue  # CG with a nonsymmetric preconditioner may fail: reported as such
        assert p.converged == p.systems == 4, p
        assert p.max_residual <= 1e-8 * 1.001
        assert len(p.runs) == 1  # repeats=1: one run
    assert len(lines) == len(cfg.peers)
    write_results([cfg], tmp_path, "t")
    data = json.loads((tmp_path / "t.json").read_text())
    rows = {r["preconditioner"]: r for r in data["summary"]}
    assert set(rows) >= {"jacobi", "ilu"}
    assert rows["jacobi"]["speedup_vs_scipy_gmres_time"] > 0
    table = (tmp_path / "t.md").read_text()
    assert table.startswith("| family |") and "darcy" in table
    # run_skr_benchmark alone leaves the allocator as it is: the table says which ran so
    assert data["configs"][0]["allocator_tuned"] == cfg.allocator_tuned
    assert ("glibc's default allocator" in table) == (not cfg.allocator_tuned)
    # the settings the figures depend on are stored and stated
    assert (data["configs"][0]["budget"], data["configs"][0]["repeats"]) == (30, 1)
    assert "each peer allowed 30 s a configuration, 1 repeat (" in table
    assert datetime.fromisoformat(data["configs"][0]["measured"]).tzinfo is not None
    assert "separate runs" not in table  # one run
    older = replace(cfg, family="poisson", measured=None)
    write_results([older, cfg], tmp_path, "merged")
    merged = (tmp_path / "merged.md").read_text()
    assert "measured in separate runs: poisson n=144 before dates were recorded; darcy " \
        "n=144 20" in merged
    rewrite_markdown(tmp_path / "t.json")
    assert (tmp_path / "t.md").read_text() == table


def test_repeats_keep_the_best_of_interleaved_runs():
    cfg = run_skr_benchmark("darcy", 12, 3, ["jacobi"], [1e-8], {"coefficient": "lognormal"},
                            budget=30, peers=["splu", "scipy-cg", "skr", "auto"],
                            log=lambda _: None, repeats=3)
    auto = next(p for p in cfg.peers if p.peer.startswith("auto"))
    pairs = 2 * 3 * FAST_REPEATS  # auto and the fastest other peer: back-to-back pairs
    assert len(auto.pair_ratios) == pairs
    for p in cfg.peers:  # 3 systems of 144 unknowns: each run takes well under a second
        paired = p is auto or f"{p.peer}/{p.preconditioner}" == auto.paired_with
        assert len(p.runs) == 3 * FAST_REPEATS + (pairs if paired else 0), p
        assert p.seconds_per_system == min(p.runs)
        assert p.converged == p.systems == 3
    assert auto.paired_with and not auto.paired_with.startswith("auto")


def test_auto_is_paired_back_to_back_with_the_fastest_other_peer_in_alternating_order():
    """The pairs alternate which peer runs first, pair auto with the fastest other peer
    that solved every system, and the summary reports their ratio (which cancels a
    penalty of running first) beside the ratio of best runs; skr likewise with gcrotmk."""
    from pdeforge.bench import ConfigResult, PeerResult, _pair_peers, summarise

    def result(peer, pre, seconds, converged=4):
        return PeerResult(peer, pre, 1e-8, 4, seconds, 1.0, 1e-9, converged,
                          runs=[seconds])

    auto = result("auto", "none", 0.9)  # auto's best run beats splu's by luck
    splu, cg, failed = result("splu", "none", 1.0), result("scipy-cg", "jacobi", 2.0), \
        result("scipy-gmres", "none", 0.5, converged=3)
    calls = []
    slow_first = iter([1.2, 1.0] * 4)  # whichever runs first in a pair is 20 % slower

    def measure(peer, pre, rtol):
        calls.append(peer)
        true = {"auto": 1.05, "splu": 1.0}[peer]
        return result(peer, pre, true * next(slow_first))

    runs = [(auto, "auto", None), (splu, "splu", None), (cg, "scipy-cg", "jacobi"),
            (failed, "scipy-gmres", "none")]
    _pair_peers(runs, measure, 1e-8, 4, n_systems=4, log=lambda _: None)
    assert calls == ["splu", "auto", "auto", "splu"] * 2
    assert auto.paired_with == "splu/none"
    assert auto.pair_ratios == pytest.approx([1.05 / 1.2, 1.05 * 1.2, 1.05 / 1.2, 1.05 * 1.2])
    assert len(auto.runs) == len(splu.runs) == 5 and len(cg.runs) == 1
    cfg = ConfigResult("darcy", 12, 144, 4, True, {}, peers=[auto, splu, cg, failed, result(
        "skr(skr-rcg)", "jacobi", 1.5)])
    row = summarise([cfg])[0]
    # each two pairs of opposite order give 1.05 (the first-run penalty cancels), not the
    # best runs' 0.9 (nor the median of the pairs, 1.0675)
    assert row["auto_over_best"] == pytest.approx(1.05)
    # the ratio of bests has the pairs' denominator, the fastest peer other than auto
    # (auto's lucky 0.9 is its own best, not a peer's)
    assert row["auto_over_best_of_runs"] == pytest.approx(
        auto.seconds_per_system / splu.seconds_per_system)
    assert row["auto_pairs"] == 4 and row["auto_paired_with"] == "splu/none"
    # skr is paired with gcrotmk of its preconditioner; the column reads gcrotmk / skr
    skr, gcrot, gcrot_ilu = (result("skr", "jacobi", 1.0), result("scipy-gcrotmk", "jacobi", 0.9),
                             result("scipy-gcrotmk", "ilu", 0.1))
    truth = {"skr": 1.0, "scipy-gcrotmk": 1.1}
    slow_first = iter([1.2, 1.0] * 4)

    def measure2(peer, pre, rtol):
        return result(peer, pre, truth[peer] * next(slow_first))

    _pair_peers([(skr, "skr", "jacobi"), (gcrot, "scipy-gcrotmk", "jacobi"),
                 (gcrot_ilu, "scipy-gcrotmk", "ilu")], measure2, 1e-8, 4, n_systems=4,
                log=lambda _: None)
    assert skr.paired_with == "scipy-gcrotmk/jacobi" and len(gcrot_ilu.runs) == 1
    cfg = ConfigResult("darcy", 12, 144, 4, True, {}, peers=[skr, gcrot, gcrot_ilu])
    row = summarise([cfg])[0]
    assert row["speedup_vs_gcrotmk"] == pytest.approx(1.1)  # not the bests' 0.9 / 0.833
    assert row["speedup_vs_gcrotmk_of_runs"] == pytest.approx(0.9 / skr.seconds_per_system)
    assert row["gcrotmk_pairs"] == 4


@pytest.mark.parametrize(("fast_seconds", "fast_peer_seconds", "runs", "pairs"),
                         [(0.0, 4.0, 2, 4), (1.0, 1e-12, 2, 4 * FAST_REPEATS),
                          (1.0, 4.0, 2 * FAST_REPEATS, 4 * FAST_REPEATS)])
def test_extra_runs_of_a_fast_configuration_go_to_every_competing_peer(
        monkeypatch, fast_seconds, fast_peer_seconds, runs, pairs):
    """The extra runs depend on the configuration's fastest peer (under FAST_SECONDS) and
    go to every peer within FAST_PEER_SECONDS, so competing peers get as many runs; auto
    and the fastest other peer get the back-to-back pairs on top."""
    from pdeforge import bench

    monkeypatch.setattr(bench, "FAST_SECONDS", fast_seconds)
    monkeypatch.setattr(bench, "FAST_PEER_SECONDS", fast_peer_seconds)
    cfg = run_skr_benchmark("darcy", 12, 3, ["jacobi"], [1e-8], {"coefficient": "lognormal"},
                            budget=30, peers=["splu", "skr", "auto"], log=lambda _: None,
                            repeats=2)
    auto = next(p for p in cfg.peers if p.peer.startswith("auto"))
    assert len(auto.pair_ratios) == pairs
    paired = [p is auto or f"{p.peer}/{p.preconditioner}" == auto.paired_with
              for p in cfg.peers]
    assert sum(paired) == 2
    assert [len(p.runs) - pairs * k for p, k in zip(cfg.peers, paired, strict=True)] == \
        [runs] * len(cfg.peers)


def test_a_products_cap_stops_every_iterative_peer_and_is_stated(tmp_path):
    """Capped at 40 products a system, no iterative peer solves unpreconditioned lognormal
    Darcy 32^2 to 1e-10 (CG alone needs well over 40): each is reported as not converged
    after at most the cap (scipy's gmres: one restart cycle; plus its residual checks),
    while sparse LU is untouched; the cap is written into the results."""
    cfg = run_skr_benchmark("darcy", 32, 2, ["none"], [1e-10], {"coefficient": "lognormal"},
                            budget=30, log=lambda _: None, maxiter=40,
                            peers=["splu", "scipy-gmres", "scipy-cg", "scipy-gcrotmk",
                                   "gmres", "skr"])
    assert cfg.maxiter == 40
    for p in cfg.peers:
        if p.peer == "splu":
            assert p.converged == p.systems == 2
            continue
        assert p.converged == 0, p
        assert p.max_residual > 1e-10, p
        assert p.matvecs_per_system is not None and p.matvecs_per_system <= 40 + 2, p
    write_results([cfg], tmp_path, "t")
    assert "capped at 40 products" in (tmp_path / "t.md").read_text()
    assert json.loads((tmp_path / "t.json").read_text())["configs"][0]["maxiter"] == 40
    with pytest.raises(ValueError, match="maxiter"):
        run_skr_benchmark("darcy", 8, 1, ["none"], [1e-8], maxiter=0)


def test_a_recycling_peer_stopped_by_the_budget_reports_the_systems_it_solved(tmp_path):
    """With no budget, skr stops after its first system; that system's residual, products
    and convergence are reported (from the interrupted call's partial result)."""
    cfg = run_skr_benchmark("darcy", 12, 4, ["jacobi"], [1e-8], {"coefficient": "lognormal"},
                            budget=0.0, peers=["skr"], log=lambda _: None)
    (skr,) = cfg.peers
    assert "stopped by the 0 s budget after 1 of 4" in skr.note
    assert skr.systems == skr.converged == 1
    assert 0 < skr.max_residual <= 1e-8 and skr.matvecs_per_system > 0
    write_results([cfg], tmp_path, "t")
    assert "(1/1 of 4: budget)" in (tmp_path / "t.md").read_text()


def test_every_peer_stopped_by_the_budget_says_so(tmp_path):
    """scipy's and pdeforge's independent solvers stopped by the budget get the note skr
    gets, the table shows scipy's count out of the sequence, and a stopped auto names the
    preconditioner it ran (3D SPD at 8^3: CG with Jacobi), not "auto"."""
    cfg = run_skr_benchmark("darcy3d", 8, 3, ["jacobi"], [1e-8], {"coefficient": "lognormal"},
                            budget=0.0, peers=["scipy-gmres", "gmres", "skr", "auto"],
                            log=lambda _: None)
    by = {p.peer.split("(")[0]: p for p in cfg.peers}
    for name in ("scipy-gmres", "gmres", "skr", "auto"):
        assert by[name].systems == 1, by[name]
        assert "stopped by the 0 s budget after 1 of 3 systems" in by[name].note, by[name]
    assert by["auto"].preconditioner == "jacobi" and by["auto"].peer == "auto(cg)"
    write_results([cfg], tmp_path, "t")
    assert "scipy conv 1/1 of 3: budget)" in (tmp_path / "t.md").read_text()


def test_a_misspelt_family_is_refused_with_the_preset_s_families(tmp_path):
    from pdeforge.bench import run_preset
    from pdeforge.errors import PdeforgeError

    with pytest.raises(PdeforgeError, match="no family 'dracy'.*darcy3d"):
        run_preset("quick", tmp_path / "out", families=["dracy"])
    assert not (tmp_path / "out").exists()


def test_pyamg_is_a_peer_where_it_has_a_solver_for_the_matrix_class():
    """pyamg's AIR preconditions scipy's GMRES on nonsymmetric advection-diffusion (every
    true residual within rtol); Helmholtz (symmetric indefinite) gets no pyamg peer."""
    cfg = run_skr_benchmark("advection-diffusion", 24, 3, ["ilu"], [1e-8], {}, budget=30,
                            log=lambda _: None, peers=["splu", "pyamg", "skr"])
    (amg,) = [p for p in cfg.peers if p.peer == "pyamg"]
    assert amg.preconditioner == "air"
    assert amg.converged == amg.systems == 3 and amg.max_residual <= 1e-8 * 1.0001
    assert 0 < amg.matvecs_per_system < 200
    cfg = run_skr_benchmark("helmholtz", 24, 2, ["ilu"], [1e-7], {"boundary": "dirichlet",
                                                                 "k0": 5.0},
                            budget=30, log=lambda _: None, peers=["splu", "pyamg", "skr"])
    assert "pyamg" not in {p.peer for p in cfg.peers}


def test_a_rerun_stopped_midway_leaves_the_earlier_results_whole(tmp_path, monkeypatch):
    """Ctrl-C during a rerun of a preset cut the results file down to the configurations
    the rerun had redone; this run's finished ones are kept beside it (review)."""
    import pdeforge.bench as bench

    tiny = [("darcy", 12, 4, ["jacobi"], [1e-8], {"coefficient": "lognormal"},
             ["splu", "skr"]),
            ("poisson", 12, 4, ["jacobi"], [1e-8], {}, ["splu", "skr"])]
    monkeypatch.setitem(bench.PRESETS, "tiny", tiny)
    first = bench.run_preset("tiny", tmp_path, budget=30)
    assert [c.family for c in first] == ["darcy", "poisson"]
    results = tmp_path / "skr_tiny.json"
    before = results.read_bytes(), (tmp_path / "skr_tiny.md").read_bytes()
    assert not list(tmp_path.glob("*partial*"))
    run = bench.run_skr_benchmark

    def stop_at_poisson(family, *args, **kwargs):
        if family == "poisson":
            raise KeyboardInterrupt
        return run(family, *args, **kwargs)

    monkeypatch.setattr(bench, "run_skr_benchmark", stop_at_poisson)
    with pytest.raises(KeyboardInterrupt):
        bench.run_preset("tiny", tmp_path, budget=30)
    assert (results.read_bytes(), (tmp_path / "skr_tiny.md").read_bytes()) == before
    partial = json.loads((tmp_path / "skr_tiny.partial.json").read_text())
    assert [c["family"] for c in partial["configs"]] == ["darcy"]


BENCHMARKS = __import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(("script", "args", "message"), [
    ("neighbour_reuse.py", ["--out", "{file}/res"], "cannot be created (Not a directory)"),
    ("surrogate_speed.py", ["--out", "{file}/res"], "cannot be created (Not a directory)"),
    ("nlse_splitting.py", ["--n", "300"], "--n is at most 256"),
    ("nlse_chunking.py", ["--n", "-3"], "must be a positive integer"),
    ("nlse_dispatch.py", ["--repeats", "0"], "must be a positive integer"),
    ("nlse.py", ["--conserve-rtols", "-0.01"], "argument --conserve-rtols"),
    ("darcy_models.py", ["--device", "gpu0"], "--device: unknown device 'gpu0'"),
    ("neighbour_reuse.py", ["--family", "nlse"], "invalid choice: 'nlse'"),
])
def test_benchmark_scripts_refuse_bad_arguments_before_any_work(script, args, message,
                                                                tmp_path):
    """A bad --out, count or device was found after the work (a traceback, results lost)
    or never (negative or inflated throughput written) (review)."""
    import subprocess
    import sys

    (tmp_path / "file").write_text("")
    args = [a.replace("{file}", str(tmp_path / "file")) for a in args]
    # (an --out of the test's own where the case is not about --out: a script that went
    # on to work wrote into the repository's benchmarks/results, as the code before
    # this test did when it was checked against it)
    out = tmp_path / "out"
    if "--out" not in args:
        args = [*args, "--out", str(out)]
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # nothing written (the --out folder is made while the arguments are read)
    assert sorted(p.name for p in tmp_path.iterdir() if p != out) == ["file"]
    assert not out.exists() or not any(out.iterdir())


def test_bench_skr_finds_an_unwritable_out_before_the_work(tmp_path):
    from tests.conftest import run_cli

    (tmp_path / "file").write_text("")
    proc = run_cli("bench", "skr", "--family", "thermal", "--out", tmp_path / "file" / "res")
    assert proc.returncode == 2 and "cannot be created (Not a directory)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_skr_checks_its_default_out_before_the_work(tmp_path):
    """argparse converts only string defaults: the default benchmarks/results was not
    checked, and a blocked one failed after the first configuration (review)."""
    from tests.conftest import run_cli

    (tmp_path / "benchmarks").write_text("")
    proc = run_cli("bench", "skr", "--family", "thermal", cwd=tmp_path)
    assert proc.returncode == 2 and "benchmarks/results cannot be created" in proc.stderr
    assert "Traceback" not in proc.stderr
