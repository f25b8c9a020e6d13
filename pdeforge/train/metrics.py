"""Field-error metrics of operator learning, accumulated over batches (and DDP ranks).

For predictions p and targets y of shape (B, C, *grid), per sample:

* ``rel_l2`` = ||p - y||_2 / ||y||_2 over all channels and grid points;
* ``rel_h1``: the same in the discrete H1 norm, ||u||^2 + sum_d ||D_d u||^2 over all
  channels and grid points, D_d second-order central differences with the grid's
  physical step (``set_grid``; the unit domain until then), wrapping on periodic axes
  and one-sided at the ends of the others. Written here rather than taken from
  neuraloperator's ``H1Loss``, which differences periodically with the step of a unit
  domain whatever the grid (5.6x too high on an NLSE domain of length 50), averages the
  channels' ratios where ``rel_l2`` pools them, and adds 1e-8 to the norm of the target
  in its units (a field of 1e-9 scored 0.009 for a 27 % error);
* ``rmse`` = sqrt(mean((p - y)^2)); ``nrmse`` = per-channel ||p_c - y_c|| / ||y_c||,
  averaged over channels (PDEBench's nRMSE);
* ``max_error`` = max |p - y| over everything seen;
* ``frmse_low|mid|high``: PDEBench's Fourier-band RMSE. The squared amplitudes of the
  error's Fourier coefficients are summed over shells floor(|k|) of the non-negative
  wavenumbers (|k| < n/2 for the smallest grid size n), averaged over samples, square
  rooted, divided by the number of grid points and multiplied by the domain's size
  (prod L_d, L_d = n_d h_d, (n_d - 1) h_d on a vertex axis, with the steps of
  ``set_grid``; 1 until then), as PDEBench's
  ``metric_func``; the bands are the means over shells [0, 4), [4, 12) and [12, n/2).

Every metric but ``max_error`` is averaged over samples. The state is a torchmetrics
``Metric``, so Lightning synchronises it across processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric

BANDS = (("frmse_low", 0, 4), ("frmse_mid", 4, 12), ("frmse_high", 12, None))
METRIC_NAMES = ("rel_l2", "rel_h1", "rmse", "nrmse", "max_error") + tuple(b[0] for b in BANDS)
MAX_SHELLS = 4096


def relative_l2_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = (pred - target).flatten(1).norm(dim=1)
    return diff / target.flatten(1).norm(dim=1).clamp_min(torch.finfo(target.dtype).tiny)


def h1_squared(u: torch.Tensor, steps: Sequence[float], periodic: Sequence[bool],
               start: int = 1) -> torch.Tensor:
    """The discrete squared H1 norm ||u||^2 + sum_d ||D_d u||^2 over the axes from
    ``start`` on (see the module's docstring); ``steps`` and ``periodic`` for the last
    ``len(steps)`` axes. ``start=2`` gives one norm per sample and channel."""
    first = u.ndim - len(steps)
    total = u.flatten(start).pow(2).sum(-1)
    for offset, (h, wraps) in enumerate(zip(steps, periodic, strict=True)):
        axis = first + offset
        if u.shape[axis] < 2:
            continue  # one point: no difference along the axis
        if wraps:
            du = (torch.roll(u, -1, axis) - torch.roll(u, 1, axis)) / (2.0 * h)
        else:
            du = torch.gradient(u, spacing=float(h), dim=axis)[0]
        total = total + du.flatten(start).pow(2).sum(-1)
    return total


def relative_h1_per_sample(pred: torch.Tensor, target: torch.Tensor, steps: Sequence[float],
                           periodic: Sequence[bool]) -> torch.Tensor:
    """||p - y||_H1 / ||y||_H1 per sample (see the module's docstring); ``steps`` and
    ``periodic`` for the last ``len(steps)`` axes."""
    return (h1_squared(pred - target, steps, periodic).sqrt()
            / h1_squared(target, steps, periodic).sqrt().clamp_min(
                torch.finfo(target.dtype).tiny))


def unit_steps(sizes: Sequence[int]) -> list[float]:
    """The steps of a unit domain, 1 / n per axis: the grid assumed before ``set_grid``."""
    return [1.0 / n for n in sizes]


def grid_steps(coords: Mapping[str, Any], grid_dims: Sequence[str]) -> list[float] | None:
    """The physical step of each grid axis from its (uniform) coordinate values, or None
    when one is missing."""
    steps = []
    for d in grid_dims:
        values = coords.get(d)
        if values is None or len(values) < 2:
            return None
        steps.append(abs(float(values[-1]) - float(values[0])) / (len(values) - 1))
    return steps


def fourier_shell_power(error: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-channel sum over samples of |FFT(error)|^2 binned in shells; (C, n_shells)."""
    spatial = error.shape[-dim:]
    half = [n // 2 for n in spatial]
    n_shells = min(half)
    coeffs = torch.fft.fftn(error.double(), dim=tuple(range(-dim, 0)))
    index = tuple(slice(0, h) for h in half)
    power = coeffs[(Ellipsis, *index)].abs() ** 2  # quadrant of non-negative wavenumbers
    grids = torch.meshgrid(*[torch.arange(h, dtype=torch.float64) for h in half], indexing="ij")
    shell = torch.floor(torch.sqrt(sum(g**2 for g in grids))).long().to(error.device)
    keep = shell < n_shells
    flat = power.sum(0).flatten(1)[:, keep.flatten()]  # (C, kept points), summed over samples
    out = torch.zeros(flat.shape[0], n_shells, dtype=torch.float64, device=error.device)
    out.index_add_(1, shell.flatten()[keep.flatten()], flat)
    return out


class OperatorMetrics(Metric):
    """Accumulates the metrics named in :data:`METRIC_NAMES` (see module docstring)."""

    full_state_update = False

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.channels, self.dim = channels, dim
        self.steps: list[float] | None = None  # None: a unit domain, 1 / n per axis
        self.periodic = [False] * dim
        self.vertex = [False] * dim
        self.sizes: list[int] = []
        for name in ("rel_l2", "rel_h1", "rmse", "nrmse", "n", "zero_targets"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "max_error", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="max"
        )
        self.add_state(
            "shells",
            default=torch.zeros(channels, MAX_SHELLS, dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.add_state(
            "n_shells", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="max"
        )
        self.add_state("points", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")

    def set_grid(self, steps: Sequence[float] | None, periodic: Sequence[bool] = (),
                 vertex: Sequence[bool] = ()) -> None:
        """The physical step of each grid axis (None: a unit domain), which axes are
        periodic (``rel_h1`` wraps them) and which are vertex grids (fRMSE's domain is
        (n - 1) h there, n h on the others)."""
        if steps is not None and (len(steps) != self.dim or not all(
                math.isfinite(h) and h > 0 for h in steps)):
            raise ValueError(f"steps must be {self.dim} positive numbers, got {steps!r}")
        self.steps = None if steps is None else [float(h) for h in steps]
        self.periodic = [bool(p) for p in periodic] or [False] * self.dim
        self.vertex = [bool(v) for v in vertex] or [False] * self.dim

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape or pred.shape[1] != self.channels:
            raise ValueError(
                f"metrics expect predictions and targets of the same shape (B, {self.channels}, "
                f"...), got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        pred, target = pred.detach().double(), target.detach().double()
        b = pred.shape[0]
        err = pred - target
        self.rel_l2 += relative_l2_per_sample(pred, target).sum()
        # samples whose target is zero everywhere: their relative errors are not defined
        # (divided by the smallest float, they swamp the mean); evaluate warns about them
        self.zero_targets += (target.flatten(1).abs().amax(1) == 0).sum()
        steps = self.steps or unit_steps(pred.shape[-self.dim:])
        self.rel_h1 += relative_h1_per_sample(pred, target, steps, self.periodic).sum()
        self.rmse += err.flatten(1).pow(2).mean(1).sqrt().sum()
        per_channel = err.flatten(2).norm(dim=2) / target.flatten(2).norm(dim=2).clamp_min(1e-300)
        self.nrmse += per_channel.mean(1).sum()
        self.max_error = torch.maximum(self.max_error, err.abs().max())
        power = fourier_shell_power(err, self.dim)
        points = float(math.prod(err.shape[-self.dim :]))
        if self.n > 0 and float(self.points) != points:
            raise ValueError("metrics were given batches on different grids; reset between grids")
        n_shells = min(power.shape[1], MAX_SHELLS)
        self.shells[:, :n_shells] += power[:, :n_shells]
        self.n_shells = torch.maximum(
            self.n_shells,
            torch.tensor(float(n_shells), dtype=torch.float64, device=self.n_shells.device),
        )
        self.points = torch.tensor(points, dtype=torch.float64, device=self.points.device)
        self.sizes = list(err.shape[-self.dim:])
        self.n += b

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n.clamp_min(1)
        out = {
            "rel_l2": self.rel_l2 / n,
            "rel_h1": self.rel_h1 / n,
            "rmse": self.rmse / n,
            "nrmse": self.nrmse / n,
            "max_error": self.max_error,
        }
        n_shells = int(self.n_shells)
        # PDEBench's normalisation: / (number of points) x (domain size), the domain
        # n_d h_d along each axis (a unit domain until set_grid gives the steps)
        if self.steps is not None and len(self.sizes) == self.dim:
            lengths = [(n - 1 if v else n) * h
                       for n, h, v in zip(self.sizes, self.steps, self.vertex, strict=True)]
            scale = math.prod(lengths) / self.points.clamp_min(1)
        else:
            scale = 1.0 / self.points.clamp_min(1)
        amplitude = torch.sqrt(self.shells[:, :n_shells] / n) * scale
        for name, lo, hi in BANDS:
            band = amplitude[:, lo:hi]
            out[name] = (
                band.mean() if band.numel() else torch.tensor(float("nan"), dtype=torch.float64)
            )
        return out
