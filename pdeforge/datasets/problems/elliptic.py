"""Problem families ``helmholtz``, ``helmholtz3d``, ``advection-diffusion``, ``poisson``,
``thermal``: the linear families of the SKR paper (Wang et al., ICLR 2024), sharing the
finite-volume assembly of ``pdeforge.solvers.diffusion`` on cell-centred grids.

* ``helmholtz``: -Lap u - k(x)^2 u = f, variable wave number k = k0 exp(s g) (g a GRF),
  Gaussian point-like source at a random position; absorbing (first-order Robin,
  du/dn = i k u, complex symmetric) or Dirichlet (real symmetric, indefinite) walls.
* ``advection-diffusion``: -nu Lap u + div(v u) = f, u = 0 on the walls, v = curl(psi) of a
  GRF stream function vanishing on the walls (discretely divergence-free face velocities),
  nu log-uniform per sample, first-order upwind fluxes (an M-matrix, nonsymmetric).
* ``poisson``: -Lap u = f with u = g on the walls, f and g Chebyshev series of degree 5 in
  each variable with coefficients U(-1, 1) (the paper's Poisson set). One matrix for all.
* ``thermal``: steady heat -Lap T = 0 on a plate with a rectangular slot (insulated),
  random temperatures (Chebyshev series of degree 3) on the left and right edges and
  random fluxes on the bottom and top. One matrix for all; boundary data vary.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.polynomial import chebyshev

from pdeforge.datasets.format import INPUT, OUTPUT, PARAMETER, VarSpec
from pdeforge.datasets.grf import GaussianRandomField
from pdeforge.datasets.problems.base import Option, sample_rng
from pdeforge.datasets.problems.linear import SOLVER_OPTIONS, LinearFamily, LinearSample
from pdeforge.errors import PdeforgeError
from pdeforge.solvers.diffusion import diffusion_matrix, wall_rhs


def _walls(dim: int, kind: str) -> dict[tuple[int, int], str]:
    return {(a, s): kind for a in range(dim) for s in (0, 1)}


class Helmholtz(LinearFamily):
    """-Lap u - k(x)^2 u = f on the unit square with a random wave number field."""

    name = "helmholtz"
    description = "Helmholtz -Lap u - k(x)^2 u = f, variable wave number, indefinite (2D)"
    dim = 2
    spd = False
    default_k0 = 20.0
    options = (
        Option("k0", float, None, "mean wave number (20 in 2D, 10 in 3D)", None, True),
        Option("k_sigma", float, 0.2, "log-amplitude of the wave-number variation", None),
        Option("boundary", str, "absorbing", "walls: absorbing (Robin du/dn = i k u, complex "
               "solution) or dirichlet (u = 0)", ("absorbing", "dirichlet")),
        Option("source_width", float, 0.05, "width of the Gaussian source", None, True),
        *SOLVER_OPTIONS,
    )

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["k0"] is None:
            options["k0"] = self.default_k0
        if options["k_sigma"] < 0:
            raise PdeforgeError(f"--k-sigma must be >= 0, got {options['k_sigma']}")
        # the wave number two standard deviations up (k0 exp(k_sigma g), g a unit GRF;
        # samples reach beyond it now and then: an estimate, not a bound)
        k_high = options["k0"] * np.exp(2 * options["k_sigma"])
        ppw = 2 * np.pi / k_high * self.resolution
        if ppw < 6:
            # (it named --k0 alone, also when --k-sigma made the wave numbers large)
            raise PdeforgeError(
                f"--k0 {options['k0']:g} with --k-sigma {options['k_sigma']:g} (wave numbers "
                f"up to about k0 exp(2 k_sigma) = {k_high:.3g}) leaves {ppw:.1f} grid points "
                f"per wavelength at resolution {self.resolution}: use a finer --resolution, "
                "a smaller --k0 or a smaller --k-sigma"
            )
        h = 1.0 / self.resolution
        if options["source_width"] < h / 2:
            # sampled at cell centres, a narrower Gaussian can fall between them: 3 of 4
            # samples at width 0.001 and resolution 16 had a source and solution of zeros
            raise PdeforgeError(
                f"--source-width {options['source_width']:g} is below half the cell size "
                f"({h / 2:.4g} at resolution {self.resolution}): the grid cannot resolve the "
                f"source and may miss it; use --source-width >= {h / 2:.4g} or a finer "
                "--resolution")
        return super().resolve_options(options)

    @property
    def complex_output(self) -> bool:
        return self.config["boundary"] == "absorbing"

    def field_specs(self) -> list[VarSpec]:
        outs = (["solution_re", "solution_im"] if self.complex_output else ["solution"])
        return [
            VarSpec("wavenumber", self.dims, INPUT, attrs={"units": "1",
                                                           "long_name": "wave number k"}),
            VarSpec("source", self.dims, INPUT, attrs={"units": "1", "long_name": "source f"}),
        ] + [VarSpec(o, self.dims, OUTPUT, attrs={
            "units": "1", "long_name": f"{o.replace('_', ' ')} (wave field u)"}) for o in outs]

    def build(self, seed: int, index: int) -> LinearSample:
        c = self.config
        rng = sample_rng(seed, index)
        pts = self.points()
        if not hasattr(self, "_grf"):  # (the attribute tested is set last: a thread that
            # sees it sees the set-up done)
            grf = GaussianRandomField([pts] * self.dim, 2.5, 5.0, sigma=None)
            self._std = np.sqrt(grf.variance())
            self._grf = grf
        g = self._grf.sample(rng) / self._std
        k = c["k0"] * np.exp(c["k_sigma"] * g)
        centre = rng.uniform(0.2, 0.8, self.dim)
        grids = np.meshgrid(*[pts] * self.dim, indexing="ij")
        r2 = sum((x - x0) ** 2 for x, x0 in zip(grids, centre, strict=True))
        w = c["source_width"]
        f = np.exp(-r2 / (2 * w**2)) / (2 * np.pi * w**2) ** (self.dim / 2)
        return self.system_from_fields(k, f)

    def system_from_inputs(self, inputs: dict[str, np.ndarray]) -> LinearSample:
        fields = self.grid_inputs(inputs, ("wavenumber", "source"))
        if np.any(fields["wavenumber"] < 0):
            raise PdeforgeError("the wavenumber must be >= 0 everywhere")
        return self.system_from_fields(fields["wavenumber"], fields["source"])

    def system_from_fields(self, k: np.ndarray, f: np.ndarray) -> LinearSample:
        """The system of wave number field ``k`` and source ``f`` (grid-shaped)."""
        if not hasattr(self, "_lap"):
            self._lap = {}
        kind = "neumann" if self.complex_output else "dirichlet"
        if kind not in self._lap:
            self._lap[kind] = diffusion_matrix(np.ones(self.shape), walls=_walls(self.dim, kind))
        A = self._lap[kind] - sp.diags(k.ravel() ** 2)
        if self.complex_output:
            # Robin wall: flux out = i k u_wall with u_wall = u_c / (1 - i k h / 2)
            h = 1.0 / self.resolution
            absorb = np.zeros(self.shape, dtype=complex)
            for axis in range(self.dim):
                for side in (0, -1):
                    sl = [slice(None)] * self.dim
                    sl[axis] = side
                    kw = k[tuple(sl)]
                    absorb[tuple(sl)] += -1j * kw / (h * (1 - 1j * kw * h / 2))
            A = A + sp.diags(absorb.ravel())
        A = sp.csr_matrix(A)
        b = f.ravel().astype(A.dtype)
        return LinearSample(A, b, {"wavenumber": k, "source": f},
                            np.concatenate([k.ravel(), f.ravel()]))

    def outputs(self, sample: LinearSample, x: np.ndarray) -> dict[str, np.ndarray]:
        u = x.reshape(self.shape)
        if self.complex_output:
            return {"solution_re": u.real, "solution_im": u.imag}
        return {"solution": u.real}


class Helmholtz3D(Helmholtz):
    name = "helmholtz3d"
    description = "Helmholtz -Lap u - k(x)^2 u = f, variable wave number, indefinite (3D)"
    dim = 3
    default_resolution = 32
    max_resolution = 512
    default_k0 = 10.0


class AdvectionDiffusion(LinearFamily):
    """-nu Lap u + div(v u) = f on the unit square, u = 0 on the walls, random v and nu."""

    name = "advection-diffusion"
    description = "advection-diffusion -nu Lap u + div(v u) = 1, random flow and nu (2D)"
    dim = 2
    spd = False
    # 2: --velocity is the RMS speed sqrt(mean |v|^2) of the stored cell-centre flow; 1
    # scaled the RMS of the face-normal components, walls included (1.4x faster flows)
    revision = 2
    options = (
        Option("velocity", float, 50.0, "RMS speed sqrt(mean |v|^2) of the random flow over "
               "the cells", None, True),
        Option("nu_min", float, 0.01, "smallest diffusivity (log-uniform)", None, True),
        Option("nu_max", float, 0.1, "largest diffusivity", None, True),
        *SOLVER_OPTIONS,
    )

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["nu_min"] > options["nu_max"]:
            raise PdeforgeError("--nu-min must not exceed --nu-max")
        return super().resolve_options(options)

    def field_specs(self) -> list[VarSpec]:
        return [
            VarSpec("velocity_x", self.dims, INPUT, attrs={"units": "1",
                                                           "long_name": "flow velocity v_x"}),
            VarSpec("velocity_y", self.dims, INPUT, attrs={"units": "1",
                                                           "long_name": "flow velocity v_y"}),
            VarSpec("diffusivity", (), PARAMETER, "float64", {"units": "1",
                                                              "long_name": "diffusivity nu"}),
            VarSpec("solution", self.dims, OUTPUT, attrs={"units": "1",
                                                          "long_name": "concentration u"}),
        ]

    def build(self, seed: int, index: int) -> LinearSample:
        c = self.config
        rng = sample_rng(seed, index)
        n = self.resolution
        h = 1.0 / n
        verts = np.linspace(0.0, 1.0, n + 1)
        if not hasattr(self, "_grf"):  # (the attribute tested is set last: a thread that
            # sees it sees the set-up done)
            self._lap = diffusion_matrix(np.ones(self.shape))
            self._grf = GaussianRandomField([verts, verts], 3.0, 4.0)
        X, Y = np.meshgrid(verts, verts, indexing="ij")
        psi = self._grf.sample(rng) * np.sin(np.pi * X) * np.sin(np.pi * Y)  # 0 on walls
        # face velocities of v = (d psi/dy, -d psi/dx): exactly divergence-free per cell
        vx_face = (psi[:, 1:] - psi[:, :-1]) / h  # x-faces, shape (n+1, n)
        vy_face = -(psi[1:, :] - psi[:-1, :]) / h  # y-faces, shape (n, n+1)
        # the stored cell-centre velocities set the scale: their RMS speed is --velocity
        vx = (vx_face[1:] + vx_face[:-1]) / 2
        vy = (vy_face[:, 1:] + vy_face[:, :-1]) / 2
        rms = np.sqrt(np.mean(vx**2 + vy**2))
        scale = c["velocity"] / rms if rms > 0 else 0.0
        vx_face, vy_face, vx, vy = vx_face * scale, vy_face * scale, vx * scale, vy * scale
        nu = float(np.exp(rng.uniform(np.log(c["nu_min"]), np.log(c["nu_max"]))))
        A = nu * self._lap + _upwind(vx_face, vy_face, h)
        b = np.ones(n * n)
        return LinearSample(sp.csr_matrix(A), b,
                            {"velocity_x": vx, "velocity_y": vy,
                             "diffusivity": np.float64(nu)},
                            np.concatenate([vx.ravel(), vy.ravel(), [nu]]))

    def outputs(self, sample: LinearSample, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"solution": x.reshape(self.shape)}


def _upwind(vx_face: np.ndarray, vy_face: np.ndarray, h: float) -> sp.csr_matrix:
    """First-order upwind matrix of div(v u) with zero normal flow through the walls."""
    n = vx_face.shape[1]
    index = np.arange(n * n).reshape(n, n)
    rows, cols, vals = [], [], []
    for axis, vf in ((0, vx_face[1:-1, :]), (1, vy_face[:, 1:-1])):
        lo = index[:-1, :] if axis == 0 else index[:, :-1]
        hi = index[1:, :] if axis == 0 else index[:, 1:]
        pos, neg = np.maximum(vf, 0) / h, np.minimum(vf, 0) / h
        # flux F = v+ u_lo + v- u_hi leaves lo and enters hi
        for r, cc, v in ((lo, lo, pos), (lo, hi, neg), (hi, lo, -pos), (hi, hi, -neg)):
            rows.append(r.ravel())
            cols.append(cc.ravel())
            vals.append(v.ravel())
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n * n, n * n))


def _chebyshev_2d(coef: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum_ij c_ij T_i(2x - 1) T_j(2y - 1) on the tensor grid x by y."""
    return chebyshev.chebgrid2d(2 * x - 1, 2 * y - 1, coef)


def _check_resolved_degree(family: LinearFamily, name: str, options: dict[str, Any],
                           resolving: str) -> None:
    """Refuse a Chebyshev series degree (option ``name``) above what the family's grid
    resolves (``resolving``: "the grid resolves"): n points a side resolve degree n - 1
    (poisson's --degree 100000 ran out of memory in a traceback)."""
    degree, n = options[name], family.resolution
    if degree >= n:
        flag = next(o.flag for o in family.options if o.name == name)
        raise PdeforgeError(
            f"{flag} {degree} at resolution {n}: {resolving} series of degree up to "
            f"{n - 1}; lower {flag} or raise --resolution")


class Poisson(LinearFamily):
    """-Lap u = f on the unit square, u = g on the walls, Chebyshev-series f and g."""

    name = "poisson"
    description = "Poisson -Lap u = f, u = g on the walls, random Chebyshev series (2D)"
    dim = 2
    spd = True
    options = (
        Option("degree", int, 5, "degree of the Chebyshev series in each variable (0: "
               "constant source and boundary values)", None),
        *SOLVER_OPTIONS,
    )

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["degree"] < 0:
            raise PdeforgeError(f"--degree must be >= 0, got {options['degree']}")
        _check_resolved_degree(self, "degree", options, "the grid resolves")
        return super().resolve_options(options)

    def field_specs(self) -> list[VarSpec]:
        return [
            VarSpec("source", self.dims, INPUT, attrs={"units": "1", "long_name": "source f"}),
            VarSpec("boundary_function", self.dims, INPUT, attrs={
                "units": "1", "long_name": "g, whose trace on the walls is the boundary data"}),
            VarSpec("solution", self.dims, OUTPUT, attrs={"units": "1",
                                                          "long_name": "solution u"}),
        ]

    def build(self, seed: int, index: int) -> LinearSample:
        rng = sample_rng(seed, index)
        d = self.config["degree"] + 1
        cf = rng.uniform(-1, 1, (d, d))
        cg = rng.uniform(-1, 1, (d, d))
        pts = self.points()
        if not hasattr(self, "_A"):
            self._A = diffusion_matrix(np.ones(self.shape))  # one matrix for every sample
        f = _chebyshev_2d(cf, pts, pts)
        g = _chebyshev_2d(cg, pts, pts)
        walls = {(0, 0): _chebyshev_2d(cg, np.array([0.0]), pts)[0],
                 (0, 1): _chebyshev_2d(cg, np.array([1.0]), pts)[0],
                 (1, 0): _chebyshev_2d(cg, pts, np.array([0.0]))[:, 0],
                 (1, 1): _chebyshev_2d(cg, pts, np.array([1.0]))[:, 0]}
        b = (f + wall_rhs(np.ones(self.shape), dirichlet=walls)).ravel()
        return LinearSample(self._A, b, {"source": f, "boundary_function": g},
                            np.concatenate([cf.ravel(), cg.ravel()]))

    def outputs(self, sample: LinearSample, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"solution": x.reshape(self.shape)}


class Thermal(LinearFamily):
    """Steady heat -Lap T = 0 on a slotted plate with random edge temperatures and fluxes."""

    name = "thermal"
    description = "steady heat conduction on a plate with a slot, random boundary data (2D)"
    dim = 2
    spd = True
    default_resolution = 64
    min_resolution = 10
    max_resolution = 4096
    revision = 2  # 2: the slot's cells (plate()); 1 left it empty at n = 10
    #: the slot, in [0, 1]^2 coordinates: x in [0.45, 0.55], y in [0.2, 0.8]
    slot = ((0.45, 0.55), (0.2, 0.8))
    options = (
        Option("temperature_degree", int, 3, "degree of the edge-temperature series", None,
               True),
        Option("max_flux", float, 1.0, "largest |flux| on the bottom and top edges", None,
               True),
        *SOLVER_OPTIONS,
    )

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        _check_resolved_degree(self, "temperature_degree", options, "the edges resolve")
        return super().resolve_options(options)

    def plate(self) -> np.ndarray:
        """True on the plate's cells, False in the slot: on each axis the run of
        max(1, round(width n)) cells centred on the slot's centre, so the slot is never
        empty and its size is the nearest the grid allows (cells whose centres lay
        strictly inside the slot gave none at n = 10 and widths of 1 to 4 cells, 0.05 to
        0.17, across 11 to 32)."""
        n = self.resolution
        inside = np.ones((n, n), dtype=bool)
        for axis, (lo, hi) in enumerate(self.slot):
            w = max(1, int(np.floor((hi - lo) * n + 0.5)))
            start = min(max(int(np.floor((lo + hi) / 2 * n - w / 2 + 0.5)), 0), n - w)
            run = np.zeros(n, dtype=bool)
            run[start:start + w] = True
            inside &= run[:, None] if axis == 0 else run[None, :]
        return ~inside

    def field_specs(self) -> list[VarSpec]:
        return [
            VarSpec("boundary_data", self.dims, INPUT, attrs={
                "units": "1", "long_name": "edge data on the edge cells: temperature (left, "
                "right), inward flux (bottom, top); zero inside"}),
            # the geometry as an input: without it a point of the slot (T stored as 0)
            # could not be told from one of the plate at T = 0, and a model would not see
            # where the plate is
            VarSpec("plate", self.dims, INPUT, attrs={
                "units": "1", "long_name": "1 on the plate, 0 inside the slot"}),
            VarSpec("temperature", self.dims, OUTPUT, attrs={
                "units": "1", "long_name": "temperature T on the plate (0 inside the slot, "
                "where plate = 0)", "valid_where": "plate"}),
        ]

    def build(self, seed: int, index: int) -> LinearSample:
        c = self.config
        rng = sample_rng(seed, index)
        pts = self.points()
        if not hasattr(self, "_A"):
            self._active = self.plate()
            walls = {(0, 0): "dirichlet", (0, 1): "dirichlet",
                     (1, 0): "neumann", (1, 1): "neumann"}
            self._A = diffusion_matrix(np.ones(self.shape), walls=walls, active=self._active)
        d = c["temperature_degree"] + 1
        t_left = chebyshev.chebval(2 * pts - 1, rng.uniform(-1, 1, d))
        t_right = chebyshev.chebval(2 * pts - 1, rng.uniform(-1, 1, d))
        q_bottom, q_top = rng.uniform(-c["max_flux"], c["max_flux"], 2)
        rhs = wall_rhs(np.ones(self.shape),
                       dirichlet={(0, 0): t_left, (0, 1): t_right},
                       neumann={(1, 0): np.full(self.resolution, q_bottom),
                                (1, 1): np.full(self.resolution, q_top)},
                       active=self._active)
        data = np.zeros(self.shape)
        data[:, 0], data[:, -1] = q_bottom, q_top
        data[0, :], data[-1, :] = t_left, t_right
        return LinearSample(self._A, rhs[self._active],
                            {"boundary_data": data, "plate": self._active.astype(np.float64)},
                            np.concatenate([t_left, t_right, [q_bottom, q_top]]),
                            self._active)

    def outputs(self, sample: LinearSample, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"temperature": self.to_grid(sample, x)}
