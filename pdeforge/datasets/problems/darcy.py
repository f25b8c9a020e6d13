"""Problem families ``darcy`` and ``darcy3d``: -div(K grad u) = f, u = 0 on the boundary.

The coefficient K is random: either log-normal, K = exp(g), or the two-valued thresholded
field of the FNO Darcy benchmark (Li et al., "Fourier Neural Operator for Parametric PDEs",
ICLR 2021), K = k_high where g >= threshold and k_low elsewhere, with g a Gaussian random
field (``grf.py``). The source f is a constant. The discretisation is the finite-volume
two-point flux scheme of ``pdeforge.solvers.diffusion`` (SPD); the systems of a shard go
to ``solve_sequence`` (sparse LU, or sorted + recycled CG for large grids).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pdeforge.datasets.format import INPUT, OUTPUT, Coordinate, VarSpec
from pdeforge.datasets.grf import BOUNDARIES, GaussianRandomField
from pdeforge.datasets.grid import CELL, GRID_ATTR, VERTEX
from pdeforge.datasets.problems.base import Option, sample_rng
from pdeforge.datasets.problems.linear import SOLVER_OPTIONS, LinearFamily, LinearSample
from pdeforge.errors import PdeforgeError
from pdeforge.solvers.diffusion import SCHEMES, diffusion_matrix, grid_points, unknown_mask

#: GRF parameters (alpha, tau) by coefficient model: FNO benchmark and SKR paper.
GRF_DEFAULTS = {"piecewise": (2.0, 3.0), "lognormal": (2.5, 7.0)}


def grf_options() -> tuple[Option, ...]:
    return (
        Option("alpha", float, None, "GRF smoothness (2 piecewise, 2.5 lognormal)", None, True),
        Option("tau", float, None, "GRF inverse length scale (3 piecewise, 7 lognormal)", None,
               True),
        Option("sigma", float, None, "GRF amplitude (tau^(alpha - d/2))", None, True),
        Option("grf_boundary", str, "neumann", "GRF eigenbasis", BOUNDARIES),
    )


def resolve_grf(options: dict[str, Any], dim: int, alpha: float, tau: float) -> None:
    """Fill GRF defaults in place and reject parameters that give no usable field."""
    options["alpha"] = alpha if options["alpha"] is None else options["alpha"]
    options["tau"] = tau if options["tau"] is None else options["tau"]
    if options["alpha"] <= dim / 2:
        raise PdeforgeError(
            f"--alpha {options['alpha']} gives a GRF with infinite point variance in "
            f"{dim}D: use --alpha > {dim / 2:g}"
        )
    if options["sigma"] is None:
        try:
            options["sigma"] = options["tau"] ** (options["alpha"] - dim / 2)
        except OverflowError:
            options["sigma"] = np.inf
        if not np.isfinite(options["sigma"]):
            raise PdeforgeError(
                "the default --sigma tau^(alpha - d/2) overflows for "
                f"--alpha {options['alpha']} --tau {options['tau']}: give --sigma"
            )


class Darcy(LinearFamily):
    """-div(K grad u) = f on the unit square, u = 0 on the boundary, random K."""

    name = "darcy"
    description = "steady Darcy flow -div(K grad u) = f with a random coefficient K (2D)"
    dim = 2
    spd = True
    options = (
        Option("coefficient", str, "piecewise", "coefficient model", ("piecewise", "lognormal")),
        Option("scheme", str, "cell", "finite-volume grid: cell centres or vertices", SCHEMES,
               numerics=True),
        *grf_options(),
        Option("k_high", float, 12.0, "piecewise: K where the GRF >= threshold", None, True),
        Option("k_low", float, 3.0, "piecewise: K where the GRF < threshold", None, True),
        Option("threshold", float, 0.0, "piecewise: GRF threshold"),
        Option("forcing", float, 1.0, "constant source term f"),
        *SOLVER_OPTIONS,
    )

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        resolve_grf(options, self.dim, *GRF_DEFAULTS[options["coefficient"]])
        return super().resolve_options(options)

    def unused_options(self) -> dict[str, str]:
        unused = super().unused_options()
        if self.config["coefficient"] == "lognormal":  # K = exp(GRF): no two levels
            unused.update(dict.fromkeys(("k_high", "k_low", "threshold"),
                                        "with --coefficient lognormal (piecewise only)"))
        return unused

    def points(self) -> np.ndarray:
        return grid_points(self.resolution, self.config["scheme"])

    def coordinates(self) -> list[Coordinate]:
        cell = self.config["scheme"] == "cell"
        kind = "cell centre" if cell else "grid vertex"
        return [Coordinate(d, self.points(), {"units": "1", "long_name": f"{d} ({kind}) on [0, 1]",
                                              GRID_ATTR: CELL if cell else VERTEX})
                for d in self.dims]

    def field_specs(self) -> list[VarSpec]:
        return [
            VarSpec("coefficient", self.dims, INPUT, attrs={
                "units": "1", "long_name": "diffusion coefficient K (permeability)"}),
            VarSpec("solution", self.dims, OUTPUT, attrs={
                "units": "1", "long_name": "solution u (pressure)"}),
        ]

    def grf(self) -> GaussianRandomField:
        c = self.config
        return GaussianRandomField([self.points()] * self.dim, c["alpha"], c["tau"], c["sigma"],
                                   boundary=c["grf_boundary"])

    def coefficient_from_field(self, g: np.ndarray) -> np.ndarray:
        c = self.config
        if c["coefficient"] == "lognormal":
            with np.errstate(over="ignore"):  # overflow -> inf -> rejected in build()
                return np.exp(g)
        return np.where(g >= c["threshold"], c["k_high"], c["k_low"])

    def sample_coefficient(self, seed: int, index: int) -> np.ndarray:
        """The coefficient K of sample ``index`` (float64), a function of (seed, index) only."""
        if not hasattr(self, "_grf"):
            self._grf = self.grf()
        return self.coefficient_from_field(self._grf.sample(sample_rng(seed, index)))

    def build(self, seed: int, index: int) -> LinearSample:
        return self.system_from_coefficient(self.sample_coefficient(seed, index))

    def system_from_inputs(self, inputs: dict[str, np.ndarray]) -> LinearSample:
        K = self.grid_inputs(inputs, ("coefficient",))["coefficient"]
        if not np.all(K > 0):
            raise PdeforgeError("the coefficient must be finite and positive everywhere")
        return self.system_from_coefficient(K)

    def system_from_coefficient(self, K: np.ndarray) -> LinearSample:
        scheme = self.config["scheme"]
        mask = unknown_mask(K.shape, scheme)
        if not (np.all(np.isfinite(K)) and np.all(K > 0)):  # exp() overflow: no system
            return LinearSample(None, np.zeros(0), {"coefficient": K}, np.zeros(0), mask)
        with np.errstate(over="ignore"):
            A = diffusion_matrix(K, scheme)
        if not np.all(np.isfinite(A.data)):  # K / h^2 beyond double's range: no system
            return LinearSample(None, np.zeros(0), {"coefficient": K}, np.zeros(0), mask)
        b = np.full(A.shape[0], self.config["forcing"])
        return LinearSample(A, b, {"coefficient": K}, K.ravel(), mask)

    def outputs(self, sample: LinearSample, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"solution": self.to_grid(sample, x)}


class Darcy3D(Darcy):
    """-div(K grad u) = f on the unit cube, u = 0 on the boundary, random K."""

    name = "darcy3d"
    description = "steady Darcy flow -div(K grad u) = f with a random coefficient K (3D)"
    dim = 3
    default_resolution = 32
    min_resolution = 8
    max_resolution = 512
