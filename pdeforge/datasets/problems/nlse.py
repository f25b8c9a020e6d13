"""Problem family ``nlse``: trajectories of the 1D nonlinear Schroedinger equation.

Random initial conditions on x = linspace(-L/2, L/2, M, endpoint=False):

* ``solitons``: a superposition of 1 to ``max_solitons`` solitons with amplitudes
  eta ~ U(eta_min, eta_max), velocities v ~ U(-v_max, v_max), positions ~ U(-L/4, L/4) and
  phases ~ U(0, 2 pi);
* ``smooth``: a random low-mode Fourier series (|k| <= 5 * 2 pi / L) under a Gaussian
  envelope of width L/8, normalised to a peak of eta_max;
* ``mixed``: either, with probability 1/2;

each plus complex noise of relative amplitude ``noise``, then projected onto the wavenumbers
the dealiased and filtered dynamics keep (so the field is resolved and mass conserved).
The reference solver is the batched interaction-picture DOP853 of
``pdeforge.solvers.nlse``: the samples of a shard advance
together. Stored per sample: the initial field (input ``psi0_re``, ``psi0_im``, dims (x,)),
the trajectory (output ``psi_re``, ``psi_im``, dims (t, x)) and the largest relative drift
of mass and energy and the absolute drift of momentum over the output times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pdeforge.datasets.format import (
    DIAGNOSTIC,
    INPUT,
    OUTPUT,
    Coordinate,
    VarSpec,
    diagnostic_specs,
)
from pdeforge.datasets.problems.base import Option, ProblemFamily, sample_rng
from pdeforge.errors import ConvergenceError, PdeforgeError
from pdeforge.solvers import nlse

IC_KINDS = ("solitons", "smooth", "mixed")


class NLSE(ProblemFamily):
    """i psi_t + psi_xx / 2 + s |psi|^2 psi = 0 on a periodic interval, random psi(0)."""

    name = "nlse"
    description = "1D nonlinear Schroedinger trajectories (pseudo-spectral, batched DOP853)"
    default_resolution = 512
    min_resolution = 16
    max_resolution = 16384
    options = (
        Option("length", float, 50.0, "domain length L", None, True),
        Option("t_end", float, 5.0, "final time", None, True),
        Option("n_times", int, 51, "output times in [0, t_end] (including 0)", None, True),
        Option("focusing", bool, True, "focusing (s = +1) or defocusing (s = -1)"),
        Option("initial", str, "mixed", "random initial conditions", IC_KINDS),
        Option("max_solitons", int, 3, "solitons: at most this many", None, True),
        Option("eta_min", float, 0.5, "smallest soliton amplitude", None, True),
        Option("eta_max", float, 2.0, "largest soliton amplitude / smooth-field peak", None, True),
        Option("v_max", float, 1.0, "largest |velocity|"),
        Option("noise", float, 0.01, "relative amplitude of the complex noise"),
        Option("rtol", float, 1e-9, "relative tolerance of the integrator", None, True),
        Option("atol", float, 1e-11, "absolute tolerance of the integrator", None, True),
        Option("dealias", bool, True, "2/3-rule dealiasing of the nonlinear term"),
        # Off by default here: on noisy fields the filter removes energy near k_max
        # (measured: energy drift 1.7e-2 with it, 6.9e-10 without, M=512, default ICs).
        Option("filter", bool, False, "exponential filter exp(-36 (k/k_max)^36)"),
    )

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["eta_min"] > options["eta_max"]:
            raise PdeforgeError("--eta-min must not exceed --eta-max")
        if options["n_times"] < 2:
            raise PdeforgeError("--n-times must be at least 2")
        if options["noise"] < 0 or options["v_max"] < 0:
            raise PdeforgeError("--noise and --v-max must be >= 0")
        return options

    @property
    def solver_name(self) -> str:
        c = self.config
        return (
            f"pdeforge.solvers.nlse.solve(method=ip-dop853, rtol={c['rtol']:g}, "
            f"atol={c['atol']:g}, dealias={c['dealias']}, filter={c['filter']})"
        )

    def x(self) -> np.ndarray:
        return nlse.grid(self.resolution, self.config["length"])

    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.config["t_end"], self.config["n_times"])

    def coordinates(self) -> list[Coordinate]:
        return [
            Coordinate("t", self.times(), {"units": "1", "long_name": "time"}),
            Coordinate("x", self.x(), {"units": "1", "long_name": "x on [-L/2, L/2)"}),
        ]

    def variables(self) -> list[VarSpec]:
        fields = [
            VarSpec("psi0_re", ("x",), INPUT, attrs={"units": "1", "long_name": "Re psi(0, x)"}),
            VarSpec("psi0_im", ("x",), INPUT, attrs={"units": "1", "long_name": "Im psi(0, x)"}),
            VarSpec("psi_re", ("t", "x"), OUTPUT, attrs={"units": "1", "long_name": "Re psi"}),
            VarSpec("psi_im", ("t", "x"), OUTPUT, attrs={"units": "1", "long_name": "Im psi"}),
        ]
        drift = [
            VarSpec(
                "mass_drift",
                (),
                DIAGNOSTIC,
                "float64",
                {"long_name": "max_t |M(t) - M(0)| / |M(0)|"},
            ),
            VarSpec(
                "energy_drift",
                (),
                DIAGNOSTIC,
                "float64",
                {"long_name": "max_t |E(t) - E(0)| / |E(0)|"},
            ),
            VarSpec(
                "momentum_drift", (), DIAGNOSTIC, "float64", {"long_name": "max_t |P(t) - P(0)|"}
            ),
        ]
        return fields + diagnostic_specs(drift)

    def initial_condition(self, seed: int, index: int) -> np.ndarray:
        """psi(0, x) of sample ``index``, a function of (seed, index) only."""
        c, x = self.config, self.x()
        rng = sample_rng(seed, index)
        kind = c["initial"]
        if kind == "mixed":
            kind = "solitons" if rng.random() < 0.5 else "smooth"
        length = c["length"]
        if kind == "solitons":
            psi = np.zeros_like(x, dtype=np.complex128)
            for _ in range(int(rng.integers(1, c["max_solitons"] + 1))):
                psi += nlse.soliton(
                    x,
                    0.0,
                    eta=rng.uniform(c["eta_min"], c["eta_max"]),
                    velocity=rng.uniform(-c["v_max"], c["v_max"]),
                    x0=rng.uniform(-length / 4, length / 4),
                    phase=rng.uniform(0, 2 * np.pi),
                )
        else:
            modes = np.arange(-5, 6)
            coeff = rng.standard_normal(len(modes)) + 1j * rng.standard_normal(len(modes))
            field = (coeff[:, None] * np.exp(2j * np.pi * modes[:, None] * x / length)).sum(0)
            psi = field * np.exp(-(x**2) / (2 * (length / 8) ** 2))
            psi *= c["eta_max"] / np.abs(psi).max()
        noise = (rng.standard_normal(len(x)) + 1j * rng.standard_normal(len(x))) / np.sqrt(2)
        psi = psi + c["noise"] * np.abs(psi).max() * noise
        # Project onto the band the dealiased/filtered dynamics keep, so that the initial
        # field is resolved and mass is conserved by the discrete system.
        k = nlse.wavenumbers(len(x), length)
        mask = nlse.spectral_mask(k, c["dealias"], 36.0 if c["filter"] else None, 36)
        return np.fft.ifft(mask * np.fft.fft(psi))

    def _solve(self, psi0: np.ndarray) -> np.ndarray:
        c = self.config
        return nlse.solve(
            psi0,
            length=c["length"],
            times=self.times(),
            rtol=c["rtol"],
            atol=c["atol"],
            focusing=c["focusing"],
            dealias=c["dealias"],
            filter_strength=36.0 if c["filter"] else None,
        )

    def generate(
        self,
        seed: int,
        indices: Sequence[int],
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        psi0 = np.stack([self.initial_condition(seed, i) for i in indices])
        n = len(indices)
        converged = np.ones(n, dtype=bool)
        start = time.perf_counter()
        try:
            psi = self._solve(psi0)  # the whole shard advances together
        except ConvergenceError:
            # find the sample(s) that cannot be integrated; keep the others
            psi = np.full((n, len(self.times()), self.resolution), np.nan + 0j)
            for k in range(n):
                try:
                    psi[k] = self._solve(psi0[k])
                except ConvergenceError:
                    converged[k] = False
        seconds = (time.perf_counter() - start) / max(n, 1)
        inv = nlse.invariants(psi, length=self.config["length"], focusing=self.config["focusing"])
        with np.errstate(invalid="ignore", divide="ignore"):
            mass = np.abs(inv["mass"] - inv["mass"][:, :1]).max(1) / np.abs(inv["mass"][:, 0])
            energy = np.abs(inv["energy"] - inv["energy"][:, :1]).max(1) / np.abs(
                inv["energy"][:, 0]
            )
        momentum = np.abs(inv["momentum"] - inv["momentum"][:, :1]).max(1)
        if progress is not None:
            progress(n)
        return {
            "psi0_re": psi0.real,
            "psi0_im": psi0.imag,
            "psi_re": psi.real,
            "psi_im": psi.imag,
            "converged": converged & np.isfinite(psi).all(axis=(1, 2)),
            "solve_seconds": np.full(n, seconds),
            "mass_drift": mass,
            "energy_drift": energy,
            "momentum_drift": momentum,
        }
