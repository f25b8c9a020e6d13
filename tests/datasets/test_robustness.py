"""Inputs and situations found by trying to break the CLI as a new user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import h5py
import numpy as np
import pytest
import torch

from pdeforge.datasets import TorchDataset, check_file, runner
from pdeforge.datasets.runner import generate
from pdeforge.errors import PdeforgeError
from tests.conftest import run_cli
from tests.datasets.test_format import _corrupt, _external_file


def test_overwrite_cannot_steal_a_running_output(tmp_path):
    out = tmp_path / "busy.nc"
    with runner._locked(out):
        with pytest.raises(PdeforgeError, match="another `pdeforge generate` is writing"):
            generate("darcy", 2, out, resolution=8, overwrite=True, progress=False)
    generate("darcy", 2, out, resolution=8, progress=False)  # lock released
    assert not (tmp_path / "busy.nc.lock").exists()


def test_float32_overflow_is_recorded_not_stored_as_converged(tmp_path):
    with pytest.warns(UserWarning, match="NaN/inf fields in float32"):
        res = generate("darcy", 6, tmp_path / "o.nc", resolution=12, progress=False,
                       options={"coefficient": "lognormal", "sigma": 3000.0})
    assert res.nonconverged
    assert check_file(res.path).ok


@pytest.mark.parametrize("scale", [1e300, 1e-50])
def test_samples_lost_to_float32_only_do_not_get_the_solver_s_hint(tmp_path, monkeypatch,
                                                                   scale):
    """Beyond float32's range (inf) or wholly below its normal numbers (zeros, subnormals:
    a coefficient of 1e-50 was stored as 0 and marked converged)."""
    from pdeforge.datasets.problems.darcy import Darcy

    real = Darcy.generate

    def huge(self, seed, indices, progress=None):  # solved, but not storable in float32
        out = real(self, seed, indices, progress)
        rows = [row for row, i in enumerate(indices) if i == 2]
        out["solution"][rows] *= scale
        return out

    monkeypatch.setattr(Darcy, "generate", huge)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = generate("darcy", 4, tmp_path / "h.nc", resolution=8, progress=False)
    assert res.nonconverged == [2]
    (final,) = [str(w.message) for w in caught if "did not converge" in str(w.message)]
    assert "(1 for fields float32 cannot hold, see above)" in final
    (why,) = [str(w.message) for w in caught if "recorded as not converged" in str(w.message)]
    assert ("NaN/inf fields" if scale > 1 else "below the smallest normal number of float32 "
            "(1.2e-38)") in why
    assert "raise --maxiter" not in final  # the solver converged: its hint does not apply


@pytest.mark.parametrize("options", [{"k_high": 1e307},  # K / h^2 overflows
                                     {"coefficient": "lognormal", "sigma": 20000.0}])
def test_a_coefficient_beyond_double_range_is_stored_unconverged_not_a_crash(tmp_path, options):
    # the matrix's entries overflowed (inf) and the whole run stopped with "system 0:
    # matrix contains NaN or inf entries"; such samples are stored with converged=false
    with pytest.warns(UserWarning):
        res = generate("darcy", 3, tmp_path / "k.nc", resolution=16, progress=False,
                       options=options)
    assert check_file(res.path).ok
    with h5py.File(res.path) as f:
        converged = f["converged"][:].astype(bool)
        assert not converged.all()
        if "k_high" in options:  # K = 1e307 everywhere but the inclusions: no system at all
            assert np.isnan(f["solution"][:][~converged]).all()


def test_the_harmonic_mean_of_huge_coefficients_is_finite():
    from pdeforge.solvers.diffusion import harmonic_mean

    a = np.array([1e200, 3.0, 1e300, 2.0])
    b = np.array([1e200, 6.0, 1e-300, 1e308])
    np.testing.assert_allclose(harmonic_mean(a, b), [1e200, 4.0, 2e-300, 4.0], rtol=1e-15)


def test_failure_before_any_shard_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("solver crashed")

    monkeypatch.setattr(runner, "_compute_shard", boom)
    with pytest.raises(RuntimeError):
        generate("darcy", 4, tmp_path / "f.nc", resolution=8, progress=False)
    assert not (tmp_path / "f.nc.parts").exists()
    monkeypatch.undo()
    # a corrected re-run is not blocked by a stale manifest
    generate("darcy", 4, tmp_path / "f.nc", resolution=8, progress=False,
             options={"coefficient": "lognormal"})


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--alpha", "inf"], "must be a finite number"),
        (["--threshold", "nan"], "must be a finite number"),
        (["--forcing", "nan"], "must be a finite number"),
        (["--alpha", "0.5"], "use --alpha > 1"),
        (["--alpha", "1000"], "overflows"),
        (["--seed", "99999999999999999999999"], "[0, 2^63)"),
        (["--scheduler", "garbage"], "cannot reach the Dask scheduler"),
    ],
)
def test_more_bad_options(tmp_path, args, fragment):
    proc = run_cli("generate", "darcy", "--n", "2", "--resolution", "8", "--out",
                   tmp_path / "x.nc", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr
    assert not (tmp_path / "x.nc.parts").exists()


def test_options_a_family_cannot_use_are_refused_before_any_work(tmp_path):
    (tmp_path / "file.nc").write_text("not a folder")
    for args, fragment in (
        (["helmholtz", "--k0", "5", "--preconditioner", "amg", "--solver", "skr",
          "--workers", "2"],
         "amg (smoothed aggregation) is for symmetric positive definite systems, and "
         "helmholtz's matrices with these options are not symmetric"),
        (["advection-diffusion", "--preconditioner", "amg", "--solver", "gcrodr"],
         "advection-diffusion's matrices with these options are not symmetric"),
        (["darcy", "--out", tmp_path / "file.nc" / "x.nc"], "file.nc is a file, not a folder"),
    ):
        out = [] if "--out" in args else ["--out", tmp_path / "x.nc"]
        proc = run_cli("generate", *args, "--n", "2", "--resolution", "16", *out, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.nc.parts").exists()


def test_amg_is_taken_where_the_options_make_the_matrices_symmetric(tmp_path):
    # helmholtz with Dirichlet walls and a small k0 is SPD: amg serves it (refused for the
    # whole family at first, from the family's class)
    res = generate("helmholtz", 2, tmp_path / "h.nc", resolution=16, progress=False,
                   options={"boundary": "dirichlet", "k0": 1.0, "preconditioner": "amg",
                            "solver": "skr"})
    assert not res.nonconverged and check_file(res.path).ok


def test_unwritable_output_directory(tmp_path):
    proc = run_cli("generate", "darcy", "--n", "2", "--out", "/proc/x.nc")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "/proc" in proc.stderr


def test_ctrl_c_keeps_shards_exits_130_and_resumes(tmp_path):
    out = tmp_path / "i.nc"
    # enough samples that the run cannot finish between the second shard and the signal
    args = ["generate", "darcy", "--n", "600", "--resolution", "96", "--shard-size", "4",
            "--out", str(out), "--no-progress"]
    # a child inherits an ignored SIGINT (some earlier test or runner may leave it so),
    # and Python then installs no KeyboardInterrupt handler: give it the default, as a shell
    proc = subprocess.Popen([sys.executable, "-m", "pdeforge", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and len(list(tmp_path.glob("i.nc.parts/shard-*.nc"))) < 2:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "re-run the same command to resume" in err and "Traceback" not in err
    kept = len(list(tmp_path.glob("i.nc.parts/shard-*.nc")))
    again = run_cli(*args)
    assert again.returncode == 0 and "shards computed in this run" in again.stdout
    # the rate is that of the samples solved in this run, which says how many
    assert f"{600 - 4 * kept} solved in this run" in again.stdout


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c to the group, 2 workers"])
def test_sigterm_and_a_terminal_ctrl_c_keep_shards_with_one_line(tmp_path, how):
    """SIGTERM (a batch scheduler's time limit) exits 143 with the resume hint, as Ctrl-C
    exits 130; a terminal's Ctrl-C reaches the Dask workers too (the whole foreground
    process group), which must not print their tracebacks above that line."""
    out = tmp_path / "t.nc"
    workers = "2" if "2 workers" in how else "1"
    args = ["generate", "darcy", "--n", "600", "--resolution", "96", "--shard-size", "4",
            "--out", str(out), "--no-progress", "--workers", workers]
    proc = subprocess.Popen([sys.executable, "-m", "pdeforge", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 90
    while time.time() < deadline and len(list(tmp_path.glob("t.nc.parts/shard-*.nc"))) < 2:
        time.sleep(0.005)
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if how == "sigterm" else 130), err
    what = "stopped by SIGTERM" if how == "sigterm" else "interrupted"
    assert err.strip().splitlines() == [
        f"pdeforge: {what}; finished shards are kept in {out}.parts: re-run the same "
        "command to resume"
    ]
    assert len(list(tmp_path.glob("t.nc.parts/shard-*.nc"))) >= 2
    assert not (tmp_path / "t.nc.lock").exists()


def test_glob_characters_in_the_output_name(tmp_path):
    out = tmp_path / "g[1].nc"
    stale = tmp_path / "g[1].nc.tmp-99999"
    stale.write_text("left by a killed run")
    generate("darcy", 2, out, resolution=8, progress=False)
    assert not stale.exists()


def test_torch_dataset_index_forms(darcy_file, tmp_path):
    mask = np.zeros(12, bool)
    mask[[1, 4]] = True
    ds = TorchDataset(darcy_file, indices=mask)
    assert ds.indices.tolist() == [1, 4]
    with pytest.raises(TypeError, match="integers or a boolean mask"):
        TorchDataset(darcy_file, indices=[0.7, 1.9])
    with pytest.raises(IndexError, match="boolean mask"):
        TorchDataset(darcy_file, indices=mask[:5])
    with pytest.raises(TypeError, match="list of variable names"):
        TorchDataset(darcy_file, inputs="coefficient")

    def drop(f):
        f["converged"][2] = 0
        f["solution"][2] = np.nan

    bad = _corrupt(darcy_file, tmp_path / "nc.nc", drop)
    ds = TorchDataset(bad, indices=range(4))
    assert ds.indices.tolist() == [0, 1, 3]
    assert all(torch.isfinite(ds[i][1]).all() for i in range(len(ds)))


def test_info_json_is_strict_json(darcy_file, tmp_path):
    def nan_residuals(f):
        f["residual"][:] = np.nan
        f.attrs["history"] = np.array([1.0, 2.0])

    path = _corrupt(darcy_file, tmp_path / "n.nc", nan_residuals)
    proc = run_cli("info", path, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["diagnostics"]["residual"]["mean"] is None
    assert d["attrs"]["history"] == [1.0, 2.0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.attrs.__setitem__("created", "yesterday"), "not an ISO 8601 time"),
        (lambda f: f.attrs.__setitem__("pdeforge_format", np.array([1, 1])), "single int"),
        (lambda f: f.attrs.__setitem__("status", np.array([b"complete", b"x"])), "single str"),
        (lambda f: f["converged"].attrs.__delitem__("dtype"), "without dtype='bool'"),
    ],
)
def test_check_type_rules(darcy_file, tmp_path, edit, message):
    report = check_file(_corrupt(darcy_file, tmp_path / "t.nc", edit))
    assert any(message in e for e in report.errors), report.errors


@pytest.mark.parametrize(
    ("created", "ok"),
    [("2026-12-02T18:44:38+00:00", True), ("2026-336", True), ("2026336T18:44Z", True),
     ("2024-366T00:00", True), ("2026-W49-3", True), ("20261202", True),
     ("2025-366", False), ("2026-000", False), ("2026-13-01", False), ("2026-336X", False)],
)
def test_created_takes_every_iso_8601_date_form(darcy_file, tmp_path, created, ok):
    """calendar, week and ordinal dates, basic or extended (the last is not Python's)"""
    report = check_file(_corrupt(darcy_file, tmp_path / "c.nc",
                                 lambda f: f.attrs.__setitem__("created", created)))
    assert any("not an ISO 8601 time" in e for e in report.errors) != ok, report.errors


def test_check_diagnostic_dtypes(tmp_path):
    import xarray as xr

    path = _external_file(tmp_path / "e.nc")
    ds = xr.open_dataset(path, engine="h5netcdf").load()
    ds["converged"] = ds.converged.astype(np.float64)
    ds["solve_seconds"] = ds.solve_seconds.astype(np.int64)
    ds.to_netcdf(tmp_path / "bad.nc", engine="h5netcdf")
    errors = check_file(tmp_path / "bad.nc").errors
    assert any("'converged' must be boolean" in e for e in errors), errors
    assert any("'solve_seconds' must be floating point" in e for e in errors), errors
    with h5py.File(path, "r") as f:
        assert f["converged"].dtype == np.int8  # what plain xarray writes for bool


def test_damaged_bytes_are_never_read_as_data_nor_a_traceback(darcy_file, tmp_path, capsys):
    """64 random bytes written over a copy at offsets through the whole file (data chunks,
    object headers, B-trees): `check` passed 36 of 100 such copies as OK, most with
    garbage numbers (a piecewise coefficient of 9.5e14), and crashed on others."""
    from pdeforge.cli import main

    with h5py.File(darcy_file, "r") as f:
        original = {k: f[k][()] for k in f}
        assert all(f[k].fletcher32 for k in f if f[k].ndim and k not in ("x", "y", "sample"))
    size = os.path.getsize(darcy_file)
    rng = np.random.default_rng(7)
    outcomes = {"ok": 0, "refused": 0}
    for offset in np.linspace(0, size - 64, 40).astype(int):
        path = tmp_path / f"damaged_{offset}.nc"
        path.write_bytes(darcy_file.read_bytes())
        with open(path, "r+b") as f:
            f.seek(int(offset))
            f.write(rng.bytes(64))
        report = check_file(path)  # never raises
        if report.ok:  # then every value reads back as written
            with h5py.File(path, "r") as f:
                for k, v in original.items():
                    np.testing.assert_array_equal(f[k][()], v, err_msg=f"{k} at {offset}")
        outcomes["ok" if report.ok else "refused"] += 1
        assert main(["check", str(path)]) == (0 if report.ok else 1)
        try:  # the readers: a pdeforge error or the data
            ds = TorchDataset(path, in_memory=False)
            for i in range(len(ds)):
                ds[i]
        except PdeforgeError:
            pass
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert outcomes["refused"] >= 20, outcomes  # most of a small file is data and headers


def test_only_a_field_wholly_below_float32_s_normal_range_is_lost_in_storing_it():
    field = np.ones((4, 64))
    field[0, :8] = 1e-50  # a far tail next to values of order one: harmless zeros
    field[1] *= 1e-50  # the whole field: zeros for a field that is not zero
    field[2] = 0.0  # zero is zero
    field[3] *= 1e-30  # small, but float32 holds it to its precision
    assert runner._lost_in_narrowing(field, field.astype(np.float32)).tolist() == [
        False, True, False, False]
