"""DeepONet: query points, resolution change, POD trunk, multiple outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdeforge import operators
from pdeforge.operators import OperatorConfigError, OperatorInputError
from pdeforge.operators.base import unit_grid
from pdeforge.operators.deeponet import sample_grid_field
from tests.operators.conftest import antiderivative_batch, overfit


@pytest.mark.parametrize("dim", [1, 2])
def test_points_at_the_grid_nodes_equal_the_grid_evaluation(dim):
    model = operators.build("deeponet", dim=dim, out_channels=2).eval()
    shape = (40,) if dim == 1 else (20, 12)
    x = torch.randn(3, 1, *shape)
    points = unit_grid(shape, device=x.device, dtype=x.dtype).reshape(dim, -1).T
    with torch.no_grad():
        on_grid = model(x)
        at_points = model(x, points=points)
    assert at_points.shape == (3, 2, points.shape[0])
    torch.testing.assert_close(at_points, on_grid.reshape(3, 2, -1))


def test_sensor_resampling_makes_the_branch_resolution_independent():
    model = operators.build("deeponet", dim=1, sensors=33).eval()
    t_fine, t_coarse = torch.linspace(0, 1, 129), torch.linspace(0, 1, 33)
    fine, coarse = torch.sin(3 * t_fine)[None, None], torch.sin(3 * t_coarse)[None, None]
    points = torch.rand(10, 1)
    with torch.no_grad():
        # the fine field resampled at the 33 sensors is (to linear-interpolation accuracy)
        # the coarse field, so both predictions agree at shared query points
        torch.testing.assert_close(
            model(fine, points=points), model(coarse, points=points), rtol=1e-3, atol=1e-3
        )


@pytest.mark.parametrize("dim", [1, 2])
def test_grid_sampling_is_exact_for_linear_fields(dim):
    shape = (9,) if dim == 1 else (9, 5)
    grid = unit_grid(shape, device=torch.device("cpu"), dtype=torch.float64)
    weights = torch.tensor([2.0, -3.0][:dim], dtype=torch.float64)
    field = 1.0 + torch.einsum("d...,d->...", grid, weights)
    points = torch.rand(17, dim, dtype=torch.float64)
    expected = 1.0 + points @ weights
    torch.testing.assert_close(sample_grid_field(field[None], points)[0], expected)


def test_pod_basis_is_orthonormal_and_captures_a_low_rank_family():
    u, v = antiderivative_batch(32, 64)
    # antiderivatives of 3 sine/cosine pairs plus a constant: 7 functions span the outputs
    model = operators.build("deeponet", dim=1, pod_modes=7, pod_shape=64)
    captured = model.fit_pod(v)
    assert captured.item() > 1 - 1e-6
    basis = model.pod_basis[0].reshape(7, -1).double()
    gram = basis @ basis.T / basis.shape[1]
    torch.testing.assert_close(gram, torch.eye(7, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.pod_mean[0], v[:, 0].mean(0), atol=1e-6, rtol=0)


def test_pod_deeponet_overfits_the_antiderivative():
    u, v = antiderivative_batch(8, 32)
    model = operators.build(
        "deeponet", dim=1, pod_modes=7, pod_shape=32, sensors=32, branch_layers=[64, 64]
    )
    model.fit_pod(v)
    error, steps = overfit(model, u, v, 2000, 3e-3)
    assert error < 1e-2, (error, steps)
    # the POD basis is a buffer: it is saved and restored with the weights
    rebuilt = operators.build("deeponet", **model.config)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(u), model.eval()(u))


def test_pod_trunk_at_points_matches_the_grid_on_a_non_square_grid():
    """Catches a swapped axis order in the interpolation of the POD basis."""
    g = torch.Generator().manual_seed(0)
    shape = (12, 7)
    outputs = torch.randn(10, 1, *shape, generator=g)
    model = operators.build("deeponet", dim=2, pod_modes=5, pod_shape=list(shape), sensors=8)
    model.fit_pod(outputs)
    x = torch.randn(2, 1, *shape, generator=g)
    points = unit_grid(shape, device=x.device, dtype=x.dtype).reshape(2, -1).T
    with torch.no_grad():
        torch.testing.assert_close(model(x, points=points), model(x).reshape(2, 1, -1))


def test_pod_errors_are_explained():
    model = operators.build("deeponet", dim=1, pod_modes=4, pod_shape=16)
    with pytest.raises(OperatorInputError, match=r"fit_pod\(training_outputs\)"):
        model(torch.randn(1, 1, 16))
    with pytest.raises(OperatorInputError, match=r"shape \(N, 1, 16\)"):
        model.fit_pod(torch.randn(8, 1, 20))
    with pytest.raises(OperatorInputError, match="at least pod_modes=4"):
        model.fit_pod(torch.randn(3, 1, 16))
    with pytest.raises(OperatorConfigError, match="pod_shape"):
        operators.build("deeponet", pod_modes=4)
    with pytest.raises(OperatorConfigError, match="needs a POD-DeepONet"):
        operators.build("deeponet").fit_pod(torch.randn(8, 1, 16, 16))


def test_a_failed_pod_fit_leaves_the_model_as_it_was():
    model = operators.build("deeponet", dim=1, out_channels=2, pod_modes=3, pod_shape=16)
    good = torch.randn(8, 2, 16, dtype=torch.float64)
    model.fit_pod(good)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flat = good.clone()
    flat[:, 1] = 1.0  # channel 1 constant: no direction to fit
    with pytest.raises(OperatorInputError, match="channel 1 span fewer than pod_modes=3"):
        model.fit_pod(flat)
    nan = good.clone()
    nan[5, 0, 3] = float("nan")
    with pytest.raises(OperatorInputError, match=r"1 sample\(s\) hold NaN.*first: \[5\]"):
        model.fit_pod(nan)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_pod_fit_takes_a_numpy_array():
    model = operators.build("deeponet", dim=1, pod_modes=3, pod_shape=16)
    outputs = np.random.default_rng(0).normal(size=(8, 1, 16))
    captured = model.fit_pod(outputs)
    twin = operators.build("deeponet", dim=1, pod_modes=3, pod_shape=16)
    torch.testing.assert_close(twin.fit_pod(torch.from_numpy(outputs)), captured)
    torch.testing.assert_close(twin.pod_basis, model.pod_basis)
    with pytest.raises(OperatorInputError, match="real training outputs"):
        model.fit_pod(outputs.astype(complex))


def test_bad_query_points():
    model = operators.build("deeponet", dim=2)
    x = torch.randn(1, 1, 16, 16)
    with pytest.raises(OperatorInputError, match=r"shape \(n_points, 2\)"):
        model(x, points=torch.rand(5, 3))
    with pytest.raises(OperatorInputError, match="NaN"):
        model(x, points=torch.full((2, 2), float("nan")))


def test_mlp_and_cnn_branches_in_2d():
    x = torch.randn(2, 3, 24, 24)
    for branch in ("mlp", "cnn"):
        model = operators.build(
            "deeponet", dim=2, in_channels=3, out_channels=2, branch=branch, sensors=16
        )
        assert model(x).shape == (2, 2, 24, 24)
