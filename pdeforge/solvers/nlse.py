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
largest error of the batch. Output times do not set the step: an output inside a step is
interpolated with DOP853's 7th-order dense output (mapped back from the interaction
picture), unless ending the step on it is cheaper (``LAND_FRACTION``) or the outputs are
projected (``conserve``). scipy's solve_ivp has no batched or GPU path and no
integrating factor, hence this implementation. ``method="scipy-dop853"`` integrates each
trajectory with solve_ivp on the plain Fourier system, the reference paper's approach
("simple-idealized-1d-nlse"), for cross-checks.

Optionally (``conserve``) the state is projected back onto its initial mass, momentum and
energy (Hairer, Lubich & Wanner, Geometric Numerical Integration, IV.4), which pins a
soliton's amplitude and velocity.

The nonlinear term can be dealiased (2/3 rule) and filtered with
sigma(k) = exp(-alpha (|k| / k_max)^p), k_max = 2/3 of the Nyquist wavenumber
(alpha = p = 36 by default); both can be switched off.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

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


#: the 2/3 rule: the nonlinear term keeps |k| <= DEALIAS_FRACTION x the largest |k| of the
#: grid, the filter's k_max
DEALIAS_FRACTION = 2.0 / 3.0


def spectral_mask(
    k: np.ndarray, dealias: bool, filter_strength: float | None, filter_order: int
) -> np.ndarray:
    """Multiplier applied to the nonlinear term: 2/3 rule and/or exponential filter."""
    k_max = DEALIAS_FRACTION * np.abs(k).max()
    mask = np.ones_like(k)
    if filter_strength:
        mask = mask * np.exp(-filter_strength * (np.abs(k) / k_max) ** filter_order)
    if dealias:
        mask = mask * (np.abs(k) <= k_max)
    return mask


def _described(times) -> str:
    """A short description of a ``times`` argument for error messages."""
    text = repr(times)
    return text if len(text) <= 60 else f"{type(times).__name__} {text[:57]}..."


def _check(psi0: np.ndarray, length: float, times: np.ndarray, rtol: float, atol: float):
    given = type(psi0).__name__
    if isinstance(psi0, torch.Tensor):  # (a tensor that requires grad refused np.asarray)
        psi0 = psi0.detach().cpu()
    try:
        psi0 = np.asarray(psi0)
    except ValueError as exc:  # a ragged list
        raise NLSEInputError(f"psi0 must be an array of shape (..., M); got a {given} numpy "
                             f"cannot make one of ({exc})") from None
    if psi0.dtype.kind not in "iufc":  # booleans too: a mask passed by mistake
        raise NLSEInputError(f"psi0 must be a numeric (complex) array of shape (..., M), got "
                             f"{given} of dtype {psi0.dtype}")
    if psi0.ndim < 1 or psi0.shape[-1] < 8:
        raise NLSEInputError(
            f"psi0 needs at least 8 grid points on its last axis, got shape {psi0.shape}"
        )
    if not np.all(np.isfinite(psi0)):
        raise NLSEInputError("psi0 contains NaN or infinite values")
    # the rate's FFT of |psi|^2 psi sums M values of |psi|^3: beyond this it overflows
    # double precision, every step came out NaN and the solver spun at t = 0 until
    # max_steps (391 s, then "loosen rtol", review)
    limit = (np.finfo(np.float64).max / psi0.shape[-1]) ** (1 / 3) / 2
    largest = float(np.abs(psi0).max()) if psi0.size else 0.0
    if largest > limit:
        raise NLSEInputError(
            f"psi0 reaches |psi| = {largest:.3g}: the nonlinear term |psi|^2 psi overflows "
            f"double precision above ~{limit:.3g} at M = {psi0.shape[-1]}; rescale the "
            "problem (psi(x, t) -> a psi(a x, a^2 t) maps solutions to solutions)")
    length = _check_length(length)
    raw = times.detach().cpu().numpy() if isinstance(times, torch.Tensor) else times
    raw = np.asarray(raw)
    # numbers only: numpy would cut complex times to their real part (a warning) and read
    # strings and booleans as numbers
    if raw.dtype.kind not in "iuf":
        raise NLSEInputError(f"times must be real numbers (a 1-D array of output times), got "
                             f"{_described(times)} of dtype {raw.dtype}")
    times = raw.astype(np.float64)
    if times.ndim != 1 or len(times) < 1 or not np.all(np.isfinite(times)):
        raise NLSEInputError(f"times must be a 1-D array of finite output times, got "
                             f"{_described(times)}")
    if np.any(np.diff(times) <= 0):
        first = int(np.flatnonzero(np.diff(times) <= 0)[0])
        after, before = float(times[first + 1]), float(times[first])
        raise NLSEInputError(
            f"times must be strictly increasing: times[{first + 1}] = {after!r} follows "
            f"times[{first}] = {before!r}"
        )
    if not (
        _is_real_number(rtol) and _is_real_number(atol) and 0 < rtol < 1 and 0 < atol < np.inf
    ):
        # atol = 0 is refused: a Fourier coefficient that is exactly zero (a symmetric
        # field, a plane wave) then has no error scale, and 0 / 0 stalled the step control
        raise NLSEInputError(
            f"need 0 < rtol < 1 and 0 < atol < inf (relative and absolute error tolerances, "
            f"e.g. 1e-10 and 1e-12), got rtol={rtol!r}, atol={atol!r}"
        )
    return psi0.astype(np.complex128), length, times


def _scalar(value):
    """A 0-d array's element (a value read from a file), anything else as it is."""
    return value[()] if isinstance(value, np.ndarray) and value.shape == () else value


def _check_length(length) -> float:
    """``length`` as a float (a 0-d array too), or an NLSEInputError."""
    value = _scalar(length)
    if not (_is_real_number(value) and np.isfinite(value) and value > 0):
        raise NLSEInputError(f"length must be a positive number, got {length!r}")
    return float(value)


def _check_flag(name: str, value, meaning: str) -> None:
    """``value`` is True or False (``meaning``: what each says), or an NLSEInputError."""
    # a string such as "False" is truthy: it would have meant True; 0 and 1 (a flag
    # stored as an integer) are taken, other numbers (-1?) are ambiguous
    flag = _scalar(value)
    if not (isinstance(flag, bool | np.bool_) or (_is_integer(flag, 0) and flag <= 1)):
        raise NLSEInputError(f"{name} must be {meaning}, got {value!r}")


def _check_focusing(focusing) -> None:
    _check_flag("focusing", focusing, "True (s = +1) or False (s = -1, defocusing)")


def _is_real_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )


def _is_integer(value, least: int) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and (
        value >= least
    )


def _check_options(
    filter_strength, filter_order, chunk_size, first_step, max_step, max_steps, device
) -> torch.device:
    """The numerical options' checks; returns the torch device."""
    if filter_strength is not None and not (
        _is_real_number(filter_strength) and 0 <= filter_strength < np.inf
    ):
        raise NLSEInputError(
            f"filter_strength must be None (no filter) or a number >= 0 (default 36), got "
            f"{filter_strength!r}"
        )
    if not _is_integer(filter_order, 2):
        raise NLSEInputError(
            f"filter_order must be an integer >= 2 (default 36: the filter acts near k_max "
            f"only), got {filter_order!r}"
        )
    if chunk_size is not None and not _is_integer(chunk_size, 1):
        raise NLSEInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if first_step is not None and not (
        _is_real_number(first_step) and 0 < first_step < np.inf
    ):
        raise NLSEInputError(f"first_step must be None or a positive number, got {first_step!r}")
    if not (_is_real_number(max_step) and 0 < max_step):
        raise NLSEInputError(f"max_step must be a positive number, got {max_step!r}")
    if not _is_integer(max_steps, 1):
        raise NLSEInputError(f"max_steps must be a positive integer, got {max_steps!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NLSEInputError(f"device {device!r} is not a torch device; use 'cpu' or "
                             "'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NLSEInputError(f"device {device!r}: this torch has no CUDA device; use 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        try:
            torch.zeros(1, device=dev)
        except (RuntimeError, AssertionError) as exc:
            raise NLSEInputError(f"device {device!r} is not usable here ({exc}); use "
                                 "'cpu'") from None
    return dev


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
    chunk_size: int | None = None,
    error_norm: str = "componentwise",
    conserve: bool | tuple[str, ...] = False,
) -> np.ndarray:
    """Integrate the NLSE; returns psi at ``times``, shape (..., len(times), M).

    Args:
        psi0: complex initial field(s), shape (..., M); leading axes are a batch.
        length: domain length L.
        times: increasing output times (real numbers); times[0] is the time of psi0
            (psi[..., 0, :] == psi0). They do not limit the step: an output inside a step
            is interpolated (DOP853's 7th-order dense output, ``LAND_FRACTION``), with an
            error of the order of the step's tolerance, as scipy's dense output has.
        rtol, atol: tolerances of the embedded error estimate (per trajectory, RMS over
            the M Fourier coefficients of the interaction-picture state, numpy's
            unnormalised FFT: atol is in units of M |psi|). They bound each step's local
            error, not the error at the end, which accumulates over the steps; and as an
            RMS over M coefficients, a field whose spectrum sits in a few of them is
            held ~sqrt(M) times looser there (outside checks, a defocusing plane wave to
            t = 50 at rtol 1e-8: 1.4e-6 off; 4.4e-6 at M = 16, 2.6e-5 at M = 512 with
            atol 1e-10). With the componentwise norm, atol also decides the steps spent
            on coefficients near zero (see ``error_norm``).
        focusing: s = +1 (True) or -1.
        dealias, filter_strength, filter_order: treatment of the nonlinear term (see
            module docstring); ``filter_strength=None`` switches the filter off.
        method: "ip-dop853" (batched interaction picture, torch) or "scipy-dop853".
        device: torch device of the batched method.
        max_steps: accepted + rejected steps allowed before a ConvergenceError.
        max_step: largest step of "scipy-dop853" (the reference uses 0.1).
        error_norm: "componentwise" (Hairer-Norsett-Wanner, as scipy: each Fourier
            coefficient's error against atol + rtol |coefficient|) or "state" (against
            atol + rtol max |coefficient| of the trajectory: the error relative to the
            field's size, which does not spend steps resolving the phase of coefficients
            far below rtol of the field). Both are RMS over the coefficients.
        conserve: ("ip-dop853") invariants to hold at their initial values: True for
            ("mass", "energy"), or names from ``INVARIANTS``. At every output time and at
            least every ``PROJECTION_INTERVAL`` accepted steps the state is projected back
            onto them (the standard projection of Hairer, Lubich & Wanner, Geometric
            Numerical Integration, IV.4; :func:`_project`). Mass and the energy of
            :func:`invariants` are exact invariants of the unmasked collocation system (it
            is Hamiltonian), so ``dealias=False`` and ``filter_strength=None`` are
            required. The momentum is one only up to aliasing of |psi|^2 psi: it can be
            imposed on resolved fields (a spectrum that has decayed well before the
            Nyquist wavenumber); where the grid system has changed it by more than rtol
            (of its scale, summed over the projections), an NLSEInputError says so, and a
            projection that moves the state by over ``PROJECTION_WARN_MOVE`` rtol warns
            (an invariant the grid does not resolve). On solitons, where the errors
            in amplitude and velocity are what the phase and position errors integrate,
            mass, momentum and energy together cut the error at a given rtol 5-30 fold at
            rtol <= 1e-7 (tests; ``benchmarks/nlse.py``); at looser tolerances the drift
            between projections is too large for it to pay (measured on the test soliton:
            1.2x at 1e-6, 0.8x at 1e-5). Mass and energy alone do not pin a moving
            soliton's velocity: at loose tolerances they can make its error worse (2-5x at
            rtol 1e-5). What "hold" means near a soliton, where the energy's gradient
            depends on the others: :func:`_project`.
        progress: called after every accepted step with the fraction of the batch's work
            done, in [0, 1].
        chunk_size: trajectories that advance together with one shared, adaptive step
            ("ip-dop853"); successive chunks are integrated one after the other, each with
            its own step control. Default: the whole batch on a GPU; on a CPU, chunks whose
            stored stages fit in cache (a step is memory-bound there), cut by the batch
            size and M alone, so that the result does not depend on the number of
            threads (:func:`_chunking`). When the batch
            takes several chunks, trajectories of similar difficulty share one
            (:func:`_difficulty`), hardest first.
    """
    # settings read from a file arrive as 0-d arrays: taken as the numbers they hold
    rtol, atol, filter_strength, filter_order, chunk_size, first_step, max_step, max_steps = (
        _scalar(v) for v in (rtol, atol, filter_strength, filter_order, chunk_size,
                             first_step, max_step, max_steps))
    psi0, length, times = _check(psi0, length, times, rtol, atol)
    _check_focusing(focusing)
    _check_flag("dealias", dealias, "True (2/3 rule on the nonlinear term) or False")
    if error_norm not in ("componentwise", "state"):
        raise NLSEInputError(f"error_norm must be 'componentwise' or 'state', got {error_norm!r}")
    conserved = _conserved(conserve, method, dealias, filter_strength)
    dev = _check_options(
        filter_strength, filter_order, chunk_size, first_step, max_step, max_steps, device
    )
    batch_shape, m = psi0.shape[:-1], psi0.shape[-1]
    flat = psi0.reshape(-1, m)
    if flat.shape[0] == 0:  # an empty batch: nothing to integrate
        return np.zeros((*batch_shape, len(times), m), dtype=np.complex128)
    k = wavenumbers(m, length)
    mask = spectral_mask(k, dealias, filter_strength, filter_order)
    s = 1.0 if focusing else -1.0
    if method == "scipy-dop853":
        out = np.empty((len(flat), len(times), m), dtype=np.complex128)
        for i, p in enumerate(flat):
            out[i] = _solve_scipy(p, k, mask, s, times, rtol, atol, max_step, max_steps)
            if progress is not None:
                progress((i + 1) / len(flat))
    elif method == "ip-dop853":
        out = _solve_ip(
            flat,
            k,
            mask,
            s,
            times,
            rtol,
            atol,
            dev,
            max_steps,
            first_step,
            progress,
            chunk_size,
            error_norm == "state",
            conserved,
        )
    else:
        raise NLSEInputError(f"method must be 'ip-dop853' or 'scipy-dop853', got {method!r}")
    if progress is not None and len(times) == 1:
        progress(1.0)  # one output time: psi0 itself, nothing to step
    return out.reshape(*batch_shape, len(times), m)


INVARIANTS = ("mass", "momentum", "energy")
MOMENTUM = INVARIANTS.index("momentum")


def _conserved(conserve, method: str, dealias: bool, filter_strength) -> list[int]:
    """Indices into ``INVARIANTS`` of the invariants ``conserve`` asks to impose."""
    if conserve is None or isinstance(conserve, (bool, np.bool_)):
        if not conserve:
            return []
        names = ("mass", "energy")
    else:
        names = conserve
    if isinstance(names, (tuple, list)) and len(names) == 0:
        return []  # no invariant named: nothing imposed, as conserve=False
    if (
        isinstance(names, str)
        or not isinstance(names, (tuple, list))
        or not all(n in INVARIANTS for n in names)
    ):
        raise NLSEInputError(
            f"conserve must be True, False or a tuple of names from {INVARIANTS}, got {conserve!r}"
        )
    if method != "ip-dop853":
        raise NLSEInputError("conserve needs method='ip-dop853'")
    if dealias or filter_strength:
        raise NLSEInputError(
            "conserve needs dealias=False and filter_strength=None: with the nonlinear term "
            "masked the grid system does not conserve mass and energy, and imposing them "
            "would bias the solution"
        )
    return sorted({INVARIANTS.index(n) for n in names})


def _solve_scipy(psi0, k, mask, s, times, rtol, atol, max_step, max_steps):
    from scipy.integrate import DOP853, solve_ivp

    lin = -0.5j * k**2
    # max_steps as ip-dop853 takes it (solve_ivp has no such limit): scipy's DOP853
    # evaluates the rate 12 times a step, accepted or rejected, and twice to start; the
    # three more of a step's dense output (the outputs inside it) are not steps
    evaluations = [0]
    limit = 12 * max_steps + 2
    dense = [False]

    class CountedDOP853(DOP853):
        def _dense_output_impl(self):
            dense[0] = True
            try:
                return super()._dense_output_impl()
            finally:
                dense[0] = False

    def rhs(t, y):
        if not dense[0]:
            evaluations[0] += 1
            if evaluations[0] > limit:
                raise ConvergenceError(
                    f"NLSE (scipy-dop853): {max_steps} steps reached at t={t:.6g} of "
                    f"{times[-1]:.6g}; loosen rtol or raise max_steps")
        psi = np.fft.ifft(y)
        return lin * y + mask * np.fft.fft(1j * s * np.abs(psi) ** 2 * psi)

    if len(times) == 1:
        return psi0[None].copy()
    sol = solve_ivp(
        rhs,
        (times[0], times[-1]),
        np.fft.fft(psi0),
        method=CountedDOP853,
        t_eval=times,
        rtol=rtol,
        atol=atol,
        max_step=max_step,
    )
    if not sol.success:
        raise ConvergenceError(f"scipy DOP853 failed: {sol.message}")
    out = np.fft.ifft(sol.y.T, axis=-1)
    out[0] = psi0  # exactly psi0, not its FFT round trip
    return out


# Where each stage is stored (slot of stage 0, 1, 2, ...). Stages 2.. of DOP853 combine
# stage 0 with a run of recent ones (1; 2; 2-3; 3-4; 3-5; ...; 3-10): with stage 0 stored
# just before stage 3 every combination reads one contiguous block of slots, 52 stage
# reads a step against 66 in the natural order, and never a slot not yet written in this
# step (whose value, left by a rejected step, could be inf: 0 * inf is NaN).
STAGE_SLOTS = (2, 1, 0, *range(3, dop853.N_STAGES))
END = dop853.N_STAGES  # index of the step's end (c = 1) among the nodes of the phases
# A step ends on an output inside it when it still gets at least this fraction of its way:
# the dense output costs four rate evaluations (the rate at the step's end in the step's
# picture and three extra stages; the matrix products are small beside them), so passing
# the output costs 16 evaluations a step and ending on it 12 a fraction of one: per unit
# of time the shorter step is the cheaper one from 12/16 of the way.
LAND_FRACTION = dop853.N_STAGES / (dop853.N_STAGES + 4)
DENSE_BATCH = 8  # outputs interpolated together (bounds the temporaries' size)


def _stage_rows(device: torch.device) -> list[tuple[int, int, torch.Tensor] | None]:
    """DOP853's rows of A as (first slot, end slot, coefficients over those slots).

    The tableau is real, so a stage combination is a real matrix-vector product over the
    real view of the stored stages (half the work of a complex one); it reads one
    contiguous block of slots (``STAGE_SLOTS``), zero coefficients for the slots in it that
    the row does not use (cheaper than gathering the others into a copy).
    """
    rows: list[tuple[int, int, torch.Tensor] | None] = [None]
    for st in range(1, dop853.N_STAGES):
        used = [STAGE_SLOTS[j] for j in range(st) if dop853.A[st, j] != 0.0]
        lo, hi = min(used), max(used) + 1
        coef = np.zeros(hi - lo)
        for j in range(st):
            if lo <= STAGE_SLOTS[j] < hi:
                coef[STAGE_SLOTS[j] - lo] = dop853.A[st, j]
        rows.append((lo, hi, torch.tensor(coef, dtype=torch.float64, device=device)))
    return rows


# a step on a CPU is memory-bound: a chunk's 12 stored stages should stay in cache
CPU_CHUNK_BYTES = 8 << 20
# the CPU batch is cut into a multiple of this many chunks (when each keeps at least
# CPU_MIN_CHUNK trajectories), so that 1, 2 or 4 threads all get equal shares
CPU_CHUNK_MULTIPLE = 4
CPU_MIN_CHUNK = 16
# how often the main thread, waiting for the chunks' threads, looks for a signal
POOL_POLL_SECONDS = 0.05


def _chunking(n: int, m: int, device: torch.device, chunk_size: int | None) -> tuple[int, int]:
    """(trajectories per chunk, parallel workers).

    On a GPU the whole batch is one chunk. On a CPU the chunks are sized to the cache
    (at least ``CPU_MIN_CHUNK`` trajectories, since each step costs about 200 tensor
    operations of Python overhead per chunk) and spread over torch's threads, one
    single-threaded chunk per thread: measured on 2 cores (L = 50, M = 512), that is 1.4x
    the throughput of one chunk using both threads, whose small FFTs and products
    parallelise poorly.

    The chunks depend on n and M only, never on the thread count: the trajectories of a
    chunk share one adaptive step, so another cut would change the results (at the level
    of the tolerance), and a dataset generated with 1 or 2 Dask workers (whose processes
    run single-threaded) or resumed on another machine would not be the same file.
    """
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    if chunk_size is None:
        if device.type != "cpu":
            return n, 1
        cap = max(CPU_MIN_CHUNK, CPU_CHUNK_BYTES // (13 * 16 * m))
        # equal chunks, none above the cache size, their count a multiple of
        # CPU_CHUNK_MULTIPLE while each keeps CPU_MIN_CHUNK trajectories
        n_chunks = -(-n // cap)
        n_chunks = max(n_chunks, min(-(-n_chunks // CPU_CHUNK_MULTIPLE) * CPU_CHUNK_MULTIPLE,
                                     n // CPU_MIN_CHUNK))
        chunk_size = -(-n // n_chunks)
    n_chunks = -(-n // chunk_size)
    return chunk_size, max(1, min(workers, n_chunks))


def _solve_ip(
    flat,
    k,
    mask,
    s,
    times,
    rtol,
    atol,
    device,
    max_steps,
    first_step,
    progress,
    chunk_size,
    state_norm,
    conserved,
    integrate=None,
):
    """The batch cut into chunks (:func:`_chunking`), each integrated by ``integrate``
    (default :func:`_solve_ip_chunk`, whose signature another chunk integrator keeps:
    ``benchmarks/nlse_multistep.py`` passes its own) on a thread of its own."""
    integrate = _solve_ip_chunk if integrate is None else integrate
    n, m = flat.shape
    chunk, workers = _chunking(n, m, device, chunk_size)
    out = np.empty((n, len(times), m), dtype=np.complex128)
    ctx = _IPContext(k, mask, s, device)
    bounds = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    # a chunk steps at the pace of its hardest trajectory: chunks of trajectories of
    # similar difficulty, hardest first (also the longest-first order for the workers).
    # Measured on the NLSE benchmark's 256 solitons (eta in [1.5, 2.5], chunks of 64,
    # rtol 3e-9): 602-1102 steps per chunk against 1102 for each chunk in input order.
    order = (
        np.argsort(-_difficulty(ctx, flat, rtol, atol, state_norm), kind="stable")
        if len(bounds) > 1
        else np.arange(n)
    )
    done = [0.0] * len(bounds)  # trajectories' worth of work done, per chunk
    lock = threading.Lock()
    halt = threading.Event()  # set when the caller is interrupted: the chunks end at a step

    def run(i: int) -> None:
        lo, hi = bounds[i]

        def report(fraction: float) -> None:
            with lock:
                done[i] = fraction * (hi - lo)
                progress(sum(done) / n)

        out[order[lo:hi]] = integrate(
            ctx,
            flat[order[lo:hi]],
            times,
            rtol,
            atol,
            max_steps,
            first_step,
            None if progress is None else report,
            state_norm,
            conserved,
            halt,
        )

    if workers == 1:
        for i in range(len(bounds)):
            run(i)
        return out
    # torch releases the GIL inside its kernels, so Python threads run chunks in parallel
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = []
            try:
                # submitted inside the try: a Ctrl-C while the first chunks already run
                # and the rest are not yet queued must stop those too (it did not: leaving
                # the pool ran the started chunks to their end)
                for i in range(len(bounds)):
                    futures.append(pool.submit(run, i))
                pending = set(futures)
                while pending:
                    # a short wait, not one until the end: Python runs a signal's handler
                    # (Ctrl-C, SIGTERM) in the main thread only, and a signal that the
                    # kernel delivered to a worker thread wakes no main thread blocked on
                    # a lock; between waits it runs at once
                    finished, pending = wait(pending, POOL_POLL_SECONDS, FIRST_EXCEPTION)
                    # the failed chunk is raised at once, whichever chunks before it run
                    for future in futures:
                        if future in finished:
                            future.result()
            except BaseException:
                # Ctrl-C, SIGTERM or a chunk's error: leaving the pool waits for its
                # threads, so queued chunks are cancelled and running ones stop at their
                # next step (a SIGTERM'd run would else finish the whole batch first)
                halt.set()
                for future in futures:
                    future.cancel()
                raise
    finally:
        torch.set_num_threads(threads)
    return out


class _IPContext:
    """Per-grid constants of the interaction-picture integrator."""

    def __init__(self, k, mask, s, device):
        self.device = device
        self.s = s
        kk = torch.as_tensor(k, device=device, dtype=torch.float64)
        self.k = kk
        self.half_k2 = 0.5 * kk**2  # L = -i k^2 / 2
        # Parseval weight: int |psi|^2 dx = (dx / M) sum |psi_hat|^2, dx = L / M, k_1 = 2 pi / L
        self.parseval = 2 * np.pi / (float(k[1]) * len(k) ** 2)
        # weights of the invariants (sum |y|^2 times 1, k, k^2/2) and of their Gram matrix
        one = torch.ones_like(kk)
        self.invariant_weights = torch.stack([one, kk, self.half_k2], dim=-1)
        self.gram_weights = torch.stack(
            [one, kk, kk**2, self.half_k2, kk * self.half_k2, self.half_k2**2], dim=-1
        )
        self.mask_i_s = (1j * s * torch.as_tensor(mask, device=device)).to(torch.complex128)
        self.stages = _stage_rows(device)
        rows = [dop853.B, dop853.E5[:-1], dop853.E3[:-1]]
        if dop853.E5[-1] != 0.0 or dop853.E3[-1] != 0.0:
            raise RuntimeError("scipy's DOP853 error estimate now uses the FSAL stage")
        self.output_rows = self.by_slot(np.stack(rows))
        # nodes c_i of the stages, of the end of the step (c_12 = 1: DOP853's FSAL stage)
        # and of the dense output's three extra stages, a column for phases()
        nodes = dop853.C[: dop853.N_STAGES_EXTENDED]
        self.nodes = torch.as_tensor(nodes, dtype=torch.float64, device=device)[:, None]
        # the extra stages' rows of A, over the stored slots and over stages 12, 13, ...
        self.extra_stages = [
            (self.by_slot(dop853.A[e : e + 1, : dop853.N_STAGES]),
             torch.tensor(dop853.A[e : e + 1, dop853.N_STAGES : e], dtype=torch.float64,
                          device=device))
            for e in range(END + 1, dop853.N_STAGES_EXTENDED)
        ]
        # the interpolant's polynomials F_0..F_6 (scipy's Dop853DenseOutput) as rows over
        # the 16 stages, divided by h: F_0 = h B K (the step), F_1 = h K_0 - F_0,
        # F_2 = 2 F_0 - h (K_0 + K_12), F_3.. = h D K
        b = np.zeros(dop853.N_STAGES_EXTENDED)
        b[: dop853.N_STAGES] = dop853.B
        e0, e12 = np.eye(dop853.N_STAGES_EXTENDED)[[0, END]]
        self.interpolant = np.vstack([b, e0 - b, 2 * b - e0 - e12, dop853.D])

    def by_slot(self, rows: np.ndarray) -> torch.Tensor:
        """Coefficients over DOP853's first 12 stages (columns) reordered to the slots
        that store them (``STAGE_SLOTS``)."""
        out = np.zeros((rows.shape[0], dop853.N_STAGES))
        out[:, list(STAGE_SLOTS)] = rows[:, : dop853.N_STAGES]
        return torch.tensor(out, dtype=torch.float64, device=self.device)

    def phases(self, h: float) -> tuple[torch.Tensor, torch.Tensor]:
        """exp(L c_i h) for every node c_i of ``nodes``, shape (16, M), and the way back,
        exp(-L c_i h) times the mask and i s of the nonlinear term (one product)."""
        forward = torch.polar(torch.ones_like(self.half_k2), -(self.nodes * h) * self.half_k2)
        return forward, forward.conj() * self.mask_i_s

    def rate(self, psi_hat: torch.Tensor, back: torch.Tensor, out: torch.Tensor) -> None:
        """out = back * F(|psi|^2 psi), psi = F^-1(psi_hat) (the interaction-picture rate)."""
        psi = torch.fft.ifft(psi_hat, dim=-1)
        # |psi|^2 psi as complex products, conj(psi) made once and multiplied in place:
        # a lazy psi.conj() operand is copied by every product that reads it, and
        # multiplying by the real view of |psi|^2 promotes it to complex (another copy)
        cubic = torch.conj_physical(psi).mul_(psi).mul_(psi)
        torch.mul(back, torch.fft.fft(cubic, dim=-1), out=out)


def _mag2(z: torch.Tensor) -> torch.Tensor:
    """|z|^2 of a complex tensor without complex abs's hypot."""
    return (z * z.conj()).real


def _max_mag2(z: torch.Tensor) -> torch.Tensor:
    """max |z|^2 over the last dim of a complex tensor.

    Reduces the contiguous real view of z conj(z), whose imaginary parts are exactly 0
    (a b - b a), so the maximum is that of |z|^2: measured 7x faster on CPU than ``amax``
    over the strided ``.real`` of :func:`_mag2` (64 x 512 values: 24 against 165 us).
    """
    return torch.view_as_real(z * z.conj()).amax((-1, -2))


# accepted steps between two projections of ``conserve=True`` at most (output times too)
PROJECTION_INTERVAL = 10


def _invariants_hat(ctx, y: torch.Tensor, gradients: bool):
    """Mass, momentum and energy of psi = F^-1 y, (n, 3) in the order of ``INVARIANTS``,
    from the Fourier coefficients y (n, M); with ``gradients`` also |y|^2 and
    C = F(|psi|^2 psi), the nonlinear part of the energy's gradient (see :func:`_project`).

    With w = dx / M (Parseval): M = w sum |y|^2, P = w sum k |y|^2,
    E = w sum k^2 |y|^2 / 2 - (s dx / 2) sum_j |psi_j|^4, the spectral values of
    :func:`invariants`.
    """
    w = ctx.parseval
    psi = torch.fft.ifft(y, dim=-1)
    p2 = _mag2(psi)
    a2 = _mag2(y)
    values = w * (a2 @ ctx.invariant_weights)  # (n, 3): sum |y|^2 [1, k, k^2 / 2]
    values[:, 2] -= (0.5 * ctx.s * w * y.shape[-1]) * (p2 * p2).sum(-1)
    if not gradients:
        return values, None
    return values, (a2, torch.fft.fft(p2 * psi, dim=-1))


PROJECTION_ITERATIONS, PROJECTION_RTOL, PROJECTION_ACCEPT = 5, 1e-12, 1e-10
# Near the fold the iteration converges linearly: a trajectory within PROJECTION_ACCEPT
# whose last iteration cut its residual by less than this factor stops there (measured on
# the NLSE benchmark's solitons at rtol 5e-8: 2e-11 -> 1.3e-11 -> 1e-11 -> 9e-12 for a
# quarter of them, while the others stop at round-off after one iteration; the remaining
# iterations were half of a projection's cost, and a projection cost about a step's)
PROJECTION_STALL = 10.0
# A constraint's gradient counts as dependent on those imposed before it when the part of
# its unit vector orthogonal to them is shorter than this: about 2x the round-off of that
# distance as the structured Gram matrix gives it on exact solitons (3.5e-8 - 5.4e-8), so
# that the energy is imposed close to the fold at a soliton (which removes shape error
# there: about half the error of the NLSE benchmark's solitons at rtol 1e-8). Where the
# iteration does not converge, the projection falls back to the coarser FOLD_GRADIENT.
DEPENDENT_GRADIENT, FOLD_GRADIENT = 1e-7, 1e-3


def _project(ctx, y, target, which: list[int]) -> torch.Tensor:
    """y moved onto {invariants ``which`` (indices into ``INVARIANTS``) = target}.

    The standard projection of Hairer, Lubich & Wanner, Geometric Numerical Integration,
    IV.4, Algorithm 4.2: y + G^T mu with G the invariants' gradients at y and mu by
    simplified Newton on g(y + G^T mu) = target, until the imposed invariants hold to
    ``PROJECTION_RTOL`` of their sums (one iteration leaves a remainder of the square of
    the drift), for ``PROJECTION_ITERATIONS``, or, once within ``PROJECTION_ACCEPT``, until
    an iteration gains less than ``PROJECTION_STALL``. In the real inner product Re <g, dy> the
    gradients are 2 w phi with phi = (y, k y, (k^2 / 2) y - s C), so the Gram matrix is a
    few weighted sums of |y|^2, Re(conj(y) C) and |C|^2, and the update is
    y (1 + mu_M + mu_P k + mu_E k^2 / 2) - s mu_E C: two FFTs, and one per iteration
    (usually one).

    The gradients can be dependent: a soliton is a critical point of E at fixed M and P
    (at fixed M when it stands still), a plane wave has P = k M, psi = 0 has none. The
    constraints are taken in order and one whose scaled gradient lies within
    ``DEPENDENT_GRADIENT`` of the span of those before is not imposed: it follows from
    them to second order. Near such a fold the iteration slows down to linear: where it
    has not brought a trajectory's imposed invariants within ``PROJECTION_ACCEPT`` of
    their sums, that trajectory takes the closest iterate (its start included) of a pass
    with ``FOLD_GRADIENT`` instead (the energy left out when it is that close to
    dependent), so a projection never leaves the kept invariants further off than it
    found them. Each trajectory stops iterating once its own invariants hold, so a batch
    projects as its trajectories would one by one. The invariants hold to round-off or
    ``PROJECTION_ACCEPT``, else to that closest iterate's residual (at loose tolerances,
    e.g. a step of rtol 1e-5 on a moving soliton: mass and momentum from 2.6e-6 to
    1.7e-8 and 5.2e-9), and a left-out energy to its drift along the fold
    (measured on a soliton at M = 384, rtol 1e-7: 4.8e-12, 1.3e-10 and 3.3e-8 of the
    invariants against 1.8e-7, 2.3e-7 and 1.4e-6 without projection). Per trajectory;
    torch, so it runs on the device.
    """
    w, s = ctx.parseval, ctx.s
    values, (a2, cubic) = _invariants_hat(ctx, y, gradients=True)
    A = a2 @ ctx.gram_weights  # sum |y|^2 [1, k, k^2, k^2/2, k^3/2, k^4/4]
    B = (y.conj() * cubic).real @ ctx.invariant_weights  # sum Re(conj(y) C) [1, k, k^2/2]
    c2 = _mag2(cubic).sum(-1)
    g02, g12 = A[:, 3] - s * B[:, 0], A[:, 4] - s * B[:, 1]
    full = torch.stack(
        [
            torch.stack([A[:, 0], A[:, 1], g02], -1),
            torch.stack([A[:, 1], A[:, 2], g12], -1),
            torch.stack([g02, g12, A[:, 5] - 2 * s * B[:, 2] + c2], -1),
        ],
        dim=1,
    )
    gram = full[:, which][:, :, which]  # (n, c, c)
    diag = torch.diagonal(gram, dim1=1, dim2=2)
    d = torch.where(diag > 0, diag.clamp_min(torch.finfo(diag.dtype).tiny).rsqrt(), 0.0)
    scaled = gram * d[:, :, None] * d[:, None, :]
    # what "held" means: round-off of each invariant's own sums
    kinetic = w * A[:, 3]
    scale = torch.stack(
        [w * A[:, 0], _momentum_scale(ctx, a2), kinetic + (kinetic - values[:, 2]).abs()], -1
    )[:, which].clamp_min(torch.finfo(A.dtype).tiny)
    first = (target - values)[:, which].abs() / scale
    eye = torch.eye(len(which), dtype=gram.dtype, device=gram.device)

    def newton(threshold: float):
        """Iterates of the simplified Newton iteration with the constraints ``threshold``
        keeps, each trajectory frozen once its kept invariants hold to ``PROJECTION_RTOL``:
        yields (state, largest residual of the kept per trajectory)."""
        keep = _independent(scaled, threshold)
        kk = keep[:, :, None] * keep[:, None, :]
        inverse = torch.linalg.inv(scaled * kk + eye * (1 - kk)) * kk
        solve = inverse * d[:, :, None] * d[:, None, :] / (2 * w)  # mu = solve (target - g)
        residual = (first * keep).amax(-1)
        yield y, residual
        out, current, mu = y, values, torch.zeros_like(values)
        running = residual > PROJECTION_RTOL
        for _ in range(PROJECTION_ITERATIONS):
            active = running.to(mu.dtype)[:, None]
            if not bool(running.any()):
                return
            mu[:, which] += active * (solve @ (target - current)[:, which, None])[..., 0]
            coef = mu.clone()
            coef[:, 0] += 1  # y (1 + mu_M + mu_P k + mu_E k^2 / 2)
            out = torch.addcmul(
                coef @ ctx.invariant_weights.T * y, (-s * mu[:, 2:]).to(y.dtype), cubic
            )
            current, _ = _invariants_hat(ctx, out, gradients=False)
            previous = residual
            residual = ((target - current)[:, which].abs() / scale * keep).amax(-1)
            stalled = (residual <= PROJECTION_ACCEPT) & (residual * PROJECTION_STALL > previous)
            running = running & (residual > PROJECTION_RTOL) & ~stalled
            yield out, residual

    *_, (fine, fine_residual) = newton(DEPENDENT_GRADIENT)
    done = fine_residual <= PROJECTION_ACCEPT
    if bool(done.all()):
        return fine
    # per trajectory, the closest iterate (the start included) of a pass that leaves out
    # the constraints within FOLD_GRADIENT of the others' span
    best, best_residual = None, None
    for out, residual in newton(FOLD_GRADIENT):
        if best is None:
            best, best_residual = out, residual
        else:
            better = residual < best_residual
            best = torch.where(better[:, None], out, best)
            best_residual = torch.where(better, residual, best_residual)
    return torch.where(done[:, None], fine, best)


def _independent(scaled: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n, c) 1.0 where constraint i's unit gradient lies further than ``threshold`` from
    the span of the kept ones before it (scaled: the Gram matrix of the unit gradients)."""
    n, c, _ = scaled.shape
    keep = torch.zeros(n, c, dtype=scaled.dtype, device=scaled.device)
    eye = torch.eye(c, dtype=scaled.dtype, device=scaled.device)
    for i in range(c):  # the squared distance to the span of the kept before it
        kk = keep[:, :i, None] * keep[:, None, :i]
        sub = scaled[:, :i, :i] * kk + eye[:i, :i] * (1 - kk)
        g = scaled[:, :i, i] * keep[:, :i]
        rest = scaled[:, i, i] - (g * torch.linalg.solve(sub, g)).sum(-1) if i else scaled[:, 0, 0]
        keep[:, i] = (rest > threshold**2).to(keep.dtype)
    return keep


def _momentum_scale(ctx, a2: torch.Tensor) -> torch.Tensor:
    """w sum |k| |y|^2 per trajectory (a2 = |y|^2): the size of the momentum's terms, what
    its tolerances are relative to (a moving and a standing field alike)."""
    return ctx.parseval * (a2 @ ctx.k.abs())


#: a projection that moves a state by more than this many times rtol (relative to its
#: norm) is not correcting integration error: warned about once per chunk. Measured: at
#: most 13 rtol on the NLSE benchmark's solitons (M = 512, rtol 7e-8, where imposing the
#: energy halves the error), up to 550 rtol on a moving soliton under-resolved at M = 170
#: (L = 40, rtol 1e-9), where imposing the energy raised the error from 4.4e-11 (mass and
#: momentum alone) to 6.8e-8
PROJECTION_WARN_MOVE = 100.0


def _warn_large_move(before: torch.Tensor, after: torch.Tensor, rtol: float) -> bool:
    """Warn (and return True) if the projection from ``before`` to ``after`` moved a
    trajectory by more than PROJECTION_WARN_MOVE rtol of its norm."""
    norm = before.abs().norm(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)
    move = float(((after - before).abs().norm(dim=-1) / norm).max())
    if move <= PROJECTION_WARN_MOVE * rtol:
        return False
    warnings.warn(
        f"conserve: a projection moved the state by {move:.1e} of its norm ({move / rtol:.0f} "
        "x rtol), far more than the integration error it corrects: an imposed invariant is "
        "not one of this grid system (momentum, where aliasing changes it) or its gradient "
        "nearly depends on the others' (near a soliton, the energy's on mass and momentum) "
        "on a grid that does not resolve the field well. Refine the grid or drop that "
        "invariant from conserve",
        RuntimeWarning,
        stacklevel=2,
    )
    return True


def _check_momentum(
    ctx, y: torch.Tensor, rate: torch.Tensor, elapsed: float, rtol: float, moved: torch.Tensor
) -> torch.Tensor:
    """Raise if the grid system itself has changed the momentum by more than rtol of its
    scale (:func:`_momentum_scale`), summed over the projections so far: imposing it
    would then bias the solution. Returns the new sum (``moved``, per trajectory).

    dP/dt = 2 w sum k Re(conj(y) N) with N the nonlinear rate (the linear part does not
    change P); zero for the continuous equation, the aliasing of |psi|^2 psi otherwise.
    Each projection undoes the change since the last one, so the bias it leaves in the
    solution grows with their sum, not with one interval's: measured on a moving soliton
    under-resolved at M = 150 (L = 40, rtol 1e-9), every interval stayed below rtol while
    imposing mass and momentum left an error of 1.7e-9 against 7.9e-12 without, and with
    the energy too (near the fold, a biased momentum is amplified) 2.2e-7.
    """
    w = ctx.parseval
    change = (2 * w * elapsed) * ((y.conj() * rate).real @ ctx.k).abs()
    moved = moved + change
    scale = _momentum_scale(ctx, _mag2(y))
    bad = moved > rtol * scale
    if bool(bad.any()):
        worst = float((moved / scale.clamp_min(torch.finfo(scale.dtype).tiny)).max())
        raise NLSEInputError(
            f"conserve: momentum is not an invariant of the grid system for this field "
            f"(aliasing of |psi|^2 psi has changed it by {worst:.1e} of its scale so far, rtol "
            f"is {rtol:.1e}): drop 'momentum' from conserve or refine the grid"
        )
    return moved


def _difficulty(ctx, flat: np.ndarray, rtol: float, atol: float, state_norm: bool) -> np.ndarray:
    """Per trajectory, the inverse of the starting step that Hairer's heuristic proposes.

    Hairer, Norsett & Wanner, Solving ODEs I, II.4 (scipy's select_initial_step), on the
    interaction-picture rate f: d0 = ||y0||, d1 = ||f(y0)||, h0 = 0.01 d0 / d1,
    d2 = ||f(y0 + h0 f(y0)) at h0 - f(y0)|| / h0, h1 = (0.01 / max(d1, d2))^(1/8); the
    step min(100 h0, h1) is set by the rate's size and its change, i.e. by the field's
    amplitude and its spectral width, what limits the step of the whole integration.
    One extra rate evaluation of the batch, with a phase per trajectory.
    """
    y = torch.fft.fft(torch.as_tensor(flat, device=ctx.device, dtype=torch.complex128), dim=-1)
    f0 = torch.empty_like(y)
    ctx.rate(y, ctx.mask_i_s, f0)
    size = y.abs()
    if state_norm:
        size = size.amax(-1, keepdim=True)
    scale = atol + rtol * size

    def rms(z: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.mean((z.abs() / scale) ** 2, dim=-1))

    d0, d1 = rms(y), rms(f0)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    forward = torch.polar(torch.ones_like(y.real), -h0[:, None] * ctx.half_k2)  # exp(L h0)
    f1 = torch.empty_like(y)
    ctx.rate(forward * (y + h0[:, None] * f0), forward.conj() * ctx.mask_i_s, f1)
    d2 = rms(f1 - f0) / h0
    d12 = torch.maximum(d1, d2)
    h1 = torch.where(d12 <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / d12) ** (1.0 / 8.0))
    return (1.0 / torch.minimum(100 * h0, h1)).cpu().numpy()


class _Stopped(Exception):
    """A chunk was told to stop (``halt`` set: the batch's caller was interrupted)."""


def _solve_ip_chunk(
    ctx, flat, times, rtol, atol, max_steps, first_step, progress, state_norm, conserved=(),
    halt: threading.Event | None = None,
):
    device = ctx.device
    dtype = torch.complex128
    n, m = flat.shape
    n_stages = dop853.N_STAGES

    # the clock runs from 0 (the equation is autonomous): a clock kept at times[0] plus the
    # elapsed time loses the steps' low bits to the offset (times from 1e9, rtol 1e-10: the
    # result moved by 6.5e-8); the messages give the caller's times
    offset = float(times[0])
    times = np.asarray(times, dtype=np.float64) - offset
    y = torch.fft.fft(torch.as_tensor(flat, device=device, dtype=dtype), dim=-1)
    out = torch.empty(n, len(times), m, dtype=dtype, device=device)
    out[:, 0] = torch.as_tensor(flat, device=device)
    t = float(times[0])
    target = _invariants_hat(ctx, y, gradients=False)[0] if conserved else None
    since_projection, t_projected = 0, t
    momentum_moved = torch.zeros(n, dtype=torch.float64, device=device)
    warned = False
    # zeros, not uninitialised memory: the first step's blocks read written slots only
    # (STAGE_SLOTS), but a stray NaN in an unused slot would survive a zero coefficient
    K = torch.zeros(n_stages, n, m, dtype=dtype, device=device)
    slots = K.unbind(0)
    K_rows = [slots[i] for i in STAGE_SLOTS]  # by stage
    f0 = K_rows[0]  # the rate at the step's start is its first stage
    ctx.rate(y, ctx.mask_i_s, f0)
    if first_step is None:  # Hairer's initial step heuristic on the nonlinear rate
        scale = atol + rtol * y.abs()
        # the means in numpy: torch splits a large sum into per-thread partial sums, whose
        # last bits (so the first step, so every result) would follow the thread count
        d0 = float(np.sqrt(np.mean(((y.abs() / scale) ** 2).cpu().numpy())))
        d1 = float(np.sqrt(np.mean(((f0.abs() / scale) ** 2).cpu().numpy())))
        h = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    else:
        h = float(first_step)
    steps = 0
    # Every view the stage loop touches is made once here: a step is ~100 kernel calls,
    # and at the CPU chunk sizes the dispatcher's per-call cost of views and
    # allocations was about a fifth of the step.
    K_flat = torch.view_as_real(K).reshape(n_stages, -1)
    blocks = [None] + [(K_flat[lo:hi], c[None]) for lo, hi, c in ctx.stages[1:]]
    arg_row = torch.empty(1, n * m * 2, dtype=torch.float64, device=device)
    arg = torch.view_as_complex(arg_row.view(n, m, 2))  # y + h sum a K, a complex view
    staged = torch.empty_like(y)
    combo = torch.empty(3, n * m * 2, dtype=torch.float64, device=device)
    step_c, err5, err3 = (torch.view_as_complex(r.view(n, m, 2)) for r in combo.unbind(0))
    err5_rows, err3_rows = combo[1].view(n, 2 * m), combo[2].view(n, 2 * m)
    K12 = K_flat[:n_stages]

    y_row = torch.view_as_real(y).reshape(1, -1)
    # the dense output's stages 12-15 (allocated at the first step that needs them)
    extra: torch.Tensor | None = None
    t_end = float(times[-1])
    j = 1  # the next output
    while j < len(times):
        if halt is not None and halt.is_set():
            raise _Stopped()
        if steps >= max_steps:
            raise ConvergenceError(
                f"NLSE: {max_steps} steps reached at t={t + offset:.6g} of "
                f"{t_end + offset:.6g}; loosen rtol or raise max_steps"
            )
        steps += 1
        h_step = min(h, t_end - t)
        t_out = float(times[j])
        # an output inside the step: the step ends on it (the output is the state) when
        # that costs less than the dense output (LAND_FRACTION), or when the outputs are
        # to be projected states (conserve); else the step goes past it
        lands = t + h_step >= t_out and (
            bool(conserved) or j == len(times) - 1 or t_out - t >= LAND_FRACTION * h_step
        )
        if lands:
            h_step = t_out - t
        ph, back = ctx.phases(h_step)  # exp(L c h); mask i s exp(-L c h)
        ph_rows, back_rows = ph.unbind(0), back.unbind(0)
        _stages(ctx, blocks, y_row, arg_row, arg, staged, ph_rows, back_rows, K_rows, h_step)
        # the solution and both error estimates in one pass over the stages (DOP853's
        # B, E5 and E3 all use stages 0..11; the FSAL stage enters none of them)
        torch.mm(ctx.output_rows, K12, out=combo)
        v_new = torch.add(y, step_c, alpha=h_step)
        if state_norm:  # per trajectory: sums first, then one scale
            size2 = torch.maximum(_max_mag2(y), _max_mag2(v_new))
            scale2 = (atol + size2.sqrt_() * rtol) ** 2
            # sum |err|^2 over a trajectory's coefficients: the norm of its real view
            e5 = torch.linalg.vector_norm(err5_rows, dim=-1).square_().div_(scale2)
            e3 = torch.linalg.vector_norm(err3_rows, dim=-1).square_().div_(scale2)
        else:
            size2 = torch.maximum(_mag2(y), _mag2(v_new))
            scale2 = (atol + size2.sqrt_() * rtol) ** 2
            e5 = (_mag2(err5) / scale2).sum(-1)
            e3 = (_mag2(err3) / scale2).sum(-1)
        denom = e5 + 0.01 * e3
        norm = torch.where(
            denom == 0, torch.zeros_like(e5), h_step * e5 / torch.sqrt(denom * m)
        )
        error = float(norm.max())
        if not math.isfinite(error):  # an overflowed step (NaN or inf): reject it
            error = math.inf
        if error < 1.0:
            y_new = ph_rows[END] * v_new  # back to psi_hat at t + h
            t_new = t_out if lands else (t_end if h_step >= t_end - t else t + h_step)
            stop = j  # outputs j..stop-1 lie in (t, t_new]
            while not lands and stop < len(times) and float(times[stop]) <= t_new:
                stop += 1
            inner = slice(j, stop)
            if inner.stop > inner.start:
                if extra is None:
                    extra = torch.zeros(4, n, m, dtype=dtype, device=device)
                interpolate = _dense_output(ctx, y, y_new, K_flat, extra, ph_rows,
                                            back_rows, h_step)
                # a few outputs at a time: the temporaries stay a few states in size
                for lo in range(inner.start, inner.stop, DENSE_BATCH):
                    part = slice(lo, min(lo + DENSE_BATCH, inner.stop))
                    thetas = (times[part] - t) / h_step
                    dense = interpolate(thetas)
                    if conserved:  # the outputs on the invariants too
                        dense = _project(
                            ctx, dense.reshape(-1, m), target.repeat(len(thetas), 1), conserved
                        ).reshape(len(thetas), n, m)
                    out[:, part] = torch.fft.ifft(dense, dim=-1).transpose(0, 1)
            j = stop
            y = y_new
            since_projection += 1
            projected = conserved and (lands or since_projection >= PROJECTION_INTERVAL)
            if projected:
                before = y
                y = _project(ctx, y, target, conserved)
                since_projection = 0
                if not warned:
                    warned = _warn_large_move(before, y, rtol)
            if lands:
                out[:, j] = torch.fft.ifft(y, dim=-1)
                j += 1
            y_row = torch.view_as_real(y).reshape(1, -1)
            # the last stage, evaluated for accepted steps only: the rate at t + h
            # (no phase) is the next step's first stage (the stages are consumed)
            ctx.rate(y, ctx.mask_i_s, f0)
            t = t_new
            if projected and MOMENTUM in conserved:
                momentum_moved = _check_momentum(
                    ctx, y, f0, t - t_projected, rtol, momentum_moved
                )
                t_projected = t
            factor = (
                MAX_FACTOR if error == 0 else min(MAX_FACTOR, SAFETY * error**ERROR_EXPONENT)
            )
            # a step cut short to end on an output says nothing against the step before
            # it: it may raise h (else output times closer than h would pin h), not lower it
            h = max(h, h_step * factor) if lands and h_step < h else h_step * factor
            if progress is not None:
                progress((t - float(times[0])) / float(times[-1] - times[0]))
        else:
            h = h_step * max(MIN_FACTOR, SAFETY * error**ERROR_EXPONENT)  # inf: 0.2
            if not h >= 1e-14 * max(1.0, abs(t)):  # (a NaN step too: a non-finite rate)
                raise ConvergenceError(
                    f"NLSE: step size underflow at t={t + offset:.6g}"
                    + ("" if np.isfinite(h) else " (the step's error is not finite: the "
                       "field overflowed or the rate is NaN)"))
    return out.cpu().numpy()


def _stages(ctx, blocks, y_row, arg_row, arg, staged, ph_rows, back_rows, K_rows, h) -> None:
    """DOP853's stages 1..11 of a step into ``K_rows`` (stage 0, the rate at the step's
    start, is there already): stage s is the rate at y + h sum_j a_sj K_j taken to node
    c_s, one ``addmm`` over its block of slots (``blocks[s]``: slots, coefficients), the
    phase product and :meth:`_IPContext.rate`. ``arg`` is the complex view of ``arg_row``;
    every buffer is the caller's, made once (``benchmarks/nlse_dispatch.py`` times this)."""
    for st in range(1, len(blocks)):
        block, coef = blocks[st]
        torch.addmm(y_row, coef, block, alpha=h, out=arg_row)
        torch.mul(ph_rows[st], arg, out=staged)
        ctx.rate(staged, back_rows[st], K_rows[st])


def _dense_output(ctx, y, y_new, K_flat, extra, ph_rows, back_rows, h) -> Callable:
    """The interpolant of an accepted step from y at t to y_new: a function of thetas in
    (0, 1] giving psi_hat at t + theta h, shape (len(thetas), n, M). DOP853's 7th-order
    continuous extension (Hairer, Norsett & Wanner II.6; scipy's ``Dop853DenseOutput``),
    applied to the step's interaction-picture state v and mapped back with exp(L theta h).

    Three extra stages (13-15) and the rate at the step's end in the step's picture (12)
    are evaluated into ``extra`` once; the stored stages (``K_flat``, by slot) are read,
    not changed. The interpolant v(theta) = y + h sum_s w_s(theta) K_s is linear in the
    stages, so the thetas of one call are one matrix product.
    """
    n, m = y.shape
    extra_flat = torch.view_as_real(extra).reshape(len(extra), -1)
    ctx.rate(y_new, back_rows[END], extra[0])  # stage 12: the step's end, c = 1
    y_row = torch.view_as_real(y).reshape(1, -1)
    arg_row = torch.empty_like(y_row)
    arg = torch.view_as_complex(arg_row.view(n, m, 2))
    for i, (slot_coef, extra_coef) in enumerate(ctx.extra_stages, start=1):
        torch.addmm(y_row, slot_coef, K_flat, alpha=h, out=arg_row)
        arg_row.addmm_(extra_coef, extra_flat[:i], alpha=h)
        ctx.rate(ph_rows[END + i] * arg, back_rows[END + i], extra[i])

    def interpolate(thetas: np.ndarray) -> torch.Tensor:
        x = np.asarray(thetas, dtype=np.float64)[:, None]
        # scipy's nested evaluation of the F_i, written out: x, x(1-x), x^2(1-x), ...
        weights = np.hstack(
            [x ** ((i + 2) // 2) * (1 - x) ** ((i + 1) // 2) for i in range(7)]
        )
        coef = weights @ ctx.interpolant  # (outputs, 16) over the stages
        rows = torch.addmm(y_row, ctx.by_slot(coef), K_flat, alpha=h)
        rows.addmm_(torch.as_tensor(coef[:, END:], device=y.device), extra_flat, alpha=h)
        v = torch.view_as_complex(rows.view(len(x), n, m, 2))
        theta = torch.as_tensor(x, device=y.device)[:, None]
        return torch.polar(torch.ones_like(v.real[:, :1]), -(theta * h) * ctx.half_k2) * v

    return interpolate


def _derivative(psi: np.ndarray, length: float) -> np.ndarray:
    k = wavenumbers(psi.shape[-1], length)
    return np.fft.ifft(1j * k * np.fft.fft(psi, axis=-1), axis=-1)


def invariants(psi: np.ndarray, *, length: float, focusing: bool = True) -> dict[str, np.ndarray]:
    """Mass, momentum and energy of psi (..., M) with spectral derivatives.

    M = int |psi|^2, P = int Im(conj(psi) psi_x), E = int (|psi_x|^2 / 2 - s |psi|^4 / 2).
    (A soliton eta sech(eta (x - v t)) e^{i v x ...}: M = 2 eta, P = 2 eta v,
    E = eta v^2 - eta^3 / 3.)
    The derivative multiplies by numpy's ``fftfreq`` wavenumbers, as the solver does: on
    an even grid the Nyquist mode counts as -k_N (e^{i k_N x} has P = -k_N M).
    """
    length = _check_length(length)
    _check_focusing(focusing)
    psi = _check_field(psi, "invariants")
    # in double precision whatever the field's (float16 sums of |psi|^2 overflowed at 256)
    psi = psi.astype(np.complex128 if np.iscomplexobj(psi) else np.float64, copy=False)
    dx = length / psi.shape[-1]
    s = 1.0 if focusing else -1.0
    dpsi = _derivative(psi, length)
    density = np.abs(psi) ** 2
    return {
        "mass": density.sum(-1) * dx,
        "momentum": np.imag(np.conj(psi) * dpsi).sum(-1) * dx,
        "energy": (0.5 * np.abs(dpsi) ** 2 - 0.5 * s * density**2).sum(-1) * dx,
    }


def energy_scale(psi: np.ndarray, *, length: float) -> np.ndarray:
    """int |psi_x|^2 / 2 + int |psi|^4 / 2 of psi (..., M): the size of the two terms
    whose difference is the focusing energy (their sum, the defocusing energy).

    What an energy drift is measured against: a focusing soliton's energy
    eta v^2 - eta^3 / 3 vanishes at v^2 = eta^2 / 3 while the terms do not, so a drift
    over |E(0)| would measure how nearly they cancel, not how well the integrator
    conserves. Same spectral derivative and quadrature as :func:`invariants`.
    """
    length = _check_length(length)
    psi = _check_field(psi, "energy_scale")
    psi = psi.astype(np.complex128 if np.iscomplexobj(psi) else np.float64, copy=False)
    dpsi = _derivative(psi, length)
    return 0.5 * (np.abs(dpsi) ** 2 + np.abs(psi) ** 4).sum(-1) * (length / psi.shape[-1])


def _check_field(psi: Any, what: str) -> np.ndarray:
    """``psi`` as a finite numeric array (..., M) with M >= 1, or :class:`NLSEInputError`."""
    given, psi = type(psi).__name__, np.asarray(psi)
    if psi.dtype.kind not in "iufc" or psi.ndim < 1 or psi.shape[-1] < 1:
        raise NLSEInputError(f"{what}: psi must be a numeric array of shape (..., M) with "
                             f"M >= 1 grid points, got {given} of dtype {psi.dtype}, shape "
                             f"{psi.shape}")
    if not np.all(np.isfinite(psi)):
        raise NLSEInputError(f"{what}: psi contains NaN or infinite values; they are not "
                             "defined for a field that is not finite")
    return psi


def _entropies_of(p: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    total = p.sum(-1, keepdims=True)
    empty = total[..., 0] == 0  # psi = 0: no distribution, every entropy NaN
    p = p / np.where(total > 0, total, 1.0)
    kept = np.where(p >= 1e-15, p, 0.0)
    plogp = np.where(kept > 0, kept * np.log(np.where(kept > 0, kept, 1.0)), 0.0)
    with np.errstate(divide="ignore"):  # log 0 of an empty row: NaN below
        out = {
            "shannon": -plogp.sum(-1),
            "renyi_0": np.log((kept > 0).sum(-1)),
            "renyi_2": -np.log((kept**2).sum(-1)),
            "renyi_inf": -np.log(kept.max(-1)),
            "tsallis_0.5": (np.sqrt(kept).sum(-1) - 1.0) / 0.5,
            "tsallis_2": 1.0 - (kept**2).sum(-1),
        }
    return {prefix + k: np.where(empty, np.nan, v) for k, v in out.items()}


def entropies(psi: np.ndarray) -> dict[str, np.ndarray]:
    """Entropies of p_j = |psi_j|^2 / sum |psi|^2 (p < 1e-15 dropped, natural log).

    Shannon, Renyi (alpha = 0, 2, inf), Tsallis (q = 0.5, 2), and the Shannon entropy of
    the normalised power spectrum |psi_hat|^2 (``spectral_shannon``). A field that is
    zero at some time has no distribution there: NaN; NaN or inf in psi is refused.
    """
    # in double precision, as invariants: float16's 3 digits moved renyi_0 from 5.04 to
    # 4.32 (the probabilities under 1e-15 it drops)
    psi = _check_field(psi, "entropies")
    psi = psi.astype(np.result_type(psi.dtype, np.float64), copy=False)
    # the entropies do not depend on the field's scale: |psi|^2 of 1e200 overflowed and of
    # 1e-170 underflowed to zero (a "zero" field) before this division
    peak = np.abs(psi).max(-1, keepdims=True) if psi.size else np.ones(psi.shape[:-1] + (1,))
    psi = psi / np.where(peak > 0, peak, 1.0)
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
    length: float | None = None,
) -> np.ndarray:
    """Exact focusing soliton eta sech(eta (x - x0 - v t)) exp(i (v x + (eta^2 - v^2) t/2)).

    With ``length`` the position x - x0 - v t is wrapped into [-L/2, L/2), so a soliton
    crossing the boundary of the periodic domain is followed, its phase with it; it is
    then the periodic problem's solution wherever eta L is large enough for sech's tails
    to vanish at the boundary.
    """
    shift = x - x0 - velocity * t
    if length is not None:
        shift = (shift + length / 2) % length - length / 2
    # the phase v x where the soliton is: x0 + v t + shift differs from x by a multiple of
    # L, so for v a multiple of 2 pi / L this is exp(i v x); for another v it is the
    # soliton's own phase carried across the boundary (the periodic problem's solution
    # wherever sech's tails vanish at the boundary)
    where = x0 + velocity * t + shift
    return (
        eta
        / np.cosh(eta * shift)
        * np.exp(1j * (velocity * where + 0.5 * (eta**2 - velocity**2) * t + phase))
    )


__all__ = ["NLSEInputError", "entropies", "grid", "invariants", "soliton", "solve", "wavenumbers"]


from pdeforge.solvers import nlse_cases as cases  # noqa: E402, F401  (cases use grid, soliton)
