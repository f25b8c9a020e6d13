"""`pdeforge nlse CASE`: figures, data and numbers of a canonical case."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_akhmediev_case_writes_figures_and_a_report(tmp_path):
    proc = run_cli("nlse", "akhmediev", "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["max_error_vs_exact"] < 1e-7 and report["mass_drift"] < 1e-12
    for kind in ("spacetime", "invariants", "entropies", "phase"):
        assert (tmp_path / f"akhmediev_{kind}.png").stat().st_size > 5_000
    bad = run_cli("nlse", "breather", "--out-dir", tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
