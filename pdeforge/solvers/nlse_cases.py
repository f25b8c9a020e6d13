"""Canonical NLSE cases with their exact solutions where they exist (``nlse.cases``).

Every case is a :class:`Case`: domain, grid, output times, initial field and, when known,
the exact solution psi(t, x). Formulas (focusing NLSE i psi_t + psi_xx / 2 + |psi|^2 psi = 0):

* soliton: eta sech(eta (x - x0 - v t)) exp(i (v x + (eta^2 - v^2) t / 2 + phi));
* two solitons far apart: after the collision the faster one is shifted forward by
  (1/eta1) ln[((eta1 + eta2)^2 + (v1 - v2)^2) / ((eta1 - eta2)^2 + (v1 - v2)^2)], the
  other backward by the same log over eta2 (:func:`collision_shifts`);
* Akhmediev breather (0 < a < 1/2): psi = [(1 - 4a) cosh(b t) + sqrt(2a) cos(W x)
  + i b sinh(b t)] / [sqrt(2a) cos(W x) - cosh(b t)] exp(i t), W = 2 sqrt(1 - 2a),
  b = sqrt(8 a (1 - 2a)), on one period L = 2 pi / W; peak |psi(0, 0)|^2 = 5.8284 at a=1/4;
* modulation instability of a plane wave A e^{i A^2 t}: a perturbation at wavenumber K
  grows at (|K| / 2) sqrt(4 A^2 - K^2), largest at K = sqrt(2) A (:func:`mi_growth_rate`);
* Gaussian plus noise (the reference package's example): A exp(-x^2 / (2 w^2)) plus
  complex Gaussian noise of relative amplitude ``noise``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pdeforge.solvers.nlse import NLSEInputError, grid, soliton


@dataclass
class Case:
    name: str
    length: float
    m: int
    times: np.ndarray
    psi0: np.ndarray
    focusing: bool = True
    exact: Callable[[float, np.ndarray], np.ndarray] | None = None
    #: what the case was built from (the report's analytic comparisons use it)
    params: dict = field(default_factory=dict)

    @property
    def x(self) -> np.ndarray:
        return grid(self.m, self.length)


def single_soliton(
    eta: float = 2.0,
    velocity: float = 1.0,
    x0: float = -10.0,
    length: float = 50.0,
    m: int = 1024,
    t_end: float = 10.0,
    n_times: int = 101,
) -> Case:
    x = grid(m, length)

    def exact(t: float, xx: np.ndarray) -> np.ndarray:
        return soliton(xx, t, eta, velocity, x0, length=length)  # across the boundary

    return Case("soliton", length, m, np.linspace(0, t_end, n_times), exact(0.0, x), exact=exact)


def collision_shifts(eta1: float, eta2: float, v1: float, v2: float) -> tuple[float, float]:
    """Position shifts (faster soliton forward, slower backward) after a collision."""
    if not (eta1 > 0 and eta2 > 0):
        raise NLSEInputError(f"soliton amplitudes must be > 0, got eta1={eta1}, eta2={eta2}")
    if eta1 == eta2 and v1 == v2:
        raise NLSEInputError("two solitons of the same amplitude and velocity do not collide "
                             "(a bound pair): give them other velocities or amplitudes")
    log = math.log(((eta1 + eta2) ** 2 + (v1 - v2) ** 2) / ((eta1 - eta2) ** 2 + (v1 - v2) ** 2))
    return log / eta1, -log / eta2


def two_solitons(
    eta1: float = 1.0,
    eta2: float = 1.2,
    v1: float = 1.0,
    v2: float = -1.0,
    x1: float = -20.0,
    x2: float = 20.0,
    length: float = 200.0,
    m: int = 2048,
    t_end: float = 40.0,
    n_times: int = 81,
) -> Case:
    x = grid(m, length)
    psi0 = soliton(x, 0, eta1, v1, x1) + soliton(x, 0, eta2, v2, x2)
    return Case("two-solitons", length, m, np.linspace(0, t_end, n_times), psi0,
                params=dict(eta1=eta1, eta2=eta2, v1=v1, v2=v2, x1=x1, x2=x2))


def akhmediev(
    a: float = 0.25, t_start: float = -5.0, t_end: float = 5.0, m: int = 256, n_times: int = 101
) -> Case:
    if not 0 < a < 0.5:
        raise NLSEInputError(f"the Akhmediev breather needs 0 < a < 1/2, got {a}")
    w = 2 * math.sqrt(1 - 2 * a)
    b = math.sqrt(8 * a * (1 - 2 * a))
    length = 2 * math.pi / w

    def exact(t: float, xx: np.ndarray) -> np.ndarray:
        num = (
            (1 - 4 * a) * math.cosh(b * t)
            + math.sqrt(2 * a) * np.cos(w * xx)
            + 1j * b * math.sinh(b * t)
        )
        den = math.sqrt(2 * a) * np.cos(w * xx) - math.cosh(b * t)
        return num / den * np.exp(1j * t)

    times = np.linspace(t_start, t_end, n_times)
    return Case("akhmediev", length, m, times, exact(t_start, grid(m, length)), exact=exact)


def mi_growth_rate(amplitude: float, k: float) -> float:
    """Linear growth rate of a perturbation at wavenumber k on a plane wave (0 if stable)."""
    disc = 4 * amplitude**2 - k**2
    return 0.5 * abs(k) * math.sqrt(disc) if disc > 0 else 0.0


def modulation_instability(
    amplitude: float = 1.0,
    k: float | None = None,
    epsilon: float = 1e-8,
    periods: int = 1,
    m: int = 128,
    t_end: float = 25.0,
    n_times: int = 101,
) -> Case:
    # t_end: the perturbation grows as e^{sigma t} (sigma = A^2 at K = sqrt(2) A) and
    # reaches the nonlinear stage near t = ln(1/epsilon) / sigma (18 for the defaults);
    # to t = 10 the figure showed a field flat to 1e-4
    if not amplitude > 0:
        raise NLSEInputError(f"the plane wave's amplitude must be > 0, got {amplitude}")
    if isinstance(periods, bool) or not isinstance(periods, int) or periods < 1:
        raise NLSEInputError(f"periods must be a positive integer, got {periods!r}")
    k = math.sqrt(2) * amplitude if k is None else k
    if not k > 0:
        raise NLSEInputError(f"the perturbation's wavenumber k must be > 0, got {k}")
    length = periods * 2 * math.pi / k
    x = grid(m, length)
    psi0 = amplitude * (1 + epsilon * np.cos(k * x)) + 0j
    return Case("modulation-instability", length, m, np.linspace(0, t_end, n_times), psi0,
                params=dict(amplitude=amplitude, k=k, epsilon=epsilon, periods=periods))


def gaussian_noise(
    amplitude: float = 1.0,
    width: float = 2.0,
    noise: float = 0.05,
    seed: int = 0,
    length: float = 50.0,
    m: int = 512,
    t_end: float = 20.0,
    n_times: int = 201,
) -> Case:
    x = grid(m, length)
    rng = np.random.default_rng(seed)
    psi0 = (
        amplitude
        * np.exp(-(x**2) / (2 * width**2))
        * (1 + noise * (rng.standard_normal(m) + 1j * rng.standard_normal(m)) / math.sqrt(2))
    )
    return Case("gaussian-noise", length, m, np.linspace(0, t_end, n_times), psi0)


CASES: dict[str, Callable[..., Case]] = {
    "soliton": single_soliton,
    "two-solitons": two_solitons,
    "akhmediev": akhmediev,
    "modulation-instability": modulation_instability,
    "gaussian-noise": gaussian_noise,
}
