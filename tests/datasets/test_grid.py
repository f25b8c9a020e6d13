"""Grid kinds: declared by the coordinate's attributes, guessed only without them, and
what they decide (the domain of other resolutions, the training record)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pdeforge.datasets import check_file
from pdeforge.datasets.grid import (
    CELL,
    PERIODIC,
    VERTEX,
    axis_extent,
    axis_kind,
    axis_points,
    subsample_starts,
)
from pdeforge.surrogate import resample_coordinate
from tests.train.test_errors import write_foreign_file


@pytest.mark.parametrize("n", [8, 31, 32])
def test_declared_kinds_win_over_the_guess(n):
    vertices = np.linspace(-1.0, 1.0, n)  # -1 / h = (n - 1) / 2: half a step for even n
    cells = 0.3 + (np.arange(n) + 0.5) / n  # [0.3, 1.3]: not half a step past a multiple
    assert axis_kind(vertices, {"grid": "vertex"}) == VERTEX
    assert axis_kind(cells, {"grid": b"cell"}) == CELL
    assert axis_kind(vertices, {"periodic": np.int8(1), "grid": "vertex"}) == PERIODIC
    assert axis_kind(vertices[:1]) is None
    # the guess, where nothing is declared: right for grids anchored as on [0, 1]
    assert axis_kind((np.arange(n) + 0.5) / n) == CELL
    assert axis_kind(np.linspace(0.0, 1.0, n)) == VERTEX
    if n % 2 == 0:  # and wrong here, which is why the attribute exists
        assert axis_kind(vertices) == CELL


@pytest.mark.parametrize("kind, lo, hi", [(CELL, 0.3, 1.3), (VERTEX, -1.0, 1.0),
                                          (PERIODIC, -25.0, 25.0)])
@pytest.mark.parametrize("n, m", [(32, 63), (16, 7)])
def test_other_resolutions_of_a_declared_grid_cover_its_domain(kind, lo, hi, n, m):
    points = axis_points(kind, lo, hi, n)
    assert axis_extent(points, kind) == pytest.approx((lo, hi), abs=1e-12)
    other = resample_coordinate(points, m, kind)
    np.testing.assert_allclose(other, axis_points(kind, lo, hi, m), rtol=0, atol=1e-12)
    step = (hi - lo) / (m - 1 if kind == VERTEX else m)
    first = {CELL: lo + step / 2, VERTEX: lo, PERIODIC: lo}[kind]
    assert other[0] == pytest.approx(first) and other[1] - other[0] == pytest.approx(step)


def test_an_odd_subsample_of_a_cell_axis_keeps_the_coarse_centres():
    assert subsample_starts([CELL, VERTEX, PERIODIC, None], 3) == (1, 0, 0, 0)
    assert subsample_starts([CELL], 2) == (0,)


def _with_grid(path, **attrs):
    with h5py.File(path, "r+") as f:
        for d in ("x", "y"):
            for key, value in attrs.items():
                f[d].attrs[key] = value


def test_check_asks_for_the_kind_and_refuses_a_wrong_one(tmp_path):
    data = tmp_path / "f.nc"
    write_foreign_file(data)
    report = check_file(data)
    assert report.ok
    assert any("does not say its grid kind: taken as cell points" in w for w in report.warnings)
    _with_grid(data, grid="cell")
    report = check_file(data)
    assert report.ok and not any("grid kind" in w for w in report.warnings)
    _with_grid(data, grid="centres")
    assert any("attribute grid is 'centres'; it is 'cell'" in e for e in check_file(data).errors)
    _with_grid(data, grid="vertex", periodic=1)
    assert any("both periodic = 1 and grid = 'vertex'" in e for e in check_file(data).errors)


def test_training_records_the_declared_kind_and_the_file_s_domain(tmp_path):
    from pdeforge.train.data import OperatorDataModule

    data = tmp_path / "v.nc"
    write_foreign_file(data, size=16)
    vertices = np.linspace(-1.0, 1.0, 16)  # guessed as cell centres: -1 / h = -7.5
    with h5py.File(data, "r+") as f:
        for d in ("x", "y"):
            f[d][:] = vertices
    guessed = OperatorDataModule(path=str(data)).info
    assert guessed["grid_kinds"] == {"x": CELL, "y": CELL}
    _with_grid(data, grid="vertex")
    info = OperatorDataModule(path=str(data)).info
    assert info["grid_kinds"] == {"x": VERTEX, "y": VERTEX}
    assert info["grid_extents"]["x"] == pytest.approx([-1.0, 1.0])
    # an even subsample of a cell grid: the points are off the coarse centres (warned),
    # and the domain recorded is still the file's
    cells = (np.arange(16) + 0.5) / 16
    with h5py.File(data, "r+") as f:
        for d in ("x", "y"):
            f[d][:] = cells
            f[d].attrs["grid"] = "cell"
    with pytest.warns(UserWarning, match="--data.subsample 2 of the cell-centred grid"):
        info = OperatorDataModule(path=str(data), subsample=2).info
    assert info["grid_extents"]["x"] == pytest.approx([0.0, 1.0])
    assert info["coords"]["x"] == pytest.approx(cells[::2].tolist())


def test_a_subsample_that_does_not_divide_an_axis_keeps_the_part_it_covers(tmp_path):
    """Vertices of 24 points by 2 keep points 0 ... 22 (the recorded domain was the
    file's [0, 1], so resampling misplaced them by a step); a periodic axis whose point
    count the stride does not divide has no period to keep."""
    from pdeforge.train.data import OperatorDataModule, TrainingDataError

    data = tmp_path / "v.nc"
    write_foreign_file(data, size=24)
    vertices = np.linspace(0.0, 1.0, 24)
    with h5py.File(data, "r+") as f:
        for d in ("x", "y"):
            f[d][:] = vertices
            f[d].attrs["grid"] = "vertex"
    with pytest.warns(UserWarning, match=r"--data.subsample 2 does not divide the intervals "
                      r"of the vertex axis 'x'.*covers \[0, 0.956522\]"):
        info = OperatorDataModule(path=str(data), subsample=2).info
    assert info["grid_extents"]["x"] == pytest.approx([0.0, vertices[22]])
    assert OperatorDataModule(path=str(data), subsample=23).info["grid_extents"]["x"] == [0, 1]
    with h5py.File(data, "r+") as f:
        for d in ("x", "y"):
            f[d][:] = np.arange(24) * (2 * np.pi / 24)
            del f[d].attrs["grid"]
            f[d].attrs["periodic"] = 1
    with pytest.raises(TrainingDataError, match="does not divide the 24 points of the periodic"):
        OperatorDataModule(path=str(data), subsample=5)
    assert OperatorDataModule(path=str(data), subsample=3).info["grid_extents"]["x"] == \
        pytest.approx([0.0, 2 * np.pi])


def test_the_test_split_s_metrics_use_its_own_grid_steps():
    """--data.test_subsample other than --data.subsample: the test metrics took the
    training grid's steps (rel_h1 0.89 against 0.98, fRMSE 9x off)."""
    from pdeforge.train.module import OperatorModule

    module = OperatorModule(model="fno", model_kwargs={"n_modes": 4, "hidden_channels": 4,
                                                       "n_layers": 1})
    module.data_info = {"grid_dims": ["x", "y"], "coords": {
        "x": ((np.arange(8) + 0.5) / 8).tolist(), "y": np.linspace(0, 2, 5).tolist()},
        "grid_kinds": {"x": CELL, "y": VERTEX}}
    module._test_ratio = 1 / 3  # (setup sets it from the data module)
    module._metrics_grid()
    assert module.val_metrics.steps == pytest.approx([1 / 8, 0.5])
    assert module.test_metrics.steps == pytest.approx([1 / 24, 0.5 / 3])
    assert module.test_metrics.vertex == [False, True]
    # the training loss ("h1") differences on the training grid's physical steps
    assert module._loss.steps == pytest.approx([1 / 8, 0.5])
    assert module._loss.periodic == [False, False]
