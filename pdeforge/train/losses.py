"""Training losses: relative L2 and relative H1 error per sample and output channel.

For predictions p and targets y of shape (B, C, *grid),

    loss = mean over b, c of ||p_bc - y_bc||_X / max(||y_bc||_X, floor_c),
    floor_c = RELATIVE_FLOOR * max over the batch of ||y_b'c||_X,

with X the discrete L2 norm (``"l2"``) or the discrete H1 norm of
:mod:`pdeforge.train.metrics` (``"h1"``: ||u||^2 + sum_d ||D_d u||^2, central differences
with the data's physical steps, wrapped on periodic axes only). Each channel is its own
relative error, so outputs in different units weigh alike (as neuraloperator's LpLoss and
H1Loss do; the ``rel_l2``/``rel_h1`` metrics pool the channels instead). A channel that
is zero in the whole batch has no relative error: its floor is 1, and its error counts
absolutely, in the data's units.

Written here rather than taken from neuraloperator because its losses (2.0) add an
absolute 1e-8 to the target's norm in the data's units (a field of 1e-9 on 64^2 points
was weighed by that constant, the loss off 15 %), and its H1Loss differences periodically
with the step of a unit domain whatever the grid: the wrap across a non-periodic
domain's walls counts as a jump, and the derivative term weighs as on [0, 1) on every
domain. This loss is the same for data stored in any units (a scale factor cancels) and
its "h1" is the ``rel_h1`` the metrics report, channel by channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pdeforge.train.metrics import h1_squared, unit_steps

LOSSES = ("l2", "h1")
# a target channel under this fraction of the batch's largest norm of that channel is
# divided by that floor: the relative error of a zero (or nearly zero) field is not
# defined, and dividing by its own norm would weigh it without bound. Such a sample still
# weighs up to 1 / RELATIVE_FLOOR times an ordinary one (a zero target predicted 10 % of
# the typical norm off: 100 against 0.1) until its prediction is that close to zero, as
# a relative loss asks; at 1e-6 that took predictions to float32's rounding level.
RELATIVE_FLOOR = 1e-3


class RelativeLoss(torch.nn.Module):
    """Mean relative L2 or H1 error over samples and output channels (module docstring).

    Args:
        kind: "l2" or "h1".
        dim: number of grid axes (the last ``dim`` axes of the tensors).
    """

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"the loss must be one of {LOSSES}, got {kind!r}")
        self.kind, self.dim = kind, dim
        self.steps: list[float] | None = None  # None: a unit domain, 1 / n per axis
        self.periodic = [False] * dim

    def set_grid(self, steps: Sequence[float] | None, periodic: Sequence[bool] = ()) -> None:
        """The physical step of each grid axis (None: a unit domain) and which axes are
        periodic ("h1" differences across their ends); "l2" does not use them."""
        self.steps = None if steps is None else [float(h) for h in steps]
        self.periodic = [bool(p) for p in periodic] or [False] * self.dim

    def norms(self, u: torch.Tensor) -> torch.Tensor:
        """||u_bc||_X per sample and channel, shape (B, C)."""
        if self.kind == "l2":
            squared = u.flatten(2).pow(2).sum(2)
        else:
            squared = h1_squared(u, self.steps or unit_steps(u.shape[-self.dim:]),
                                 self.periodic, start=2)
        # sqrt's derivative at 0 is infinite: where p = y exactly it gave NaN gradients
        return squared.clamp_min(torch.finfo(u.dtype).tiny).sqrt()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != self.dim + 2:
            raise ValueError(
                f"the loss expects predictions and targets of the same shape (B, C, "
                f"{self.dim} grid axes), got {tuple(pred.shape)} and {tuple(target.shape)}")
        # each channel divided by its largest |target| in the batch first: the ratios are
        # the same, and squares of fields stored in very small or large units neither
        # underflow nor overflow (float32: 1e-25 and 1e18 read 0 and NaN)
        axes = (0, *range(2, target.ndim))
        largest = target.detach().abs().amax(dim=axes, keepdim=True)
        unit = torch.where(largest > 0, largest, torch.ones_like(largest))
        pred, target = pred / unit, target / unit
        denominator = self.norms(target)
        typical = denominator.detach().amax(0)
        zero = largest.flatten() == 0  # a channel zero in the whole batch
        floor = torch.where(zero, torch.ones_like(typical), RELATIVE_FLOOR * typical)
        return (self.norms(pred - target) / torch.maximum(denominator, floor)).mean()
