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
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pdeforge.solvers.nlse import NLSEInputError, grid, soliton


def _real(name: str, value: object, *, positive: bool = False,
          nonnegative: bool = False) -> float:
    """``value`` as a finite float (> 0, >= 0 where asked), or :class:`NLSEInputError`."""
    if isinstance(value, (bool, str, bytes)):
        raise NLSEInputError(f"{name} must be a number (not {type(value).__name__}), got "
                             f"{value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NLSEInputError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(number):
        raise NLSEInputError(f"{name} must be a finite real number, got {value!r}")
    if positive and not number > 0:
        raise NLSEInputError(f"{name} must be > 0, got {value!r}")
    if nonnegative and not number >= 0:
        raise NLSEInputError(f"{name} must be >= 0, got {value!r}")
    return number


def _count(name: str, value: object, minimum: int) -> int:
    """``value`` as an integer >= ``minimum`` (numpy integers too), or NLSEInputError."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise NLSEInputError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise NLSEInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def _grid_and_times(length: object, m: object, t_end: object, n_times: object,
                    t_start: object = 0.0) -> tuple[float, int, np.ndarray]:
    length = _real("length", length, positive=True)
    m = _count("m", m, 8)
    t_start = _real("t_start", t_start)
    t_end = _real("t_end", t_end)
    if not t_end > t_start:
        raise NLSEInputError(f"t_end must be after the start time {t_start:g}, got {t_end:g}")
    return length, m, np.linspace(t_start, t_end, _count("n_times", n_times, 2))


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

    def __post_init__(self) -> None:
        if not np.all(np.isfinite(self.psi0)):
            raise NLSEInputError(f"case {self.name!r}: its initial field is not finite "
                                 f"(parameters {self.params or 'as given'} overflow); take "
                                 "smaller amplitudes")

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
    eta = _real("eta", eta, positive=True)
    velocity, x0 = _real("velocity", velocity), _real("x0", x0)
    length, m, times = _grid_and_times(length, m, t_end, n_times)
    x = grid(m, length)

    def exact(t: float, xx: np.ndarray) -> np.ndarray:
        return soliton(xx, t, eta, velocity, x0, length=length)  # across the boundary

    return Case("soliton", length, m, times, exact(0.0, x), exact=exact)


def collision_shifts(eta1: float, eta2: float, v1: float, v2: float) -> tuple[float, float]:
    """Position shifts (faster soliton forward, slower backward) after a collision."""
    eta1, eta2 = _real("eta1", eta1, positive=True), _real("eta2", eta2, positive=True)
    v1, v2 = _real("v1", v1), _real("v2", v2)
    if v1 == v2:
        raise NLSEInputError(f"solitons of equal velocity (v1 = v2 = {v1:g}) do not collide: "
                             "give them different velocities")
    den = (eta1 - eta2) ** 2 + (v1 - v2) ** 2
    if not den > 0:  # (v1 - v2)^2 underflowed
        raise NLSEInputError(f"velocities v1 = {v1:g} and v2 = {v2:g} too close to tell apart "
                             "in double precision")
    log = math.log(((eta1 + eta2) ** 2 + (v1 - v2) ** 2) / den)
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
    eta1, eta2 = _real("eta1", eta1, positive=True), _real("eta2", eta2, positive=True)
    v1, v2, x1, x2 = (_real(n, v) for n, v in (("v1", v1), ("v2", v2), ("x1", x1), ("x2", x2)))
    length, m, times = _grid_and_times(length, m, t_end, n_times)
    x = grid(m, length)
    psi0 = soliton(x, 0, eta1, v1, x1) + soliton(x, 0, eta2, v2, x2)
    return Case("two-solitons", length, m, times, psi0,
                params=dict(eta1=eta1, eta2=eta2, v1=v1, v2=v2, x1=x1, x2=x2))


def akhmediev(
    a: float = 0.25, t_start: float = -5.0, t_end: float = 5.0, m: int = 256, n_times: int = 101
) -> Case:
    a = _real("a", a)
    if not 0 < a < 0.5:
        raise NLSEInputError(f"the Akhmediev breather needs 0 < a < 1/2, got {a}")
    _, m, times = _grid_and_times(1.0, m, t_end, n_times, t_start)
    w = 2 * math.sqrt(1 - 2 * a)
    b = math.sqrt(8 * a * (1 - 2 * a))
    length = 2 * math.pi / w
    reach = 700.0 / b  # cosh(b t) overflows double precision beyond |b t| ~ 710
    if max(abs(times[0]), abs(times[-1])) > reach:
        raise NLSEInputError(f"the breather's formula overflows at |t| > {reach:.4g} (cosh(b t), "
                             f"b = {b:.4g}); take times within it")

    def exact(t: float, xx: np.ndarray) -> np.ndarray:
        num = (
            (1 - 4 * a) * math.cosh(b * t)
            + math.sqrt(2 * a) * np.cos(w * xx)
            + 1j * b * math.sinh(b * t)
        )
        den = math.sqrt(2 * a) * np.cos(w * xx) - math.cosh(b * t)
        return num / den * np.exp(1j * t)

    return Case("akhmediev", length, m, times, exact(float(times[0]), grid(m, length)),
                exact=exact)


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
    amplitude = _real("amplitude", amplitude, positive=True)
    periods = _count("periods", periods, 1)
    k = math.sqrt(2) * amplitude if k is None else _real("k", k, positive=True)
    epsilon = _real("epsilon", epsilon, nonnegative=True)
    length, m, times = _grid_and_times(periods * 2 * math.pi / k, m, t_end, n_times)
    x = grid(m, length)
    psi0 = amplitude * (1 + epsilon * np.cos(k * x)) + 0j
    return Case("modulation-instability", length, m, times, psi0,
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
    amplitude = _real("amplitude", amplitude, positive=True)
    width = _real("width", width, positive=True)
    noise = _real("noise", noise, nonnegative=True)
    seed = _count("seed", seed, 0)
    length, m, times = _grid_and_times(length, m, t_end, n_times)
    x = grid(m, length)
    rng = np.random.default_rng(seed)
    psi0 = (
        amplitude
        * np.exp(-(x**2) / (2 * width**2))
        * (1 + noise * (rng.standard_normal(m) + 1j * rng.standard_normal(m)) / math.sqrt(2))
    )
    return Case("gaussian-noise", length, m, times, psi0)


CASES: dict[str, Callable[..., Case]] = {
    "soliton": single_soliton,
    "two-solitons": two_solitons,
    "akhmediev": akhmediev,
    "modulation-instability": modulation_instability,
    "gaussian-noise": gaussian_noise,
}
