"""Dataset file format v1: round trip through plain xarray, and `pdeforge check`."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import xarray as xr

from pdeforge.cli import main
from pdeforge.datasets import check_file, open_dataset
from pdeforge.datasets.format import FORMAT_VERSION, REQUIRED_ROOT_ATTRS


def test_round_trip_with_plain_xarray(darcy_file):
    ds = xr.open_dataset(darcy_file, engine="h5netcdf")  # no pdeforge code involved
    assert dict(ds.sizes) == {"sample": 12, "x": 16, "y": 16}
    assert ds.coefficient.dims == ("sample", "x", "y")
    assert ds.solution.dims == ("sample", "x", "y")
    np.testing.assert_allclose(ds.x.values, (np.arange(16) + 0.5) / 16)
    np.testing.assert_allclose(ds.y.values, ds.x.values)
    roles = {name: ds[name].attrs["role"] for name in ds.data_vars}
    assert roles == {"coefficient": "input", "solution": "output", "converged": "diagnostic",
                     "solve_seconds": "diagnostic", "residual": "diagnostic",
                     "iterations": "diagnostic"}
    for name in ds.data_vars:
        assert "units" in ds[name].attrs or "long_name" in ds[name].attrs
    assert ds.coefficient.dtype == np.float32 and ds.solution.dtype == np.float32
    assert ds.converged.dtype == bool and ds.converged.all()
    assert ds.coefficient.encoding["chunksizes"] == (1, 16, 16)
    for key in REQUIRED_ROOT_ATTRS:
        assert key in ds.attrs, key
    assert ds.attrs["pdeforge_format"] == FORMAT_VERSION
    assert ds.attrs["status"] == "complete"
    assert ds.attrs["n_samples"] == 12 and ds.attrs["seed"] == 3
    config = json.loads(ds.attrs["config"])
    assert config["problem"] == "darcy" and config["resolution"] == 16
    assert config["options"]["coefficient"] == "piecewise"
    assert set(np.unique(ds.coefficient.values)) == {3.0, 12.0}
    # h5py reads the same numbers directly
    with h5py.File(darcy_file, "r") as f:
        np.testing.assert_array_equal(f["solution"][...], ds.solution.values)
    ds.close()
    assert check_file(darcy_file).ok


def test_check_cli_ok(darcy_file, capsys):
    assert main(["check", str(darcy_file)]) == 0
    assert "OK" in capsys.readouterr().out


def _corrupt(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.attrs.__delitem__("config"), "missing root attribute(s): config"),
        (lambda f: f.attrs.__setitem__("status", "running"), "incomplete"),
        (lambda f: f.attrs.__setitem__("pdeforge_format", 2), "pdeforge_format is 2"),
        (lambda f: f.attrs.__setitem__("n_samples", 13), "n_samples = 13"),
        (lambda f: f.attrs.__setitem__("config", "{not json"), "not valid JSON"),
        (lambda f: f.attrs.__setitem__("seed", 4), "disagrees with root attribute seed"),
        (lambda f: f["solution"].attrs.__setitem__("role", "target"), "role is 'target'"),
        (lambda f: f["solution"].attrs.__delitem__("role"), "role is missing"),
        (lambda f: f["solution"].attrs.__delitem__("long_name") or
         f["solution"].attrs.__delitem__("units"), "neither units nor long_name"),
        (lambda f: f.__delitem__("solve_seconds"), "missing per-sample diagnostic"),
        (lambda f: f["solution"].__setitem__((2, 3, 3), np.nan), "non-finite values"),
    ],
)
def test_check_reports_each_violation(darcy_file, tmp_path, capsys, edit, message):
    bad = _corrupt(darcy_file, tmp_path / "bad.nc", edit)
    report = check_file(bad)
    assert not report.ok
    assert any(message in e for e in report.errors), report.errors
    assert main(["check", str(bad)]) == 1
    assert message in capsys.readouterr().out


def test_nan_in_nonconverged_sample_is_allowed(darcy_file, tmp_path):
    def edit(f):
        f["solution"][2] = np.nan
        f["converged"][2] = 0

    assert check_file(_corrupt(darcy_file, tmp_path / "nc.nc", edit)).ok


def _external_file(path, sample_first=True, complex_field=False):
    """A dataset written by another program (plain xarray), in the published format."""
    rng = np.random.default_rng(0)
    n, nx = 5, 12
    x = np.linspace(0, 1, nx)
    field_dims = ("sample", "x") if sample_first else ("x", "sample")
    a = rng.standard_normal((n, nx)).astype(np.float32)
    ds = xr.Dataset(
        {
            "a": (field_dims, a if sample_first else a.T,
                  {"role": "input", "long_name": "input field"}),
            "u": (("sample", "x"), np.cumsum(a, axis=1) / nx,
                  {"role": "output", "units": "m"}),
            "converged": (("sample",), np.ones(n, bool), {"role": "diagnostic",
                                                          "long_name": "ok"}),
            "solve_seconds": (("sample",), np.zeros(n), {"role": "diagnostic", "units": "s"}),
        },
        coords={"x": ("x", x, {"units": "m"})},
        attrs={"pdeforge_format": 1, "problem": "antiderivative", "solver": "cumsum",
               "pdeforge_version": "external", "seed": 0, "n_samples": n,
               "config": json.dumps({"problem": "antiderivative"}),
               "created": "2026-01-01T00:00:00+00:00", "status": "complete"},
    )
    if complex_field:
        ds["z"] = (("sample", "x"), (a + 1j * a).astype(np.complex64),
                   {"role": "output", "units": "1"})
    ds.to_netcdf(path, engine="h5netcdf", encoding={"a": {"chunksizes": (1, nx) if
                                                          sample_first else (nx, 1)}})
    return path


def test_file_from_another_program_passes(tmp_path):
    path = _external_file(tmp_path / "ext.nc")
    report = check_file(path)
    assert report.ok, report.errors
    assert any("chunks" in w for w in report.warnings)  # 'u' was written contiguous
    assert open_dataset(path).a.shape == (5, 12)


def test_sample_dim_must_come_first(tmp_path):
    report = check_file(_external_file(tmp_path / "t.nc", sample_first=False))
    assert any("sample must come first" in e for e in report.errors), report.errors


def test_complex_field_is_rejected(tmp_path):
    report = check_file(_external_file(tmp_path / "c.nc", complex_field=True))
    assert any("complex" in e for e in report.errors), report.errors
