"""Gaussian random fields with Matern-type covariance, the input of most problem families.

A zero-mean field on the unit cube [0, 1]^d with covariance operator

    C = sigma^2 (-Laplacian + tau^2 I)^(-alpha),

sampled by its Karhunen-Loeve expansion in the eigenfunctions of the Laplacian,

    u(x) = sum_k sqrt(c_k) xi_k phi_k(x),   c_k = sigma^2 (lambda_k + tau^2)^(-alpha),

with xi_k i.i.d. standard normal and the constant mode dropped (zero mean). Two variants:

* ``"neumann"`` (non-periodic): phi_k = prod_d sqrt(2) cos(pi k_d x_d), lambda_k = pi^2 |k|^2.
  This is the field behind the FNO Darcy benchmark (Li et al., ICLR 2021, data generated with
  alpha=2, tau=3, sigma = tau^(alpha - d/2)), and behind the lognormal coefficients of the
  SKR paper (alpha=2.5, tau=7).
* ``"periodic"``: the real Fourier basis sqrt(2) cos / sin(2 pi k x), lambda_k = 4 pi^2 |k|^2.

The default sigma = tau^(alpha - d/2) keeps the variance of order one as tau changes (the
convention of the FNO data generator). Sampling is a separable tensor contraction with one
(n_points x n_modes) basis matrix per axis, so it works on any tensor grid (cell centres,
vertices including the boundary) without FFT size constraints; the cost is
O(d n^(d+1)) per sample, a few milliseconds at 256^2. Written here because neither scipy nor
neuraloperator samples this covariance on arbitrary tensor grids (neuraloperator ships
datasets, not generators).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOUNDARIES = ("neumann", "periodic")


def _basis_1d(x: np.ndarray, n_modes: int, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal (in L2(0,1)) 1-D eigenfunctions at points ``x`` and their eigenvalues."""
    x = np.asarray(x, dtype=np.float64)
    if boundary == "neumann":
        k = np.arange(n_modes)
        basis = np.cos(np.pi * np.outer(x, k)) * np.sqrt(2.0)
        basis[:, 0] = 1.0
        return basis, (np.pi * k) ** 2
    # periodic: const, then cos/sin pairs, then the Nyquist cosine for even counts
    cols = [np.ones_like(x)]
    freqs = [0]
    k = 1
    while len(cols) < n_modes:
        cols.append(np.sqrt(2.0) * np.cos(2 * np.pi * k * x))
        freqs.append(k)
        if len(cols) < n_modes:
            cols.append(np.sqrt(2.0) * np.sin(2 * np.pi * k * x))
            freqs.append(k)
        k += 1
    return np.stack(cols, axis=1), (2 * np.pi * np.asarray(freqs, dtype=np.float64)) ** 2


class GaussianRandomField:
    """Sampler of a zero-mean GRF with covariance sigma^2 (-Lap + tau^2)^(-alpha) on [0,1]^d.

    Args:
        points: one 1-D array of coordinates in [0, 1] per axis (a tensor grid).
        alpha: smoothness exponent (> d/2 for a field with finite point variance).
        tau: inverse length scale.
        sigma: amplitude; default tau^(alpha - d/2).
        boundary: ``"neumann"`` (cosine series) or ``"periodic"`` (Fourier series).
        n_modes: modes per axis; default the number of points on that axis.

    Example:
        >>> x = (np.arange(64) + 0.5) / 64
        >>> grf = GaussianRandomField([x, x], alpha=2.0, tau=3.0)
        >>> grf.sample(np.random.default_rng(0)).shape
        (64, 64)
    """

    def __init__(
        self,
        points: Sequence[np.ndarray],
        alpha: float,
        tau: float,
        sigma: float | None = None,
        boundary: str = "neumann",
        n_modes: Sequence[int] | None = None,
    ) -> None:
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if not points:
            raise ValueError("points: give one coordinate array per axis")
        dim = len(points)
        if alpha <= dim / 2:
            raise ValueError(
                f"alpha={alpha} gives a field with infinite point variance in {dim}D; "
                f"use alpha > {dim / 2}"
            )
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.dim = dim
        self.alpha, self.tau = float(alpha), float(tau)
        self.sigma = float(tau ** (alpha - dim / 2) if sigma is None else sigma)
        self.boundary = boundary
        modes = [len(p) for p in points] if n_modes is None else list(n_modes)
        bases, eigs = zip(
            *(_basis_1d(p, m, boundary) for p, m in zip(points, modes, strict=True)),
            strict=True,
        )
        self._bases = list(bases)
        lam = np.zeros(modes)
        for axis, e in enumerate(eigs):
            shape = [1] * dim
            shape[axis] = len(e)
            lam = lam + e.reshape(shape)
        std = self.sigma * (lam + self.tau**2) ** (-self.alpha / 2)
        std.flat[0] = 0.0  # zero mean: drop the constant mode
        self._std = std
        self.shape = tuple(len(p) for p in points)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One field on the grid, drawn from ``rng`` (float64)."""
        coef = self._std * rng.standard_normal(self._std.shape)
        for basis in self._bases:
            # contract the leading (mode) axis with the basis, moving the point axis last
            coef = np.tensordot(coef, basis, axes=([0], [1]))
        return coef

    def variance(self) -> float:
        """Point variance averaged over the domain: sum_k c_k (orthonormal basis)."""
        return float(np.sum(self._std**2))
