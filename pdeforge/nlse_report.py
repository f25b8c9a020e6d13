"""``pdeforge nlse CASE``: run a canonical NLSE case and save its figures and numbers.

Figures (PNG in ``--out-dir``): |psi| over space and time, drift of mass, momentum and
energy, the entropies over time, and a phase-space portrait (psi at the point of largest
initial amplitude in the complex plane). ``<case>_report.json`` holds the invariant drifts and,
for cases with an exact solution, the largest error against it.

Every drift is relative: max_t |I(t) - I(0)| over |I(0)| for mass and energy, and for the
momentum, which is zero in the symmetric cases, over its Cauchy-Schwarz bound
|P| <= sqrt(M int |psi_x|^2 dx), its largest value over the trajectory
(``momentum_scale``; ``momentum_drift_absolute`` is the drift itself).
``energy_drift_scaled`` is the energy's drift over the size of its terms at t = 0
(``nlse.energy_scale``, as the ``nlse`` dataset family measures it): a focusing field's
energy can be near 0, which makes the drift over |E(0)| a measure of that instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from pdeforge.errors import PdeforgeError, output_directory
from pdeforge.solvers import nlse


def run_case(
    name: str,
    out_dir: str | Path,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    method: str = "ip-dop853",
    dealias: bool = True,
    filter_strength: float | None = 36.0,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run case ``name`` with :func:`pdeforge.solvers.nlse.solve` and save its figures, its
    trajectory (npz) and a report of invariant drifts (and the error where the case has an
    exact solution). ``dealias`` and ``filter_strength`` (None or 0: off) are the solver's;
    with either on, the nonlinear term is masked and a field with content near the
    Nyquist wavenumber (the gaussian-noise case's white noise) loses mass and energy
    there, which the drifts show; with both off the collocation system conserves them.
    ``params``: keywords of the case's function in :mod:`pdeforge.solvers.nlse_cases`
    (``length``, ``m``, ``t_end``, ``n_times``, the case's own: ``eta``, ``a`` ...),
    which checks them."""
    import inspect

    if name not in nlse.cases.CASES:
        raise PdeforgeError(f"unknown NLSE case {name!r}; available: {', '.join(nlse.cases.CASES)}")
    factory = nlse.cases.CASES[name]
    known = list(inspect.signature(factory).parameters)
    unknown = [k for k in params or {} if k not in known]
    if unknown:
        raise PdeforgeError(f"the {name} case has no setting {', '.join(map(repr, unknown))}; "
                            f"its settings: {', '.join(known)}")
    case = factory(**(params or {}))
    out = output_directory(out_dir)
    start = time.perf_counter()
    psi = nlse.solve(
        case.psi0,
        length=case.length,
        times=case.times,
        rtol=rtol,
        atol=atol,
        focusing=case.focusing,
        method=method,
        dealias=dealias,
        filter_strength=filter_strength or None,
    )
    seconds = time.perf_counter() - start
    inv = nlse.invariants(psi, length=case.length, focusing=case.focusing)
    p_scale = _momentum_scale(psi, case.length, float(inv["mass"][0]))
    ent = nlse.entropies(psi)
    report: dict[str, Any] = {
        "case": name,
        "settings": dict(params or {}),  # the --set ones; the rest are the case's defaults
        "length": case.length,
        "m": case.m,
        "t": [float(case.times[0]), float(case.times[-1])],
        "method": method,
        "rtol": rtol,
        "atol": atol,
        "dealias": dealias,
        "filter_strength": filter_strength or None,
        "seconds": seconds,
        "mass_drift": float(np.abs(inv["mass"] - inv["mass"][0]).max() / abs(inv["mass"][0])),
        "energy_drift": float(
            np.abs(inv["energy"] - inv["energy"][0]).max() / max(abs(inv["energy"][0]), 1e-300)
        ),
        # over the energy's terms at t = 0 (nlse.energy_scale), as the nlse family's
        # energy_drift: a focusing field's energy, their difference, can be near 0
        "energy_drift_scaled": float(np.abs(inv["energy"] - inv["energy"][0]).max()
                                     / nlse.energy_scale(psi[0], length=case.length)),
        "momentum_drift": float(np.abs(inv["momentum"] - inv["momentum"][0]).max() / p_scale),
        "momentum_drift_absolute": float(np.abs(inv["momentum"] - inv["momentum"][0]).max()),
        "momentum_scale": p_scale,
    }
    report.update(_analytic_comparison(case, psi))
    if case.exact is not None:
        report["max_error_vs_exact"] = float(
            max(np.abs(psi[i] - case.exact(t, case.x)).max() for i, t in enumerate(case.times))
        )
    np.savez_compressed(out / f"{name}.npz", x=case.x, t=case.times, psi=psi)
    _figures(out, name, case, psi, inv, ent, p_scale)
    # one report per case, as the figures: a second case in the same folder kept only
    # the last case's report.json
    (out / f"{name}_report.json").write_text(json.dumps(report, indent=2))
    return report


def _analytic_comparison(case, psi: np.ndarray) -> dict[str, float]:
    """The case's own measurable against its formula (REFERENCES.md section 2): the
    collision shifts of two solitons (centres of mass of |psi|^2 on either side of x = 0
    at the end, against where they would be without the collision), the growth rate of
    modulation instability (the perturbed mode's amplitude between t = 4 and t = 10, in
    the linear stage, fitted as e^{sigma t})."""
    p, x, t = case.params, case.x, case.times
    if case.name == "two-solitons" and p:
        density = np.abs(psi[-1]) ** 2
        right = (x * density)[x > 0].sum() / density[x > 0].sum()
        left = (x * density)[x < 0].sum() / density[x < 0].sum()
        fast, slow = nlse.cases.collision_shifts(p["eta1"], p["eta2"], p["v1"], p["v2"])
        return {
            "collision_shift_measured": [float(right - (p["x1"] + p["v1"] * t[-1])),
                                         float(left - (p["x2"] + p["v2"] * t[-1]))],
            "collision_shift_formula": [fast, slow],
        }
    if case.name == "modulation-instability" and p and t[-1] >= 10.0:
        mode = np.abs(np.fft.fft(psi, axis=-1)[:, p["periods"]])  # the perturbed wavenumber
        i, j = np.searchsorted(t, 4.0), np.searchsorted(t, 10.0)
        return {
            "growth_rate_measured": float(np.log(mode[j] / mode[i]) / (t[j] - t[i])),
            "growth_rate_theory": nlse.cases.mi_growth_rate(p["amplitude"], p["k"]),
        }
    return {}


def _momentum_scale(psi: np.ndarray, length: float, mass: float) -> float:
    """The largest sqrt(M int |psi_x|^2 dx) over the trajectory ``psi`` (T, M): |P(t)| is
    at most it (Cauchy-Schwarz) at every t, and it is zero only for a zero or constant
    field (then 1: the drift is absolute). Taken at t = 0 alone it was the 1e-8
    perturbation's for modulation instability, which made a drift of 2e-14 read 4.6e-7."""
    dx = length / psi.shape[-1]
    grad2 = np.sum(np.abs(nlse._derivative(psi, length)) ** 2, axis=-1) * dx
    scale = float(np.sqrt(mass * float(np.max(grad2))))
    return scale if scale > 0 else 1.0


def _figures(out: Path, name: str, case, psi, inv, ent, p_scale: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, x = case.times, case.x
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    image = ax.pcolormesh(x, t, np.abs(psi), shading="auto", cmap="magma")
    fig.colorbar(image, ax=ax, label="|psi|")
    ax.set(xlabel="x", ylabel="t", title=f"{name}: |psi(x, t)|")
    fig.savefig(out / f"{name}_spacetime.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for key in ("mass", "momentum", "energy"):
        scale = p_scale if key == "momentum" else max(abs(inv[key][0]), 1e-300)
        drift = np.abs(inv[key] - inv[key][0]) / scale
        ax.semilogy(t, np.maximum(drift, 1e-17), label=key)
    ax.set(xlabel="t", ylabel="drift (relative)", title=f"{name}: invariants")
    ax.legend()
    fig.savefig(out / f"{name}_invariants.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for key, values in ent.items():
        ax.plot(t, values, label=key)
    ax.set(xlabel="t", ylabel="entropy", title=f"{name}: entropies")
    ax.legend(fontsize=8, ncol=2)
    fig.savefig(out / f"{name}_entropies.png", dpi=110)
    plt.close(fig)

    j = int(np.argmax(np.abs(psi[0])))
    fig, ax = plt.subplots(figsize=(4.5, 4.5), constrained_layout=True)
    ax.plot(psi[:, j].real, psi[:, j].imag, lw=1)
    ax.plot(psi[0, j].real, psi[0, j].imag, "o", label="t0")
    ax.set(xlabel="Re psi", ylabel="Im psi", title=f"{name}: psi(x={x[j]:.2f}, t)")
    ax.set_aspect("equal", "datalim")
    ax.legend()
    fig.savefig(out / f"{name}_phase.png", dpi=110)
    plt.close(fig)
