"""Each operator fits one small batch of a smooth operator with an exact answer.

1D: the antiderivative v(x) = int_0^x u. 2D: the periodic inverse Laplacian -Lap v = f.
The step budget is bounded; training stops once the relative L2 error is below 1e-2.
"""

from __future__ import annotations

import pytest

from pdeforge import operators
from tests.operators.conftest import antiderivative_batch, inverse_laplacian_batch, overfit

CASES = {  # small widths keep the test fast; (constructor kwargs, learning rate, max steps)
    "mgno": ({"channels": 16, "n_layers": 2, "levels": 4, "padding_mode": "circular"}, 3e-3, 1000),
    "fno": ({"n_modes": 8, "hidden_channels": 16, "n_layers": 2}, 1e-2, 1000),
    "mgtfno": ({"n_modes": 8, "hidden_channels": 16, "n_layers": 2, "rank": 0.5}, 1e-2, 1000),
    "deeponet": (
        {"basis": 32, "sensors": 32, "branch_layers": [64, 64], "trunk_layers": [64, 64]},
        1e-2,
        2000,
    ),
    "lsm": ({"width": 16, "n_stages": 2, "heads": 4}, 3e-3, 1000),
}


@pytest.mark.slow
@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", sorted(CASES))
def test_overfits_a_small_batch(name, dim):
    kwargs, lr, max_steps = CASES[name]
    x, y = antiderivative_batch(4, 32) if dim == 1 else inverse_laplacian_batch(4, 32)
    model = operators.build(name, dim=dim, **kwargs)
    error, steps = overfit(model, x, y, max_steps, lr)
    assert error < 1e-2, f"{name} {dim}D reached relative L2 {error:.3e} in {steps} steps"
