"""The SKR benchmark machinery on a tiny configuration (correctness, not timings)."""

from __future__ import annotations

import json

import pytest

from pdeforge.bench import FAST_REPEATS, rewrite_markdown, run_skr_benchmark, write_results


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
    rewrite_markdown(tmp_path / "t.json")
    assert (tmp_path / "t.md").read_text() == table


def test_repeats_keep_the_best_of_interleaved_runs():
    cfg = run_skr_benchmark("darcy", 12, 3, ["jacobi"], [1e-8], {"coefficient": "lognormal"},
                            budget=30, peers=["splu", "scipy-cg", "skr", "auto"],
                            log=lambda _: None, repeats=3)
    for p in cfg.peers:  # 3 systems of 144 unknowns: each run takes well under a second
        assert len(p.runs) == 3 * FAST_REPEATS, p
        assert p.seconds_per_system == min(p.runs)
        assert p.converged == p.systems == 3


@pytest.mark.parametrize(("fast_seconds", "fast_peer_seconds", "runs"),
                         [(0.0, 4.0, 2), (1.0, 1e-12, 2), (1.0, 4.0, 2 * FAST_REPEATS)])
def test_extra_runs_of_a_fast_configuration_go_to_every_competing_peer(
        monkeypatch, fast_seconds, fast_peer_seconds, runs):
    """The extra runs depend on the configuration's fastest peer (under FAST_SECONDS) and
    go to every peer within FAST_PEER_SECONDS, so competing peers get as many runs."""
    from pdeforge import bench

    monkeypatch.setattr(bench, "FAST_SECONDS", fast_seconds)
    monkeypatch.setattr(bench, "FAST_PEER_SECONDS", fast_peer_seconds)
    cfg = run_skr_benchmark("darcy", 12, 3, ["jacobi"], [1e-8], {"coefficient": "lognormal"},
                            budget=30, peers=["splu", "skr", "auto"], log=lambda _: None,
                            repeats=2)
    assert [len(p.runs) for p in cfg.peers] == [runs] * len(cfg.peers)


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
