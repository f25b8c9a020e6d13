"""Ordering systems by similarity: greedy (exact) and scalable (PCA cells)."""

from __future__ import annotations

import numpy as np
import pytest

from pdeforge.solvers.krylov import greedy_order, scalable_order, sort_systems
from pdeforge.solvers.krylov.sorting import tour_length


def test_greedy_on_a_line_visits_in_order():
    x = np.array([0.0, 5.0, 1.0, 3.0, 2.0, 4.0])
    assert greedy_order(x).tolist() == [0, 2, 4, 3, 5, 1]


def test_greedy_matches_brute_force_nearest_neighbour():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((40, 300))  # > 256 columns: through the PCA reduction
    order = greedy_order(F)
    assert sorted(order.tolist()) == list(range(40))
    seen = {int(order[0])}
    for a, b in zip(order[:-1], order[1:], strict=True):
        rest = [j for j in range(40) if j not in seen]
        d = np.linalg.norm(F[rest] - F[a], axis=1)
        assert np.isclose(np.linalg.norm(F[b] - F[a]), d.min())
        seen.add(int(b))


@pytest.mark.parametrize("n", [500, 2000])
def test_scalable_is_a_permutation_and_nearly_as_short(n):
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 1, n)
    F = np.stack([np.cos(6 * t), np.sin(6 * t), t, 0.01 * rng.standard_normal(n)], axis=1)
    order = scalable_order(F, cell_size=100)
    assert np.array_equal(np.sort(order), np.arange(n))
    random = tour_length(F, rng.permutation(n))
    assert tour_length(F, order) < 0.2 * random
    assert tour_length(F, order) < 2.0 * tour_length(F, greedy_order(F))


def test_hundred_thousand_systems():
    rng = np.random.default_rng(2)
    F = rng.standard_normal((100_000, 32))
    order = sort_systems(F)  # auto: scalable above GREEDY_MAX
    assert np.array_equal(np.sort(order), np.arange(100_000))


def test_bad_features():
    with pytest.raises(ValueError, match="NaN"):
        greedy_order(np.array([[0.0], [np.nan]]))
    with pytest.raises(ValueError, match="unknown sorting"):
        sort_systems(np.zeros((3, 2)), "random")


def test_greedy_start_and_scalar_features_are_checked():
    with pytest.raises(ValueError, match="start must index one of the 5 systems"):
        greedy_order(np.arange(5.0), start=-1)
    with pytest.raises(ValueError, match="one row per system"):
        greedy_order(np.float64(3.0))
