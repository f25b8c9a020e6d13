"""Problem family ``nlse``: trajectories of the 1D nonlinear Schroedinger equation.

Random initial conditions on x = linspace(-L/2, L/2, M, endpoint=False):

* ``solitons``: a superposition of 1 to ``max_solitons`` solitons with amplitudes
  eta ~ U(eta_min, eta_max), velocities v ~ U(-v_max, v_max), positions ~ U(-L/4, L/4) and
  phases ~ U(0, 2 pi);
* ``smooth``: a random low-mode Fourier series (|k| <= 5 * 2 pi / L) under a Gaussian
  envelope of width L/8, normalised to a peak of eta_max;
* ``mixed``: either, with probability 1/2;

each plus complex white noise of relative (rms) amplitude ``noise`` on the inner half of
the band the dynamics keep, then projected onto that band (the 2/3 rule's with
``dealias``), so that the field is resolved and mass conserved.

The reference solver is the batched interaction-picture DOP853 of
``pdeforge.solvers.nlse``: the samples of a shard advance together. A focusing field
sharpens (a smooth field of peak 2 reaches peaks of 5 within t = 1) and its spectrum
spreads past what the stored grid resolves: measured on 8 samples at the defaults (M = 512,
L = 50), trajectories solved on the stored grid alone were 7 % to 31 % off the converged
solution (4x and 8x finer grids agreeing to 1e-13) for the smooth fields, 1.4e-7 to 1.6e-4
for the solitons, against at most 6.7e-10 as stored now (5.4x the time). So each
sample is solved on a grid F times finer where it needs it (``oversample``; ``auto``:
F = 1, then the factor of 2, 4, 8 that the spectrum's decay predicts (:func:`_next_factor`)
until :meth:`NLSE._spectral_tail`, the spectrum's size at the edge of the solved band, is
at most ``resolution_tol``), and the stored trajectory is the solved
field's values at the stored grid's points. Stored per sample: the initial field (input
``psi0_re``, ``psi0_im``, dims (x,)), the trajectory (output ``psi_re``, ``psi_im``, dims
(t, x)), the largest relative drift of mass and energy (the energy's relative to the size of
its two terms) and the absolute drift of momentum over the solved times (the output times,
plus check times where they are sparse: ``TAIL_CHECK_INTERVALS``) of the solved field, the
spectral tail (over the same times) and F. A sample still above ``resolution_tol`` at the largest F
is stored as not converged.
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

IC_KINDS = ("solitons", "smooth", "mixed")
OVERSAMPLE_CHOICES = ("auto", "1", "2", "4", "8")
METHODS = ("ip-dop853", "scipy-dop853")
# the largest domain length whose square (the smooth fields' envelope) double precision
# holds with room: 2 (L / 8)^2 and x^2 stay far below 1.8e308
MAX_LENGTH = 1e150
# the smallest part of a shard's work passed on to the progress bar at once
PROGRESS_PIECE = 0.02
#: the finest grid ``oversample="auto"`` solves on
MAX_SOLVED_POINTS = 32768
#: the noise of the initial condition fills this fraction of the solved band (from k = 0),
#: so that what reaches the band's edge was put there by the dynamics
NOISE_BAND = 0.5
#: the edge of the band where :meth:`NLSE._spectral_tail` looks, as a fraction of it
EDGE_FRACTION = 0.05

#: the spectral tail (and the drifts) are measured at the output times and, where their
#: intervals are fewer, at times that split each into equal parts to make this many
#: intervals at least: with 2 output times over t = 2, a focusing peak between them went
#: unseen and samples 3e-6 to 9e-6 off were stored as resolved (a review's 16x finer
#: solve; with 41 outputs the same samples were 1e-10 off)
TAIL_CHECK_INTERVALS = 32


def _solver():
    """``pdeforge.solvers.nlse``, imported on first use: it imports torch (2.9 s of a
    command's start on a slow 2-core VM), which the other families' commands and
    ``pdeforge --help`` never need."""
    from pdeforge.solvers import nlse

    return nlse


class NLSE(ProblemFamily):
    """i psi_t + psi_xx / 2 + s |psi|^2 psi = 0 on a periodic interval, random psi(0)."""

    nonconverged_hint = (
        "An nlse sample is not converged when its spectrum still reaches the band's edge "
        "(spectral_tail > --resolution-tol) on the finest oversampled grid, or when the "
        "integrator failed: the grid is too coarse for these fields; with a fixed "
        "--oversample (1, 2, 4 or 8) try --oversample auto (without --filter, which it "
        "refuses), which refines each sample up to 8x; else raise --resolution (more "
        "points over the same --length) or lower --eta-max"
    )

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
        Option("rtol", float, 1e-9, "relative tolerance of the integrator (a step's RMS "
               "over the Fourier coefficients of their errors over atol + rtol |coefficient| "
               "stays below 1: where --atol is the larger term it sets the steps)", None, True,
               numerics=True),
        Option("atol", float, 1e-11, "absolute tolerance of the integrator", None, True,
               numerics=True),
        Option("method", str, "ip-dop853", "the integrator: ip-dop853 (batched, interaction "
               "picture) or scipy-dop853 (scipy's DOP853 on the Fourier coefficients, one "
               "trajectory at a time: the reference approach, for cross-checks; slower)",
               METHODS, numerics=True),
        Option("dealias", bool, True, "2/3-rule dealiasing of the nonlinear term"),
        Option("oversample", str, "auto", "solve on a grid F times finer and store every F-th "
               "point: auto starts at F = 1 and, while the solution's spectrum at the edge of "
               "the solved band exceeds --resolution-tol, goes to the F of 2, 4, 8 (32768 "
               "points at most) that the spectrum's decay predicts",
               OVERSAMPLE_CHOICES, numerics=True),
        Option("resolution_tol", float, 1e-8, "largest spectral amplitude, relative to the "
               "peak, allowed at the edge of the solved band, about the stored trajectory's "
               "error (a sample above it at the largest F is stored as not converged)", None,
               True, numerics=True),
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
        if options["filter"] and options["oversample"] == "auto":
            # the filter empties the band's edge, where the resolution is measured: the
            # tail read 1e-16 on fields 30-45 % off the converged trajectories
            raise PdeforgeError(
                "--filter with --oversample auto: the filter removes the edge of the band, "
                "where auto measures whether a sample is resolved; drop --filter, or fix the "
                "grid with --oversample 1, 2, 4 or 8 (then spectral_tail is not measured)"
            )
        if options["length"] > MAX_LENGTH:
            # the smooth fields' envelope exp(-x^2 / (2 (L / 8)^2)) squares L
            raise PdeforgeError(
                f"--length {options['length']:g} is beyond what double precision squares "
                "(the smooth fields' Gaussian envelope); choose a physical domain length")
        widest = 1.0 / options["eta_min"]  # a soliton's width, 1 / eta
        finest = options["length"] / MAX_SOLVED_POINTS  # the step of the finest grid
        if options["initial"] != "smooth" and finest > widest:
            # (--length 1e300 ended in an OverflowError traceback): no soliton of the
            # distribution is resolved even on the finest grid oversampling reaches
            raise PdeforgeError(
                f"--length {options['length']:g}: even the finest grid ({MAX_SOLVED_POINTS} "
                f"points, step {finest:.3g}) is coarser than the widest soliton (1 / "
                f"--eta-min = {widest:.3g}); choose a shorter --length or a smaller --eta-min")
        if options["oversample"] != "auto":
            points = int(options["oversample"]) * self.resolution
            if points > MAX_SOLVED_POINTS:
                raise PdeforgeError(
                    f"--oversample {options['oversample']} at resolution {self.resolution} "
                    f"solves on {points} points, above {MAX_SOLVED_POINTS}: choose a smaller "
                    "factor or resolution"
                )
        return options

    def unused_options(self) -> dict[str, str]:
        unused = {}
        if self.config["initial"] == "smooth":
            unused.update(dict.fromkeys(("max_solitons", "eta_min", "v_max"),
                                        "with --initial smooth (it sets solitons)"))
        if self.config["filter"]:
            unused["resolution_tol"] = ("with --filter (the filter empties the band's edge, "
                                        "where the resolution is measured)")
        return unused

    def caveats(self) -> list[str]:
        if not self.config["filter"]:
            return []
        return [f"--filter: whether a sample is resolved on the grid (--oversample "
                f"{self.config['oversample']}) is not measured, since the filter empties the "
                "band's edge; 'converged' says only that the integrator reached --t-end "
                "within --rtol (spectral_tail is NaN). Without --filter each sample's "
                "resolution is checked"]

    @property
    def solver_name(self) -> str:
        c = self.config
        grid = (f"grid oversampled {c['oversample']}, resolution not measured (filter)"
                if c["filter"] else
                f"grid oversampled {c['oversample']} to a spectral tail <= "
                f"{c['resolution_tol']:g}")
        return (
            f"pdeforge.solvers.nlse.solve(method={c['method']}, rtol={c['rtol']:g}, "
            f"atol={c['atol']:g}, dealias={c['dealias']}, filter={c['filter']}), {grid}"
        )

    def x(self) -> np.ndarray:
        return _solver().grid(self.resolution, self.config["length"])

    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.config["t_end"], self.config["n_times"])

    def coordinates(self) -> list[Coordinate]:
        return [
            Coordinate("t", self.times(), {"units": "1", "long_name": "time"}),
            Coordinate("x", self.x(), {"units": "1", "long_name": "x on [-L/2, L/2)",
                                       "periodic": 1}),
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
                {"long_name": "max_t |E(t) - E(0)| / (int |psi_x|^2 / 2 + int |psi|^4 / 2 "
                              "at t = 0)"},
            ),
            VarSpec(
                "momentum_drift", (), DIAGNOSTIC, "float64", {"long_name": "max_t |P(t) - P(0)|"}
            ),
            VarSpec(
                "spectral_tail",
                (),
                DIAGNOSTIC,
                "float64",
                {"long_name": "max_t of the largest |psi_hat| at the edge of the solved "
                 "band over the largest |psi_hat| (about the truncation error; NaN: not "
                 "measured, with --filter, or a failed sample)"},
            ),
            VarSpec(
                "oversample",
                (),
                DIAGNOSTIC,
                "int64",
                {"long_name": "F: solved on a grid F times finer than the stored one"},
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
                psi += _solver().soliton(
                    x,
                    0.0,
                    eta=rng.uniform(c["eta_min"], c["eta_max"]),
                    velocity=rng.uniform(-c["v_max"], c["v_max"]),
                    x0=rng.uniform(-length / 4, length / 4),
                    phase=rng.uniform(0, 2 * np.pi),
                    # wrapped onto the periodic domain: the cut lies L/2 from the centre
                    # (tails 2 eta e^{-eta L/2}: 3.7e-6 at eta 0.5, L 50), not at the
                    # boundary, where an unwrapped soliton at x0 = L/4 left a jump of
                    # 2 eta e^{-eta L/4} (1.9e-3)
                    length=length,
                )
        else:
            modes = np.arange(-5, 6)
            coeff = rng.standard_normal(len(modes)) + 1j * rng.standard_normal(len(modes))
            field = (coeff[:, None] * np.exp(2j * np.pi * modes[:, None] * x / length)).sum(0)
            psi = field * np.exp(-(x**2) / (2 * (length / 8) ** 2))
            psi *= c["eta_max"] / np.abs(psi).max()
        k = _solver().wavenumbers(len(x), length)
        noise = (rng.standard_normal(len(x)) + 1j * rng.standard_normal(len(x))) / np.sqrt(2)
        # white noise on the inner part of the band only (NOISE_BAND): noise up to the band's
        # edge would leave no room to tell the dynamics' spreading from it
        # (:meth:`_spectral_tail`); its rms over the kept modes stays c["noise"] x the peak
        noise_modes = np.abs(k) <= NOISE_BAND * _band_edge(k, c["dealias"])
        noise_hat = np.fft.fft(noise) * noise_modes / np.sqrt(noise_modes.mean())
        psi = psi + c["noise"] * np.abs(psi).max() * np.fft.ifft(noise_hat)
        # Project onto the band the dealiased/filtered dynamics keep, so that the initial
        # field is resolved and mass is conserved by the discrete system.
        mask = _solver().spectral_mask(k, c["dealias"], 36.0 if c["filter"] else None, 36)
        return np.fft.ifft(mask * np.fft.fft(psi))

    def check_times(self) -> tuple[np.ndarray, np.ndarray]:
        """The times a trajectory is solved at (the output times, each interval split into
        equal parts where there are fewer than ``TAIL_CHECK_INTERVALS``) and the indices
        of the output times among them."""
        times = self.times()
        split = max(1, -(-TAIL_CHECK_INTERVALS // max(len(times) - 1, 1)))
        if split == 1 or len(times) < 2:
            return times, np.arange(len(times))
        fine = np.concatenate([np.linspace(a, b, split, endpoint=False)
                               for a, b in zip(times[:-1], times[1:], strict=True)]
                              + [times[-1:]])
        return fine, np.arange(0, len(fine), split)

    def _solve(
        self, psi0: np.ndarray, progress: Callable[[float], None] | None = None
    ) -> np.ndarray:
        c = self.config
        return _solver().solve(
            psi0,
            progress=progress,
            length=c["length"],
            times=self.check_times()[0],
            method=c["method"],
            rtol=c["rtol"],
            atol=c["atol"],
            focusing=c["focusing"],
            dealias=c["dealias"],
            filter_strength=36.0 if c["filter"] else None,
        )

    def oversampling_factors(self) -> list[int]:
        """The factors F tried, in order: the one asked for, or for ``auto`` 1, 2, 4, 8 up
        to ``MAX_SOLVED_POINTS`` points."""
        asked = self.config["oversample"]
        if asked != "auto":
            return [int(asked)]
        return [f for f in (1, 2, 4, 8) if f == 1 or f * self.resolution <= MAX_SOLVED_POINTS]

    def _spectral_tail(self, psi: np.ndarray) -> np.ndarray:
        """Per trajectory (n, T, M'), the largest |psi_hat| at the edge of the band the
        dynamics keep (its outermost EDGE_FRACTION, two modes at least), relative to the
        largest |psi_hat|, over the times solved (:meth:`check_times`): what the band cuts
        off. Measured against solutions on an 8x finer grid (defaults, M = 512, F = 1, 2,
        4): the error of the stored trajectory was 0.5-2x this (1.5e-7 against 3.1e-7,
        1.4e-5 against 1.2e-5, 1.2e-10 against 1.7e-10), where the band's outer quarter
        overstated it up to 300x."""
        if self.config["filter"]:  # the filter empties the edge: nothing to measure
            return np.full(len(psi), np.nan)
        k = _solver().wavenumbers(psi.shape[-1], self.config["length"])
        edge = _band_edge(k, self.config["dealias"])
        width = max(EDGE_FRACTION * edge, 2.0 * abs(float(k[1])))
        outer = (np.abs(k) > edge - width) & (np.abs(k) <= edge)
        a = np.abs(np.fft.fft(psi, axis=-1))
        peak = a.max(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            # a zero field is resolved (0 / 0 -> 0); a failed, NaN trajectory is not (NaN)
            tail = np.where(peak > 0, a[..., outer].max(-1) / peak, 0.0)
        tail = np.where(np.isfinite(psi).all(-1), tail, np.nan)
        return tail.max(-1)

    def _solve_resolved(
        self, psi0: np.ndarray, factor: int, progress: Callable[[float], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Trajectories of psi0 (n, M) solved on the grid ``factor`` times finer (psi0
        interpolated spectrally: it is band-limited), as (fine trajectories, converged);
        a sample the integrator cannot advance is NaN and not converged, the others kept."""
        m = self.resolution
        fine = psi0
        if factor > 1:
            fine = _interpolate(psi0, factor)
        converged = np.ones(len(psi0), dtype=bool)
        try:
            return self._solve(fine, progress), converged  # the shard advances together
        except ConvergenceError:
            # find the sample(s) that cannot be integrated; keep the others
            out = np.full((len(psi0), len(self.check_times()[0]), factor * m), np.nan + 0j)
            for k in range(len(psi0)):
                try:
                    out[k] = self._solve(fine[k])
                except ConvergenceError:
                    converged[k] = False
            return out, converged

    def generate(
        self,
        seed: int,
        indices: Sequence[int],
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Solve the shard's samples, each on the coarsest grid of ``oversampling_factors``
        that resolves it (:meth:`_spectral_tail` <= resolution_tol), and store each
        trajectory's values at the output grid's points (every F-th point of the solved
        grid: exact point values of the solved field). The invariants' drifts are those of
        the solved field."""
        psi0 = np.stack([self.initial_condition(seed, i) for i in indices])
        return self._solve_fields(psi0, progress)

    def solve_inputs(
        self, inputs: dict[str, np.ndarray], progress: Callable[[int], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Reference trajectories of the initial fields {"psi0_re", "psi0_im"}: (n, M)
        each, as :meth:`generate` solves its own (``Surrogate.compare``)."""
        missing = [k for k in ("psi0_re", "psi0_im") if k not in inputs]
        if missing:
            raise PdeforgeError(f"the nlse reference solver needs the initial field's real and "
                                f"imaginary parts; missing {missing}")
        re, im = (np.asarray(inputs[k], dtype=np.float64) for k in ("psi0_re", "psi0_im"))
        if re.ndim != 2 or re.shape != im.shape or re.shape[1] != self.resolution:
            raise PdeforgeError(f"psi0_re and psi0_im must both have shape (n, "
                                f"{self.resolution}), got {re.shape} and {im.shape}")
        if not (np.isfinite(re).all() and np.isfinite(im).all()):
            raise PdeforgeError("the initial fields contain NaN or infinite values")
        return self._solve_fields(re + 1j * im, progress)

    def _solve_fields(
        self, psi0: np.ndarray, progress: Callable[[int], None] | None
    ) -> dict[str, np.ndarray]:
        c = self.config
        n, m, n_t = len(psi0), self.resolution, len(self.times())
        psi = np.full((n, n_t, m), np.nan + 0j)
        converged = np.zeros(n, dtype=bool)
        tail = np.full(n, np.inf)
        factor_used = np.zeros(n, dtype=np.int64)
        drifts = {name: np.full(n, np.nan) for name in ("mass", "energy", "momentum")}
        factors = self.oversampling_factors()
        outputs = self.check_times()[1]
        wanted = np.full(n, factors[0])  # the factor each sample is to be solved at next
        start = time.perf_counter()
        # progress within the shard (its samples advance together, for seconds to
        # minutes): the first pass over every sample fills the first half of the shard's
        # share, each later pass its samples' part of the second half, the end the rest
        reported = [0.0]
        # the bar hears of the work in pieces of PROGRESS_PIECE of the shard at least:
        # the solver reports every accepted step, and its first steps (short, after the
        # start-up) told tqdm a rate that read as hours to go
        piece = PROGRESS_PIECE * n

        def advance(to: float) -> None:
            if progress is not None and (to - reported[0] >= piece or to >= n > reported[0]):
                progress(to - reported[0])
                reported[0] = to

        first = True
        for factor in factors:
            todo = np.flatnonzero(wanted == factor)
            if not len(todo):
                continue
            base, span = reported[0], (n / 2 if first else len(todo) / 2)
            fine, ok = self._solve_resolved(
                psi0[todo], factor,
                None if progress is None else (lambda f, b=base, s=span: advance(b + f * s)))
            first = False
            psi[todo] = fine[:, outputs, ::factor]
            psi[todo, 0] = psi0[todo]  # exactly the stored initial field
            tail[todo] = self._spectral_tail(fine)
            converged[todo] = ok & np.isfinite(fine).all(axis=(1, 2))
            factor_used[todo] = factor
            for name, value in _drifts(fine, c["length"], c["focusing"]).items():
                drifts[name][todo] = value
            wanted[todo] = 0
            if c["filter"]:
                break
            again = todo[converged[todo] & ~(tail[todo] <= c["resolution_tol"])]
            for i in again:
                wanted[i] = _next_factor(tail[i], factor, factors, c["resolution_tol"])
        seconds = (time.perf_counter() - start) / max(n, 1)
        advance(n)
        return {
            "psi0_re": psi0.real,
            "psi0_im": psi0.imag,
            "psi_re": psi.real,
            "psi_im": psi.imag,
            # with the filter the resolution is not measured (tail NaN): the integrator's
            # verdict alone, as oversample=auto is refused with it
            "converged": converged & ((tail <= c["resolution_tol"]) | bool(c["filter"])),
            "solve_seconds": np.full(n, seconds),
            "mass_drift": drifts["mass"],
            "energy_drift": drifts["energy"],
            "momentum_drift": drifts["momentum"],
            "spectral_tail": tail,
            "oversample": factor_used,
        }


def _next_factor(tail: float, factor: int, factors: list[int], tol: float) -> int:
    """The factor to solve an unresolved sample at next: the smallest of ``factors`` above
    ``factor`` whose predicted tail is at most ``tol``, else the largest.

    A spectrum decaying like exp(-a k) has tail(F' k) = tail(k)^(F'/F) at the band's edge
    (relative to a peak of order 1). Measured at the defaults (M = 512): smooth fields
    3.5e-3, 1.2e-5, 1.7e-10 at F = 1, 2, 4 (predicted 1.2e-5 and 1.5e-10), solitons 3.5e-7
    then 5e-14 at F = 2 (1.2e-13): a smooth field goes from 1 straight to 4. A prediction
    that falls short costs a further step up the ladder, not accuracy (each solve is
    checked).
    """
    above = [f for f in factors if f > factor]
    if not above:
        return 0
    if not 0 < tail < 1:  # no decay to extrapolate (or a NaN): the next rung
        return above[0]
    for f in above:
        if tail ** (f / factor) <= tol:
            return f
    return above[-1]


def _interpolate(psi: np.ndarray, factor: int) -> np.ndarray:
    """psi (n, M) on the grid ``factor`` times finer: its Fourier series zero-padded (the
    trigonometric interpolant, equal to psi at the coarse points). FFT order: wavenumbers
    0 .. (M-1)//2, then -(M//2) .. -1; for even M the Nyquist mode's coefficient is split
    between +M/2 and -M/2 so that the interpolant stays the real-symmetric one."""
    n, m = psi.shape
    coef = np.fft.fft(psi, axis=-1)
    padded = np.zeros((n, factor * m), dtype=np.complex128)
    positive, negative = (m + 1) // 2, m // 2
    padded[:, :positive] = coef[:, :positive]
    padded[:, factor * m - negative :] = coef[:, positive:]
    if m % 2 == 0:
        padded[:, m // 2] = padded[:, factor * m - m // 2] = coef[:, m // 2] / 2
    return np.fft.ifft(padded, axis=-1) * factor


def _band_edge(k: np.ndarray, dealias: bool) -> float:
    """The largest |k| the dealiased dynamics keep (the grid's with ``dealias`` off; the
    exponential filter, which acts below it, is not counted: see ``resolve_options``)."""
    return float(np.abs(k).max() * (_solver().DEALIAS_FRACTION if dealias else 1.0))


def _drifts(psi: np.ndarray, length: float, focusing: bool) -> dict[str, np.ndarray]:
    """Largest drifts over the times of psi (n, T, M): mass relative, energy
    relative to its terms' size at t = 0 (``nlse.energy_scale``: a focusing field's energy
    can be near 0), momentum absolute. A sample the integrator could not advance (NaN rows) has NaN
    drifts: it is stored as not converged, not a reason to stop the shard."""
    finite = np.isfinite(psi).all(axis=(1, 2))
    inv = {k: np.full(psi.shape[:2], np.nan) for k in ("mass", "momentum", "energy")}
    scale = np.full(len(psi), np.nan)
    if finite.any():
        for k, v in _solver().invariants(psi[finite], length=length,
                                         focusing=focusing).items():
            inv[k][finite] = v
        scale[finite] = _solver().energy_scale(psi[finite, 0], length=length)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "mass": np.abs(inv["mass"] - inv["mass"][:, :1]).max(1) / np.abs(inv["mass"][:, 0]),
            "energy": np.abs(inv["energy"] - inv["energy"][:, :1]).max(1) / scale,
            "momentum": np.abs(inv["momentum"] - inv["momentum"][:, :1]).max(1),
        }
