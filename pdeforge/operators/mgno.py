"""MgNO: neural operator whose linear layers are multigrid V-cycles.

He, Liu and Xu, "MgNO: Efficient Parameterization of Linear Operators via Multigrid",
ICLR 2024. Each layer is

    u <- act( MgConv(u) + W u + b ),

where ``W`` is a 1x1 convolution, ``b`` a bias (a constant per channel, or optionally a
learned function of space) and ``MgConv`` one linear V-cycle with learnable operators:

* level 0, first step: u = S_0 f; every further smoothing step u <- u + S(f - A u), with
  3x3 convolutions A (u-space -> f-space) and S (f-space -> u-space), no bias;
* restriction to level l+1: f <- R f, u <- Pi u, learnable 3x3 convolutions of stride 2;
* on the way up: u_l <- u_l + P u_{l+1}, P a 4x4 transposed convolution of stride 2
  (padded in the layer's padding mode),
  optionally followed by post-smoothing steps.

Parameters are per level and per layer (not shared). There is no lifting network: the
first layer's f-space is the input itself; a 1x1 convolution without bias is the head.
Boundary conditions enter through the padding mode (zeros for Dirichlet, circular for
periodic, reflect for Neumann-like). Odd grids work: a stride-2 convolution maps n to
ceil(n/2) and the prolongation's 2*ceil(n/2) points are cropped to n.

No library ships MgNO (neuraloperator does not), hence this implementation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pdeforge.operators.base import (
    Operator,
    OperatorConfigError,
    OperatorInputError,
    as_int,
    crop,
    layer_for,
    make_activation,
    records_config,
)

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


class Prolong(nn.Module):
    """Coarse-to-fine transfer: 4-point transposed convolution of stride 2 (n -> 2n).

    With zero padding this is ``ConvTranspose(k=4, s=2, p=1)``. With another padding mode
    the coarse grid is first extended by one point in that mode (circular: periodic), the
    unpadded transposed convolution applied, and the 2n points aligned with the plain
    version kept (offset 3). With circular padding, a grid divisible by 2^(levels-1) and
    shifts by multiples of it, the model is then translation-equivariant (the reference
    code always zero-pads here). On a fine level of odd size the reference Darcy model
    prolongs with a 3-point kernel (n -> 2n - 1); here the 4-point one is cropped to the
    fine grid, which holds the 3-point kernel as the case of a zero fourth tap (a
    review found the two equal, max difference 0.0, with that tap zeroed on 85^2 and
    211^2), with (4^d - 3^d) c^2 more weights a level.
    """

    def __init__(self, channels: int, dim: int, padding_mode: str) -> None:
        super().__init__()
        self.padding_mode = padding_mode
        padding = 1 if padding_mode == "zeros" else 0
        self.conv = layer_for("ConvTranspose", dim)(
            channels, channels, 4, stride=2, padding=padding, bias=False
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros":
            return self.conv(u)
        sizes = u.shape[2:]
        u = nn.functional.pad(u, [1] * (2 * len(sizes)), mode=self.padding_mode)
        out = self.conv(u)
        index = (Ellipsis,) + tuple(slice(3, 3 + 2 * n) for n in sizes)
        return out[index]


class MgConv(nn.Module):
    """One linear V-cycle ``f -> u`` (see the module docstring for the equations).

    Args:
        f_channels: channels of the right-hand side f (the layer's input).
        u_channels: channels of the solution u (the layer's output).
        smoothing: pre-smoothing steps per level, finest first (``smoothing[0] >= 1``).
        post_smoothing: post-smoothing steps per level on the way up: one entry for each
            level but the coarsest (which has no upward pass).
        dim: 1 or 2 spatial dimensions.
        padding_mode: padding of the 3x3 convolutions.
    """

    def __init__(
        self,
        f_channels: int,
        u_channels: int,
        smoothing: Sequence[int],
        post_smoothing: Sequence[int],
        dim: int,
        padding_mode: str,
        residual_restriction: bool = False,
    ) -> None:
        super().__init__()
        conv = layer_for("Conv", dim)

        def A() -> nn.Module:  # u-space -> f-space
            return conv(u_channels, f_channels, 3, padding=1, bias=False, padding_mode=padding_mode)

        def S() -> nn.Module:  # f-space -> u-space
            return conv(f_channels, u_channels, 3, padding=1, bias=False, padding_mode=padding_mode)

        levels = len(smoothing)
        if len(post_smoothing) != levels - 1:
            raise OperatorConfigError(
                f"mgno: {len(post_smoothing)} post-smoothing entries for {levels} levels; "
                f"give one for each level but the coarsest ({levels - 1})")
        self.pre = nn.ModuleList()
        for level in range(levels):
            steps = nn.ModuleList()
            for step in range(smoothing[level]):
                first = level == 0 and step == 0
                # The very first step has no previous u: u = S f, so it has no A.
                steps.append(nn.ModuleDict({"S": S()} if first else {"A": A(), "S": S()}))
            self.pre.append(steps)
        # (the coarsest level had post-smoothing weights too, which no upward pass used:
        # never trained, counted as parameters, and a DDP run stopped on them)
        self.post = nn.ModuleList(
            nn.ModuleList(nn.ModuleDict({"A": A(), "S": S()}) for _ in range(steps))
            for steps in post_smoothing
        )
        self.restrict_u = nn.ModuleList(
            conv(
                u_channels,
                u_channels,
                3,
                stride=2,
                padding=1,
                bias=False,
                padding_mode=padding_mode,
            )
            for _ in range(levels - 1)
        )
        self.restrict_f = nn.ModuleList(
            conv(
                f_channels,
                f_channels,
                3,
                stride=2,
                padding=1,
                bias=False,
                padding_mode=padding_mode,
            )
            for _ in range(levels - 1)
        )
        self.restrict_residual = (
            nn.ModuleList(A() for _ in range(levels - 1)) if residual_restriction else None
        )
        self.prolong = nn.ModuleList(
            Prolong(u_channels, dim, padding_mode) for _ in range(levels - 1)
        )

    @staticmethod
    def _smooth(steps: nn.ModuleList, u: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
        for step in steps:
            u = step["S"](f) if u is None else u + step["S"](f - step["A"](u))
        assert u is not None
        return u

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        us: list[torch.Tensor] = []
        fs: list[torch.Tensor] = []
        u: torch.Tensor | None = None
        for level, steps in enumerate(self.pre):
            if level > 0:
                if self.restrict_residual is not None:
                    f = f - self.restrict_residual[level - 1](u)
                f = self.restrict_f[level - 1](f)
                u = self.restrict_u[level - 1](u)
            u = self._smooth(steps, u, f)
            us.append(u)
            fs.append(f)
        u = us[-1]
        for level in range(len(us) - 2, -1, -1):
            fine = us[level]
            u = fine + crop(self.prolong[level](u), fine.shape[2:])
            if len(self.post[level]):
                u = self._smooth(self.post[level], u, fs[level])
        return u


class MgNO(Operator):
    """Multigrid neural operator (He, Liu and Xu, ICLR 2024).

    Args:
        in_channels: input channels (the first layer's f-space).
        out_channels: output channels (1x1 head without bias).
        dim: 1 or 2.
        channels: channels of u in every layer.
        n_layers: number of MgConv layers.
        levels: grid levels of each V-cycle (the coarsest has ``n / 2**(levels-1)`` points).
        smoothing: pre-smoothing steps per level, an int for every level or a list of
            ``levels`` ints; None means one step per level and two on the coarsest (paper).
        post_smoothing: post-smoothing steps on the way up, 0 in the paper: an int for every
            level but the coarsest (it has no upward pass), or a list of ``levels - 1`` ints
            (a list of ``levels``, as earlier versions took, has its last entry ignored).
        padding_mode: "zeros" (Dirichlet), "circular" (periodic), "reflect" (Neumann-like)
            or "replicate".
        activation: "gelu", "relu", "tanh" or "silu".
        bias: "constant" (per channel, the 1x1 convolution's bias) or "function" (adds a
            learned field stored on a ``bias_resolution`` grid, interpolated to the input
            grid so the model stays resolution independent). The reference Darcy code and
            its 0.57 M parameters use the constant; the function bias is opt-in.
        bias_resolution: points per axis of the bias function.
        residual_restriction: restrict the residual, f <- R(f - A u), with one more 3x3
            convolution A per level (the reference code's ``use_res``); off in the paper's
            Darcy configuration.

    The defaults are the paper's Darcy-rough configuration (4 layers, 24 channels, 6 levels,
    smoothing 1,1,1,1,1,2): 572,661 parameters for one input and one output channel.
    """

    name = "mgno"

    @records_config
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 2,
        channels: int = 24,
        n_layers: int = 4,
        levels: int = 6,
        smoothing: int | list[int] | None = None,
        post_smoothing: int | list[int] = 0,
        padding_mode: str = "zeros",
        activation: str = "gelu",
        bias: str = "constant",
        bias_resolution: int = 16,
        residual_restriction: bool = False,
    ) -> None:
        super().__init__()
        self._init_io(in_channels, out_channels, dim)
        channels, n_layers = as_int(channels, "mgno: channels"), as_int(n_layers, "mgno: n_layers")
        levels = as_int(levels, "mgno: levels")
        bias_resolution = as_int(bias_resolution, "mgno: bias_resolution")
        if padding_mode not in PADDING_MODES:
            raise OperatorConfigError(
                f"mgno: padding_mode {padding_mode!r} is not one of {PADDING_MODES}"
            )
        if not isinstance(residual_restriction, bool):
            raise OperatorConfigError(
                f"mgno: residual_restriction must be True or False, got {residual_restriction!r}"
            )
        if bias not in ("constant", "function"):
            raise OperatorConfigError(f"mgno: bias must be 'constant' or 'function', got {bias!r}")
        pre = self._per_level(smoothing, levels, "smoothing")
        post = self._post_levels(post_smoothing, levels)
        if pre[0] < 1:
            raise OperatorConfigError("mgno: smoothing[0] must be >= 1 (the cycle starts u = S f)")
        self.levels = levels
        self.padding_mode = padding_mode
        self.convs = nn.ModuleList()
        self.linears = nn.ModuleList()
        conv = layer_for("Conv", dim)
        for layer in range(n_layers):
            f_channels = in_channels if layer == 0 else channels
            self.convs.append(
                MgConv(f_channels, channels, pre, post, dim, padding_mode, residual_restriction)
            )
            self.linears.append(conv(f_channels, channels, 1, bias=True))
        if bias == "function":
            self.bias_fields = nn.ParameterList(
                nn.Parameter(torch.zeros(1, channels, *([bias_resolution] * dim)))
                for _ in range(n_layers)
            )
        else:
            self.bias_fields = None
        self.act = make_activation("mgno", activation)
        self.head = conv(channels, out_channels, 1, bias=False)

    @staticmethod
    def _per_level(value: int | list[int] | None, levels: int, label: str) -> list[int]:
        if value is None:
            return [1] * (levels - 1) + [2] if levels > 1 else [2]
        if not isinstance(value, list | tuple):
            return [as_int(value, f"mgno: {label} (steps on every level)", least=0)] * levels
        values = [as_int(v, f"mgno: every entry of {label}", least=0) for v in value]
        if len(values) != levels:
            raise OperatorConfigError(
                f"mgno: {label} has {len(values)} entries but levels={levels}; give one per level"
            )
        return values

    @staticmethod
    def _post_levels(value: int | list[int], levels: int) -> list[int]:
        """Post-smoothing steps of each level with an upward pass (all but the coarsest)."""
        if not isinstance(value, list | tuple):
            return [as_int(value, "mgno: post_smoothing (steps on every level)", least=0)] * (
                levels - 1)
        values = [as_int(v, "mgno: every entry of post_smoothing", least=0) for v in value]
        if len(values) == levels:
            # one per level, as configs and checkpoints from before gave it: the
            # coarsest's entry was never used (it has no upward pass)
            values = values[:-1]
        if len(values) != levels - 1:
            raise OperatorConfigError(
                f"mgno: post_smoothing has {len(values)} entries but levels={levels}: give "
                f"one for each level but the coarsest ({levels - 1}; the coarsest has no "
                "upward pass to smooth on)"
            )
        return values

    def upgrade_state_dict(self, state: dict, prefix: str = "") -> list[str]:
        """Checkpoints from before held the coarsest level's post-smoothing weights
        (``convs.<i>.post.<levels - 1>``), which no upward pass used: dropped."""
        unused = re.compile(re.escape(prefix) + rf"convs\.\d+\.post\.{self.levels - 1}\.")
        dropped = [k for k in state if unused.match(k)]
        for key in dropped:
            del state[key]
        return dropped

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        self.upgrade_state_dict(state_dict, prefix)  # (load_state_dict of an old one)
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def min_size(self) -> int:
        """Smallest grid: reflect padding needs two points on the coarsest level."""
        return 2 ** (self.levels - 1) + 1 if self.padding_mode == "reflect" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if min(x.shape[2:]) < self.min_size:
            raise self._too_small(x)
        mode = "linear" if self.dim == 1 else "bilinear"
        u = x
        for layer, (conv, linear) in enumerate(zip(self.convs, self.linears, strict=True)):
            v = conv(u) + linear(u)
            if self.bias_fields is not None:
                v = v + nn.functional.interpolate(
                    self.bias_fields[layer], size=x.shape[2:], mode=mode, align_corners=True
                )
            u = self.act(v)
        return self.head(u)

    def _too_small(self, x: torch.Tensor) -> Exception:
        return OperatorInputError(
            f"mgno with levels={self.levels} and reflect padding needs at least "
            f"{self.min_size} points per axis, "
            f"got shape {tuple(x.shape)}; use fewer levels or a finer grid"
        )
