"""Gaussian random field sampler: determinism, covariance, boundary behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from pdeforge.datasets.grf import GaussianRandomField
from pdeforge.datasets.problems.base import sample_rng


def _cells(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
@pytest.mark.parametrize("n", [16, 33])
def test_deterministic_per_seed_and_index(boundary, n):
    grf = GaussianRandomField([_cells(n)] * 2, alpha=2.0, tau=3.0, boundary=boundary)
    a = grf.sample(sample_rng(7, 11))
    b = grf.sample(sample_rng(7, 11))
    c = grf.sample(sample_rng(7, 12))
    d = grf.sample(sample_rng(8, 11))
    assert a.shape == (n, n)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
def test_empirical_covariance_matches_the_operator(boundary):
    """Mean zero and domain-averaged point variance sum_k c_k, within sampling error."""
    n, m = 24, 4000
    grf = GaussianRandomField([_cells(n)] * 2, alpha=2.5, tau=4.0, boundary=boundary)
    rng = np.random.default_rng(0)
    samples = np.stack([grf.sample(rng) for _ in range(m)])
    var = samples.var(axis=0).mean()
    z = samples.mean(axis=0) / np.sqrt(samples.var(axis=0) / m)  # per-point t statistic
    assert np.abs(z).max() < 5
    assert var == pytest.approx(grf.variance(), rel=0.06)
    # closed form of one coefficient: project on the (1, 0) eigenfunction
    x = _cells(n)
    if boundary == "neumann":
        phi = np.sqrt(2) * np.cos(np.pi * x)[:, None] * np.ones(n)[None, :]
        lam = np.pi**2
    else:
        phi = np.sqrt(2) * np.cos(2 * np.pi * x)[:, None] * np.ones(n)[None, :]
        lam = 4 * np.pi**2
    coef = (samples * phi).mean(axis=(1, 2))  # midpoint quadrature of the L2 product
    expected = grf.sigma**2 * (lam + grf.tau**2) ** (-grf.alpha)
    assert coef.var() == pytest.approx(expected, rel=0.1)


def test_periodic_field_is_periodic_and_neumann_is_not_forced_to():
    x = np.linspace(0, 1, 21)  # includes both ends
    per = GaussianRandomField([x, x], 2.0, 3.0, boundary="periodic").sample(sample_rng(0, 0))
    np.testing.assert_allclose(per[0], per[-1], atol=1e-10)
    np.testing.assert_allclose(per[:, 0], per[:, -1], atol=1e-10)
    neu = GaussianRandomField([x, x], 2.0, 3.0, boundary="neumann").sample(sample_rng(0, 0))
    assert np.abs(neu[0] - neu[-1]).max() > 1e-3


def test_smoothness_increases_with_alpha():
    x = _cells(64)
    rough = GaussianRandomField([x, x], 1.5, 3.0).sample(sample_rng(0, 0))
    smooth = GaussianRandomField([x, x], 4.0, 3.0).sample(sample_rng(0, 0))

    def rel_gradient(u):
        return np.abs(np.diff(u, axis=0)).mean() / u.std()

    assert rel_gradient(smooth) < 0.5 * rel_gradient(rough)


def test_one_and_three_dimensions():
    x = _cells(8)
    assert GaussianRandomField([x], 1.0, 2.0).sample(sample_rng(0, 0)).shape == (8,)
    assert GaussianRandomField([x] * 3, 2.0, 2.0).sample(sample_rng(0, 0)).shape == (8, 8, 8)


def test_bad_parameters():
    x = _cells(8)
    with pytest.raises(ValueError, match="alpha"):
        GaussianRandomField([x, x], 1.0, 3.0)
    with pytest.raises(ValueError, match="tau"):
        GaussianRandomField([x, x], 2.0, -1.0)
    with pytest.raises(ValueError, match="boundary"):
        GaussianRandomField([x, x], 2.0, 3.0, boundary="dirichlet")
