"""Pseudo-spectral solver of the 1D nonlinear Schroedinger equation, batched in torch.

    i psi_t + (1/2) psi_xx + s |psi|^2 psi = 0,   s = +1 focusing, -1 defocusing,

periodic on x = linspace(-L/2, L/2, M, endpoint=False). In Fourier space
psi_hat_t = L psi_hat + N(psi), with L = -i k^2 / 2 and N = F(i s |psi|^2 psi). The
default method integrates in the interaction picture: over a step from t_n,
v(tau) = exp(-L tau) psi_hat(t_n + tau) obeys v' = exp(-L tau) N(F^-1(exp(L tau) v)), which
has no stiff linear part, so the step is set by accuracy, not by k_max^2 / 2. The
integrator is the embedded Dormand-Prince 8(5,3) pair (the coefficients are scipy's,
``scipy.integrate._ivp.dop853_coefficients``; the stepping, error norm and step control
follow Hairer, Norsett & Wanner, as scipy does) written in torch so that a batch of
trajectories advances together on CPU or GPU: the step is shared and controlled by the
largest error of the batch. scipy's solve_ivp has no batched or GPU path and no
integrating factor, hence this implementation. ``method="scipy-dop853"`` integrates each
trajectory with solve_ivp on the plain Fourier system, the reference paper's approach
("simple-idealized-1d-nlse"), for cross-checks.

The nonlinear term can be dealiased (2/3 rule) and filtered with
sigma(k) = exp(-alpha (|k| / k_max)^p), k_max = 2/3 of the Nyquist wavenumber
(alpha = p = 36 by default); both can be switched off.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate._ivp import dop853_coefficients as dop853

from pdeforge.errors import ConvergenceError, PdeforgeError

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0
ERROR_EXPONENT = -1.0 / 8.0  # the 7th-order error estimator of DOP853


class NLSEInputError(PdeforgeError, ValueError):
    """Bad initial condition, domain, times or tolerances for the NLSE solver."""


def wavenumbers(m: int, length: float) -> np.ndarray:
    """Angular wavenumbers of an M-point periodic grid of length L (FFT order)."""
    return 2 * np.pi * np.fft.fftfreq(m, d=length / m)


def grid(m: int, length: float) -> np.ndarray:
    """x = linspace(-L/2, L/2, M, endpoint=False)."""
    return np.linspace(-length / 2, length / 2, m, endpoint=False)


def spectral_mask(
    k: np.ndarray, dealias: bool, filter_strength: float | None, filter_order: int
) -> np.ndarray:
    """Multiplier applied to the nonlinear term: 2/3 rule and/or exponential filter."""
    k_max = (2.0 / 3.0) * np.abs(k).max()
    mask = np.ones_like(k)
    if filter_strength:
        mask = mask * np.exp(-filter_strength * (np.abs(k) / k_max) ** filter_order)
    if dealias:
        mask = mask * (np.abs(k) <= k_max)
    return mask


def _check(psi0: np.ndarray, length: float, times: np.ndarray, rtol: float, atol: float):
    psi0 = np.asarray(psi0)
    if psi0.ndim < 1 or psi0.shape[-1] < 8:
        raise NLSEInputError(
            f"psi0 needs at least 8 grid points on its last axis, got shape {psi0.shape}"
        )
    if not np.all(np.isfinite(psi0)):
        raise NLSEInputError("psi0 contains NaN or infinite values")
    if not (np.isfinite(length) and length > 0):
        raise NLSEInputError(f"length must be a positive number, got {length!r}")
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) < 1 or not np.all(np.isfinite(times)):
        raise NLSEInputError("times must be a 1-D array of finite output times")
    if np.any(np.diff(times) <= 0):
        raise NLSEInputError("times must be strictly increasing")
    if not (rtol > 0 and atol >= 0):
        raise NLSEInputError(f"need rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}")
    return psi0.astype(np.complex128), times


def solve(
    psi0: np.ndarray,
    *,
    length: float,
    times: np.ndarray,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    focusing: bool = True,
    dealias: bool = True,
    filter_strength: float | None = 36.0,
    filter_order: int = 36,
    method: str = "ip-dop853",
    device: str | torch.device = "cpu",
    max_steps: int = 1_000_000,
    first_step: float | None = None,
    max_step: float = 0.1,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Integrate the NLSE; returns psi at ``times``, shape (..., len(times), M).

    Args:
        psi0: complex initial field(s), shape (..., M); leading axes are a batch.
        length: domain length L.
        times: increasing output times; times[0] is the time of psi0 (psi[..., 0, :] ==
            psi0).
        rtol, atol: tolerances of the embedded error estimate (per trajectory, RMS over
            the Fourier coefficients of the interaction-picture state).
        focusing: s = +1 (True) or -1.
        dealias, filter_strength, filter_order: treatment of the nonlinear term (see
            module docstring); ``filter_strength=None`` switches the filter off.
        method: "ip-dop853" (batched interaction picture, torch) or "scipy-dop853".
        device: torch device of the batched method.
        max_steps: accepted + rejected steps allowed before a ConvergenceError.
        max_step: largest step of "scipy-dop853" (the reference uses 0.1).
    """
    psi0, times = _check(psi0, length, times, rtol, atol)
    batch_shape, m = psi0.shape[:-1], psi0.shape[-1]
    flat = psi0.reshape(-1, m)
    k = wavenumbers(m, length)
    mask = spectral_mask(k, dealias, filter_strength, filter_order)
    s = 1.0 if focusing else -1.0
    if method == "scipy-dop853":
        out = np.stack([_solve_scipy(p, k, mask, s, times, rtol, atol, max_step) for p in flat])
    elif method == "ip-dop853":
        out = _solve_ip(
            flat,
            k,
            mask,
            s,
            times,
            rtol,
            atol,
            torch.device(device),
            max_steps,
            first_step,
            progress,
        )
    else:
        raise NLSEInputError(f"method must be 'ip-dop853' or 'scipy-dop853', got {method!r}")
    return out.reshape(*batch_shape, len(times), m)


def _solve_scipy(psi0, k, mask, s, times, rtol, atol, max_step):
    from scipy.integrate import solve_ivp

    lin = -0.5j * k**2

    def rhs(_t, y):
        psi = np.fft.ifft(y)
        return lin * y + mask * np.fft.fft(1j * s * np.abs(psi) ** 2 * psi)

    if len(times) == 1:
        return psi0[None].copy()
    sol = solve_ivp(
        rhs,
        (times[0], times[-1]),
        np.fft.fft(psi0),
        method="DOP853",
        t_eval=times,
        rtol=rtol,
        atol=atol,
        max_step=max_step,
    )
    if not sol.success:
        raise ConvergenceError(f"scipy DOP853 failed: {sol.message}")
    return np.fft.ifft(sol.y.T, axis=-1)


def _solve_ip(flat, k, mask, s, times, rtol, atol, device, max_steps, first_step, progress):
    dtype = torch.complex128
    kk = torch.as_tensor(k, device=device)
    lin = (-0.5j * kk**2).to(dtype)  # L
    mask_t = torch.as_tensor(mask, device=device).to(dtype)
    n_stages = dop853.N_STAGES
    # the tableau, converted once to the state's dtype (used in every stage of every step)
    A = torch.as_tensor(dop853.A[:n_stages, :n_stages], device=device).to(dtype)
    B = torch.as_tensor(dop853.B, device=device).to(dtype)
    C = [float(c) for c in dop853.C[:n_stages]]
    E3 = torch.as_tensor(dop853.E3, device=device).to(dtype)
    E5 = torch.as_tensor(dop853.E5, device=device).to(dtype)
    n, m = flat.shape

    def nonlinear(psi_hat: torch.Tensor) -> torch.Tensor:
        psi = torch.fft.ifft(psi_hat, dim=-1)
        return mask_t * torch.fft.fft(1j * s * (psi.real**2 + psi.imag**2) * psi, dim=-1)

    def f(tau: float, v: torch.Tensor) -> torch.Tensor:
        # tau: local time in the step (shared by the batch); v: (n, M)
        phase = torch.exp(lin * tau)  # L is imaginary: exp(-L tau) = conj(exp(L tau))
        return phase.conj() * nonlinear(phase * v)

    y = torch.fft.fft(torch.as_tensor(flat, device=device), dim=-1)
    out = torch.empty(n, len(times), m, dtype=dtype, device=device)
    out[:, 0] = torch.as_tensor(flat, device=device)
    t = float(times[0])
    f0 = nonlinear(y)
    if first_step is None:  # Hairer's initial step heuristic on the nonlinear rate
        scale = atol + rtol * y.abs()
        d0 = torch.sqrt(torch.mean((y.abs() / scale) ** 2)).item()
        d1 = torch.sqrt(torch.mean((f0.abs() / scale) ** 2)).item()
        h = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    else:
        h = float(first_step)
    steps = 0
    K = torch.empty(n_stages + 1, n, m, dtype=dtype, device=device)
    for j in range(1, len(times)):
        t_end = float(times[j])
        while t < t_end:
            if steps >= max_steps:
                raise ConvergenceError(
                    f"NLSE: {max_steps} steps reached at t={t:.6g} of {t_end:.6g}; loosen rtol "
                    "or raise max_steps"
                )
            steps += 1
            h_step = min(h, t_end - t)
            last = h_step >= t_end - t
            K[0] = f0
            for st in range(1, n_stages):
                dy = torch.einsum("s,snm->nm", A[st, :st], K[:st]) * h_step
                K[st] = f(C[st] * h_step, y + dy)
            v_new = y + h_step * torch.einsum("s,snm->nm", B, K[:n_stages])
            K[n_stages] = f(h_step, v_new)
            scale = atol + torch.maximum(y.abs(), v_new.abs()) * rtol
            err5 = torch.einsum("s,snm->nm", E5, K) / scale
            err3 = torch.einsum("s,snm->nm", E3, K) / scale
            e5 = (err5.abs() ** 2).sum(-1)
            e3 = (err3.abs() ** 2).sum(-1)
            denom = e5 + 0.01 * e3
            norm = torch.where(denom > 0, h_step * e5 / torch.sqrt(denom * m), torch.zeros_like(e5))
            error = float(norm.max())
            if error < 1.0:
                phase = torch.exp(lin * h_step)
                y = phase * v_new  # back to psi_hat at t + h
                f0 = phase * K[n_stages]  # FSAL: N(psi(t + h))
                t = t_end if last else t + h_step
                factor = (
                    MAX_FACTOR if error == 0 else min(MAX_FACTOR, SAFETY * error**ERROR_EXPONENT)
                )
                if not last or h_step >= h:
                    h = h_step * factor
                if progress is not None:
                    progress(t)
            else:
                h = h_step * max(MIN_FACTOR, SAFETY * error**ERROR_EXPONENT)
                if h < 1e-14 * max(1.0, abs(t)):
                    raise ConvergenceError(f"NLSE: step size underflow at t={t:.6g}")
        out[:, j] = torch.fft.ifft(y, dim=-1)
    return out.cpu().numpy()


def _derivative(psi: np.ndarray, length: float) -> np.ndarray:
    k = wavenumbers(psi.shape[-1], length)
    return np.fft.ifft(1j * k * np.fft.fft(psi, axis=-1), axis=-1)


def invariants(psi: np.ndarray, *, length: float, focusing: bool = True) -> dict[str, np.ndarray]:
    """Mass, momentum and energy of psi (..., M) with spectral derivatives.

    M = int |psi|^2, P = int Im(conj(psi) psi_x), E = int (|psi_x|^2 / 2 - s |psi|^4 / 2).
    """
    psi = np.asarray(psi)
    dx = length / psi.shape[-1]
    s = 1.0 if focusing else -1.0
    dpsi = _derivative(psi, length)
    density = np.abs(psi) ** 2
    return {
        "mass": density.sum(-1) * dx,
        "momentum": np.imag(np.conj(psi) * dpsi).sum(-1) * dx,
        "energy": (0.5 * np.abs(dpsi) ** 2 - 0.5 * s * density**2).sum(-1) * dx,
    }


def _entropies_of(p: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    p = p / p.sum(-1, keepdims=True)
    kept = np.where(p >= 1e-15, p, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(kept > 0, kept * np.log(np.where(kept > 0, kept, 1.0)), 0.0)
    out = {
        "shannon": -plogp.sum(-1),
        "renyi_0": np.log((kept > 0).sum(-1)),
        "renyi_2": -np.log((kept**2).sum(-1)),
        "renyi_inf": -np.log(kept.max(-1)),
        "tsallis_0.5": (np.sqrt(kept).sum(-1) - 1.0) / 0.5,
        "tsallis_2": 1.0 - (kept**2).sum(-1),
    }
    return {prefix + k: v for k, v in out.items()}


def entropies(psi: np.ndarray) -> dict[str, np.ndarray]:
    """Entropies of p_j = |psi_j|^2 / sum |psi|^2 (p < 1e-15 dropped, natural log).

    Shannon, Renyi (alpha = 0, 2, inf), Tsallis (q = 0.5, 2), and the Shannon entropy of
    the normalised power spectrum |psi_hat|^2 (``spectral_shannon``).
    """
    psi = np.asarray(psi)
    out = _entropies_of(np.abs(psi) ** 2)
    spectral = _entropies_of(np.abs(np.fft.fft(psi, axis=-1)) ** 2)
    out["spectral_shannon"] = spectral["shannon"]
    return out


def soliton(
    x: np.ndarray,
    t: float,
    eta: float = 1.0,
    velocity: float = 0.0,
    x0: float = 0.0,
    phase: float = 0.0,
) -> np.ndarray:
    """Exact focusing soliton eta sech(eta (x - x0 - v t)) exp(i (v x + (eta^2 - v^2) t/2))."""
    arg = eta * (x - x0 - velocity * t)
    return (
        eta / np.cosh(arg) * np.exp(1j * (velocity * x + 0.5 * (eta**2 - velocity**2) * t + phase))
    )


__all__ = ["NLSEInputError", "entropies", "grid", "invariants", "soliton", "solve", "wavenumbers"]


from pdeforge.solvers import nlse_cases as cases  # noqa: E402, F401  (cases use grid, soliton)
