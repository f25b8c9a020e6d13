"""Problem family `darcy`: coefficient models, solution properties, options."""

from __future__ import annotations

import numpy as np
import pytest

from pdeforge.datasets.problems import build_problem
from pdeforge.errors import PdeforgeError
from pdeforge.solvers.diffusion import diffusion_matrix, unknown_mask


@pytest.mark.parametrize("resolution", [16, 31])
@pytest.mark.parametrize("scheme", ["cell", "vertex"])
@pytest.mark.parametrize("coefficient", ["piecewise", "lognormal"])
def test_samples_solve_their_own_system(resolution, scheme, coefficient):
    prob = build_problem("darcy", resolution, scheme=scheme, coefficient=coefficient)
    out = prob.generate(0, [0, 1])
    K, u = out["coefficient"], out["solution"]
    assert K.shape == u.shape == (2, resolution, resolution)
    assert out["converged"].all() and np.all(out["residual"] < 1e-10)
    mask = unknown_mask(K.shape[1:], scheme)
    for k, sol in zip(K, u, strict=True):
        A = diffusion_matrix(k, scheme)
        np.testing.assert_allclose(A @ sol[mask], np.ones(mask.sum()), rtol=0, atol=1e-8)
        assert np.all(sol[mask] > 0)  # M-matrix and f > 0: discrete maximum principle
        if scheme == "vertex":
            assert np.all(sol[~mask] == 0)
    if coefficient == "piecewise":
        assert set(np.unique(K)) <= {3.0, 12.0} and len(np.unique(K)) == 2
    else:
        assert np.all(K > 0) and K.std() > 0


def test_piecewise_values_threshold_and_forcing():
    base = build_problem("darcy", 16, k_high=5.0, k_low=0.5, threshold=0.2)
    out = base.generate(1, [0])
    assert set(np.unique(out["coefficient"])) == {0.5, 5.0}
    doubled = build_problem("darcy", 16, k_high=5.0, k_low=0.5, threshold=0.2, forcing=2.0)
    np.testing.assert_allclose(doubled.generate(1, [0])["solution"], 2 * out["solution"],
                               rtol=1e-12)


def test_resolved_options_are_recorded():
    prob = build_problem("darcy", 16, coefficient="lognormal")
    assert (prob.config["alpha"], prob.config["tau"]) == (2.5, 7.0)
    assert prob.config["sigma"] == pytest.approx(7.0**1.5)
    prob = build_problem("darcy", 16, alpha=3.0)
    assert prob.config["sigma"] == pytest.approx(3.0**2)


def test_option_errors():
    with pytest.raises(PdeforgeError, match="no option"):
        build_problem("darcy", 16, viscosity=1.0)
    with pytest.raises(PdeforgeError, match="at least 8"):
        build_problem("darcy", 4)
    with pytest.raises(PdeforgeError, match="not one of"):
        build_problem("darcy", 16, scheme="edge")
    with pytest.raises(PdeforgeError, match="unknown problem 'heat'"):
        build_problem("heat", 16)
