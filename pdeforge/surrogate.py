"""``Surrogate``: a trained operator as a fast stand-in for the reference solver.

>>> from pdeforge import Surrogate
>>> s = Surrogate.load("runs/pdeforge/version_0/checkpoints/last.ckpt")
>>> pred = s.predict(coefficient)          # numpy / torch / xarray, one sample or a batch
>>> report = s.compare(coefficient)        # runs the reference solver on the same inputs

Everything comes from the checkpoint alone (loaded with ``torch.load(weights_only=True)``,
so a tampered file cannot run code): the architecture, the weights, the normalisers (the
model takes and returns physical units), the variable names, units and grid coordinates,
and the generation config that names the reference solver.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from pdeforge.datasets.format import (
    CONVERGED,
    SAMPLE,
    SPATIAL_DIMS,
    UNKNOWN_SEED,
    attr_value,
)
from pdeforge.datasets.grid import (
    GRID_ATTR,
    PERIODIC,
    axis_extent,
    axis_kind,
    axis_points,
    is_cell_centred,  # noqa: F401  (re-exported: pdeforge.surrogate.is_cell_centred)
)
from pdeforge.datasets.readers import increasing, open_dataset
from pdeforge.datasets.torch_dataset import channel_blocks
from pdeforge.errors import PdeforgeError, output_directory
from pdeforge.operators.base import OperatorInputError
from pdeforge.train.checkpoint import load_module
from pdeforge.train.data import channel_axes_mismatch, units_mismatch


class SurrogateInputError(PdeforgeError, ValueError):
    """Inputs given to a surrogate have the wrong names, shape or values."""


def _kind(values: np.ndarray, kind: str | bool | None) -> str | None:
    """``kind`` as a grid kind: True is periodic (the older flag), None or False the
    guess from the points (:func:`pdeforge.datasets.grid.axis_kind`)."""
    if kind is True:
        return PERIODIC
    return kind or axis_kind(values)


def resample_coordinate(values: np.ndarray, size: int, kind: str | bool | None = None
                        ) -> np.ndarray:
    """Coordinates of the grid of kind ``kind`` (:mod:`pdeforge.datasets.grid`; guessed
    from the points when None) with ``size`` points on the same domain: cell centres of
    the same cells' span, the same end points (vertices), or, on a periodic grid
    x_0 + i L / n, the points x_0 + i L / size of the same period."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return np.linspace(values[0], values[0], size)
    return axis_points(_kind(values, kind), *_extent(values, kind), size)


def _extent(values: np.ndarray, kind: str | bool | None) -> tuple[float, float]:
    """The domain a uniform grid of kind ``kind`` covers (see :func:`_kind`)."""
    return axis_extent(values, _kind(values, kind))


def _linear_weights(source: np.ndarray, target: np.ndarray, period: float | None = None):
    """Linear interpolation from increasing points ``source`` to ``target``, as
    (lower index, upper index, weight of the upper) per target point, or (None, None,
    None) where the points are the same. ``period``: the axis is periodic with that period
    (the interval after the last point wraps to the first); else targets beyond the ends
    take the end values. Weights within 1e-9 of 0 or 1 are snapped, so that target points
    at source points copy their values exactly."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if len(source) == len(target) and np.array_equal(source, target):
        return None, None, None
    n = len(source)
    if n == 1:
        zero = np.zeros(len(target), dtype=np.int64)
        return zero, zero, np.zeros(len(target))
    if period is not None:
        offsets = source - source[0]
        position = np.mod(target - source[0], period)
        lower = np.clip(np.searchsorted(offsets, position, side="right") - 1, 0, n - 1)
        right = np.where(lower + 1 < n, offsets[np.minimum(lower + 1, n - 1)], period)
        weight = (position - offsets[lower]) / (right - offsets[lower])
        upper = (lower + 1) % n
    else:
        position = np.clip(target, source[0], source[-1])
        lower = np.clip(np.searchsorted(source, position, side="right") - 1, 0, n - 2)
        upper = lower + 1
        weight = (position - source[lower]) / (source[upper] - source[lower])
    weight = np.clip(weight, 0.0, 1.0)
    weight[weight < 1e-9] = 0.0
    weight[weight > 1 - 1e-9] = 1.0
    return lower.astype(np.int64), upper.astype(np.int64), weight


@dataclass
class Comparison:
    """Surrogate against the reference solver on the same inputs (per-sample arrays too)."""

    rel_l2: float
    max_error: float
    solver_seconds: float
    surrogate_seconds: float
    speedup: float
    n_samples: int
    device: str
    per_sample_rel_l2: list[float] = field(default_factory=list)
    solution: xr.Dataset | None = field(default=None, repr=False)
    prediction: xr.Dataset | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The numbers, without the two datasets (not copied)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("solution", "prediction")
        }


def domain_mismatch(trained: dict, given: dict, dims: list[str],
                    periodic: list[str] | tuple[str, ...] = (),
                    kinds: dict[str, tuple[str | None, str | None]] | None = None
                    ) -> str | None:
    """What puts a grid with coordinates ``given`` on another domain than the training
    grid's (``trained``), or None: the model sees grid points, not coordinates, and
    would predict as on its own domain (a change of units, a shifted or scaled domain, a
    part of it). The domains the two grids cover (:func:`_extent`: ``kinds`` maps a dim
    to the kinds of the training grid and of the given one, ``periodic`` dims cover a
    period, others are guessed) are compared within one training grid step, which a
    training grid subsampled from a finer cell grid by an even stride (no longer centred
    in its own cells) needs."""
    for d in dims:
        if d not in trained or d not in given:
            continue
        train = np.asarray(trained[d], dtype=np.float64)
        other = np.asarray(given[d], dtype=np.float64)
        if len(other) < 2 or len(train) < 2:
            continue
        step = float(np.max(np.abs(np.diff(train))))
        # each grid's kind: given (the training's recorded, the file's declared), else
        # periodic as listed, else guessed from its points
        kind_t, kind = (kinds or {}).get(d) or (None, None)
        if d in periodic:
            kind_t, kind = kind_t or PERIODIC, kind or PERIODIC
        (lo_t, hi_t), (lo, hi) = _extent(train, kind_t), _extent(other, kind)
        if abs(lo - lo_t) <= 1.01 * step and abs(hi - hi_t) <= 1.01 * step:
            continue
        return (
            f"{d} coordinates ({other[0]:.4g} ... {other[-1]:.4g}) do not span the training "
            f"grid's domain ({train[0]:.4g} ... {train[-1]:.4g}): the model sees grid "
            "points, not coordinates, and predicts as on its own domain; check the units "
            "and the domain of the inputs"
        )
    return None


def points_mismatch(trained: dict, given: dict, dims: list[str]) -> str | None:
    """What puts a grid of as many points as the training grid on other points (a vertex
    grid for a cell-centred one: 0, 1/15, ... against 1/32, 3/32, ...), or None: the model
    takes them for its own points. Points within 1 % of a training step are the same."""
    for d in dims:
        if d not in trained or d not in given:
            continue
        train = np.asarray(trained[d], dtype=np.float64)
        other = np.asarray(given[d], dtype=np.float64)
        if len(other) != len(train) or len(train) < 2:
            continue
        step = float(np.max(np.abs(np.diff(train))))
        if np.max(np.abs(other - train)) <= 0.01 * step:
            continue
        return (
            f"{d} points ({other[0]:.4g}, {other[1]:.4g} ... {other[-1]:.4g}) are not the "
            f"training grid's ({train[0]:.4g}, {train[1]:.4g} ... {train[-1]:.4g}), though as "
            "many: the model takes them for its own points (another grid scheme, e.g. "
            "vertices for cell centres); give data on the training grid's points"
        )
    return None


def grid_mode(grid: tuple[int, ...], training_grid: tuple[int, ...], resample: bool) -> str:
    """How a model trained on ``training_grid`` predicts on ``grid``: on its training grid,
    resampled to it and back (``resample``), or zero-shot on another grid."""
    if tuple(grid) == tuple(training_grid):
        return "training grid"
    return "resampled" if resample else "zero-shot"


class Surrogate:
    """A trained pdeforge operator with its data conventions (see module docstring)."""

    def __init__(self, module: torch.nn.Module, checkpoint: dict, path: str, device: str) -> None:
        self.module = module
        self.path = path
        self.device = device
        self._meta = checkpoint.get("pdeforge", {})
        self.data_info: dict[str, Any] = dict(self._meta.get("data", {}))
        self.inputs: list[str] = list(self.data_info.get("inputs", []))
        self.outputs: list[str] = list(self.data_info.get("outputs", []))
        self.grid_dims: list[str] = list(self.data_info.get("grid_dims", []))
        self.coords = {d: np.asarray(v) for d, v in self.data_info.get("coords", {}).items()}
        self.periodic_dims = list(self.data_info.get("periodic_dims", []))
        # each axis's kind as training recorded it from the file's attributes (older
        # checkpoints: periodic as listed, else guessed from the points)
        recorded = dict(self.data_info.get("grid_kinds") or {})
        self.grid_kinds: dict[str, str | None] = {
            d: recorded.get(d) or (PERIODIC if d in self.periodic_dims
                                   else axis_kind(self.coords.get(d)))
            for d in self.grid_dims
        }
        # the domain of each axis: the training file's (a grid subsampled by an even
        # stride is off its cells' centres, so its own points misplace it); older
        # checkpoints: from the training points
        extents = dict(self.data_info.get("grid_extents") or {})
        self.grid_extents: dict[str, tuple[float, float]] = {
            d: tuple(extents[d]) if d in extents else _extent(self.coords[d], self.grid_kinds[d])
            for d in self.grid_dims if d in self.coords and len(self.coords[d]) > 1
        }
        # the domain of inputs of other sizes that bring no coordinates: the training
        # file's (older checkpoints: the model's, as above)
        whole = dict(self.data_info.get("file_extents") or {})
        self.data_extents: dict[str, tuple[float, float]] = {
            d: tuple(whole[d]) if d in whole else extent
            for d, extent in self.grid_extents.items()
        }
        self.channels: dict[str, int] = dict(self.data_info.get("channels", {}))
        self._metrics = {k: v for k, v in checkpoint.get("callbacks", {}).items()}
        self._epochs = checkpoint.get("epoch")
        self._warned_domain = False
        self._warned_units: set[str] = set()
        self._warned_grids: set[tuple[int, ...]] = set()  # zero-shot, warned once a grid
        self._resampling: tuple | None = None  # the last grid's interpolation (key, pair)
        if not self.inputs or not self.outputs or not self.grid_dims:
            raise SurrogateInputError(
                f"{path} has no data description (inputs, outputs, grid); it was not written "
                "by `pdeforge train fit` with a dataset file"
            )

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, ckpt_path: str | os.PathLike, device: str | None = None) -> Surrogate:
        """Rebuild model, normalisers and grid from a checkpoint (no code is unpickled)."""
        device = _check_device(device)  # (else torch.load's error blamed the checkpoint)
        module, checkpoint = load_module(ckpt_path, device)
        return cls(module, checkpoint, str(ckpt_path), device)

    # -- description ----------------------------------------------------------------------
    @property
    def problem(self) -> str:
        return str(self.data_info.get("problem", ""))

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[d]) for d in self.grid_dims)

    def info(self) -> dict[str, Any]:
        """Model, parameters, training data and the scores recorded at training time."""
        validation: dict[str, Any] = {}
        for key, state in self._metrics.items():
            if key.startswith("ModelCheckpoint") and isinstance(state, dict):
                score = state.get("best_model_score")
                if score is not None:
                    validation = {
                        "monitor": state.get("monitor", "val/rel_l2"),
                        # the run's best (at the time this checkpoint was saved), which is
                        # not this checkpoint's score unless it is that best checkpoint
                        "best_score": float(score),
                        "best_checkpoint": Path(str(state.get("best_model_path", ""))).name,
                    }
        own = self._meta.get("validation")  # these weights' scores (older checkpoints: none)
        monitor = validation.get("monitor", "val/rel_l2")
        if isinstance(own, dict) and monitor in own:
            # epoch: Lightning's index, as in the checkpoints' names (best-epoch=004.ckpt)
            # and its progress bar; after_epochs: how many epochs had trained (5 there)
            epoch = int(own.get("epoch", -1))
            validation.update(monitor=monitor, score=float(own[monitor]), epoch=epoch,
                              after_epochs=epoch + 1)
        elif validation and validation["best_checkpoint"] == Path(self.path).name:
            validation["score"] = validation["best_score"]
        return {
            "checkpoint": self.path,
            "model": self.module.operator.name,
            "parameters": self.module.operator.count_parameters(),
            "operator_config": self._meta.get("operator_config"),
            "problem": self.problem,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "grid": dict(zip(self.grid_dims, self.grid_shape, strict=True)),
            "training_files": self.data_info.get("files"),
            "split_sizes": self.data_info.get("split_sizes"),
            "epochs_trained": None if self._epochs is None else int(self._epochs) + 1,
            "validation": validation,
            "device": self.device,
        }

    def __repr__(self) -> str:
        i = self.info()
        grid = "x".join(map(str, self.grid_shape))
        v = i["validation"]
        score = ""
        if "score" in v:
            score = f", {v['monitor']}={v['score']:.4g}"
            if "best_score" in v and not np.isclose(v["best_score"], v["score"], rtol=1e-5):
                score += f" (run's best {v['best_score']:.4g})"
        elif v:
            score = f", run's best {v['monitor']}={v['best_score']:.4g}"
        return (
            f"Surrogate({i['model']}, {i['parameters']:,} parameters, {self.problem} "
            f"{self.inputs} -> {self.outputs} on {grid}{score})"
        )

    # -- inputs ---------------------------------------------------------------------------
    def _from_xarray(self, data: xr.Dataset | xr.DataArray) -> tuple[np.ndarray, bool, dict]:
        if isinstance(data, xr.DataArray):
            if len(self.inputs) != 1 or (data.name not in (None, self.inputs[0])):
                raise SurrogateInputError(
                    f"this surrogate takes the variables {self.inputs}; pass an xarray.Dataset "
                    f"with them (got a DataArray named {data.name!r})"
                )
            data = data.to_dataset(name=self.inputs[0])
        missing = [v for v in self.inputs if v not in data]
        if missing:
            raise SurrogateInputError(
                f"input variable(s) {missing} missing; the surrogate needs {self.inputs}, "
                f"the data has {sorted(map(str, data.data_vars))}"
            )
        message = units_mismatch(self.data_info.get("units") or {},
                                 {name: attr_value(data[name].attrs, "units")
                                  for name in self.inputs})
        if message and message not in self._warned_units:
            self._warned_units.add(message)
            warnings.warn(f"the inputs' {message}", stacklevel=_caller_level())
        data = increasing(data, self.grid_dims)  # as in training (TorchDataset)
        for d in self.grid_dims:
            values = np.asarray(data[d].values) if d in data.coords else None
            if values is not None and values.ndim == 1 and len(values) > 1 and not (
                    np.issubdtype(values.dtype, np.number) and np.all(values[1:] > values[:-1])):
                raise SurrogateInputError(
                    f"the inputs' coordinate {d!r} is neither increasing nor decreasing "
                    "(rolled, e.g. fftshift-ed, unsorted or repeated points): the model reads "
                    f"the grid in order; sort the inputs first (data.sortby({d!r}))")
        batched = SAMPLE in data.dims
        if batched and data.sizes[SAMPLE] == 0:  # (before a reshape that cannot take it)
            raise SurrogateInputError("no samples in the inputs (the selection is empty)")
        parts = []
        # the grid of the inputs, or the training grid when every input is one number per
        # sample (a model of parameters only: its predictions are on the training grid)
        sizes = dict(data.sizes)
        # dims the model does not know (a checkpoint records its inputs' non-grid dims,
        # e.g. an NLSE trajectory's t, since extra_dims; older ones are not checked);
        # spatial dims the model lacks get their own message below
        known = self.data_info.get("extra_dims")
        for name in self.inputs if known is not None else []:
            dims = data[name].dims
            unknown = [d for d in dims
                       if d not in (SAMPLE, *SPATIAL_DIMS, *self.grid_dims,
                                    *known.get(name, {}).get("dims", []))]
            if unknown:
                grid_absent = not any(d in dims for d in self.grid_dims)
                rename = ", ".join(f"{a}={b!r}" for a, b in zip(unknown, self.grid_dims,
                                                                 strict=False))
                raise SurrogateInputError(
                    f"variable {name!r} has dims {tuple(dims)}, the model's grid dims are "
                    f"{tuple(self.grid_dims)}: {unknown} are not among them"
                    + (f" (rename them, e.g. data.rename({rename}))"
                       if grid_absent and len(unknown) == len(self.grid_dims) else "")
                )
            # the model's channels are the training's points of those dims (an input
            # history at t = 0, 0.02, 0.04): other points were predicted from silently
            trained = known.get(name) or {}
            for d, n in zip(trained.get("dims", []), trained.get("sizes", []), strict=False):
                if n == 1 and d not in dims and d in data.coords and data[d].ndim == 0:
                    # one point of the dim, selected away (data.isel(t=0)): put back
                    data = data.assign({name: data[name].expand_dims(d)})
                    dims = data[name].dims
            other = [d for d in dims if d not in (SAMPLE, *SPATIAL_DIMS, *self.grid_dims)]
            given = {"dims": other, "coords": {d: np.asarray(data[d].values)
                                               for d in other if d in data.coords}}
            problem = channel_axes_mismatch(name, known.get(name), given)
            if problem:
                raise SurrogateInputError(problem)
        numbers_only = not any(d in data[v].dims for v in self.inputs for d in self.grid_dims)
        if numbers_only:  # (the data's own x, y, if any, are not the inputs' grid)
            sizes.update(zip(self.grid_dims, self.grid_shape, strict=True))
        for name in self.inputs:
            var = data[name]
            absent = [d for d in self.grid_dims if d not in var.dims]
            extra = [d for d in var.dims if d in SPATIAL_DIMS and d not in self.grid_dims]
            if extra:
                raise SurrogateInputError(
                    f"variable {name!r} lives on the grid {tuple(var.dims)}, the model on "
                    f"{tuple(self.grid_dims)}: the model is {len(self.grid_dims)}D and the "
                    f"data has the extra spatial dim(s) {extra}"
                )
            if absent and len(absent) == len(self.grid_dims) and all(
                    d in sizes for d in self.grid_dims):
                # a per-sample scalar (e.g. a parameter): a constant channel, as in training
                # (TorchDataset); the grid is the dataset's
                var = var.expand_dims({d: sizes[d] for d in self.grid_dims})
            elif absent:
                raise SurrogateInputError(
                    f"variable {name!r} has dims {var.dims}; it needs the grid dims "
                    f"{self.grid_dims}"
                    + ("" if any(d in var.dims for d in self.grid_dims) else
                       " (a per-sample scalar is spread over the grid of the other inputs; "
                       "this data has none)")
                )
            if batched and SAMPLE not in var.dims:  # one value for the whole batch
                var = var.expand_dims({SAMPLE: data.sizes[SAMPLE]})
            if np.iscomplexobj(var.values):
                raise SurrogateInputError(_COMPLEX_INPUT.format(what=f"variable {name!r}"))
            other = [d for d in var.dims if d not in (SAMPLE, *self.grid_dims)]
            order = ([SAMPLE] if batched else []) + other + self.grid_dims
            arr = np.asarray(var.transpose(*order).values, dtype=np.float64)
            grid = arr.shape[arr.ndim - len(self.grid_dims) :]
            lead = (arr.shape[0],) if batched else ()
            parts.append(arr.reshape(*lead, -1, *grid))
        x = np.concatenate(parts, axis=1 if batched else 0)
        coords = {} if numbers_only else {
            d: np.asarray(data[d].values) for d in self.grid_dims if d in data.coords
        }
        if batched and SAMPLE in data.coords:  # the samples' labels come back with them
            coords[SAMPLE] = np.asarray(data[SAMPLE].values)
        return (x if batched else x[None]), batched, coords

    def _as_batch(self, inputs: Any) -> tuple[np.ndarray, bool, dict]:
        if isinstance(inputs, xr.Dataset | xr.DataArray):
            return self._from_xarray(inputs)
        if isinstance(inputs, torch.Tensor):
            # (numpy has no bfloat16: its .numpy() was a TypeError)
            inputs = inputs.detach().cpu()
            inputs = (inputs if inputs.is_complex() else inputs.to(torch.float64)).numpy()
        if np.iscomplexobj(inputs):  # (numpy would drop the imaginary parts with a warning)
            raise SurrogateInputError(_COMPLEX_INPUT.format(what="the inputs"))
        try:
            x = np.asarray(inputs, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SurrogateInputError(
                f"inputs must be numpy, torch or xarray data, got {type(inputs).__name__} ({exc})"
            ) from None
        dim, c_in = len(self.grid_dims), self.module.hparams.in_channels
        grid = ", ".join(["n"] * dim)
        if set(self.data_info.get("scalar_inputs", [])) == set(self.inputs) and x.ndim <= 2:
            # a model of per-sample numbers only: (c_in,) or (batch, c_in), each number a
            # constant channel on the training grid, as in training
            if x.shape[-1:] != (c_in,):
                raise SurrogateInputError(
                    f"this surrogate takes {c_in} number(s) per sample ({self.inputs}); pass "
                    f"shape ({c_in},) or (batch, {c_in}), got {x.shape}"
                )
            batched = x.ndim == 2
            x = np.broadcast_to(x.reshape(-1, c_in, *[1] * dim), (len(x.reshape(-1, c_in)),
                                                                 c_in, *self.grid_shape))
            return np.ascontiguousarray(x), batched, {}
        if x.ndim == dim:
            if c_in != 1:
                raise SurrogateInputError(
                    f"shape {x.shape} read as one {dim}D field, but the model takes {c_in} "
                    f"input channels ({self.inputs}); pass shape ({c_in}, "
                    f"{', '.join(['n'] * dim)}) for one sample, (batch, {c_in}, "
                    f"{', '.join(['n'] * dim)}) for a batch, or an xarray Dataset with the "
                    "variables"
                )
            return x[None, None], False, {}
        if x.ndim == dim + 1 and c_in == 1:
            return x[:, None], True, {}  # a batch of single-channel fields
        if x.ndim == dim + 1:
            if x.shape[0] != c_in:
                raise SurrogateInputError(
                    f"shape {x.shape} read as one sample with {x.shape[0]} channel(s), but the "
                    f"model takes {c_in}; for a batch pass (batch, {c_in}, "
                    f"{', '.join(['n'] * dim)})"
                )
            return x[None], False, {}
        if x.ndim == dim + 2:
            if x.shape[1] != c_in:
                raise SurrogateInputError(
                    f"batch of shape {x.shape} has {x.shape[1]} channel(s); the model takes "
                    f"{c_in} ({self.inputs})"
                )
            return x, True, {}
        single = f"({grid}) for one sample, " if c_in == 1 else ""
        raise SurrogateInputError(
            f"inputs of shape {x.shape} do not fit a {dim}D model with {c_in} input "
            f"channel(s): give {single}({c_in}, {grid}) for one sample or (batch, {c_in}, "
            f"{grid}) for a batch"
        )

    # -- prediction -----------------------------------------------------------------------
    def _resampler(self, grid: tuple[int, ...], coords: dict[str, np.ndarray]):
        """Linear interpolation (along each axis in turn: bilinear, trilinear) in physical
        coordinates between the inputs' grid (its coordinates where given, else
        :meth:`grid_coords`) and the training grid's points, periodic axes over one
        period, values beyond the end points of other axes held constant. Returns
        (to the training grid, back to the inputs' grid); the last grid's are kept, since
        predict and evaluate ask for them batch after batch on one grid."""
        key = (grid, tuple((d, np.asarray(coords[d]).tobytes())
                           for d in self.grid_dims if d in coords))
        if self._resampling is not None and self._resampling[0] == key:
            return self._resampling[1]
        source = self._input_points(grid, coords)
        forward, back = [], []
        for d in self.grid_dims:
            model = np.asarray(self.coords[d], dtype=np.float64)
            period = None
            if self.grid_kinds.get(d) == PERIODIC:
                lo, hi = self.grid_extents.get(d, _extent(model, PERIODIC))
                period = hi - lo
            forward.append(_linear_weights(source[d], model, period))
            back.append(_linear_weights(model, source[d], period))

        def apply(t: torch.Tensor, weights: list) -> torch.Tensor:
            for offset, (lower, upper, w) in enumerate(weights):
                if lower is None:
                    continue  # the same points
                axis = 2 + offset
                shape = [1] * t.ndim
                shape[axis] = len(w)
                w = torch.as_tensor(w, dtype=t.dtype, device=t.device).reshape(shape)
                index = (torch.as_tensor(lower, device=t.device),
                         torch.as_tensor(upper, device=t.device))
                t = (t.index_select(axis, index[0]) * (1 - w)
                     + t.index_select(axis, index[1]) * w)
            return t

        pair = (lambda t: apply(t, forward)), (lambda t: apply(t, back))
        self._resampling = (key, pair)
        return pair

    def _input_points(self, grid: tuple[int, ...], coords: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
        """The inputs' grid points per axis: their own coordinates where given, else
        :meth:`grid_coords`."""
        given = self.grid_coords(grid)
        return {d: np.asarray(coords[d], dtype=np.float64)
                if d in coords and len(coords[d]) == n else given[d]
                for d, n in zip(self.grid_dims, grid, strict=True)}

    def _unit_points(self, grid: tuple[int, ...], coords: dict[str, np.ndarray],
                     convention: str = "endpoints") -> list[np.ndarray]:
        """The inputs' grid points per axis in an operator's convention of positions
        (:attr:`pdeforge.operators.base.Operator.positions`), placed by their physical
        coordinates: the training points at 0, ..., 1 ("endpoints") or at i / n
        ("periodic")."""
        source = self._input_points(grid, coords)
        out = []
        for d in self.grid_dims:
            model = np.asarray(self.coords[d], dtype=np.float64)
            n = len(model)
            span = (model[-1] - model[0] if convention == "endpoints"
                    else (model[1] - model[0]) * n) if n > 1 else 0.0
            out.append((source[d] - model[0]) / span if span else np.zeros(len(source[d])))
        return out

    def forward(self, chunk: torch.Tensor, coords: dict[str, np.ndarray],
                resample: bool = False) -> torch.Tensor:
        """The model on a batch (B, C_in, *grid) in physical units whose grid has the
        points ``coords`` (per grid dim; missing ones: :meth:`grid_coords`): on the
        training grid as it is, on another one resampled (``resample``, or
        :attr:`always_resampled`) or zero-shot (:meth:`_zero_shot`)."""
        grid = tuple(chunk.shape[2:])
        if grid == self.grid_shape:
            return self.module(chunk)
        if resample or self.always_resampled:
            to_model, back = self._resampler(grid, coords)
            y = back(self.module(to_model(chunk)))
            return self.module.apply_masks(chunk, y)  # on the grid asked for
        return self._zero_shot(chunk, grid, coords)

    def _zero_shot(self, chunk: torch.Tensor, grid: tuple[int, ...],
                   coords: dict[str, np.ndarray]) -> torch.Tensor:
        """The model on another grid than its training grid. Operators that read
        positions (:attr:`~pdeforge.operators.base.Operator.positions`) get the inputs'
        points placed as in training: their conventions (0 ... 1 from the first point to
        the last, or i / n) misplace cell and periodic grids of other sizes (a DeepONet
        given an NLSE grid's every other point was 13 % off its own predictions there).
        DeepONet's trunk is evaluated at the points and its branch reads the inputs
        resampled to the training grid (its sensors are fixed positions of that grid);
        FNO and LSM are given the positions they append (POD-DeepONet never comes here:
        :attr:`always_resampled`). The convolutions and spectral
        layers take the grid as it is."""
        operator_ = self.module.operator
        convention = operator_.positions
        if operator_.queries_points and convention is not None:
            to_model, _ = self._resampler(grid, coords)
            axes = [torch.as_tensor(u, dtype=chunk.dtype) for u in
                    self._unit_points(grid, coords, convention)]
            points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
            y = self.module(to_model(chunk), points=points.reshape(-1, len(axes)))
            y = y.reshape(*y.shape[:2], *grid)
        elif convention is not None:
            axes = [torch.as_tensor(u, dtype=chunk.dtype, device=chunk.device)
                    for u in self._unit_points(grid, coords, convention)]
            y = self.module(chunk, coordinates=axes)
        else:
            return self.module(chunk)
        return self.module.apply_masks(chunk, y)  # on the grid asked for

    @torch.no_grad()
    def predict_array(
        self, inputs: Any, batch_size: int = 64, resample: bool = False, *,
        progress: bool = False,
    ) -> tuple[np.ndarray, bool, dict]:
        """Predictions as an array (batch, C_out, *grid) in physical units; ``progress``
        shows a bar (on stderr) once predicting has taken a second."""
        batch_size = _positive_batch_size(batch_size)
        x, batched, coords = self._as_batch(inputs)
        return self._predict(x, batched, coords, batch_size, resample, progress)

    def _check_values(self, x: np.ndarray, batched: bool, what: str) -> torch.dtype:
        """Refuse an empty batch, NaN or inf, and values beyond the model's dtype; return
        that dtype."""
        _refuse_empty(x, what)
        if not np.all(np.isfinite(x)):
            bad = int(np.sum(~np.isfinite(x)))
            samples = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
            raise SurrogateInputError(
                f"inputs contain {bad} NaN or infinite value(s)"
                + (f", in {samples.size} sample(s) (first: {samples[:5].tolist()}); a "
                   "dataset file's samples marked not converged may hold NaN: drop them "
                   "first (data.where(data.converged, drop=True), or data.isel(sample="
                   "...)); `pdeforge query` skips them" if batched else ""))
        dtype = next(p for p in self.module.parameters() if p.is_floating_point()).dtype
        largest = float(np.abs(x).max())
        if largest > torch.finfo(dtype).max:
            raise SurrogateInputError(
                f"inputs reach {largest:.3g}, beyond the range of the model's {dtype} "
                f"({torch.finfo(dtype).max:.3g}): they would become infinite; check their units"
            )
        return dtype

    @torch.no_grad()
    def _predict(self, x: np.ndarray, batched: bool, coords: dict, batch_size: int,
                 resample: bool, progress: bool) -> tuple[np.ndarray, bool, dict]:
        """:meth:`predict_array` of inputs already read (``_as_batch``): the coordinates
        place them (compare predicted from the bare array, on the training grid's points
        where the inputs' differed)."""
        dtype = self._check_values(x, batched, "predict")
        self._check_domain(coords)
        grid = tuple(x.shape[2:])
        resample = (resample or self.always_resampled) and grid != self.grid_shape
        if grid != self.grid_shape and not resample and grid not in self._warned_grids:
            self._warned_grids.add(grid)
            warnings.warn(
                f"predicting on a {'x'.join(map(str, x.shape[2:]))} grid with a model trained "
                f"on {'x'.join(map(str, self.grid_shape))}: this is zero-shot; measure its "
                "error with Surrogate.compare before trusting it, or pass resample=True "
                "(on the command line: --resample)",
                stacklevel=_caller_level(),
            )
        out = []
        bar = tqdm(total=len(x), unit="sample", desc="predict", delay=1.0,
                   disable=not progress)
        for start in range(0, len(x), batch_size):
            chunk = torch.as_tensor(x[start : start + batch_size], dtype=dtype, device=self.device)
            try:
                y = self.forward(chunk, coords, resample)
                out.append(y.float().cpu().numpy())
                bar.update(len(out[-1]))
            except OperatorInputError as exc:
                raise SurrogateInputError(
                    f"the model cannot take inputs on a {'x'.join(map(str, x.shape[2:]))} grid "
                    f"(trained on {'x'.join(map(str, self.grid_shape))}): {exc}"
                ) from None
        bar.close()
        return np.concatenate(out), batched, coords

    def _check_domain(self, coords: dict) -> None:
        """Warn (once) when the inputs' coordinates put the grid on another domain than the
        training grid's (:func:`domain_mismatch`)."""
        if self._warned_domain:
            return
        # the inputs' grid is taken as of the training grid's kinds (as the resampler
        # takes it)
        kinds = {d: (k, k) for d, k in self.grid_kinds.items()}
        message = (domain_mismatch(self.coords, coords, self.grid_dims, self.periodic_dims,
                                   kinds)
                   or points_mismatch(self.coords, coords, self.grid_dims))
        if message:
            self._warned_domain = True
            warnings.warn(f"the inputs' {message}", stacklevel=_caller_level())

    def predict(self, inputs: Any, batch_size: int = 64, resample: bool = False, *,
                progress: bool = False) -> xr.Dataset:
        """Predict outputs in physical units as an xarray Dataset with coordinates.

        Args:
            inputs: an ``xarray.Dataset`` with the input variables (and optionally a
                ``sample`` dim), a DataArray when there is one input variable, or a
                numpy/torch array: (*grid) for one 1-channel sample, (C, *grid) for one
                sample of a C > 1 channel model, (batch, *grid) for a batch of 1-channel
                samples, (batch, C, *grid) for a batch.
            batch_size: samples per forward pass (bounds memory for large batches).
            resample: on another grid, interpolate the inputs to the training grid's
                points, predict there and interpolate the outputs back (linear in the
                physical coordinates, axis by axis, periodic axes over one period),
                instead of running the model zero-shot on the new grid (where models that
                read positions get the new points' positions in the training's
                convention). Models that are not discretisation invariant (MgNO, LSM: 3x3
                kernels in grid units) do much better this way; FNO does well either way.
                POD-DeepONet is always resampled (its basis lives on the training grid).
            progress: show a progress bar (stderr) once predicting has taken a second.

        The grid may differ from the training grid where the architecture allows; its
        coordinates come from the xarray input (increasing or decreasing along each
        axis), or are the training grid's kind (cell centres or vertices, or the same
        period) at the new size on the training file's domain.
        """
        y, batched, coords = self.predict_array(inputs, batch_size, resample,
                                                progress=progress)
        ds = self._to_dataset(y, batched, coords, "surrogate")
        ds.attrs["training_grid"] = "x".join(map(str, self.grid_shape))
        ds.attrs["grid_mode"] = self.grid_mode(tuple(y.shape[2:]), resample)
        return ds

    def grid_mode(self, grid: tuple[int, ...], resample: bool = False) -> str:
        """How predictions on ``grid`` are made (:func:`grid_mode`)."""
        return grid_mode(grid, self.grid_shape, resample or self.always_resampled)

    @property
    def always_resampled(self) -> bool:
        """Whether other grids are always resampled: POD-DeepONet's outputs are its basis,
        fixed on the training grid (evaluated elsewhere by interpolating it, which is
        interpolating the outputs)."""
        return self.module.operator.fixed_grid

    def _split_channels(self, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """(batch, C, *grid) -> {variable: (batch, *grid) or (batch, c, *grid)}."""
        return {name: x[:, first] if stop - first == 1 else x[:, first:stop]
                for name, (first, stop) in channel_blocks(names, self.channels).items()}

    def grid_coords(self, grid: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Coordinates of a grid of the training grid's kind with the given sizes: the
        training points at the training size, else on the training file's domain."""
        return {
            d: self.coords[d]
            if len(self.coords[d]) == n
            else axis_points(self.grid_kinds.get(d), *self.data_extents[d], n)
            for d, n in zip(self.grid_dims, grid, strict=True)
        }

    def _to_dataset(
        self, y: np.ndarray, batched: bool, coords: dict, label: str, names: list[str] | None = None
    ) -> xr.Dataset:
        """(batch, C, *grid) array -> Dataset of the variables (default: the outputs)."""
        coords = {**self.grid_coords(y.shape[2:]), **coords}
        units = self.data_info.get("units", {})
        variables, extra_coords = {}, {}
        known = self.data_info.get("extra_dims", {})
        scalars = self.data_info.get("scalar_outputs", []) if names is None else []
        for name, values in self._split_channels(y, names or self.outputs).items():
            if name in scalars:  # one number per sample, as the data have it
                variables[name] = xr.DataArray(
                    values.reshape(len(values), -1).mean(axis=1), dims=[SAMPLE],
                    attrs={"units": units.get(name, ""), "long_name": f"{name} ({label})"})
                continue
            extra = [f"{name}_channel"] if values.ndim == y.ndim else []
            info = known.get(name)
            if extra and info and int(np.prod(info["sizes"])) == values.shape[1]:
                # the channels were these dims of the training data (e.g. t): give them back
                values = values.reshape(len(values), *info["sizes"], *values.shape[2:])
                extra = list(info["dims"])
                attrs = info.get("coord_attrs", {})
                extra_coords.update({d: (d, np.asarray(v), attrs.get(d, {}))
                                     for d, v in info["coords"].items()})
            dims = [SAMPLE, *extra, *self.grid_dims]
            variables[name] = xr.DataArray(
                values,
                dims=dims,
                attrs={"units": units.get(name, ""), "long_name": f"{name} ({label})"},
            )
        grid = {d: coords[d] for d in self.grid_dims}
        labels = ({SAMPLE: coords[SAMPLE]} if batched and SAMPLE in coords
                  and len(coords[SAMPLE]) == len(y) else {})
        ds = xr.Dataset(variables, coords={**extra_coords, **grid, **labels})
        recorded = self.data_info.get("coord_attrs") or {}
        for d in self.grid_dims:  # units and name as training read them, the kind of grid
            ds[d].attrs.update(recorded.get(d) or {"long_name": d})
            kind = self.grid_kinds.get(d)
            if kind == PERIODIC:
                ds[d].attrs["periodic"] = 1
            elif kind is not None:
                ds[d].attrs[GRID_ATTR] = kind
        ds.attrs.update(
            problem=self.problem, surrogate=self.module.operator.name, checkpoint=self.path
        )
        return ds if batched else ds.isel({SAMPLE: 0})

    def warm_up(self, inputs: Any, batch_size: int = 64, resample: bool = False) -> None:
        """One untimed pass at the batch size that will be timed (allocator, kernels), and
        through ``predict``'s xarray output: its first Dataset costs ~80 ms once per process
        (measured), which `pdeforge query` reported as 85 ms per sample for one sample
        against 5 ms from the second call on."""
        with self._quiet(), contextlib.suppress(SurrogateInputError):
            self.predict(inputs, batch_size, resample)

    @contextlib.contextmanager
    def _quiet(self):
        """No warnings, and the zero-shot, domain and units warnings left to the timed
        call that follows (a warm-up)."""
        warned = set(self._warned_grids), self._warned_domain, set(self._warned_units)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            self._warned_grids, self._warned_domain, self._warned_units = warned

    # -- comparison with the reference solver ---------------------------------------------
    def _reference_family(self) -> tuple[str, dict[str, Any]]:
        """The pdeforge family that made the training data and its options; refused for
        data of another program (no solver to compare with)."""
        from pdeforge.datasets.problems import available

        config = self.data_info.get("generation_config") or {}
        problem = config.get("problem") or self.problem
        if not problem:
            raise SurrogateInputError("the checkpoint does not name the problem that made its data")
        if problem not in available():
            raise SurrogateInputError(
                f"compare runs pdeforge's solver of the training data's problem, and "
                f"{problem!r} is none of its families ({', '.join(available())}): the data "
                "came from another program; compare predictions with that program's "
                "solutions instead (predict, then your own metric)"
            )
        return problem, config.get("options", {})

    def reference_problem(self, resolution: int):
        """The problem family of the training data, at ``resolution``, as it was generated."""
        from pdeforge.datasets.problems import build_problem

        problem, options = self._reference_family()
        return build_problem(problem, resolution, **options)

    def compare(self, inputs: Any, batch_size: int = 64, resample: bool = False) -> Comparison:
        """Run the reference solver and the surrogate on the same inputs.

        Returns relative L2 error (mean over samples), max error, seconds per sample of
        each, and the speedup solver / surrogate. Timings: the solver's own per-sample
        solve time (assembly included), the surrogate's forward passes after one warm-up.
        """
        self._reference_family()  # (data of another program: nothing to compare with)
        # (every check before the solver runs: a bad batch_size was refused after it)
        batch_size = _positive_batch_size(batch_size)
        x, batched, coords = self._as_batch(inputs)
        self._check_values(x, batched, "compare")
        # (the solver, too, solves on the family's domain whatever the coordinates say:
        # their agreement would not make the inputs' domain the one they model)
        self._check_domain(coords)
        sizes = set(x.shape[2:])
        if len(sizes) != 1:
            raise SurrogateInputError(
                f"compare needs as many points along every axis (the reference solver's "
                f"families take one resolution), got a {'x'.join(map(str, x.shape[2:]))} grid")
        problem = self.reference_problem(sizes.pop())
        reference = problem.solve_inputs(self._split_channels(x, self.inputs))
        target = np.concatenate(
            [
                np.asarray(reference[name], dtype=np.float64).reshape(len(x), -1, *x.shape[2:])
                for name in self.outputs
            ],
            axis=1,
        )
        with self._quiet(), contextlib.suppress(SurrogateInputError):  # warm-up, untimed
            self._predict(x[:batch_size], batched, coords, batch_size, resample, False)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        # (the inputs' coordinates too: the bare array was predicted on the training
        # grid's points, not what predict() gives for the same inputs)
        y, _, _ = self._predict(x, batched, coords, batch_size, resample, False)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        surrogate_seconds = (time.perf_counter() - t0) / len(x)
        diff = (y - target).reshape(len(x), -1)
        rel = np.linalg.norm(diff, axis=1) / np.linalg.norm(target.reshape(len(x), -1), axis=1)
        solver_seconds = float(np.mean(reference["solve_seconds"]))
        return Comparison(
            rel_l2=float(rel.mean()),
            max_error=float(np.abs(diff).max()),
            solver_seconds=solver_seconds,
            surrogate_seconds=surrogate_seconds,
            speedup=solver_seconds / surrogate_seconds,
            n_samples=len(x),
            device=self.device,
            per_sample_rel_l2=rel.tolist(),
            solution=self._to_dataset(target, batched, coords, "reference solver"),
            prediction=self._to_dataset(y, batched, coords, "surrogate"),
        )


def _positive_batch_size(batch_size: Any) -> int:
    try:  # numpy integers too (np.int64(4) was refused), never a bool or a float
        if isinstance(batch_size, bool):
            raise TypeError
        size = operator.index(batch_size)
    except TypeError:
        size = 0
    if size < 1:
        raise SurrogateInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return size


def _refuse_empty(x: np.ndarray, what: str) -> None:
    if len(x) == 0:
        raise SurrogateInputError(f"no samples to {what} (the batch is empty)")


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside pdeforge, for a warning raised by the
    function that calls this (predict, compare and query reach the same checks by paths
    of different depths)."""
    frame, level = sys._getframe(2), 2
    # (torch's no_grad decorator and contextlib add frames of their own in between)
    inside = ("pdeforge", "torch", "contextlib")
    while frame is not None and frame.f_globals.get("__name__", "").startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


_COMPLEX_INPUT = ("{what} hold complex numbers; the model's inputs are real fields (the "
                  "format stores a complex field as <name>_re, <name>_im): pass the real and "
                  "imaginary parts as the surrogate's inputs name them")


def _check_device(device: Any) -> str:
    """A device this machine has (None: cuda where available, else cpu), as torch names
    it for loading (``cpu:0`` is ``cpu``: torch.load cannot map storages to an indexed
    CPU), or a :class:`SurrogateInputError` that says what is wrong."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SurrogateInputError(f"unknown device {device!r} ({exc}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SurrogateInputError(f"device {device!r}: CUDA is not available on this machine; "
                                  "use --device cpu (device='cpu')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SurrogateInputError(f"device {device!r}: this machine has "
                                  f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise SurrogateInputError(f"device {device!r} is not supported; use cpu or cuda")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SurrogateInputError(f"device {device!r}: MPS is not available on this machine; "
                                  "use cpu")
    return "cpu" if dev.type == "cpu" else str(dev)


def read_query_inputs(
    path: str | os.PathLike, surrogate: Surrogate
) -> tuple[xr.Dataset, np.ndarray | None]:
    """Inputs for :func:`query` from a dataset file (by variable name) or a .npy array,
    and the file's ``converged`` diagnostic (None for an array or a file without it)."""
    path = Path(path)
    if not path.is_file():
        raise SurrogateInputError(f"input file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:  # object arrays, damaged files
            raise SurrogateInputError(
                f"{path}: not a numeric .npy array ({exc}); save the inputs with "
                "np.save(path, array) of a float array") from None
        x, _, _ = surrogate._as_batch(array)
        if len(x) == 0:
            raise SurrogateInputError(f"{path}: the array holds no samples (shape "
                                      f"{array.shape}); nothing to predict")
        data = surrogate._to_dataset(x, True, {}, "input", names=surrogate.inputs)
        data.attrs.clear()  # the surrogate's attributes describe predictions, not inputs
        if array.dtype != np.float64:  # (written as precise as given: float64 stays)
            data = data.astype(np.float32)
        return data, None
    with open_dataset(path) as ds:
        missing = [v for v in surrogate.inputs if v not in ds]
        if missing:
            raise SurrogateInputError(
                f"{path} lacks the input variable(s) {missing} the surrogate needs "
                f"({surrogate.inputs}); it has {sorted(map(str, ds.data_vars))}"
            )
        # (open_dataset gives increasing coordinates, as the predictions come out: the
        # file written holds both on one set of coordinates)
        data = ds[surrogate.inputs].load()
        data.attrs["seed"] = ds.attrs.get("seed", UNKNOWN_SEED)
        converged = (np.asarray(ds[CONVERGED].values).astype(bool).reshape(-1)
                     if CONVERGED in ds and ds[CONVERGED].dims == (SAMPLE,) else None)
    return (data if SAMPLE in data.dims else data.expand_dims(SAMPLE)), converged


def _samples_to_predict(data: xr.Dataset, converged: np.ndarray | None,
                        path: str | os.PathLike) -> np.ndarray:
    """Which samples of ``data`` :func:`query` predicts: all but those whose inputs hold
    NaN or inf and that the file marks not converged (the format lets a failed sample's
    fields be NaN); such values in any other sample are an error naming them."""
    n = data.sizes[SAMPLE]
    finite = np.ones(n, dtype=bool)
    for name in data.data_vars:
        var = data[name]
        if SAMPLE not in var.dims:  # one value for every sample
            var = var.expand_dims({SAMPLE: n})
        if np.iscomplexobj(var.values):
            raise SurrogateInputError(_COMPLEX_INPUT.format(what=f"variable {name!r}"))
        values = np.asarray(var.transpose(SAMPLE, ...).values, dtype=np.float64)
        finite &= np.isfinite(values.reshape(n, -1)).all(axis=1)
    failed = np.zeros(n, dtype=bool) if converged is None else ~converged
    wrong = np.flatnonzero(~finite & ~failed)
    if wrong.size:
        marked = " although the file marks them converged" if converged is not None else ""
        raise SurrogateInputError(
            f"{path}: the inputs of {wrong.size} sample(s) hold NaN or inf{marked} (first: "
            f"{wrong[:5].tolist()}): fix those values"
            + (", or mark the samples converged = false to have them skipped"
               if converged is not None else ""))
    return finite


#: file names query writes its predictions to (a netCDF4 / HDF5 dataset)
PREDICTION_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5")


def inputs_problem(data: xr.Dataset) -> str | None:
    """The problem family the inputs' file names (None for an array or another
    program's file without one): a model may be queried with another family's fields."""
    problem = attr_value(data.attrs, "problem")
    return problem if isinstance(problem, str) else None


def _warn_other_distribution(inputs: Any, data: xr.Dataset, surrogate: Surrogate) -> None:
    """Warn, as ``pdeforge evaluate`` does, when a pdeforge file was generated with other
    problem options than the training data (another coefficient law, amplitudes, ...)."""
    from pdeforge.train.evaluate import (
        _distribution_changes,
        comparable_config,
        distribution_message,
    )

    problem, trained_on = inputs_problem(data), surrogate.problem
    if problem and trained_on and problem != trained_on:  # (evaluate warned, query not)
        warnings.warn(
            f"{inputs} holds {problem!r} data and the checkpoint was trained on "
            f"{trained_on!r} data: the predictions are those of a model of another "
            "equation", UserWarning, stacklevel=3)
    changed = _distribution_changes(
        comparable_config(surrogate.data_info.get("generation_config")),
        comparable_config(data.attrs.get("config")))
    if changed:
        warnings.warn(distribution_message(inputs, changed, "the predictions are those of"),
                      UserWarning, stacklevel=3)


def query(
    checkpoint: str | os.PathLike,
    inputs: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 64,
    device: str | None = None,
    overwrite: bool = False,
    resample: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict for every sample of ``inputs`` and write a dataset file of predictions.

    An existing ``out`` is kept unless ``overwrite``; ``out`` may never be the input file.
    ``progress``: a bar (stderr) once predicting has taken a second.
    """
    from pdeforge.datasets.predictions import write_predictions

    out_path, in_path = Path(out), Path(inputs)
    # the checkpoint first (a missing one was named only once --out was fixed)
    surrogate = Surrogate.load(checkpoint, device)
    # (checked before any prediction is made: a bad --out found at the end lost the work)
    for other, what in ((in_path, "the input file"), (Path(checkpoint), "the checkpoint")):
        if out_path.exists() and other.exists() and out_path.resolve() == other.resolve():
            raise SurrogateInputError(f"--out {out} is {what}; choose another output name")
    if out_path.is_dir():
        raise SurrogateInputError(
            f"--out {out} is a directory; give a file name, e.g. {out_path / 'predictions.nc'}"
        )
    if not out_path.parent.is_dir():
        raise SurrogateInputError(
            f"--out {out}: the folder {out_path.parent} does not exist; create it first"
        )
    if out_path.suffix.lower() not in PREDICTION_SUFFIXES:
        # (it wrote HDF5 into q.npy, which np.load cannot read)
        raise SurrogateInputError(
            f"--out {out}: query writes a netCDF4 (HDF5) dataset file; name it with one of "
            f"{', '.join(PREDICTION_SUFFIXES)} (read it with xarray or "
            "pdeforge.datasets.open_dataset)"
        )
    if out_path.exists() and not overwrite:
        raise SurrogateInputError(
            f"{out} exists; choose another --out or pass --overwrite to replace it"
        )
    try:  # (its trial file: a read-only folder or mount was found only after predicting,
        # and HDF5's error then read as a damaged input file)
        output_directory(out_path.parent, f"--out {out}: the folder")
    except PdeforgeError as exc:
        raise SurrogateInputError(str(exc)) from None
    data, converged = read_query_inputs(inputs, surrogate)
    _warn_other_distribution(inputs, data, surrogate)
    keep = _samples_to_predict(data, converged, inputs)
    if not keep.any():
        raise SurrogateInputError(
            f"{inputs}: every sample is marked not converged and holds NaN or inf in its "
            "inputs: nothing to predict")
    if not keep.all():
        warnings.warn(
            f"{inputs}: {int((~keep).sum())} sample(s) marked not converged hold NaN or inf "
            f"in their inputs (first: {np.flatnonzero(~keep)[:5].tolist()}); they are not "
            "predicted: their predictions are NaN and marked converged = false",
            UserWarning, stacklevel=2)
    todo = data.isel({SAMPLE: np.flatnonzero(keep)})
    surrogate.warm_up(todo.isel({SAMPLE: slice(0, batch_size)}), batch_size, resample)
    t0 = time.perf_counter()
    predictions = surrogate.predict(todo, batch_size=batch_size, resample=resample,
                                    progress=progress)
    seconds = (time.perf_counter() - t0) / todo.sizes[SAMPLE]
    if not keep.all():  # every sample of the file, NaN for those not predicted
        predictions = (predictions.assign_coords({SAMPLE: np.flatnonzero(keep)})
                       .reindex({SAMPLE: np.arange(data.sizes[SAMPLE])})
                       .drop_vars(SAMPLE))
    for d in surrogate.grid_dims:
        predictions[d].attrs.update(data[d].attrs if d in data.coords else {})
    for name, where in surrogate.data_info.get("masks", {}).items():
        if name in predictions:  # defined where that input is 1, as in the data
            predictions[name].attrs["valid_where"] = where
    info = surrogate.info()
    units = surrogate.data_info.get("units", {})
    for name in surrogate.inputs:
        data[name].attrs.setdefault("units", units.get(name, ""))
    seed = data.attrs.get("seed", UNKNOWN_SEED)  # (none from a .npy array)
    # the inputs' own seed where it is one (another program's may be text, a list ...)
    seed = int(seed) if np.ndim(seed) == 0 and isinstance(seed, int | np.integer) else UNKNOWN_SEED
    ckpt = str(Path(checkpoint).resolve())
    try:
        path = write_predictions(
            out,
            data,
            predictions,
            problem=surrogate.problem or "unknown",
            solver=f"pdeforge surrogate {info['model']} ({ckpt})",
            seconds_per_sample=seconds,
            seed=seed,
            converged=keep,
            config={"surrogate": ckpt, "inputs": str(in_path.resolve()),
                    "inputs_problem": inputs_problem(data), "model": info["model"],
                    "grid_mode": predictions.attrs["grid_mode"],
                    "training_grid": predictions.attrs["training_grid"]},
        )
    except (OSError, RuntimeError) as exc:  # (HDF5 reports a full disk as RuntimeError)
        # the output's failure, not the input's: main() read any HDF5 error as damage to
        # the files the command was given
        from pdeforge.datasets.runner import _write_failure

        reason = _write_failure(exc)
        if reason is None:
            raise
        raise SurrogateInputError(
            f"cannot write the predictions to {out} ({reason}); make room or choose "
            "another --out, then run the query again"
        ) from exc
    return {
        "out": str(path),
        "n_samples": int(data.sizes[SAMPLE]),
        "seconds_per_sample": seconds,
        "model": info["model"],
        "grid_mode": predictions.attrs["grid_mode"],
        "training_grid": predictions.attrs["training_grid"],
    }
