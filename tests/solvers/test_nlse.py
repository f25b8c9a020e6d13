"""NLSE solver: exact soliton, conservation, entropies, batching, scipy cross-check, errors."""

from __future__ import annotations

import numpy as np
import pytest

from pdeforge.solvers import nlse

L = 50.0


@pytest.mark.slow
def test_soliton_matches_the_exact_solution_and_conserves_invariants():
    """Issue targets: eta=2, v=1, L=50, M=1024, filter on: error < 1e-9 at t=10, mass drift
    < 1e-13, energy drift < 1e-10 (relative)."""
    m = 1024
    x = nlse.grid(m, L)
    psi0 = nlse.soliton(x, 0.0, eta=2.0, velocity=1.0, x0=-5.0)
    psi = nlse.solve(psi0, length=L, times=[0.0, 5.0, 10.0], rtol=1e-10, atol=1e-12)
    assert np.array_equal(psi[0], psi0)
    exact = nlse.soliton(x, 10.0, eta=2.0, velocity=1.0, x0=-5.0)
    assert np.abs(psi[-1] - exact).max() < 1e-9
    inv = nlse.invariants(psi, length=L)
    # exact values: M = 2 eta, P = v M, E = eta v^2 - eta^3 / 3
    np.testing.assert_allclose(inv["mass"], 4.0, rtol=1e-12)
    np.testing.assert_allclose(inv["momentum"], 4.0, rtol=1e-12)
    np.testing.assert_allclose(inv["energy"], 2.0 - 8.0 / 3.0, rtol=1e-11)
    assert abs(inv["mass"][-1] - inv["mass"][0]) / inv["mass"][0] < 1e-13
    assert abs(inv["energy"][-1] - inv["energy"][0]) / abs(inv["energy"][0]) < 1e-10


def test_reference_entropies_of_the_single_soliton():
    x = nlse.grid(512, L)
    psi = 2.0 / np.cosh(2.0 * (x + 10.0)) * np.exp(1j * x)
    e = nlse.entropies(psi)
    assert round(float(e["shannon"]), 3) == 2.940
    assert round(float(e["renyi_2"]), 3) == 2.732
    assert round(float(e["tsallis_2"]), 3) == 0.935
    assert e["renyi_0"] >= e["shannon"] >= e["renyi_2"] >= e["renyi_inf"]


@pytest.mark.parametrize("m", [64, 128])
def test_batched_equals_one_by_one(m):
    x = nlse.grid(m, 20.0)
    rng = np.random.default_rng(0)
    batch = np.stack(
        [
            nlse.soliton(x, 0, eta=1 + 0.3 * i, velocity=0.5 - 0.2 * i, x0=-2 + i)
            + 0.01 * rng.standard_normal(m)
            for i in range(3)
        ]
    )
    times = [0.0, 0.5, 1.0]
    together = nlse.solve(batch, length=20.0, times=times, rtol=1e-12, atol=1e-14)
    alone = np.stack(
        [nlse.solve(b, length=20.0, times=times, rtol=1e-12, atol=1e-14) for b in batch]
    )
    assert together.shape == (3, 3, m)
    assert np.abs(together - alone).max() < 1e-12 * np.abs(alone).max() * 100


def test_interaction_picture_agrees_with_scipy_dop853():
    m = 128
    x = nlse.grid(m, 30.0)
    psi0 = nlse.soliton(x, 0, eta=1.5, velocity=0.3, x0=-3) + 0.2 * np.exp(-(x**2))
    times = [0.0, 1.0]
    ours = nlse.solve(psi0, length=30.0, times=times, rtol=1e-11, atol=1e-13)
    ref = nlse.solve(psi0, length=30.0, times=times, rtol=1e-11, atol=1e-13, method="scipy-dop853")
    assert np.abs(ours - ref).max() < 1e-8


def test_defocusing_sign_changes_the_energy():
    x = nlse.grid(64, 20.0)
    psi = np.exp(-(x**2))
    e_f = nlse.invariants(psi, length=20.0, focusing=True)["energy"]
    e_d = nlse.invariants(psi, length=20.0, focusing=False)["energy"]
    assert e_d > e_f


def test_bad_inputs():
    x = nlse.grid(64, L)
    good = np.exp(-(x**2)) + 0j
    with pytest.raises(nlse.NLSEInputError, match="at least 8"):
        nlse.solve(good[:4], length=L, times=[0, 1])
    with pytest.raises(nlse.NLSEInputError, match="NaN"):
        nlse.solve(np.full(64, np.nan), length=L, times=[0, 1])
    with pytest.raises(nlse.NLSEInputError, match="length"):
        nlse.solve(good, length=0.0, times=[0, 1])
    with pytest.raises(nlse.NLSEInputError, match="increasing"):
        nlse.solve(good, length=L, times=[0, 1, 1])
    with pytest.raises(nlse.NLSEInputError, match="method"):
        nlse.solve(good, length=L, times=[0, 1], method="euler")
