"""The `nlse` dataset family: format, shapes, conservation diagnostics, determinism."""

from __future__ import annotations

import numpy as np

from pdeforge.datasets.check import check_file
from pdeforge.datasets.problems import build_problem
from pdeforge.datasets.readers import open_dataset
from pdeforge.datasets.runner import generate
from pdeforge.datasets.torch_dataset import TorchDataset
from pdeforge.solvers import nlse

OPTIONS = {"t_end": 1.0, "n_times": 5, "length": 30.0, "eta_max": 1.5}


def test_generated_file_holds_trajectories_and_small_drifts(tmp_path):
    path = tmp_path / "nlse.nc"
    generate("nlse", 6, path, resolution=128, seed=2, options=OPTIONS, progress=False)
    assert check_file(path).ok
    with open_dataset(path) as ds:
        assert ds.psi_re.dims == ("sample", "t", "x") and ds.psi_re.shape == (6, 5, 128)
        assert ds.psi0_re.attrs["role"] == "input" and ds.psi_im.attrs["role"] == "output"
        assert bool(ds.converged.all())
        psi = ds.psi_re.values + 1j * ds.psi_im.values
        # the stored trajectory starts at the stored initial field
        np.testing.assert_allclose(psi[:, 0], ds.psi0_re.values + 1j * ds.psi0_im.values, atol=1e-6)
        assert float(ds.mass_drift.max()) < 1e-9  # dealiased, band-limited: conserved
        inv = nlse.invariants(psi.astype(np.complex128), length=30.0)
        np.testing.assert_allclose(inv["mass"][:, -1], inv["mass"][:, 0], rtol=1e-5)
    x, y = TorchDataset(path)[0]
    assert x.shape == (2, 128) and y.shape == (2 * 5, 128)


def test_initial_conditions_depend_on_seed_and_index_only():
    p = build_problem("nlse", 64, **OPTIONS)
    np.testing.assert_array_equal(p.initial_condition(3, 7), p.initial_condition(3, 7))
    assert not np.allclose(p.initial_condition(3, 7), p.initial_condition(3, 8))
    smooth = build_problem("nlse", 64, initial="smooth", **OPTIONS).initial_condition(0, 0)
    assert abs(np.abs(smooth).max() - 1.5) < 0.2
