"""What every pdeforge operator shares: recorded constructor kwargs and input checks.

A grid operator maps ``x: (B, C_in, *spatial) -> (B, C_out, *spatial)`` with
``len(spatial) == dim``. Its constructor arguments, defaults included, are recorded in
``model.config`` (JSON-compatible) so that ``pdeforge.operators.build(model.name,
**model.config)`` rebuilds the same architecture and a checkpoint can store them next to
the weights.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from pdeforge.errors import PdeforgeError


class OperatorInputError(PdeforgeError, ValueError):
    """A tensor given to an operator has the wrong shape, channels or values."""


class OperatorConfigError(PdeforgeError, ValueError):
    """An operator was constructed with an invalid or inconsistent option."""


F = TypeVar("F", bound=Callable[..., None])


def plain(value: Any) -> Any:
    """numpy scalars and arrays (a sweep's or an array's entries) as Python numbers and
    lists, recursively through lists and tuples; everything else unchanged."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | list):
        return type(value)(plain(v) for v in value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise OperatorConfigError(
        f"constructor argument value {value!r} ({type(value).__name__}) cannot be recorded "
        "in model.config; pass numbers, strings, booleans or lists of them"
    )


#: constructor arguments that are sizes or counts: positive integers (or lists of them)
POSITIVE = {"in_channels", "out_channels", "dim", "n_modes", "hidden_channels", "n_layers",
            "width", "n_stages",
            "num_tokens", "num_basis", "heads", "patch_size", "channels", "basis",
            "bias_resolution", "branch_layers", "cnn_channels", "trunk_layers", "pod_modes"}


def _positive_ints(model: str, key: str, value: Any) -> Any:
    """A size or count (or a list of them) as ints >= 1 (:func:`as_int`), or an
    :class:`OperatorConfigError` naming the operator and the argument."""
    try:
        if isinstance(value, list | tuple):
            return type(value)(as_int(v, key) for v in value)
        return as_int(value, key)
    except OperatorConfigError:
        raise OperatorConfigError(
            f"{model}: {key} must be a positive integer (or a list of them), got {value!r}"
        ) from None


def records_config(init: F) -> F:
    """Decorate ``__init__`` so that ``self.config`` holds every argument, defaults included,
    and the sizes and counts given (:data:`POSITIVE`) are positive integers: a zero-width
    layer built and predicted zeros; an integral float (64.0, from a YAML or JSON sweep) or
    a numpy number is taken as an int. Checked here, not only in ``operators.build``, so
    that a class constructed directly is checked alike."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise OperatorConfigError(f"{type(self).__name__}: {exc}") from None
        for key, value in bound.arguments.items():
            if key != "self":
                value = plain(value)
                if key in POSITIVE and value is not None:
                    value = _positive_ints(getattr(self, "name", "") or type(self).__name__,
                                           key, value)
                bound.arguments[key] = value
        init(*bound.args, **bound.kwargs)
        bound.apply_defaults()
        self.config = {k: _jsonable(v) for k, v in bound.arguments.items() if k != "self"}

    return wrapper  # type: ignore[return-value]


def as_int(value: Any, name: str, least: int = 1) -> int:
    """``value`` as an int >= ``least``: an integer (a float only if it is integral, 64.0),
    never a bool or a string; :class:`OperatorConfigError` naming ``name`` otherwise."""
    value = plain(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise OperatorConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


def as_tuple(value: int | Sequence[int], dim: int, name: str, least: int = 1) -> tuple[int, ...]:
    """Broadcast an int to ``dim`` entries or check a sequence has ``dim`` entries, each
    an integer >= ``least`` (:func:`as_int`)."""
    value = plain(value)
    if not isinstance(value, tuple | list):
        return (as_int(value, name, least),) * dim
    values = tuple(as_int(v, f"every entry of {name}", least) for v in value)
    if len(values) != dim:
        raise OperatorConfigError(f"{name} has {len(values)} entries, expected {dim} (dim={dim})")
    return values


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is finite."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


class Operator(nn.Module):
    """Base class: ``name``, ``dim``, channel counts and the input check of every operator."""

    name: ClassVar[str] = ""
    dims: ClassVar[tuple[int, ...]] = (1, 2)
    #: whether the model runs with float16/bfloat16 weights; False where its layers call
    #: torch.fft, which has no half precision on a CPU (and on a GPU powers of two only)
    half_weights: ClassVar[bool] = True
    config: dict[str, Any]

    #: the convention of the positions the operator reads of a grid's points, which its
    #: ``forward`` can be given (FNO and LSM: ``coordinates=``, one tensor per axis;
    #: DeepONet: ``points=``, its trunk's query points): "endpoints" (0, ..., 1 from the
    #: first point to the last, :func:`unit_grid`), "periodic" (i / n) or None (none)
    @property
    def positions(self) -> str | None:
        return None

    #: whether ``forward(x, points=...)`` evaluates the outputs at query points (given in
    #: the :attr:`positions` convention) from inputs on the training grid (DeepONet: its
    #: branch reads fixed sensor positions of that grid); the others take ``coordinates=``
    queries_points: ClassVar[bool] = False

    @property
    def fixed_grid(self) -> bool:
        """Whether the outputs live on the training grid only (POD-DeepONet: its basis),
        so another grid is always resampled."""
        return False

    def _init_io(self, in_channels: int, out_channels: int, dim: int) -> None:
        if dim not in self.dims:
            from pdeforge.operators import registry  # the registry imports this module

            others = [n for n in registry.available() if dim in registry.get(n).dims]
            raise OperatorConfigError(
                f"{self.name} supports dim in {self.dims}, got dim={dim}"
                + (f"; for {dim}D data use {' or '.join(others)}" if others else "")
            )
        for label, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OperatorConfigError(f"{label} must be a positive integer, got {value!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dim = dim

    def check_input(self, x: torch.Tensor, min_size: int = 1) -> None:
        """Raise :class:`OperatorInputError` naming expected and given shapes."""
        if not isinstance(x, torch.Tensor):
            raise OperatorInputError(
                f"{self.name} expects a torch.Tensor of shape (batch, {self.in_channels}, "
                f"{', '.join(['n'] * self.dim)}), got {type(x).__name__}"
            )
        expected = f"(batch, {self.in_channels}, {', '.join(['n'] * self.dim)})"
        if x.ndim != self.dim + 2:
            raise OperatorInputError(
                f"{self.name} (dim={self.dim}) expects input of shape {expected}, got "
                f"{tuple(x.shape)} with {x.ndim} dimensions; add a batch axis with "
                "x[None] or a channel axis with x[:, None] if one is missing"
            )
        if x.shape[1] != self.in_channels:
            raise OperatorInputError(
                f"{self.name} expects {self.in_channels} input channel(s), shape {expected}; "
                f"got {x.shape[1]} channel(s) in shape {tuple(x.shape)}"
            )
        small = [n for n in x.shape[2:] if n < min_size]
        if small:
            raise OperatorInputError(
                f"{self.name} needs at least {min_size} points per spatial axis, got shape "
                f"{tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise OperatorInputError(
                f"{self.name} expects a floating-point tensor, got dtype {x.dtype}; "
                "convert with x.float()"
            )
        weight = next((p for p in self.parameters() if p.is_floating_point()), None)
        autocast = torch.is_autocast_enabled(x.device.type)
        if (weight is not None and weight.dtype in (torch.float16, torch.bfloat16)
                and not self.half_weights and x.device.type == "cpu"):
            raise OperatorInputError(
                f"{self.name} has {weight.dtype} weights, but torch.fft takes no half "
                "precision on a CPU: keep the model in float32 (model.float()) and use "
                "torch.autocast for mixed precision"
            )
        if weight is not None and weight.dtype != x.dtype and not autocast:
            half = x.dtype in (torch.float16, torch.bfloat16)
            model_fix = (
                f"run it under torch.autocast for mixed precision (its FFTs take no {x.dtype} "
                "weights)" if half and not self.half_weights
                else f"the model with model.to({x.dtype})"
            )
            raise OperatorInputError(
                f"{self.name} has {weight.dtype} weights but the input is {x.dtype}; cast the "
                f"input with x.to({weight.dtype}) or {model_fix}"
            )

    def empty_output(self, x: torch.Tensor) -> torch.Tensor:
        """The output of an empty batch, (0, C_out, *spatial), for models whose layers
        reshape with -1 and cannot take one."""
        return x.new_zeros((0, self.out_channels, *x.shape[2:]))

    def count_parameters(self) -> int:
        """Trainable real numbers: a complex weight counts twice (as neuraloperator counts)."""
        return sum(real_numel(p) for p in self.parameters() if p.requires_grad)

    def upgrade_state_dict(self, state: dict[str, Any], prefix: str = "") -> list[str]:
        """Bring a state dict saved by an earlier pdeforge to this version's names, in
        place (the operator's entries are those under ``prefix``), and return the keys it
        dropped; by default nothing changed. Training's checkpoint loading calls it before
        it compares the weights."""
        return []


def real_numel(tensor: torch.Tensor) -> int:
    """Number of real values a tensor holds (2 per complex entry)."""
    return tensor.numel() * (2 if tensor.is_complex() else 1)


def unit_grid(shape: Sequence[int], *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Coordinates of a tensor grid on [0, 1]^d (endpoints included), shape (d, *shape)."""
    return axes_grid([torch.linspace(0.0, 1.0, n, device=device, dtype=dtype) for n in shape])


def axes_grid(axes: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensor grid of per-axis coordinates (1D tensors), shape (d, *sizes)."""
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def check_coordinates(model: str, coordinates: Sequence[torch.Tensor], x: torch.Tensor
                      ) -> torch.Tensor:
    """``coordinates`` (one 1D tensor per grid axis of ``x``, in the unit convention of
    :func:`unit_grid`: the training grid's points at 0, ..., 1) as a grid (d, *x's grid);
    :class:`OperatorInputError` when they do not fit ``x``."""
    shape = tuple(x.shape[2:])
    sizes = tuple(len(c) if isinstance(c, torch.Tensor) and c.ndim == 1 else -1
                  for c in coordinates)
    if sizes != shape:
        raise OperatorInputError(
            f"{model}: coordinates must be one 1D tensor per grid axis with the input's "
            f"sizes {shape}, got sizes {sizes}")
    if not all(torch.isfinite(c).all() for c in coordinates):
        raise OperatorInputError(f"{model}: coordinates contain NaN or infinite values")
    return axes_grid([c.to(device=x.device, dtype=x.dtype) for c in coordinates])


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


def make_activation(model: str, name: str) -> nn.Module:
    """A new activation module by name; a clear error for an unknown one."""
    if name not in ACTIVATIONS:
        raise OperatorConfigError(
            f"{model}: activation {name!r} is not one of {tuple(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


def layer_for(kind: str, dim: int) -> type[nn.Module]:
    """The torch layer of a kind for ``dim`` spatial axes, e.g. ("Conv", 2) -> nn.Conv2d."""
    return getattr(nn, f"{kind}{dim}d")


def pad_to_multiple(x: torch.Tensor, multiple: int | Sequence[int]):
    """Pad the trailing spatial axes at their high end up to a multiple by replicating the
    edge values; return (x, sizes), ``sizes`` being the original sizes for :func:`crop`.
    """
    spatial = tuple(x.shape[2:])
    multiples = as_tuple(multiple, len(spatial), "multiple")
    extra = [(-n) % m for n, m in zip(spatial, multiples, strict=True)]
    if any(extra):
        pads: list[int] = []
        for e in reversed(extra):
            pads += [0, e]
        x = nn.functional.pad(x, pads, mode="replicate")
    return x, spatial


def crop(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Crop the trailing spatial axes back to ``sizes`` (inverse of :func:`pad_to_multiple`)."""
    index = (Ellipsis,) + tuple(slice(0, n) for n in sizes)
    return x[index]
