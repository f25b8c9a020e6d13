"""Small test systems for the Krylov solvers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pdeforge.datasets.grf import GaussianRandomField
from pdeforge.datasets.problems.base import sample_rng
from pdeforge.solvers.diffusion import diffusion_matrix


def convection_diffusion(K: np.ndarray, velocity: float) -> sp.csr_matrix:
    """-div(K grad u) + velocity du/dx, central differences: nonsymmetric."""
    n = K.shape[0]
    h = 1.0 / n
    D = sp.diags([np.ones(n - 1), -np.ones(n - 1)], [1, -1], shape=(n, n))
    return (diffusion_matrix(K) + sp.kron(D, sp.eye(n)) * (velocity / (2 * h))).tocsr()


def darcy_coefficients(n: int, count: int, seed: int = 0) -> list[np.ndarray]:
    x = (np.arange(n) + 0.5) / n
    grf = GaussianRandomField([x, x], 2.5, 7.0)
    return [np.exp(grf.sample(sample_rng(seed, i))) for i in range(count)]


@pytest.fixture(scope="module")
def darcy_sequence():
    Ks = darcy_coefficients(24, 8)
    return Ks, [diffusion_matrix(K) for K in Ks]


@pytest.fixture(scope="module")
def convection_sequence():
    Ks = darcy_coefficients(24, 6, seed=1)
    return Ks, [convection_diffusion(K, 40.0) for K in Ks]
