"""Problem family ``darcy``: steady Darcy flow -div(K grad u) = f, u = 0 on the boundary.

The coefficient K is random: either log-normal, K = exp(g), or the two-valued thresholded
field of the FNO Darcy benchmark (Li et al., "Fourier Neural Operator for Parametric PDEs",
ICLR 2021), K = k_high where g >= threshold and k_low elsewhere, with g a Gaussian random
field (``grf.py``). The source f is a constant. The discretisation is the finite-volume
two-point flux scheme of ``pdeforge.solvers.diffusion``; the reference solver is scipy's
sparse direct LU (SuperLU).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

from pdeforge.datasets.format import (
    INPUT,
    OUTPUT,
    SPATIAL_DIMS,
    Coordinate,
    VarSpec,
    diagnostic_specs,
)
from pdeforge.datasets.grf import BOUNDARIES, GaussianRandomField
from pdeforge.datasets.problems.base import Option, ProblemFamily, sample_rng
from pdeforge.errors import PdeforgeError
from pdeforge.solvers.diffusion import SCHEMES, diffusion_matrix, grid_points, unknown_mask

#: GRF parameters (alpha, tau) by coefficient model: FNO benchmark and SKR paper.
GRF_DEFAULTS = {"piecewise": (2.0, 3.0), "lognormal": (2.5, 7.0)}
#: A direct solve whose relative residual exceeds this is recorded as not converged.
DIRECT_RESIDUAL_TOL = 1e-8


class Darcy(ProblemFamily):
    """-div(K grad u) = f on the unit square, u = 0 on the boundary, random K."""

    name = "darcy"
    description = "steady Darcy flow -div(K grad u) = f with a random coefficient K (2D)"
    dim = 2
    default_resolution = 64
    min_resolution = 8
    max_resolution = 4096
    options = (
        Option("coefficient", str, "piecewise", "coefficient model", ("piecewise", "lognormal")),
        Option("scheme", str, "cell", "finite-volume grid: cell centres or vertices", SCHEMES),
        Option("alpha", float, None, "GRF smoothness (2 piecewise, 2.5 lognormal)", None, True),
        Option("tau", float, None, "GRF inverse length scale (3 piecewise, 7 lognormal)", None,
               True),
        Option("sigma", float, None, "GRF amplitude (tau^(alpha - d/2))", None, True),
        Option("grf_boundary", str, "neumann", "GRF eigenbasis", BOUNDARIES),
        Option("k_high", float, 12.0, "piecewise: K where the GRF >= threshold", None, True),
        Option("k_low", float, 3.0, "piecewise: K where the GRF < threshold", None, True),
        Option("threshold", float, 0.0, "piecewise: GRF threshold"),
        Option("forcing", float, 1.0, "constant source term f"),
    )

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        alpha, tau = GRF_DEFAULTS[options["coefficient"]]
        options["alpha"] = alpha if options["alpha"] is None else options["alpha"]
        options["tau"] = tau if options["tau"] is None else options["tau"]
        if options["alpha"] <= self.dim / 2:
            raise PdeforgeError(
                f"--alpha {options['alpha']} gives a GRF with infinite point variance in "
                f"{self.dim}D: use --alpha > {self.dim / 2:g}"
            )
        if options["sigma"] is None:
            try:
                options["sigma"] = options["tau"] ** (options["alpha"] - self.dim / 2)
            except OverflowError:
                options["sigma"] = np.inf
            if not np.isfinite(options["sigma"]):
                raise PdeforgeError(
                    "the default --sigma tau^(alpha - d/2) overflows for "
                    f"--alpha {options['alpha']} --tau {options['tau']}: give --sigma"
                )
        return options

    @property
    def solver_name(self) -> str:
        return "scipy.sparse.linalg.splu (SuperLU direct)"

    @property
    def dims(self) -> tuple[str, ...]:
        return SPATIAL_DIMS[: self.dim]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.resolution,) * self.dim

    def coordinates(self) -> list[Coordinate]:
        pts = grid_points(self.resolution, self.config["scheme"])
        kind = "cell centre" if self.config["scheme"] == "cell" else "grid vertex"
        return [
            Coordinate(d, pts, {"units": "1", "long_name": f"{d} ({kind}) on [0, 1]"})
            for d in self.dims
        ]

    def variables(self) -> list[VarSpec]:
        return [
            VarSpec("coefficient", self.dims, INPUT, attrs={
                "units": "1", "long_name": "diffusion coefficient K (permeability)"}),
            VarSpec("solution", self.dims, OUTPUT, attrs={
                "units": "1", "long_name": "solution u (pressure)"}),
        ] + diagnostic_specs([
            VarSpec("residual", (), "diagnostic", "float64", {
                "long_name": "relative residual ||f - A u|| / ||f||"}),
        ])

    def grf(self) -> GaussianRandomField:
        c = self.config
        pts = grid_points(self.resolution, c["scheme"])
        return GaussianRandomField(
            [pts] * self.dim, c["alpha"], c["tau"], c["sigma"], boundary=c["grf_boundary"]
        )

    def coefficient_from_field(self, g: np.ndarray) -> np.ndarray:
        c = self.config
        if c["coefficient"] == "lognormal":
            with np.errstate(over="ignore"):  # overflow -> inf -> sample not converged
                return np.exp(g)
        return np.where(g >= c["threshold"], c["k_high"], c["k_low"])

    def sample_coefficient(self, seed: int, index: int, grf: GaussianRandomField | None = None):
        """The coefficient K of sample ``index`` (float64), a function of (seed, index) only."""
        grf = self.grf() if grf is None else grf
        return self.coefficient_from_field(grf.sample(sample_rng(seed, index)))

    def solve(self, coefficient: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Solve for one coefficient field; returns u on the full grid and diagnostics."""
        scheme = self.config["scheme"]
        t0 = time.perf_counter()
        mask = unknown_mask(coefficient.shape, scheme)
        if not (np.all(np.isfinite(coefficient)) and np.all(coefficient > 0)):
            # e.g. exp() overflow for a huge --sigma: recorded, not raised
            u = np.full(coefficient.shape, np.nan)
            return u, {"converged": False, "solve_seconds": time.perf_counter() - t0,
                       "residual": np.nan}
        A = diffusion_matrix(coefficient, scheme)
        f = np.full(A.shape[0], self.config["forcing"])
        # SPD with a symmetric pattern: minimum degree on A^T + A and no pivoting keep
        # SuperLU's fill close to a Cholesky factorisation's.
        try:
            lu = spla.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
            x = lu.solve(f)
        except RuntimeError:  # SuperLU: singular factor; recorded as not converged
            x = np.full(A.shape[0], np.nan)
        seconds = time.perf_counter() - t0
        fnorm = np.linalg.norm(f)
        residual = float(np.linalg.norm(f - A @ x) / (fnorm if fnorm > 0 else 1.0))
        u = np.zeros(coefficient.shape)
        u[mask] = x
        converged = bool(np.all(np.isfinite(x)) and residual <= DIRECT_RESIDUAL_TOL)
        return u, {"converged": converged, "solve_seconds": seconds, "residual": residual}

    def generate(
        self,
        seed: int,
        indices: Sequence[int],
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        grf = self.grf()
        n = len(indices)
        out: dict[str, np.ndarray] = {
            "coefficient": np.empty((n, *self.shape)),
            "solution": np.empty((n, *self.shape)),
            "converged": np.empty(n, dtype=bool),
            "solve_seconds": np.empty(n),
            "residual": np.empty(n),
        }
        for row, index in enumerate(indices):
            K = self.sample_coefficient(seed, index, grf)
            u, diag = self.solve(K)
            out["coefficient"][row] = K
            out["solution"][row] = u
            for key, value in diag.items():
                out[key][row] = value
            if progress is not None:
                progress(1)
        return out
