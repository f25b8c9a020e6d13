"""Normaliser statistics and metric definitions against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pdeforge.train.metrics import OperatorMetrics
from pdeforge.train.normalizer import ChannelNormalizer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streamed_statistics_equal_the_whole_array(dtype):
    g = torch.Generator().manual_seed(0)
    data = (
        torch.randn(37, 3, 9, 7, generator=g) * torch.tensor([1.0, 5.0, 0.1])[:, None, None]
        + torch.tensor([2.0, -1.0, 1e3])[:, None, None]
    ).to(dtype)
    norm = ChannelNormalizer(3).fit(data[i : i + 5] for i in range(0, 37, 5))
    flat = data.double().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(norm.mean.double(), flat.mean(1), rtol=1e-6, atol=0)
    torch.testing.assert_close(norm.std.double(), flat.std(1, unbiased=False), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        norm.decode(norm.encode(data.float())), data.float(), rtol=1e-5, atol=1e-4
    )


def test_constant_channel_is_not_divided_by_zero():
    norm = ChannelNormalizer(2).fit([torch.stack([torch.ones(4, 4), torch.randn(4, 4)])[None]])
    assert norm.std[0] == 1.0 and torch.isfinite(norm.encode(torch.ones(1, 2, 4, 4))).all()
    with pytest.raises(ValueError, match="no data"):
        ChannelNormalizer(1).fit([])


def test_the_normaliser_scales_fields_in_any_units():
    """A floor of 1e-12 in the data's units took the std of fields stored x 1e-13 for
    zero and left them undivided (std 1): now it is relative to the mean."""
    g = torch.Generator().manual_seed(0)
    data = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    data[:, 1] = 7.0  # constant: divided by its own size
    data[:, 2] = 0.0  # zero everywhere: std 1
    plain = ChannelNormalizer(3).fit([data])
    for unit in (1e-13, 1e-30, 1e20):
        scaled = ChannelNormalizer(3).fit([data * unit])
        torch.testing.assert_close(scaled.encode((data * unit).float()),
                                   plain.encode(data.float()), rtol=1e-5, atol=1e-6)
    assert float(plain.std[1]) == 7.0 and float(plain.std[2]) == 1.0


def test_metrics_match_direct_formulas():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(6, 2, 32, 32, generator=g, dtype=torch.float64)
    p = y + 0.1 * torch.randn(6, 2, 32, 32, generator=g, dtype=torch.float64)
    m = OperatorMetrics(2, 2)
    m.update(p[:4], y[:4])
    m.update(p[4:], y[4:])  # accumulated over batches
    out = {k: float(v) for k, v in m.compute().items()}
    e, yy = (p - y).numpy(), y.numpy()
    rel = np.linalg.norm(e.reshape(6, -1), axis=1) / np.linalg.norm(yy.reshape(6, -1), axis=1)
    assert out["rel_l2"] == pytest.approx(rel.mean())
    assert out["rmse"] == pytest.approx(np.sqrt((e.reshape(6, -1) ** 2).mean(1)).mean())
    per_c = np.linalg.norm(e.reshape(6, 2, -1), axis=2) / np.linalg.norm(
        yy.reshape(6, 2, -1), axis=2
    )
    assert out["nrmse"] == pytest.approx(per_c.mean())
    assert out["max_error"] == pytest.approx(np.abs(e).max())
    # PDEBench fRMSE, written out with loops over the positive-frequency quadrant
    f = np.abs(np.fft.fftn(e, axes=(2, 3))) ** 2
    shells = np.zeros((2, 16))
    for i in range(16):
        for j in range(16):
            k = int(math.floor(math.sqrt(i * i + j * j)))
            if k < 16:
                shells[:, k] += f[:, :, i, j].sum(0)
    amp = np.sqrt(shells / 6) / (32 * 32)
    assert out["frmse_low"] == pytest.approx(amp[:, :4].mean())
    assert out["frmse_mid"] == pytest.approx(amp[:, 4:12].mean())
    assert out["frmse_high"] == pytest.approx(amp[:, 12:].mean())
    # rel_h1 on the unit domain (no grid given): numpy's central differences, one-sided
    # at the ends, step 1/32, every channel and point pooled as for rel_l2
    def h1_squared(u):
        grads = np.gradient(u, 1 / 32, axis=(2, 3))
        return (u**2 + grads[0] ** 2 + grads[1] ** 2).reshape(len(u), -1).sum(1)

    assert out["rel_h1"] == pytest.approx(np.mean(np.sqrt(h1_squared(e) / h1_squared(yy))))


@pytest.mark.parametrize("length", [1.0, 50.0])
@pytest.mark.parametrize("n", [32, 45])
def test_rel_h1_measures_on_the_physical_grid(length, n):
    """A constant error eps on y = sin(2 pi x / L), x on a periodic grid of step h = L / n:
    central differences of y are s cos(2 pi x / L) with s = sin(2 pi h / L) / h, so
    ||e||_H1 / ||y||_H1 = eps sqrt(2 / (1 + s^2)) exactly; the unit-domain step that
    neuraloperator's H1Loss takes gave 5.6x the true value at L = 50."""
    h = length / n
    x = torch.arange(n, dtype=torch.float64) * h
    y = torch.sin(2 * math.pi * x / length).expand(3, 1, 7, n).clone()
    eps = 1e-3
    metrics = OperatorMetrics(1, 2)
    metrics.set_grid([0.1, h], [False, True])  # the y axis: constant, no derivative
    metrics.update(y + eps, y)
    s = math.sin(2 * math.pi * h / length) / h
    assert float(metrics.compute()["rel_h1"]) == pytest.approx(eps * math.sqrt(2 / (1 + s**2)),
                                                                rel=1e-12)


def test_rel_h1_pools_channels_as_rel_l2_and_does_not_depend_on_units():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(4, 2, 16, 16, generator=g, dtype=torch.float64)
    y[:, 0] *= 100.0
    y[:, 1] *= 0.01
    pred = y.clone()
    pred[:, 1] *= 1.5  # a 50 % error in the small channel only
    values = []
    for unit in (1.0, 1e-6, 1e-9):
        metrics = OperatorMetrics(2, 2)
        metrics.update(pred * unit, y * unit)
        values.append(metrics.compute())
    for out in values:
        # pooled: the small channel's error is 5e-5 of the fields (the mean of the two
        # channels' ratios said 0.25); in any unit (0.27 -> 0.009 at 1e-9 before)
        assert float(out["rel_l2"]) < 1e-4 and float(out["rel_h1"]) < 1e-4
        assert float(out["rel_h1"]) == pytest.approx(float(values[0]["rel_h1"]), rel=1e-9)


def test_frmse_scales_with_the_domain_as_pdebench_s():
    """PDEBench's fRMSE is multiplied by the domain's size (Lx Ly): on a domain of
    2 x 3 the bands are 6 times the unit domain's."""
    g = torch.Generator().manual_seed(5)
    y = torch.randn(3, 1, 32, 48, generator=g, dtype=torch.float64)
    pred = y + 0.1 * torch.randn(3, 1, 32, 48, generator=g, dtype=torch.float64)
    unit, scaled = OperatorMetrics(1, 2), OperatorMetrics(1, 2)
    scaled.set_grid([2.0 / 32, 3.0 / 48])
    for metrics in (unit, scaled):
        metrics.update(pred, y)
    a, b = unit.compute(), scaled.compute()
    for band in ("frmse_low", "frmse_mid", "frmse_high"):
        assert float(b[band]) == pytest.approx(6.0 * float(a[band]), rel=1e-12)
    assert float(b["rel_l2"]) == float(a["rel_l2"])


def test_samples_with_a_zero_target_are_counted():
    y = torch.ones(3, 1, 8, 8, dtype=torch.float64)
    y[1] = 0.0  # e.g. a vertex grid's boundary points only, where u = 0
    metrics = OperatorMetrics(1, 2)
    metrics.update(y + 0.1, y)
    assert int(metrics.zero_targets) == 1
    assert float(metrics.compute()["rel_l2"]) > 1e100  # what evaluate now warns about
