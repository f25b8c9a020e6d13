"""The training losses (pdeforge.train.losses) against formulas written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pdeforge.train.losses import RELATIVE_FLOOR, RelativeLoss
from pdeforge.train.metrics import OperatorMetrics


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(16, 16), (9, 20)])
def test_l2_is_the_mean_of_the_per_channel_ratios_in_any_units(dtype, size):
    g = torch.Generator().manual_seed(0)
    y = torch.randn(5, 3, *size, generator=g, dtype=torch.float64)
    y[:, 2] *= 1e4  # a channel in other units weighs as the others
    pred = y + 0.05 * torch.randn(5, 3, *size, generator=g, dtype=torch.float64) * y.std(
        dim=(0, 2, 3), keepdim=True)
    e, t = (pred - y).numpy(), y.numpy()
    want = np.mean(np.linalg.norm(e.reshape(5, 3, -1), axis=2)
                   / np.linalg.norm(t.reshape(5, 3, -1), axis=2))
    loss = RelativeLoss("l2", 2)
    for unit in (1.0, 1e-11, 1e9):  # neuraloperator's LpLoss: 1e-11 read ~100x too small
        got = float(loss((pred * unit).to(dtype), (y * unit).to(dtype)))
        assert got == pytest.approx(want, rel=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("length", [1.0, 50.0])
@pytest.mark.parametrize("n", [32, 45])
def test_h1_on_a_periodic_axis_is_the_exact_discrete_value(length, n):
    """As tests/train/test_normalizer_metrics.py: a constant error eps on sin(2 pi x / L)
    has relative H1 error eps sqrt(2 / (1 + s^2)), s = sin(2 pi h / L) / h."""
    h = length / n
    x = torch.arange(n, dtype=torch.float64) * h
    y = torch.sin(2 * math.pi * x / length).expand(3, 2, n).clone()
    loss = RelativeLoss("h1", 1)
    loss.set_grid([h], [True])
    s = math.sin(2 * math.pi * h / length) / h
    assert float(loss(y + 1e-3, y)) == pytest.approx(1e-3 * math.sqrt(2 / (1 + s * s)), rel=1e-12)


@pytest.mark.parametrize("n", [17, 64])
def test_h1_does_not_difference_across_the_walls_of_a_non_periodic_axis(n):
    """y = x on the vertex grid [0, 1] (n points): its differences are 1 everywhere, the
    ends' one-sided ones included, so a constant error c scores
    sqrt(n c^2) / sqrt(sum x^2 + n). Differenced periodically, as neuraloperator's H1Loss
    did, the wrap from x = 1 to x = 0 is a jump of slope -(n - 1) / 2."""
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    y = x.expand(2, 1, 3, n).clone()  # constant along the first axis: no derivative there
    loss = RelativeLoss("h1", 2)
    loss.set_grid([0.25, 1.0 / (n - 1)], [False, False])
    c = 0.01
    want = math.sqrt(n * c * c) / math.sqrt(float((x**2).sum()) + n)
    assert float(loss(y + c, y)) == pytest.approx(want, rel=1e-12)


def test_h1_of_one_channel_equals_the_rel_h1_metric():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(4, 1, 12, 10, generator=g, dtype=torch.float64)
    pred = y + 0.1 * torch.randn(4, 1, 12, 10, generator=g, dtype=torch.float64)
    steps, periodic = [0.3, 0.05], [True, False]
    loss = RelativeLoss("h1", 2)
    loss.set_grid(steps, periodic)
    metrics = OperatorMetrics(1, 2)
    metrics.set_grid(steps, periodic)
    metrics.update(pred, y)
    assert float(loss(pred, y)) == pytest.approx(float(metrics.compute()["rel_h1"]), rel=1e-12)


@pytest.mark.parametrize("kind", ["l2", "h1"])
def test_a_zero_target_is_divided_by_the_floor_not_by_itself(kind):
    """A sample whose target is zero has no relative error: it is divided by
    RELATIVE_FLOOR times the batch's largest norm of the channel, so that it neither
    swamps the loss nor is left out; a channel zero in the whole batch counts absolutely."""
    y = torch.ones(3, 1, 8, 8, dtype=torch.float64)
    y[1] = 0.0
    pred = y + 1e-9
    loss = RelativeLoss(kind, 2)
    norms = loss.norms(pred - y)[:, 0]
    big = loss.norms(y)[:, 0].max()
    want = (norms[0] / big + norms[1] / (RELATIVE_FLOOR * big) + norms[2] / big) / 3
    assert float(loss(pred, y)) == pytest.approx(float(want), rel=1e-12)
    zero = torch.zeros_like(y)
    absolute = loss.norms(pred - zero)[:, 0].mean()
    assert float(loss(pred, zero)) == pytest.approx(float(absolute), rel=1e-12)
    # a second channel in other units changes neither channel's part
    two = torch.cat([y, 1e-13 * y], dim=1)
    assert float(loss(torch.cat([pred, 1e-13 * pred], dim=1), two)) == pytest.approx(
        float(want), rel=1e-9)


@pytest.mark.parametrize("kind", ["l2", "h1"])
@pytest.mark.parametrize("unit", [1e-25, 1e-13, 1e18])
def test_float32_fields_in_extreme_units_neither_underflow_nor_overflow(kind, unit):
    """Squares of float32 fields x 1e-25 underflowed (loss 0) and x 1e18 overflowed
    (l2 0, h1 NaN): each channel is divided by its largest |target| first."""
    g = torch.Generator().manual_seed(2)
    y = torch.randn(3, 2, 12, 12, generator=g, dtype=torch.float64)
    pred = y + 0.03 * torch.randn(3, 2, 12, 12, generator=g, dtype=torch.float64)
    loss = RelativeLoss(kind, 2)
    want = float(loss(pred, y))
    got = float(loss((pred * unit).float(), (y * unit).float()))
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("kind", ["l2", "h1"])
def test_a_prediction_equal_to_its_target_has_finite_gradients(kind):
    """sqrt at 0: where p = y exactly in a sample, h1 gave NaN gradients (256 of 512)."""
    y = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    pred = torch.cat([y[:1], y[1:] + 0.1]).requires_grad_(True)
    RelativeLoss(kind, 2)(pred, y).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1].abs().max() > 0


def test_the_loss_has_gradients_and_refuses_mismatched_shapes():
    pred = torch.randn(2, 1, 8, requires_grad=True)
    loss = RelativeLoss("h1", 1)
    loss(pred, torch.randn(2, 1, 8)).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match=r"same shape \(B, C, 1 grid axes\)"):
        loss(pred, torch.randn(2, 1, 9))
    with pytest.raises(ValueError, match="must be one of"):
        RelativeLoss("h2", 1)
