"""TorchDataset: shapes, lazy vs in-memory, DataLoader workers, selection errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from pdeforge.datasets import TorchDataset
from pdeforge.errors import DatasetFormatError


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_items_match_the_file(darcy_file, in_memory, dtype):
    ds = TorchDataset(darcy_file, in_memory=in_memory, dtype=dtype)
    ref = xr.open_dataset(darcy_file, engine="h5netcdf")
    assert len(ds) == 12 and ds.in_memory is in_memory
    assert ds.inputs == ["coefficient"] and ds.outputs == ["solution"]
    assert ds.grid_dims == ("x", "y") and ds.grid_shape == (16, 16)
    x, y = ds[5]
    assert x.shape == (1, 16, 16) and y.shape == (1, 16, 16)
    assert x.dtype == dtype
    np.testing.assert_array_equal(x[0].numpy(), ref.coefficient.values[5].astype(x.numpy().dtype))
    np.testing.assert_array_equal(y[0].numpy(), ref.solution.values[5].astype(y.numpy().dtype))
    xl, _ = ds[-1]
    np.testing.assert_array_equal(xl[0].numpy(), ref.coefficient.values[11])
    with pytest.raises(IndexError):
        ds[12]


@pytest.mark.parametrize("in_memory", [True, False])
def test_items_follow_the_grid_dims_asked_for(darcy_file, in_memory):
    # (evaluate and extra training files ask for the model's axes: the format does not
    # fix the order of the spatial dims)
    ref = xr.open_dataset(darcy_file, engine="h5netcdf")
    ds = TorchDataset(darcy_file, in_memory=in_memory, grid_dims=("y", "x"))
    assert ds.grid_dims == ("y", "x")
    x, y = ds[3]
    np.testing.assert_array_equal(x[0].numpy(), ref.coefficient.values[3].T)
    np.testing.assert_array_equal(y[0].numpy(), ref.solution.values[3].T)
    with pytest.raises(DatasetFormatError, match=r"the grid dims are \('x', 'y'\), not "
                                                 r"\('x', 'z'\)"):
        TorchDataset(darcy_file, grid_dims=("x", "z"))


def test_indices_subset_and_repeat(darcy_file):
    lazy = TorchDataset(darcy_file, indices=[7, 2, 7], in_memory=False)
    mem = TorchDataset(darcy_file, indices=[7, 2, 7], in_memory=True)
    for i in range(3):
        assert torch.equal(lazy[i][1], mem[i][1])
    assert torch.equal(lazy[0][1], lazy[2][1])
    with pytest.raises(IndexError, match=r"\[0, 12\)"):
        TorchDataset(darcy_file, indices=[12])


def test_dataloader_with_worker_processes(darcy_file):
    ds = TorchDataset(darcy_file, in_memory=False)
    ds[0]  # open a handle in the parent: workers must not reuse it
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    xs = torch.cat([x for x, _ in loader])
    assert xs.shape == (12, 1, 16, 16)
    assert torch.equal(xs[3], ds[3][0])


def test_explicit_variables_and_scalar_broadcast(tmp_path):
    from pdeforge.datasets.runner import generate

    path = tmp_path / "adv.nc"
    generate("advection-diffusion", 3, path, resolution=10, seed=0, progress=False)
    ds = TorchDataset(path, inputs=["velocity_x", "diffusivity"], outputs=["solution"])
    x, _ = ds[0]
    assert x.shape == (2, 10, 10) and ds.in_channels == 2
    assert torch.all(x[1] == x[1, 0, 0])  # the per-sample parameter: a constant channel
    # by default the parameter is an input too: the diffusivity sets the solution
    default = TorchDataset(path)
    assert default.inputs == ["velocity_x", "velocity_y", "diffusivity"]
    np.testing.assert_array_equal(default[2][0][2].numpy(),
                                  np.full((10, 10), ds._read("diffusivity", 2), np.float32))


def test_a_diagnostic_is_refused_as_data(darcy_file):
    # it trained on the solver's residual without a word
    for kwargs in (dict(outputs=["residual"]), dict(inputs=["coefficient", "iterations"])):
        with pytest.raises(DatasetFormatError, match="is a diagnostic of the solver, not data "
                           r"of the problem; choose .* among \['coefficient', 'solution'\]"):
            TorchDataset(darcy_file, **kwargs)


def test_nonconverged_samples_skipped(darcy_file, tmp_path):
    import shutil

    import h5py

    path = tmp_path / "nc.nc"
    shutil.copy(darcy_file, path)
    with h5py.File(path, "r+") as f:
        f["converged"][3] = 0
    assert len(TorchDataset(path)) == 11
    assert len(TorchDataset(path, skip_nonconverged=False)) == 12


def test_bad_selection_errors(darcy_file):
    with pytest.raises(DatasetFormatError, match="no per-sample variable 'pressure'"):
        TorchDataset(darcy_file, outputs=["pressure"])
    # the output as an input too: a model would learn the identity (it trained, exit 0)
    with pytest.raises(DatasetFormatError, match=r"\['solution'\] are both inputs and outputs"):
        TorchDataset(darcy_file, inputs=["coefficient", "solution"], outputs=["solution"])


def test_time_dimension_becomes_channels(tmp_path):
    """A trajectory field (sample, t, x) from another program: t folds into channels."""
    n, nt, nx = 3, 4, 10
    u0 = np.random.default_rng(0).standard_normal((n, nx)).astype(np.float32)
    traj = np.stack([u0 * (k + 1) for k in range(nt)], axis=1)
    xr.Dataset(
        {"u0": (("sample", "x"), u0, {"role": "input", "units": "1"}),
         "u": (("sample", "t", "x"), traj, {"role": "output", "units": "1"}),
         "converged": (("sample",), np.ones(n, bool), {"role": "diagnostic", "units": "1"}),
         "solve_seconds": (("sample",), np.zeros(n), {"role": "diagnostic", "units": "s"})},
        coords={"x": np.linspace(0, 1, nx), "t": np.arange(nt, dtype=float)},
        attrs={"pdeforge_format": 1, "status": "complete"},
    ).to_netcdf(tmp_path / "traj.nc", engine="h5netcdf")
    ds = TorchDataset(tmp_path / "traj.nc")
    x, y = ds[1]
    assert x.shape == (1, nx) and y.shape == (nt, nx)
    np.testing.assert_array_equal(y[2].numpy(), 3 * u0[1])
