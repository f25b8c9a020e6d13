"""``TorchDataset``: samples of a dataset file as (input, output) tensors for training.

Each item is ``(x, y)`` with ``x`` shaped (C_in, *grid) and ``y`` shaped (C_out, *grid).
The grid dims are the spatial dims (``x``, ``y``, ``z``) the fields share; every other
non-sample dim of a field (time ``t``, ``component``, ...) is flattened into channels,
in the order the variables are listed. A per-sample scalar (e.g. a ``parameter``) named as
an input is broadcast to a constant channel.

Reading is lazy by default for large files: h5py is opened on first access in each
process (DataLoader workers each get their own handle, never a handle inherited across
fork), and one sample is one chunk. Small files are read into memory once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pdeforge.datasets.check import DIMENSION_SCALES_HINT, open_h5, reading
from pdeforge.datasets.format import (
    CONVERGED,
    DIAGNOSTIC,
    INPUT,
    OUTPUT,
    PARAMETER,
    SAMPLE,
    SPATIAL_DIMS,
    attr_value,
    fill_values,
    is_decreasing,
    masked,
)
from pdeforge.datasets.readers import verify_dataset
from pdeforge.errors import DatasetFormatError

#: Files whose selected variables fit in this many bytes are loaded into memory ("auto").
IN_MEMORY_BYTES = 2 * 2**30


def decreasing_dims(h5: Any, dims: Sequence[str]) -> list[str]:
    """The dims among ``dims`` whose coordinate variable in the open file ``h5``
    decreases (:func:`~pdeforge.datasets.format.is_decreasing`)."""
    return [d for d in dims if d in h5 and is_decreasing(h5[d][:])]


def channel_blocks(names: Sequence[str], channels: Mapping[str, int]
                   ) -> dict[str, tuple[int, int]]:
    """Where each variable's channels lie in the stacked tensor: {name: (first, stop)},
    in the order given (``channels``: a variable's channel count, default 1)."""
    out, start = {}, 0
    for name in names:
        stop = start + int(channels.get(name, 1))
        out[name] = (start, stop)
        start = stop
    return out


def _dims(h5var: Any) -> tuple[str, ...]:
    """Dimension names of an h5py dataset written as netCDF4 (dimension scales)."""
    names = []
    for dim in h5var.dims:
        if len(dim) == 0:
            raise DatasetFormatError(
                f"variable {h5var.name!r} has an axis without a named dimension; "
                f"the file is not valid netCDF4: {DIMENSION_SCALES_HINT}"
            )
        names.append(dim[0].name.rsplit("/", 1)[-1])
    return tuple(names)


class TorchDataset(torch.utils.data.Dataset):
    """(input, output) tensor pairs from a pdeforge dataset file.

    Args:
        path: dataset file.
        inputs: variable names stacked into input channels; default every per-sample
            variable with role ``input`` or ``parameter`` (a per-sample scalar is a
            constant channel).
        outputs: variable names for output channels; default every field with role
            ``output`` (per-sample scalars only when named: warned about).
        indices: sample indices (integers or a boolean mask of length n; default all).
        skip_nonconverged: drop samples whose ``converged`` diagnostic is false (from
            ``indices`` too), so that no NaN sample reaches training.
        in_memory: True, False, or ``"auto"`` (load when the selection fits in
            :data:`IN_MEMORY_BYTES`).
        dtype: tensor dtype of the returned items.
        grid_dims: the order of the items' grid axes (a model's, e.g. ``("x", "y")``);
            default the first selected variable's order in the file. The file's spatial
            dims must be these.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        inputs: Sequence[str] | None = None,
        outputs: Sequence[str] | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        skip_nonconverged: bool = True,
        in_memory: bool | str = "auto",
        dtype: torch.dtype = torch.float32,
        grid_dims: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path)
        verify_dataset(self.path)
        self.dtype = dtype
        with reading(self.path), open_h5(self.path) as h5:
            datasets = {
                name: ds for name, ds in h5.items()
                if isinstance(ds, h5py.Dataset) and not h5py.h5ds.is_scale(ds.id)
            }
            variables = {
                name: (_dims(ds), ds.shape, attr_value(ds.attrs, "role"))
                for name, ds in datasets.items()
            }
            numeric = {name: np.issubdtype(ds.dtype, np.number) or ds.dtype == np.bool_
                       for name, ds in datasets.items()}
            # values a variable declares as "no data" (_FillValue, missing_value) read as
            # NaN, as xarray reads them: a converged sample holding one is then refused
            self._fills = {name: fill_values(ds.attrs) for name, ds in datasets.items()}
            units = {name: attr_value(ds.attrs, "units") for name, ds in datasets.items()}
            n = h5[CONVERGED].shape[0] if CONVERGED in h5 else None
            converged = h5[CONVERGED][:].astype(bool) if CONVERGED in h5 else None
            decreasing = set(decreasing_dims(h5, SPATIAL_DIMS))
        fields = {k: v for k, v in variables.items() if v[0][:1] == (SAMPLE,)}
        if n is None:
            n = next(iter(fields.values()))[1][0] if fields else 0
        for label, names in (("inputs", inputs), ("outputs", outputs)):
            if isinstance(names, str):
                raise TypeError(f"{label} must be a list of variable names, e.g. [{names!r}]")
        if in_memory not in (True, False, "auto"):
            raise ValueError(f"in_memory must be True, False or 'auto', got {in_memory!r}")
        # by default every per-sample input and parameter (a scalar becomes a constant
        # channel: what sets the solution, e.g. a diffusivity) and every output field
        self.inputs = list(inputs) if inputs is not None else [
            k for k, (_, _, r) in fields.items() if r in (INPUT, PARAMETER) and numeric[k]
        ]
        self.outputs = list(outputs) if outputs is not None else self._by_role(fields, OUTPUT)
        if outputs is None:
            scalars = [k for k, (d, _, r) in fields.items() if r == OUTPUT and len(d) == 1]
            if scalars:
                warnings.warn(
                    f"{self.path}: the per-sample scalar output(s) {scalars} are not among "
                    "the default outputs (an operator predicts fields on the grid); name "
                    "them in outputs=[...] to train on them as constant fields",
                    UserWarning,
                    stacklevel=2,
                )
        for label, given, roles in (("inputs", inputs, (INPUT, PARAMETER)),
                                    ("outputs", outputs, (OUTPUT,))):
            shared = [k for k, v in variables.items() if v[2] in roles and k not in fields]
            # (with nothing selected, the error below names them)
            if given is None and shared and getattr(self, label):
                warnings.warn(
                    f"{self.path}: {shared} have role {' or '.join(map(repr, roles))} but "
                    f"no 'sample' dim, so they are not among the {label} (the same for every "
                    "sample; `pdeforge check` says so): store them with a 'sample' dim "
                    "first, their values repeated, to use them",
                    UserWarning,
                    stacklevel=2,
                )
        for label, names in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not names:
                roles = (INPUT, PARAMETER) if label == "inputs" else (OUTPUT,)
                role = " or ".join(map(repr, roles))
                misplaced = {k: v[0] for k, v in variables.items()
                             if v[2] in roles and k not in fields}
                raise DatasetFormatError(
                    f"{self.path}: no {label} selected and no per-sample "
                    f"{'variable' if label == 'inputs' else 'field'} has role {role}; "
                    f"pass {label}=[...]"
                    + (f" (these have role {role} but not 'sample' as their first dim: "
                       f"{misplaced}; `pdeforge check` lists the format's rules)"
                       if misplaced else "")
                )
            for name in names:
                if name not in fields:
                    raise DatasetFormatError(
                        f"{self.path}: no per-sample variable {name!r} for {label}; "
                        f"available: {sorted(fields)}"
                        + (f" ({name!r} has dims {variables[name][0]}, no 'sample' dim: "
                           "store it with one first, its values repeated for every sample)"
                           if name in variables else "")
                    )
                if not numeric[name]:
                    raise DatasetFormatError(
                        f"{self.path}: {name!r} does not hold numbers and cannot be one of "
                        f"the {label}; choose {label} among "
                        f"{sorted(k for k in fields if numeric[k])}"
                    )
                if fields[name][2] == DIAGNOSTIC:
                    # the solver's record (iterations, residual, time), not the problem's
                    # data: a model of it learns the solver, not the PDE
                    usable = sorted(k for k, v in fields.items() if v[2] != DIAGNOSTIC)
                    raise DatasetFormatError(
                        f"{self.path}: {name!r} is a diagnostic of the solver, not data of "
                        f"the problem; choose {label} among {usable}"
                    )
        both = [name for name in self.inputs if name in self.outputs]
        if both:  # a model of its own input: the identity, at no one's benefit
            raise DatasetFormatError(
                f"{self.path}: {both} are both inputs and outputs; a model would learn to "
                "copy them: name each variable on one side only")
        self.grid_dims = self._grid_dims(fields, grid_dims)
        self.grid_shape = self._grid_shape(fields)
        # items are in increasing coordinates: a decreasing grid dim is flipped on read
        self._flip = tuple(1 + k for k, d in enumerate(self.grid_dims) if d in decreasing)
        if indices is None:
            idx = np.arange(n)
        else:
            raw = np.asarray(indices)
            if raw.dtype == bool:
                if raw.shape != (n,):
                    raise IndexError(f"a boolean mask for indices needs length {n}, "
                                     f"got shape {raw.shape}")
                idx = np.flatnonzero(raw)
            elif raw.size and not np.issubdtype(raw.dtype, np.integer):
                raise TypeError(f"indices must be integers or a boolean mask, got {raw.dtype}")
            else:
                idx = raw.astype(np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise IndexError(f"indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
        #: samples of ``indices`` left out as marked not converged
        self.n_not_converged = 0
        if skip_nonconverged and converged is not None:
            self.n_not_converged = int(np.count_nonzero(~converged[idx]))
            idx = idx[converged[idx]]
        self.indices = idx
        self._converged = converged
        self._fields = fields
        #: each selected variable's ``units`` ("" where it has none or not as text)
        self.units = {name: units[name] if isinstance(units.get(name), str) else ""
                      for name in [*self.inputs, *self.outputs]}
        self.in_channels = sum(self._channels(fields, v) for v in self.inputs)
        self.out_channels = sum(self._channels(fields, v) for v in self.outputs)
        self._h5: Any = None
        self._pid: int | None = None
        self._memory: dict[str, np.ndarray] | None = None
        if in_memory == "auto":
            itemsize = np.dtype(np.float64).itemsize
            per_sample = (self.in_channels + self.out_channels) * int(np.prod(self.grid_shape))
            in_memory = per_sample * itemsize * len(idx) <= IN_MEMORY_BYTES
        if in_memory:
            unique, inverse = np.unique(idx, return_inverse=True)
            with reading(self.path, "loading its samples"), open_h5(self.path) as h5:
                self._memory = {}
                for v in dict.fromkeys(self.inputs + self.outputs):
                    if len(unique) > n // 2:  # one contiguous read beats a fancy selection
                        data = h5[v][:][unique]
                    else:
                        data = h5[v][unique] if len(unique) else h5[v][:0]
                    self._memory[v] = masked(np.asarray(data), self._fills[v])[
                        inverse.reshape(-1)]
        self.in_memory = bool(in_memory)
        self._check_loaded()

    @staticmethod
    def _by_role(fields: dict, role: str) -> list[str]:
        return [k for k, (dims, _, r) in fields.items() if r == role and len(dims) > 1]

    def _grid_dims(self, fields: dict, wanted: Sequence[str] | None) -> tuple[str, ...]:
        grids = {
            name: tuple(d for d in fields[name][0] if d in SPATIAL_DIMS)
            for name in self.inputs + self.outputs
        }
        # one set of spatial dims; their order may differ between variables (the format
        # does not fix it): items follow the first variable's, the others are transposed
        if not any(grids.values()):
            dims = {name: fields[name][0] for name in self.inputs + self.outputs}
            raise DatasetFormatError(
                f"{self.path}: none of the selected variables has a spatial dim "
                f"{SPATIAL_DIMS} (their dims: {dims}); the grid dims are named x, y, z "
                "(DESIGN.md): rename them, e.g. ds.rename(lon='x', lat='y') in xarray"
            )
        if len({frozenset(g) for g in grids.values() if g}) != 1:
            raise DatasetFormatError(
                f"{self.path}: selected variables do not share one spatial grid: {grids}; "
                "select the inputs and outputs of one grid (inputs=..., outputs=...; "
                "--data.inputs / --data.outputs in training)"
            )
        found = next(g for g in grids.values() if g)
        if wanted is None:
            return found
        # another file's order (a model trained on (x, y) fed a file stored as (y, x)):
        # the items are transposed to it
        if isinstance(wanted, str) or sorted(wanted) != sorted(found):
            raise DatasetFormatError(
                f"{self.path}: the grid dims are {found}, not {tuple(wanted)} as asked "
                "(the data of a model trained on other dims); use data on the model's grid"
            )
        return tuple(wanted)

    def _grid_shape(self, fields: dict) -> tuple[int, ...]:
        sizes: dict[str, dict[str, int]] = {}
        for name in self.inputs + self.outputs:
            dims, shape, _ = fields[name]
            for d, size in zip(dims, shape, strict=True):
                if d in self.grid_dims:
                    sizes.setdefault(d, {})[name] = size
        for d, by_name in sizes.items():
            if len(set(by_name.values())) > 1:
                raise DatasetFormatError(
                    f"{self.path}: the selected variables have different lengths along "
                    f"{d!r}: {by_name}; `pdeforge check` reports the file's dimensions"
                )
        return tuple(next(iter(sizes[d].values())) for d in self.grid_dims)

    def _channels(self, fields: dict, name: str) -> int:
        dims, shape, _ = fields[name]
        return int(np.prod([s for d, s in zip(dims[1:], shape[1:], strict=True)
                            if d not in SPATIAL_DIMS]))

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, None  # never share an h5py handle across processes
        return state

    def _handle(self) -> Any:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_h5(self.path)
            self._pid = os.getpid()
        return self._h5

    def _read(self, name: str, item: int) -> np.ndarray:
        if self._memory is not None:
            return self._memory[name][item]
        sample = int(self.indices[item])
        with reading(self.path, f"{name!r} of sample {sample}"):
            return masked(self._handle()[name][sample], self._fills[name])

    def _stack(self, names: list[str], item: int) -> torch.Tensor:
        parts = []
        for name in names:
            dims = self._fields[name][0][1:]
            arr = np.asarray(self._read(name, item))
            grid_axes = [dims.index(d) for d in self.grid_dims if d in dims]
            other = [i for i in range(arr.ndim) if i not in grid_axes]
            arr = np.transpose(arr, other + grid_axes)
            if not grid_axes:  # a scalar per sample: constant channel
                arr = np.broadcast_to(arr.reshape(-1, *[1] * len(self.grid_shape)),
                                      (arr.size, *self.grid_shape))
            parts.append(arr.reshape(-1, *self.grid_shape))
        out = np.concatenate(parts, axis=0)
        if self._flip:
            out = np.ascontiguousarray(np.flip(out, self._flip))
        if self._memory is None and self._claims_converged(item) and not np.isfinite(out).all():
            bad = [n for n, part in zip(names, parts, strict=True) if not np.isfinite(part).all()]
            self._refuse_nonfinite(int(self.indices[item]), bad)
        return torch.from_numpy(out).to(self.dtype)

    def _claims_converged(self, item: int) -> bool:
        """Whether sample ``item`` (a position in ``indices``) is marked converged."""
        return self._converged is not None and bool(self._converged[self.indices[item]])

    def _refuse_nonfinite(self, sample: int, names: list[str]) -> None:
        raise DatasetFormatError(
            f"{self.path}: sample {sample} holds NaN or inf in {names} although its "
            "'converged' diagnostic says it converged; `pdeforge check` lists every such "
            "sample: mark them converged=false (skip_nonconverged then drops them) or "
            "regenerate them"
        )

    def _check_loaded(self) -> None:
        """In memory: every selected sample marked converged is finite (checked once)."""
        if self._converged is None or self._memory is None or not len(self.indices):
            return
        claimed = self._converged[self.indices]
        for name, data in self._memory.items():
            finite = np.isfinite(data.reshape(len(data), -1)).all(axis=1)
            bad = np.flatnonzero(claimed & ~finite)
            if bad.size:
                self._refuse_nonfinite(int(self.indices[bad[0]]), [name])

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= item < len(self):
            raise IndexError(f"index {item} out of range for {len(self)} samples")
        item = item % len(self)
        return self._stack(self.inputs, item), self._stack(self.outputs, item)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __repr__(self) -> str:
        grid = dict(zip(self.grid_dims, self.grid_shape, strict=True))
        return (f"TorchDataset({self.path.name!r}, n={len(self)}, inputs={self.inputs}, "
                f"outputs={self.outputs}, grid={grid}, in_memory={self.in_memory})")
