"""`pdeforge nlse CASE`: figures, data and numbers of a canonical case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


def test_akhmediev_case_writes_figures_and_a_report(tmp_path):
    proc = run_cli("nlse", "akhmediev", "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "akhmediev_report.json").read_text())
    assert report["max_error_vs_exact"] < 1e-7 and report["mass_drift"] < 1e-12
    # the breather's momentum is zero: its drift is relative to sqrt(M int |psi_x|^2)
    assert report["momentum_scale"] > 0 and report["momentum_drift"] < 1e-9
    # a second case in the same folder keeps the first one's report (report.json was
    # overwritten)
    assert run_cli("nlse", "soliton", "--out-dir", tmp_path, "--rtol", "1e-6").returncode == 0
    assert {p.name for p in tmp_path.glob("*_report.json")} == {
        "akhmediev_report.json", "soliton_report.json"}
    for kind in ("spacetime", "invariants", "entropies", "phase"):
        assert (tmp_path / f"akhmediev_{kind}.png").stat().st_size > 5_000
    bad = run_cli("nlse", "breather", "--out-dir", tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    # an output folder that cannot be made is refused before the run, without a traceback
    # (a file on its path gave NotADirectoryError's traceback; "" printed "/")
    for out, says in ((tmp_path / "soliton_report.json" / "sub", "cannot be created"),
                      (tmp_path / "akhmediev_report.json", "is not a directory"),
                      ("", "--out-dir is empty")):
        bad = run_cli("nlse", "soliton", "--out-dir", out)
        assert bad.returncode != 0 and says in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


def test_the_mask_of_the_nonlinear_term_can_be_switched_off(tmp_path):
    """--no-dealias --filter-strength 0: the plain collocation system, which conserves
    energy (the report says which settings ran); a negative strength is refused."""
    proc = run_cli("nlse", "soliton", "--out-dir", tmp_path, "--rtol", "1e-9",
                   "--no-dealias", "--filter-strength", "0")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(next(tmp_path.glob("*_report.json")).read_text())
    assert report["dealias"] is False and report["filter_strength"] is None
    assert report["energy_drift"] < 1e-9 and report["max_error_vs_exact"] < 1e-6
    assert 0 < report["energy_drift_scaled"] <= report["energy_drift"]  # |E0| < its terms
    bad = run_cli("nlse", "soliton", "--out-dir", tmp_path, "--filter-strength", "-1")
    assert bad.returncode != 0 and "--filter-strength must be a number >= 0 (0: no filter), " \
        "got -1" in bad.stderr, bad.stderr


def test_reports_compare_the_cases_with_their_formulas(tmp_path):
    mi = run_cli("nlse", "modulation-instability", "--out-dir", tmp_path)
    assert mi.returncode == 0, mi.stderr
    report = json.loads((tmp_path / "modulation-instability_report.json").read_text())
    assert abs(report["growth_rate_measured"] / report["growth_rate_theory"] - 1) < 0.02
    two = run_cli("nlse", "two-solitons", "--out-dir", tmp_path, "--rtol", "1e-9")
    assert two.returncode == 0, two.stderr
    report = json.loads((tmp_path / "two-solitons_report.json").read_text())
    for measured, formula in zip(report["collision_shift_measured"],
                                 report["collision_shift_formula"], strict=True):
        assert abs(measured - formula) < 1e-3  # REFERENCES.md: within 1e-3
    assert run_cli("nlse", "--help").stdout.count("vs") >= 3  # the cases are described


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
def test_an_output_folder_is_tried_with_a_file_before_the_work():
    # permissions said yes to root for /proc and /sys: the run ended in a traceback
    from pdeforge.errors import PdeforgeError, output_directory

    with pytest.raises(PdeforgeError, match="--out-dir /proc/self/fd is not writable"):
        output_directory("/proc/self/fd")


def test_the_momentum_drift_of_modulation_instability_is_read_against_its_growth(tmp_path):
    """Its field at t = 0 is a plane wave with a 1e-8 perturbation: scaled by t = 0's
    gradient alone, a drift of 2e-14 read 4.6e-7 (a new user's review)."""
    proc = run_cli("nlse", "modulation-instability", "--out-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "modulation-instability_report.json").read_text())
    assert report["momentum_drift_absolute"] < 1e-10
    assert report["momentum_drift"] < 10 * report["mass_drift"] + 1e-12


def test_a_case_runs_with_the_users_grid_times_and_parameters(tmp_path):
    """`pdeforge nlse` ran each case at its defaults only (no L, M, times or amplitude)."""
    import numpy as np

    proc = run_cli("nlse", "soliton", "--out-dir", tmp_path, "--set", "m=256",
                   "--set", "t_end=2", "--set", "eta=1.5", "--set", "length=40",
                   "--set", "n_times=11")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "soliton_report.json").read_text())
    assert (report["m"], report["length"], report["t"]) == (256, 40.0, [0.0, 2.0])
    assert report["settings"] == {"m": 256, "t_end": 2, "eta": 1.5, "length": 40, "n_times": 11}
    data = np.load(next(tmp_path.glob("soliton*.npz")))
    psi = data[next(k for k in data.files if data[k].ndim == 2)]
    assert psi.shape == (11, 256)
    # the soliton of amplitude 1.5: max |psi(0)| = eta
    assert float(np.abs(psi[0]).max()) == pytest.approx(1.5, rel=1e-3)
    for args, says in ((["--set", "mm=256"], "has no setting 'mm'; its settings: eta"),
                       (["--set", "m=4"], "m must be an integer >= 8"),
                       (["--set", "m"], "expected NAME=VALUE"),
                       (["--set", "eta=big"], "eta: expected a number")):
        bad = run_cli("nlse", "soliton", "--out-dir", tmp_path, *args)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
