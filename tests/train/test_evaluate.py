"""Subsampling a dataset's grid for `pdeforge evaluate --resolution`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdeforge.datasets.grid import CELL, PERIODIC, VERTEX, is_cell_centred, subsample_starts
from pdeforge.surrogate import domain_mismatch
from pdeforge.train.data import Subsampled
from pdeforge.train.evaluate import EvaluationError, _distribution_changes, stride_for


@pytest.mark.parametrize(
    ("n", "kind", "resolution", "stride"),
    [(96, CELL, 32, 3), (96, CELL, 48, 2), (64, PERIODIC, 16, 4), (33, VERTEX, 17, 2),
     (33, VERTEX, 5, 8), (32, None, 11, 3)],
)
def test_stride_keeps_a_grid_of_the_same_kind(n, kind, resolution, stride):
    assert stride_for((n, n), resolution, [kind, kind]) == stride


@pytest.mark.parametrize(
    ("n", "kind", "resolution"),
    [(32, PERIODIC, 11), (32, CELL, 11), (32, VERTEX, 16), (96, CELL, 64)],
)
def test_a_stride_that_leaves_another_domain_is_refused(n, kind, resolution):
    # ceil(32 / 3) = 11 points of a periodic or cell grid of 32 are not one of 11 points;
    # 16 of a 32-point vertex grid would lose its last point
    with pytest.raises(EvaluationError, match=f"resolution {resolution} cannot be reached"):
        stride_for((n,), resolution, [kind])


def test_one_point_is_neither_asked_for_nor_offered():
    with pytest.raises(EvaluationError, match="at least 2"):
        stride_for((32,), 1, [PERIODIC])
    with pytest.raises(EvaluationError, match="possible") as info:
        stride_for((32,), 11, [PERIODIC])
    # strides 1, 2, 4, 8, 16 give 32, 16, 8, 4, 2 points; 32 would give 1
    assert str(info.value).endswith("possible: [32, 16, 8, 4, 2]")


@pytest.mark.parametrize("n_coarse", [8, 12, 16])
@pytest.mark.parametrize("stride", [3, 5])
def test_an_odd_stride_keeps_the_coarse_cell_centres(n_coarse, stride):
    n = n_coarse * stride
    fine = (np.arange(n) + 0.5) / n
    coarse = (np.arange(n_coarse) + 0.5) / n_coarse
    assert stride_for((n,), n_coarse, [CELL]) == stride
    (start,) = subsample_starts([CELL], stride)
    np.testing.assert_allclose(fine[start::stride], coarse, rtol=0, atol=1e-14)
    assert is_cell_centred(fine[start::stride])
    # the items are cut the same way
    item = torch.as_tensor(fine)[None].repeat(2, 1)
    x, _ = Subsampled([(item, item)], stride, 1, (start,))[0]
    np.testing.assert_allclose(x[0].numpy(), coarse, rtol=0, atol=1e-14)


def test_even_strides_and_other_axes_start_at_the_first_point():
    assert subsample_starts([CELL, VERTEX, PERIODIC, None], 2) == (0, 0, 0, 0)
    assert subsample_starts([CELL, VERTEX, PERIODIC, None], 3) == (1, 0, 0, 0)


def test_problem_options_are_compared_with_their_defaults_and_without_numerics():
    trained = {"problem": "darcy", "options": {"forcing": 1.0, "k_high": 12.0,
                                               "scheme": "cell", "rtol": 1e-8}}

    def changes(**options):
        return _distribution_changes(trained, {"problem": "darcy", "options": options})

    # a file that does not record forcing (written before it existed) had its default
    assert changes(k_high=12.0) == {}
    assert changes(forcing=2.0, k_high=12.0) == {"forcing": (1.0, 2.0)}
    # the solver's tolerance and the grid scheme are not the problem's distribution
    assert changes(forcing=1.0, k_high=12.0, scheme="vertex", rtol=1e-4) == {}
    assert _distribution_changes(trained, {"problem": "poisson", "options": {}}) == {}


def test_the_same_domain_at_any_resolution_and_kind_is_not_a_mismatch():
    def cells(n, lo=0.0, hi=1.0):
        return lo + (np.arange(n) + 0.5) * (hi - lo) / n

    def check(trained, given, periodic=()):
        return domain_mismatch({"x": trained}, {"x": given}, ["x"], list(periodic))

    trained = cells(32)
    for given in (cells(3), cells(8), cells(96), np.linspace(0.0, 1.0, 17)):
        assert check(trained, given) is None, given
    period = -10.0 + np.arange(32) * 20.0 / 32  # x_0 + i L / n
    assert check(period, -10.0 + np.arange(8) * 20.0 / 8, ["x"]) is None
    # another domain, coarse or not: [0, 0.8] against [0, 1]
    vertices = np.linspace(0.0, 1.0, 64)
    assert "do not span" in check(vertices, np.linspace(0.0, 0.8, 5))
    assert "do not span" in check(trained, cells(16, 0.0, 2.0))
    assert "do not span" in check(period, -20.0 + np.arange(32) * 40.0 / 32, ["x"])


def test_other_output_times_are_told_apart_by_their_spacing():
    """The tolerance came from the largest time: t = 1000, 1000.001, 1000.002 shifted by a
    step passed as the same times (review)."""
    from pdeforge.train.data import channel_axes_mismatch

    trained = {"dims": ["t"], "coords": {"t": [1000.0, 1000.001, 1000.002]}}
    shifted = {"dims": ["t"], "coords": {"t": [1000.001, 1000.002, 1000.003]}}
    assert "'u' is given at t = [1000.001, 1000.002, 1000.003]" in channel_axes_mismatch(
        "u", trained, shifted)
    rounded = {"dims": ["t"], "coords": {"t": [1000.0, 1000.001 + 1e-12, 1000.002]}}
    assert channel_axes_mismatch("u", trained, rounded) is None
    labels = {"dims": ["component"], "coords": {"component": ["vx", "vy"]}}
    assert channel_axes_mismatch("v", labels, labels) is None
    assert "component = [vy, vx]" in channel_axes_mismatch(
        "v", labels, {"dims": ["component"], "coords": {"component": ["vy", "vx"]}})
