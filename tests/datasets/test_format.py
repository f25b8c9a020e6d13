"""Dataset file format v1: round trip through plain xarray, and `pdeforge check`."""

from __future__ import annotations

import json
import re
import shutil

import h5py
import numpy as np
import pytest
import xarray as xr

from pdeforge.cli import main
from pdeforge.datasets import check_file, open_dataset
from pdeforge.datasets.format import FORMAT_VERSION, REQUIRED_ROOT_ATTRS
from pdeforge.errors import DatasetFormatError


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
        (lambda f: f["x"].attrs.__setitem__("periodic", "yes"), "attribute periodic is 'yes'"),
        (lambda f: f["x"].attrs.__setitem__("periodic", 1) or f["x"].__setitem__(0, -0.5),
         "periodic = 1 but its points are not evenly spaced"),
        (lambda f: f["solution"].attrs.__setitem__("valid_where", "plate"),
         "valid_where = 'plate' names no variable"),
        (lambda f: f["solution"].attrs.__setitem__("valid_where", "residual"),
         "'residual' is not a one-channel input"),
        (lambda f: f["coefficient"].attrs.__setitem__("scale_factor", 2.0), "is packed"),
        # the piecewise coefficient is 3 or 12: 3 declared "no data" hits converged samples
        (lambda f: f["coefficient"].attrs.__setitem__("missing_value", np.float32(3.0)),
         "non-finite values or its no-data value(s) [3.0]"),
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


def _external_file(path, sample_first=True, complex_field=False, dtype=np.float32):
    """A dataset written by another program (plain xarray), in the published format."""
    rng = np.random.default_rng(0)
    n, nx = 5, 12
    x = np.linspace(0, 1, nx)
    field_dims = ("sample", "x") if sample_first else ("x", "sample")
    a = rng.standard_normal((n, nx)).astype(dtype)
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


def test_numbers_that_readers_decode_otherwise_are_refused(tmp_path):
    # netCDF's _Unsigned made xarray and open_dataset read int8 -56 as 200 while
    # TorchDataset read -56; a coordinate holding its own _FillValue read as NaN in
    # xarray while check passed the raw numbers
    from pdeforge.datasets import TorchDataset

    path = _external_file(tmp_path / "ext.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    for var in ds.variables.values():
        var.encoding = {}  # (the attributes below say how the numbers read)
    ds["a"] = ds.a.astype(np.int8)
    ds["a"].attrs["_Unsigned"] = "true"
    ds.x.attrs["_FillValue"] = float(ds.x[0])
    bad = tmp_path / "encoded.nc"
    ds.to_netcdf(bad, engine="h5netcdf")
    errors = check_file(bad).errors
    assert any("variable 'a' is stored as int8 read as unsigned (attribute _Unsigned = "
               "'true')" in e for e in errors), errors
    assert any("coordinate 'x' holds its own no-data value (0" in e for e in errors), errors
    for read in (open_dataset, TorchDataset):
        with pytest.raises(DatasetFormatError, match="_Unsigned"):
            read(bad)
    # the flag that changes nothing (a signed type read as signed) is no problem
    ds["a"].attrs["_Unsigned"] = "false"
    del ds.x.attrs["_FillValue"]
    fine = tmp_path / "fine.nc"
    ds.to_netcdf(fine, engine="h5netcdf")
    assert not [e for e in check_file(fine).errors if "_Unsigned" in e or "no-data" in e]


def test_file_from_another_program_passes(tmp_path):
    path = _external_file(tmp_path / "ext.nc")
    report = check_file(path)
    assert report.ok, report.errors
    assert any("chunks" in w for w in report.warnings)  # 'u' was written contiguous
    assert open_dataset(path).a.shape == (5, 12)


def test_a_big_endian_field_passes_and_reads_as_its_values(tmp_path):
    from pdeforge.datasets import TorchDataset

    path = _external_file(tmp_path / "be.nc", dtype=">f4")  # byte order: how it is stored
    with h5py.File(path) as f:
        assert f["a"].dtype == np.dtype(">f4")
    report = check_file(path)
    assert report.ok, report.errors
    with open_dataset(path) as ds:
        np.testing.assert_array_equal(TorchDataset(path)[3][0][0].numpy(), ds.a.values[3])


@pytest.mark.parametrize("attr", ["_FillValue", "missing_value"])
@pytest.mark.parametrize("in_memory", [True, False])
def test_no_data_values_read_as_nan_in_every_reader(tmp_path, attr, in_memory):
    """A value a field declares as "no data" is NaN to xarray; check and TorchDataset read
    it so too: allowed in a sample marked not converged, refused in a converged one."""
    from pdeforge.datasets import TorchDataset

    path = _external_file(tmp_path / "fill.nc")
    with h5py.File(path, "r+") as f:
        a = f["a"][:]
        f["a"].attrs[attr] = a[1, 4]  # one value of sample 1 (random: nowhere else)
        f["converged"][1] = 0
    with xr.open_dataset(path, engine="h5netcdf") as ds:  # xarray's own reading
        assert np.isnan(ds.a.values[1, 4]) and np.isfinite(ds.a.values[[0, 2, 3, 4]]).all()
    assert check_file(path).ok
    ds = TorchDataset(path, in_memory=in_memory)
    assert len(ds) == 4  # sample 1 skipped
    np.testing.assert_array_equal(ds[1][0][0].numpy(), a[2])
    ds.close()
    with h5py.File(path, "r+") as f:
        f["converged"][1] = 1
    report = check_file(path)
    assert any("no-data value(s)" in e and "(first: [1])" in e for e in report.errors), report
    ds = None
    with pytest.raises(DatasetFormatError, match="sample 1 holds NaN"):
        ds = TorchDataset(path, in_memory=in_memory)
        ds[1]
    assert ds is None or not in_memory  # in memory: refused when loaded


def test_readers_refuse_a_packed_field(darcy_file, tmp_path):
    from pdeforge.datasets import TorchDataset

    bad = _corrupt(darcy_file, tmp_path / "packed.nc",
                   lambda f: f["solution"].attrs.__setitem__("add_offset", 1.0))
    for read in (open_dataset, TorchDataset):
        with pytest.raises(DatasetFormatError, match="'solution' is packed"):
            read(bad)


def test_sample_dim_must_come_first(tmp_path):
    report = check_file(_external_file(tmp_path / "t.nc", sample_first=False))
    assert any("sample must come first" in e for e in report.errors), report.errors


def test_complex_field_is_rejected(tmp_path):
    report = check_file(_external_file(tmp_path / "c.nc", complex_field=True))
    assert any("complex" in e for e in report.errors), report.errors


def _h5py_file(path, *, y_length=None, fixed_string_attrs=False, output_order=("x", "y"),
               scales=True, nan_in_converged=False):
    """A 2D dataset written with plain h5py and dimension scales (another program),
    with the variations the tests below need."""
    n, nx, ny = 4, 6, 5
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, nx, ny)).astype(np.float32)
    u = np.cumsum(a, axis=1)
    if nan_in_converged:
        u[2, 0, 0] = np.nan
    root = {"pdeforge_format": 1, "problem": "p", "solver": "s", "pdeforge_version": "x",
            "seed": 0, "n_samples": n, "config": json.dumps({"problem": "p"}),
            "created": "2026-01-01T00:00:00+00:00", "status": "complete"}
    with h5py.File(path, "w") as f:
        for k, v in root.items():
            if fixed_string_attrs and isinstance(v, str):  # 1-element fixed-length arrays
                f.attrs[k] = np.array([v.encode()], dtype=f"S{len(v)}")
            else:
                f.attrs[k] = v
        dims = {"sample": f.create_dataset("sample", data=np.arange(n, dtype="f4"))}
        dims["sample"].make_scale("This is a netCDF dimension but not a netCDF variable.")
        for name, size in (("x", nx), ("y", y_length or ny)):
            d = f.create_dataset(name, data=np.linspace(0, 1, size))
            d.attrs["units"] = "m"
            d.make_scale(name)
            dims[name] = d
        out = u if output_order == ("x", "y") else u.transpose(0, 2, 1)
        for name, data, role, vdims in (("a", a, "input", ("sample", "x", "y")),
                                        ("u", out, "output", ("sample", *output_order))):
            d = f.create_dataset(name, data=data, chunks=(1, *data.shape[1:]))
            d.attrs["role"], d.attrs["long_name"] = role, name
            if scales:
                for i, dn in enumerate(vdims):
                    d.dims[i].attach_scale(dims[dn])
        for name, data, attrs in (("converged", np.ones(n, np.int8),
                                   {"dtype": "bool", "long_name": "ok"}),
                                  ("solve_seconds", np.zeros(n), {"units": "s"})):
            d = f.create_dataset(name, data=data)
            d.attrs.update({"role": "diagnostic", **attrs})
            if scales:
                d.dims[0].attach_scale(dims["sample"])
    return path, a, u


def test_h5py_files_in_the_format_are_read_however_strings_and_dims_are_stored(tmp_path):
    """1-element fixed-length string attributes (netCDF's NC_CHAR style) are decoded, and
    an output stored (sample, y, x) beside an input (sample, x, y) is transposed to the
    input's order."""
    from pdeforge.datasets import TorchDataset

    path, a, u = _h5py_file(tmp_path / "s.h5", fixed_string_attrs=True, output_order=("y", "x"))
    report = check_file(path)
    assert report.ok, report.errors
    ds = TorchDataset(path)
    assert ds.grid_dims == ("x", "y")
    x, y = ds[1]
    np.testing.assert_array_equal(x[0].numpy(), a[1])
    np.testing.assert_array_equal(y[0].numpy(), u[1])


def test_a_variable_of_another_length_than_its_dimension_is_an_error(tmp_path):
    path, _, _ = _h5py_file(tmp_path / "m.h5", y_length=9)
    report = check_file(path)
    assert any("has length 5 along 'y', but dimension 'y' has length 9" in e
               for e in report.errors), report.errors


def test_a_file_without_dimension_scales_gets_one_clear_error(tmp_path):
    from pdeforge.datasets.info import describe
    from pdeforge.errors import DatasetFormatError

    path, _, _ = _h5py_file(tmp_path / "n.h5", scales=False)
    report = check_file(path)
    assert any("attach h5py dimension scales" in e for e in report.errors), report.errors
    with pytest.raises(DatasetFormatError, match="not readable as netCDF4"):
        describe(path)


@pytest.mark.parametrize(("edit", "note"), [
    (lambda f: f.attrs.__delitem__("pdeforge_format"), "not a pdeforge dataset"),
    (lambda f: f.attrs.__setitem__("pdeforge_format", "1"), "the attribute is the integer 1"),
])
def test_info_describes_a_file_whose_format_attribute_the_readers_refuse(
        darcy_file, tmp_path, edit, note):
    # `pdeforge info` describes any file it can open (it refused these, exit 2)
    from pdeforge.datasets.info import describe, format_description

    d = describe(_corrupt(darcy_file, tmp_path / "f.nc", edit))
    assert note in d["format_note"] and d["dims"]["sample"] == 12
    text = format_description(d)
    assert text.splitlines()[1].startswith("note") and "coord x" in text


def test_info_says_which_coordinates_decrease(darcy_file, tmp_path):
    from pdeforge.datasets.info import describe, format_description

    def flip(f):
        f["x"][:] = f["x"][:][::-1]

    d = describe(_corrupt(darcy_file, tmp_path / "flip.nc", flip))
    assert d["coords"]["x"]["decreasing"] and not d["coords"]["y"]["decreasing"]
    assert d["format_note"] is None
    lines = format_description(d).splitlines()
    assert any(line.strip().startswith("coord x") and line.endswith(", decreasing, cell")
               for line in lines)
    # the grid kind, as declared, or marked as guessed where the file does not say it
    def undeclared(f):
        del f["y"].attrs["grid"]

    d = describe(_corrupt(darcy_file, tmp_path / "guess.nc", undeclared))
    assert (d["coords"]["x"]["grid"], d["coords"]["y"]["grid"]) == ("cell", "cell (guessed)")


def test_nan_in_a_converged_sample_stops_the_torch_reader(tmp_path):
    from pdeforge.datasets import TorchDataset
    from pdeforge.errors import DatasetFormatError

    path, _, _ = _h5py_file(tmp_path / "nan.h5", nan_in_converged=True)
    assert not check_file(path).ok
    message = r"sample 2 holds NaN or inf in \['u'\]"
    with pytest.raises(DatasetFormatError, match=message):  # in memory: when loaded
        TorchDataset(path, in_memory=True)
    ds = TorchDataset(path, in_memory=False)  # lazily: when read
    ds[1]
    with pytest.raises(DatasetFormatError, match=message):
        ds[2]
    ds.close()
    with h5py.File(path, "r+") as f:  # marked as not converged: its NaN is no surprise
        f["converged"][2] = 0
    for in_memory in (True, False):
        ds = TorchDataset(path, in_memory=in_memory, skip_nonconverged=False)
        assert len(ds) == 4 and not np.isfinite(ds[2][1].numpy()).all()


def _foreign(path, edit):
    """_external_file's dataset changed by ``edit`` (an xarray Dataset -> Dataset)."""
    src = _external_file(path.with_suffix(".src.nc"))
    with xr.open_dataset(src, engine="h5netcdf") as ds:
        edit(ds.load()).to_netcdf(path, engine="h5netcdf")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ds: ds.assign(z=(("sample", "x"), ds.a.values * (1 + 1j),
                                 {"role": "output", "units": "1"})), "'z' is complex"),
        (lambda ds: ds.drop_vars("x"),
         "dimension 'x' has no coordinate variable 'x': add a 1-D variable 'x'"),
        (lambda ds: ds.assign_coords(x=("x", np.r_[np.nan, ds.x.values[1:]])),
         "coordinate 'x' must hold finite real numbers"),
        (lambda ds: ds.assign_coords(x=("x", ds.x.values + 0j)),
         "coordinate 'x' must hold finite real numbers"),
        (lambda ds: ds.assign_coords(x=("x", ds.x.values[[1, 0, *range(2, 12)]])),
         "coordinate 'x' is not strictly increasing or decreasing"),
        (lambda ds: ds.assign(converged=ds.converged.astype(np.int8) * 2),
         "'converged' must be boolean"),
        (lambda ds: ds.isel(sample=slice(0, 0)).assign_attrs(n_samples=0),
         "the file holds no samples"),
    ],
)
def test_readers_refuse_what_they_would_misread(tmp_path, edit, message):
    """A file from another program that breaks a rule changing what the data read as is
    refused by every reader (not only `pdeforge check`), with the rule named."""
    from pdeforge.datasets import TorchDataset

    path = _foreign(tmp_path / "bad.nc", edit)
    errors = check_file(path).errors
    assert any(message in e for e in errors), errors
    # (a NaN coordinate also failed check's grid-kind guess, which it blamed on the file)
    assert not any("netCDF4" in e for e in errors), errors
    for read in (open_dataset, TorchDataset):
        with pytest.raises(DatasetFormatError, match="does not follow the dataset format") as e:
            read(path)
        assert message in str(e.value) and "pdeforge check" in str(e.value)


def test_readers_warn_about_metadata_and_read_the_data(tmp_path):
    """Missing root attributes and units, a bookkeeping variable without a role, a text
    parameter change nothing the data read as: a warning; a text variable is refused only
    when it is selected."""
    from pdeforge.datasets import TorchDataset

    def edit(ds):
        ds.attrs = {"pdeforge_format": 1, "status": "complete"}
        ds.u.attrs.pop("units")
        ds["run_id"] = (("sample",), np.arange(5), {"units": "1"})
        ds["label"] = (("sample",), np.array(list("abcde")), {"role": "parameter",
                                                              "units": "1"})
        ds.a.attrs["units"] = np.array([1.0, 2.0])  # numbers where the label goes
        ds.x.attrs["long_name"] = 3
        return ds

    path = _foreign(tmp_path / "meta.nc", edit)
    report = check_file(path)
    assert any("'a': attribute units must be text, got array([1., 2.])" in e
               for e in report.errors)
    assert any("coordinate 'x': attribute long_name must be text" in w
               for w in report.warnings)
    assert any("'label' with role 'parameter' holds" in e for e in report.errors)
    assert any("'run_id': attribute role is missing" in e for e in report.errors)
    with pytest.warns(UserWarning, match="metadata depart.*missing root attribute"):
        data = TorchDataset(path)
    assert data.inputs == ["a"]
    x, y = data[0]
    assert x.shape == y.shape == (1, 12)
    with pytest.warns(UserWarning), pytest.raises(
            DatasetFormatError, match="'label' does not hold numbers.*among \\['a', "):
        TorchDataset(path, inputs=["a", "label"])
    assert open_dataset(path).label.shape == (5,)


def test_checks_name_one_problem_once_and_warn_about_unnamed_grid_dims(tmp_path):
    path = _foreign(tmp_path / "v.nc", lambda ds: ds.assign_attrs(pdeforge_format="1"))
    errors = check_file(path).errors
    assert [e for e in errors if "pdeforge_format" in e] == [
        "root attribute pdeforge_format must be a single int, got '1'"]
    path = _foreign(tmp_path / "lat.nc", lambda ds: ds.assign(
        w=(("sample", "lat"), np.zeros((5, 3)), {"role": "input", "units": "1"})))
    assert any("'w' has dims ('sample', 'lat')" in w and "x, y, z" in w
               for w in check_file(path).warnings)


def test_a_grid_with_other_dim_names_gets_the_rename_fix(tmp_path):
    from pdeforge.datasets import TorchDataset

    path = _foreign(tmp_path / "lonlat.nc", lambda ds: ds.rename(x="lon"))
    # check refuses it too (it passed with a warning, and training then refused it)
    expected = (r"no input, parameter or output has a spatial dim.*'a': \('sample', "
                r"'lon'\).*ds.rename\(lon='x'")
    assert any(re.search(expected, e) for e in check_file(path).errors)
    with pytest.raises(DatasetFormatError, match=expected):
        TorchDataset(path)


def test_an_input_without_a_sample_dim_is_named_not_dropped_silently(tmp_path):
    """An input the same for every sample (no 'sample' dim) is read by no reader: check
    and the torch reader say so; a file whose only input is such passed check and was
    then refused by training."""
    from pdeforge.datasets import TorchDataset

    shared = {"m": (("x",), np.linspace(0, 1, 12), {"role": "input", "units": "1"})}
    path = _foreign(tmp_path / "extra.nc", lambda ds: ds.assign(**shared))
    report = check_file(path)
    assert report.ok
    assert any("'m' has role 'input' but no 'sample' dim" in w for w in report.warnings)
    with pytest.warns(UserWarning, match=r"\['m'\] have role .* but no 'sample' dim"):
        data = TorchDataset(path)
    assert data.inputs == ["a"]
    with pytest.raises(DatasetFormatError, match=r"'m' has dims \('x',\), no 'sample'"):
        TorchDataset(path, inputs=["m"])

    path = _foreign(tmp_path / "only.nc", lambda ds: ds.drop_vars("a").assign(**shared))
    assert "no per-sample variable with role 'input' or 'parameter'" in check_file(
        path).errors
    with pytest.warns(UserWarning), pytest.raises(DatasetFormatError, match="'m': \\('x',"):
        TorchDataset(path)


def test_a_format_version_stored_as_text_is_named_as_such(darcy_file, tmp_path):
    bad = _corrupt(darcy_file, tmp_path / "text.nc",
                   lambda f: f.attrs.__setitem__("pdeforge_format", "1"))
    with pytest.raises(DatasetFormatError, match="pdeforge_format='1' .str.; the attribute is "
                                                 "the integer 1: write it as an integer"):
        open_dataset(bad)


def test_coordinate_tells_a_dimension_without_a_variable_from_coordinates(tmp_path):
    # netCDF stores a dimension that has no variable as a dimension scale of zeros: those
    # are not coordinates (evaluate compared them with the training's times and domain)
    import h5netcdf

    from pdeforge.datasets.format import coordinate

    path = tmp_path / "dims.nc"
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"sample": 2, "t": 3, "x": 4}
        f.create_variable("u", ("sample", "t", "x"), float)[:] = 1.0
        f.create_variable("x", ("x",), float)[:] = np.linspace(0.0, 1.0, 4)
    with h5py.File(path, "r") as h5:
        assert coordinate(h5, "t") is None and coordinate(h5, "missing") is None
        np.testing.assert_array_equal(coordinate(h5, "x"), np.linspace(0.0, 1.0, 4))
        assert coordinate(h5, "x", size=5) is None and coordinate(h5, "u") is None


def _masked_file(path, mask, output):
    """A file another program wrote whose output ``u`` is defined where ``mask`` is 1."""
    n, nx = mask.shape
    ds = xr.Dataset(
        {"mask": (("sample", "x"), mask.astype(np.float32), {"role": "input", "units": "1"}),
         "u": (("sample", "x"), output.astype(np.float32),
               {"role": "output", "units": "m", "valid_where": "mask"}),
         "converged": (("sample",), np.ones(n, bool), {"role": "diagnostic",
                                                       "long_name": "ok"}),
         "solve_seconds": (("sample",), np.zeros(n), {"role": "diagnostic", "units": "s"})},
        coords={"x": ("x", np.linspace(0, 1, nx), {"units": "m", "grid": "vertex"})},
        attrs={"pdeforge_format": 1, "problem": "masked", "solver": "numpy",
               "pdeforge_version": "external", "seed": 0, "n_samples": n,
               "config": json.dumps({"problem": "masked"}),
               "created": "2026-01-01T00:00:00+00:00", "status": "complete"})
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_an_output_s_mask_is_a_0_1_field_and_the_output_is_0_outside_it(tmp_path):
    """check passed a continuous input named as the mask (training then multiplied the
    predictions by it) and an output that is not 0 where its mask is 0 (review)."""
    rng = np.random.default_rng(0)
    mask = (rng.random((4, 10)) > 0.3).astype(float)
    u = rng.standard_normal((4, 10))
    assert check_file(_masked_file(tmp_path / "ok.nc", mask, u * mask)).ok
    errors = check_file(_masked_file(tmp_path / "c.nc", mask * 0.5 + 0.25, u)).errors
    assert any("its valid_where mask 'mask' holds values other than 0 and 1 in 4 converged "
               "sample(s)" in e for e in errors), errors
    outside = u * mask
    outside[2, np.flatnonzero(mask[2] == 0)[0]] = 1.0
    errors = check_file(_masked_file(tmp_path / "o.nc", mask, outside)).errors
    assert any("output 'u' is not 0 where its valid_where mask 'mask' is 0 in 1 converged "
               "sample(s) (first: [2])" in e for e in errors), errors


def test_samples_a_writer_never_wrote_are_found(tmp_path):
    """A writer killed after writing status = complete left chunks HDF5 never allocated,
    read as the fill value: check said OK and the readers served zeros (review)."""
    path = _external_file(tmp_path / "ext.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    for per_chunk in (1, 2):  # (the last chunk of 2 reaches past the 5 samples)
        holes = tmp_path / f"holes{per_chunk}.nc"
        # dask arrays written lazily and never computed: the variables exist, no chunk does
        delayed = ds.chunk({"sample": 1}).to_netcdf(  # noqa: F841 - never computed
            holes, engine="h5netcdf", compute=False,
            encoding={v: {"chunksizes": (per_chunk, 12)} for v in ("a", "u")})
        with h5py.File(holes, "r+") as f:
            for name in ("a", "u", "converged", "solve_seconds"):
                f[name][:2] = ds[name].values[:2]  # two of five samples written
            f["converged"][:] = True
        errors = check_file(holes).errors
        assert any("field 'u': the chunks of 3 converged sample(s) were never written "
                   "(first: [2, 3, 4])" in e for e in errors), (per_chunk, errors)
    assert check_file(path).ok  # every chunk written: no complaint


def test_grid_kinds_need_evenly_spaced_points_and_lossy_filters_are_named(tmp_path):
    path = _external_file(tmp_path / "ext.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    cheb = 0.5 - 0.5 * np.cos(np.pi * np.arange(12) / 11)
    for kind, problem in (("cell", "error"), ("vertex", "warning")):
        uneven = ds.assign_coords(x=("x", cheb, {"units": "m", "grid": kind}))
        uneven.to_netcdf(tmp_path / f"{kind}.nc", engine="h5netcdf")
        report = check_file(tmp_path / f"{kind}.nc")
        said = report.errors if problem == "error" else report.warnings
        assert any("coordinate 'x'" in m and "not evenly spaced (steps 0.02025" in m
                   for m in said), (kind, report.errors, report.warnings)
        assert report.ok == (problem == "warning")
    with h5py.File(path, "r+") as f:  # u again, with HDF5's lossy scale-offset filter
        values, attrs = f["u"][()], dict(f["u"].attrs)
        for i, scale in enumerate(f["u"].dims):
            scale.detach_scale(f[("sample", "x")[i]])
        del f["u"]
        u = f.create_dataset("u", data=values, chunks=(1, 12), scaleoffset=2)
        for i, d in enumerate(("sample", "x")):
            u.dims[i].attach_scale(f[d])
        u.attrs.update({k: v for k, v in attrs.items() if k != "DIMENSION_LIST"})
    assert any("scale-offset filter" in w for w in check_file(path).warnings)


def test_info_notes_what_the_readers_will_say(tmp_path, capsys):
    """`pdeforge info` showed its note only for a missing format attribute, not for files
    the readers refuse for another reason (status writing, a broken rule)."""
    path = _external_file(tmp_path / "w.nc")
    with h5py.File(path, "r+") as f:
        f.attrs["status"] = "writing"
    assert main(["info", str(path)]) == 0
    assert "note      " in capsys.readouterr().out
    order = _external_file(tmp_path / "order.nc", sample_first=False)
    assert main(["info", str(order)]) == 0
    assert "dimension sample must come first" in capsys.readouterr().out
    # that error alone: x is a grid dim wherever sample stands (it was also warned
    # that the field had no spatial dim)
    assert not [w for w in check_file(order).warnings if "spatial dim" in w]


def test_a_periodic_axis_stored_with_its_end_point_is_warned_about(tmp_path):
    """linspace(0, 2 pi, n) with periodic = 1 passed: the fields' last point repeats the
    first, and the period is read one step too long (review)."""
    path = _external_file(tmp_path / "ext.nc")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    x = np.linspace(0, 2 * np.pi, 12)
    rng = np.random.default_rng(1)
    k = rng.integers(1, 4, size=(5, 1))
    field = np.sin(k * x + rng.random((5, 1)))  # float64: the ends differ by rounding
    closed = ds.assign_coords(x=("x", x, {"units": "m", "periodic": 1}))
    closed["a"] = (("sample", "x"), field, ds.a.attrs)
    # localised: ~0 at both ends whatever the grid, which tells nothing
    closed["u"] = (("sample", "x"), np.exp(-10 * (x - np.pi) ** 2) * k, ds.u.attrs)
    closed.to_netcdf(tmp_path / "closed.nc", engine="h5netcdf")
    said = check_file(tmp_path / "closed.nc").warnings
    assert [w.split(":")[0] for w in said if "repeats the first" in w] == ["field 'a'"], said
    one_period = closed.isel(x=slice(0, -1))
    one_period.to_netcdf(tmp_path / "open.nc", engine="h5netcdf")
    assert not [w for w in check_file(tmp_path / "open.nc").warnings if "repeats" in w]


def test_a_fault_of_check_itself_is_not_blamed_on_the_file(darcy_file, monkeypatch):
    # a TypeError in check's own code is a bug to show, not "not readable as netCDF4"
    import pdeforge.datasets.check as check

    def broken(nc, report):
        raise TypeError("check's own bug")

    monkeypatch.setattr(check, "_scan_values", broken)
    with pytest.raises(TypeError, match="check's own bug"):
        check_file(darcy_file)


def test_variables_on_different_grids_are_named_by_check_and_the_torch_reader(tmp_path):
    """The format lets an input lie on another grid than the output (a 1-D trace beside
    a 2-D field); training takes one grid and refused such a file check had passed."""
    from pdeforge.datasets import TorchDataset

    def two_grids(ds):
        y = np.linspace(0, 2, 7)
        u2 = np.repeat(ds.u.values[:, :, None], len(y), axis=2)
        return ds.assign_coords(y=("y", y, {"units": "m"})).assign(
            u=(("sample", "x", "y"), u2, dict(ds.u.attrs)))

    path = _foreign(tmp_path / "grids.nc", two_grids)
    report = check_file(path)
    assert report.ok
    assert any("lie on different spatial grids (a: ('x',), u: ('x', 'y'))" in w
               for w in report.warnings), report.warnings
    with pytest.raises(DatasetFormatError, match="do not share one spatial grid.*select the "
                       "inputs and outputs of one grid"):
        TorchDataset(path)
    assert not any("different spatial grids" in w
                   for w in check_file(_foreign(tmp_path / "one.nc", lambda ds: ds)).warnings)


@pytest.mark.parametrize(("unit", "warned"), [("ms", True), ("s", False), ("seconds", False)])
def test_solve_seconds_in_other_units_is_warned_about(tmp_path, unit, warned):
    path = _foreign(tmp_path / f"{unit}.nc", lambda ds: ds.assign(
        solve_seconds=ds.solve_seconds.assign_attrs(units=unit)))
    report = check_file(path)
    assert report.ok
    assert any(f"'solve_seconds' has units {unit!r}" in w for w in report.warnings) == warned
