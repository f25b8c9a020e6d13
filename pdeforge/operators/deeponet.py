"""DeepONet and POD-DeepONet.

Lu, Jin, Pang, Zhang and Karniadakis, "Learning nonlinear operators via DeepONet",
Nature Machine Intelligence 2021; POD-DeepONet from Lu et al., CMAME 2022. For each output
channel c,

    G(u)(y)_c = sum_{i=1}^{p} b_{c,i}(u(x_1), ..., u(x_m)) * t_{c,i}(y) + b0_c,

with the branch net b reading the input function at m fixed sensors and the trunk net t
(an MLP whose last layer is also activated) reading a query coordinate y in [0, 1]^d. In
POD-DeepONet the trunk is replaced by the first p POD modes of the training outputs and
b0 by their mean, both fixed after :meth:`DeepONet.fit_pod`.

The input field is resampled (linear interpolation, endpoints aligned) to the sensor grid,
so a model trained at one resolution reads inputs at any other. The output is the
"Cartesian product" evaluation on the input's grid (grid in, grid out), or on arbitrary
query points with ``forward(x, points=...)``. DeepXDE has DeepONet but is not a dependency
and has no CNN branch on a grid interface, hence this implementation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pdeforge.operators.base import (
    ACTIVATIONS,
    Operator,
    OperatorConfigError,
    OperatorInputError,
    as_int,
    as_tuple,
    layer_for,
    records_config,
    unit_grid,
)


def mlp(sizes: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _widths(value: Any, name: str) -> list[int]:
    """Layer widths as a list (a bare 128 was a TypeError deep in the constructor); its
    entries are positive integers already (:func:`records_config` checks them)."""
    if not isinstance(value, list | tuple):
        raise OperatorConfigError(f"{name} must be a list of layer widths, e.g. [128, 128], "
                                  f"got {value!r}")
    return list(value)


def _interp_mode(dim: int) -> str:
    return "linear" if dim == 1 else "bilinear"


def sample_grid_field(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``field`` (C, *shape) on [0,1]^d at ``points`` (Q, d) -> (C, Q)."""
    dim = points.shape[-1]
    coords = points * 2 - 1  # grid_sample's [-1, 1], align_corners=True puts nodes at ends
    if dim == 1:
        # 1D as a 2D image of height 1: (1, C, 1, n) sampled at (x, 0).
        grid = torch.stack([coords[:, 0], torch.zeros_like(coords[:, 0])], dim=-1)
        out = nn.functional.grid_sample(
            field[None, :, None, :], grid[None, None], mode="bilinear", align_corners=True
        )
    else:
        # grid_sample's last coordinate indexes the first spatial axis: reverse (x, y).
        grid = coords.flip(-1)
        out = nn.functional.grid_sample(
            field[None], grid[None, None], mode="bilinear", align_corners=True
        )
    return out[0, :, 0, :]


class CNNBranch(nn.Module):
    """Stride-2 convolutions, adaptive pooling to 4 points per axis, then an MLP."""

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        hidden: list[int],
        out: int,
        dim: int,
        activation: str,
    ) -> None:
        super().__init__()
        conv, pool = layer_for("Conv", dim), layer_for("AdaptiveAvgPool", dim)
        layers: list[nn.Module] = []
        previous = in_channels
        for c in channels:
            layers += [conv(previous, c, 3, stride=2, padding=1), ACTIVATIONS[activation]()]
            previous = c
        layers.append(pool(4))
        self.features = nn.Sequential(*layers)
        self.head = mlp([previous * 4**dim, *hidden, out], activation, last_activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class DeepONet(Operator):
    """DeepONet with an MLP or CNN branch, an MLP or POD trunk, several outputs.

    Args:
        in_channels, out_channels, dim: as for every operator (dim 1 or 2).
        branch: "mlp" (on the flattened sensor values, the original DeepONet) or "cnn"
            (small CNN, for 2D fields); None picks mlp in 1D and cnn in 2D.
        sensors: sensor grid points per axis (the input is resampled to it); None: 128 in
            1D, 64 in 2D.
        branch_layers: hidden widths of the branch MLP (after the CNN features for "cnn").
        cnn_channels: channels of the stride-2 convolutions of the CNN branch.
        trunk_layers: hidden widths of the trunk MLP.
        basis: p, the number of basis functions per output channel (ignored with POD).
        activation: "gelu", "relu", "tanh" or "silu".
        pod_modes: if set, POD-DeepONet with this many modes; call :meth:`fit_pod` on
            training outputs before use.
        pod_shape: grid of the training outputs the POD basis lives on (int or per axis);
            required with ``pod_modes``.
    """

    name = "deeponet"

    @records_config
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 2,
        branch: str | None = None,
        sensors: int | list[int] | None = None,
        branch_layers: list[int] = (128, 128),
        cnn_channels: list[int] = (16, 32, 64),
        trunk_layers: list[int] = (128, 128, 128),
        basis: int = 64,
        activation: str = "gelu",
        pod_modes: int | None = None,
        pod_shape: int | list[int] | None = None,
    ) -> None:
        super().__init__()
        self._init_io(in_channels, out_channels, dim)
        branch = branch or ("mlp" if dim == 1 else "cnn")
        if branch not in ("mlp", "cnn"):
            raise OperatorConfigError(f"deeponet: branch must be 'mlp' or 'cnn', got {branch!r}")
        if activation not in ACTIVATIONS:
            raise OperatorConfigError(
                f"deeponet: activation {activation!r} is not one of {tuple(ACTIVATIONS)}"
            )
        branch_layers, cnn_channels, trunk_layers = (
            _widths(value, f"deeponet: {name}") for value, name in (
                (branch_layers, "branch_layers"), (cnn_channels, "cnn_channels"),
                (trunk_layers, "trunk_layers")))
        default_sensors = 128 if dim == 1 else 64
        self.sensors = as_tuple(default_sensors if sensors is None else sensors, dim,
                                "deeponet: sensors (points per axis)", least=2)
        self.pod = pod_modes is not None
        if self.pod:
            self.p = as_int(pod_modes, "deeponet: pod_modes")
            if pod_shape is None:
                raise OperatorConfigError(
                    "deeponet: pod_modes needs pod_shape, the grid of the training outputs"
                )
            self.pod_shape = as_tuple(pod_shape, dim, "deeponet: pod_shape")
        else:
            self.p = as_int(basis, "deeponet: basis")
        n_out = self.p * out_channels
        if branch == "mlp":
            n_in = in_channels * math.prod(self.sensors)
            self.branch = mlp([n_in, *branch_layers, n_out], activation, last_activation=False)
        else:
            self.branch = CNNBranch(
                in_channels, list(cnn_channels), list(branch_layers), n_out, dim, activation
            )
        if self.pod:
            self.trunk = None
            self.register_buffer("pod_basis", torch.zeros(out_channels, self.p, *self.pod_shape))
            self.register_buffer("pod_mean", torch.zeros(out_channels, *self.pod_shape))
            self.register_buffer("pod_fitted", torch.zeros((), dtype=torch.bool))
            self.bias = None
        else:
            self.trunk = mlp([dim, *trunk_layers, n_out], activation, last_activation=True)
            self.bias = nn.Parameter(torch.zeros(out_channels))

    queries_points = True

    @property
    def fixed_grid(self) -> bool:
        return self.pod

    @property
    def positions(self) -> str | None:
        """The trunk's query points (``forward(x, points=...)``); POD's basis is fixed on
        the training grid."""
        return None if self.pod else "endpoints"

    # -- POD ------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_pod(self, outputs: torch.Tensor) -> torch.Tensor:
        """Set the POD trunk from training outputs (N, out_channels, *pod_shape).

        Per channel, the outputs minus their mean are decomposed by the method of
        snapshots (eigenvectors of the N x N Gram matrix, so the work space is N^2, not
        N x grid); the first ``pod_modes`` modes, scaled to unit mean square on the grid,
        become the basis. Returns the fraction of variance they capture per channel.
        ``outputs`` may be a tensor or a numpy array. A fit that fails (too few
        directions in a channel, non-finite values) leaves the model as it was.
        """
        if not self.pod:
            raise OperatorConfigError("fit_pod needs a POD-DeepONet: build with pod_modes=...")
        if not isinstance(outputs, torch.Tensor):
            try:
                outputs = torch.as_tensor(outputs)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise OperatorInputError(
                    f"fit_pod expects a tensor or numpy array of training outputs, got "
                    f"{type(outputs).__name__} ({exc})"
                ) from None
        if outputs.is_complex() or outputs.dtype == torch.bool:
            raise OperatorInputError(
                f"fit_pod expects real training outputs, got dtype {outputs.dtype}"
            )
        expected = (self.out_channels, *self.pod_shape)
        if outputs.ndim != self.dim + 2 or tuple(outputs.shape[1:]) != expected:
            raise OperatorInputError(
                f"fit_pod expects outputs of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(outputs.shape)}"
            )
        n = outputs.shape[0]
        if n < self.p:
            raise OperatorInputError(f"fit_pod needs at least pod_modes={self.p} samples, got {n}")
        flat = outputs.to(self.pod_basis.device).reshape(n, self.out_channels, -1)
        finite = torch.isfinite(flat).flatten(1).all(1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            raise OperatorInputError(
                f"fit_pod: the training outputs of {len(bad)} sample(s) hold NaN or infinite "
                f"values (first: {bad[:5]}); drop or repair them before fitting the POD basis"
            )
        points = flat.shape[-1]
        captured = []
        means = []
        bases = []
        for c in range(self.out_channels):
            snapshots = flat[:, c].double()
            mean = snapshots.mean(0)
            snapshots = snapshots - mean
            gram = snapshots @ snapshots.T  # (N, N)
            eigenvalues, eigenvectors = torch.linalg.eigh(gram)
            eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
            top = eigenvalues[: self.p]
            if (top <= eigenvalues[0] * 1e-12).any():
                raise OperatorInputError(
                    f"fit_pod: the training outputs of channel {c} span fewer than "
                    f"pod_modes={self.p} directions; use fewer pod_modes"
                )
            modes = (snapshots.T @ eigenvectors[:, : self.p]) / top.sqrt()  # orthonormal
            bases.append((modes.T * math.sqrt(points)).reshape(self.p, *self.pod_shape))
            total = eigenvalues.sum()
            captured.append(float(top.sum() / total) if total > 0 else 1.0)
            means.append(mean)
        # every channel fitted: only now is the model changed
        self.pod_basis.copy_(torch.stack(bases))
        self.pod_mean.copy_(torch.stack(means).reshape(self.out_channels, *self.pod_shape))
        self.pod_fitted.fill_(True)
        return torch.tensor(captured)

    # -- evaluation -----------------------------------------------------------------------
    def _trunk_at(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Basis (out, p, Q) and bias/mean (out, Q) at points (Q, d)."""
        if self.trunk is not None:
            t = self.trunk(points).reshape(points.shape[0], self.out_channels, self.p)
            return t.permute(1, 2, 0), self.bias[:, None].expand(-1, points.shape[0])
        if not bool(self.pod_fitted):
            raise OperatorInputError(
                "POD-DeepONet has no basis yet: call model.fit_pod(training_outputs) first"
            )
        basis = sample_grid_field(self.pod_basis.flatten(0, 1), points)
        mean = sample_grid_field(self.pod_mean, points)
        return basis.reshape(self.out_channels, self.p, -1), mean

    def forward(self, x: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluate on the input's grid, (B, C_out, *spatial), or at ``points``.

        ``points`` are coordinates in [0, 1]^d, shape (Q, d) shared by the batch, giving
        (B, C_out, Q).
        """
        self.check_input(x, min_size=2)
        shape = tuple(x.shape[2:])
        sensed = x
        if shape != self.sensors:
            sensed = nn.functional.interpolate(
                x, size=self.sensors, mode=_interp_mode(self.dim), align_corners=True
            )
        coefficients = self.branch(
            sensed.flatten(1) if isinstance(self.branch, nn.Sequential) else sensed
        )
        coefficients = coefficients.reshape(x.shape[0], self.out_channels, self.p)
        if points is None:
            grid = unit_grid(shape, device=x.device, dtype=x.dtype)
            query = grid.reshape(self.dim, -1).T
        else:
            query = self._check_points(points, x)
        basis, offset = self._trunk_at(query.to(x.dtype))
        out = torch.einsum("bcp,cpq->bcq", coefficients, basis) + offset[None]
        return out.reshape(x.shape[0], self.out_channels, *shape) if points is None else out

    def _check_points(self, points: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != self.dim:
            got = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
            raise OperatorInputError(
                f"deeponet: points must be a tensor of shape (n_points, {self.dim}), got {got}"
            )
        if not torch.isfinite(points).all():
            raise OperatorInputError("deeponet: points contain NaN or infinite values")
        if self.pod and ((points < 0) | (points > 1)).any():
            raise OperatorInputError(
                "POD-DeepONet can only evaluate inside its training grid: points must lie "
                "in [0, 1]^d"
            )
        return points.to(x.device)
