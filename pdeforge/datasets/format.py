"""The pdeforge dataset file, format version 1: names, and the one writer.

The contract is written down in ``DESIGN.md`` (section "Dataset file"); this module holds
its fixed names as constants and the only code that writes such files, so that shards,
assembled datasets and prediction files cannot drift apart. ``check.py`` validates files
against the same constants.

A file is HDF5 that is also valid netCDF4 (written with h5netcdf): plain
``xarray.open_dataset(path, engine="h5netcdf")`` opens it, and h5py reads it directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1

# Dimension names (DESIGN.md): `sample` first on every per-sample variable.
SAMPLE = "sample"
X, Y, Z = "x", "y", "z"
T = "t"
VX, VY, VZ = "vx", "vy", "vz"
COMPONENT = "component"
SPATIAL_DIMS = (X, Y, Z)
#: Dimensions that must come with a 1-D coordinate variable of the same name.
COORDINATE_DIMS = (X, Y, Z, T, VX, VY, VZ)

# Variable roles.
INPUT, OUTPUT, PARAMETER, DIAGNOSTIC = "input", "output", "parameter", "diagnostic"
ROLES = (INPUT, OUTPUT, PARAMETER, DIAGNOSTIC)

# Diagnostics every file carries, one value per sample.
CONVERGED = "converged"
SOLVE_SECONDS = "solve_seconds"
REQUIRED_DIAGNOSTICS = (CONVERGED, SOLVE_SECONDS)

# Root attributes.
ATTR_FORMAT = "pdeforge_format"
ATTR_PROBLEM = "problem"
ATTR_SOLVER = "solver"
ATTR_VERSION = "pdeforge_version"
ATTR_SEED = "seed"
ATTR_N_SAMPLES = "n_samples"
ATTR_CONFIG = "config"
ATTR_CREATED = "created"
ATTR_STATUS = "status"
REQUIRED_ROOT_ATTRS = (
    ATTR_FORMAT,
    ATTR_PROBLEM,
    ATTR_SOLVER,
    ATTR_VERSION,
    ATTR_SEED,
    ATTR_N_SAMPLES,
    ATTR_CONFIG,
    ATTR_CREATED,
    ATTR_STATUS,
)
#: the ``seed`` of a file whose samples no seed made (predictions of inputs given as an
#: array, or read from a file that records none)
UNKNOWN_SEED = -1
STATUS_COMPLETE = "complete"
STATUS_SHARD = "shard"

COMPRESSIONS = ("none", "lzf", "gzip")
FIELD_DTYPES = ("float32", "float64")

# xarray's convention for booleans in netCDF: int8 storage plus attrs["dtype"] = "bool";
# xarray decodes such a variable back to bool.
_BOOL_ATTR = "dtype"


@dataclass(frozen=True)
class VarSpec:
    """One per-sample variable of a problem family.

    Attributes:
        name: variable name in the file.
        dims: dimensions after ``sample`` (e.g. ``("x", "y")``; ``()`` for a scalar).
        role: one of :data:`ROLES`.
        dtype: numpy dtype name; ``"field"`` means the dataset's field dtype
            (float32 by default, float64 on request).
        attrs: ``units`` and/or ``long_name`` and anything else worth keeping.
    """

    name: str
    dims: tuple[str, ...]
    role: str
    dtype: str = "field"
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def resolved_dtype(self, field_dtype: str) -> np.dtype:
        return np.dtype(field_dtype if self.dtype == "field" else self.dtype)


@dataclass(frozen=True)
class Coordinate:
    """A 1-D coordinate variable named like its dimension."""

    name: str
    values: np.ndarray
    attrs: Mapping[str, Any] = field(default_factory=dict)


def is_decreasing(values: Any) -> bool:
    """Whether a 1-D coordinate strictly decreases (at least two numbers). The format
    allows a spatial coordinate either direction; pdeforge's readers, training and
    predictions present increasing ones."""
    values = np.asarray(values)
    return (
        values.ndim == 1
        and values.size > 1
        and np.issubdtype(values.dtype, np.number)
        # (compared, not np.diff: a difference of unsigned integers wraps around)
        and bool(np.all(values[1:] < values[:-1]))
    )


def coordinate(h5: Any, dim: str, size: int | None = None) -> np.ndarray | None:
    """The coordinate variable of ``dim`` in an open h5py file as float64 values, or None
    where the file has none: a netCDF dimension without a variable is stored as an
    HDF5 dimension scale of zeros whose NAME says so (not coordinates to compare)."""
    if dim not in h5 or not hasattr(h5[dim], "shape") or h5[dim].ndim != 1:
        return None
    if size is not None and h5[dim].shape[0] != size:
        return None
    name = h5[dim].attrs.get("NAME", b"")
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    if "not a netCDF variable" in name:
        return None
    try:
        return np.asarray(h5[dim][:], dtype=np.float64)
    except (TypeError, ValueError):  # text labels, not numbers
        return None


def as_text(values: np.ndarray) -> np.ndarray:
    """Labels as text: fixed-length bytes (h5py's strings) and bytes objects decoded."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return values.astype(str)
    if values.dtype.kind == "O":
        return np.array([v.decode() if isinstance(v, bytes) else str(v)
                         for v in values.tolist()], dtype=object)
    return values


def diagnostic_specs(extra: Sequence[VarSpec] = ()) -> list[VarSpec]:
    """The diagnostics every file has, followed by a solver's own."""
    base = [
        VarSpec(CONVERGED, (), DIAGNOSTIC, "bool", {"long_name": "solver converged"}),
        VarSpec(
            SOLVE_SECONDS, (), DIAGNOSTIC, "float64",
            {"units": "s", "long_name": "wall time of the solve (solvers that solve samples "
             "together: the batch's time over its samples)"},
        ),
    ]
    return base + list(extra)


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def config_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON of a resolved config (sorted keys: equal configs, equal strings)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


class DatasetWriter:
    """Create a format-1 file and fill it sample block by sample block.

    The file is created with every variable at its final size, chunked one sample per
    chunk; :meth:`write` fills rows ``start:start + len(block)``. Callers write to a
    temporary name and rename when done (see ``runner.py``), so a reader never sees a
    half-written file under the final name.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        specs: Sequence[VarSpec],
        coords: Sequence[Coordinate],
        n_samples: int,
        attrs: Mapping[str, Any],
        field_dtype: str = "float32",
        compression: str = "none",
    ) -> None:
        import h5netcdf

        self.path = Path(path)
        self.specs = {s.name: s for s in specs}
        self.n_samples = int(n_samples)
        self._file = h5netcdf.File(self.path, "w")
        try:
            dims: dict[str, int] = {SAMPLE: self.n_samples}
            for c in coords:
                dims[c.name] = len(c.values)
            self._file.dimensions = dims
            for c in coords:
                values = np.asarray(c.values)
                if values.dtype.kind in "UO":  # labels (e.g. sample ids): netCDF strings
                    import h5py

                    v = self._file.create_variable(c.name, (c.name,), dtype=h5py.string_dtype(),
                                                   data=values.astype(str).astype(object))
                else:
                    v = self._file.create_variable(c.name, (c.name,), data=values)
                v.attrs.update(_attr_values(c.attrs))
            comp = None if compression == "none" else compression
            comp_opts = 1 if compression == "gzip" else None
            for s in specs:
                dtype = s.resolved_dtype(field_dtype)
                store = np.int8 if dtype == np.bool_ else dtype
                shape = tuple(dims[d] for d in s.dims)
                # fields: one sample per chunk; per-sample scalars: one chunk for many
                chunks = (1, *shape) if shape else (max(1, min(self.n_samples, 65536)),)
                v = self._file.create_variable(
                    s.name,
                    (SAMPLE, *s.dims),
                    dtype=store,
                    chunks=chunks,
                    compression=comp if shape else None,
                    compression_opts=comp_opts if shape else None,
                    # a checksum a chunk: a damaged copy fails to read (check, readers)
                    # instead of passing garbage for numbers (it passed check as OK)
                    fletcher32=True,
                )
                var_attrs = dict(s.attrs)
                var_attrs["role"] = s.role
                if dtype == np.bool_:
                    var_attrs[_BOOL_ATTR] = "bool"
                v.attrs.update(_attr_values(var_attrs))
            self._file.attrs.update(_attr_values(attrs_with_defaults(attrs, self.n_samples)))
        except BaseException:
            self._file.close()
            raise

    def write(self, start: int, block: Mapping[str, np.ndarray]) -> None:
        """Write arrays whose first axis is the sample axis at rows ``start:...``."""
        missing = set(self.specs) - set(block)
        if missing:
            raise KeyError(f"block lacks variables {sorted(missing)}")
        for name in self.specs:
            arr = np.asarray(block[name])
            var = self._file.variables[name]
            if arr.shape[1:] != var.shape[1:]:
                raise ValueError(
                    f"variable {name!r}: block has shape {arr.shape[1:]} per sample, "
                    f"file expects {var.shape[1:]}"
                )
            var[start : start + arr.shape[0]] = arr.astype(var.dtype, copy=False)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attrs_with_defaults(attrs: Mapping[str, Any], n_samples: int) -> dict[str, Any]:
    out = {ATTR_FORMAT: FORMAT_VERSION, ATTR_CREATED: utc_now(), ATTR_N_SAMPLES: n_samples}
    out.update(attrs)
    return out


def _attr_values(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """netCDF-storable attribute values (dicts become JSON, bools become int8)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if isinstance(v, Mapping):
            v = config_json(v)
        elif isinstance(v, bool | np.bool_):
            v = np.int8(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            v = np.int64(v)
        elif isinstance(v, float):
            v = np.float64(v)
        out[k] = v
    return out


def attr_value(attrs: Any, key: str) -> Any:
    """An attribute as a plain Python value (netCDF stores scalars as 1-element arrays)."""
    value = attrs.get(key)
    if isinstance(value, bytes | np.bytes_):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.size == 1:
            value = value.reshape(()).item()
            if isinstance(value, bytes):  # a 1-element fixed-length string array
                return value.decode()
        else:
            return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def attr_values(attrs: Any) -> dict[str, Any]:
    """Every attribute of ``attrs`` as :func:`attr_value` reads it."""
    return {key: attr_value(attrs, key) for key in attrs}


#: netCDF (CF) attributes that mark stored values as "no data"; xarray reads such values
#: as NaN, so every pdeforge reader does too (:func:`fill_values`, :func:`masked`)
FILL_ATTRS = ("_FillValue", "missing_value")
#: CF packing attributes: stored values that mean value * scale_factor + add_offset. The
#: format stores values as they are; ``check`` and the readers refuse a packed variable
PACKING_ATTRS = ("scale_factor", "add_offset")


def encoding_problem(attrs: Any, dtype: np.dtype) -> str | None:
    """What makes a variable's stored numbers other than its values as netCDF readers
    (xarray) decode them, or None: CF packing (:data:`PACKING_ATTRS`), or netCDF's
    ``_Unsigned`` read of an integer type of the other signedness (int8 -56 with
    ``_Unsigned = "true"`` is 200 to xarray)."""
    packing = [a for a in PACKING_ATTRS if a in attrs]
    if packing:
        return f"is packed (attribute {', '.join(packing)})"
    flag = attrs.get("_Unsigned")
    if flag is not None and np.issubdtype(dtype, np.integer):
        text = flag.decode() if isinstance(flag, bytes) else str(flag)
        unsigned = text.strip().lower() == "true"
        if unsigned != np.issubdtype(dtype, np.unsignedinteger):
            return (f"is stored as {dtype} read as {'un' if unsigned else ''}signed "
                    f"(attribute _Unsigned = {text!r})")
    return None


def fill_values(attrs: Any) -> list[float]:
    """The finite "no data" values a variable declares (``_FillValue``, ``missing_value``;
    a NaN fill needs no masking)."""
    out: list[float] = []
    for key in FILL_ATTRS:
        value = attrs.get(key)
        if value is None:
            continue
        for v in np.atleast_1d(np.asarray(value)).ravel().tolist():
            if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v):
                out.append(float(v))
    return out


def masked(values: np.ndarray, fills: Sequence[float]) -> np.ndarray:
    """``values`` with every entry equal to one of ``fills`` replaced by NaN, as xarray
    decodes it (integers become float64); ``values`` itself when there is nothing to mask."""
    if not fills:
        return values
    values = np.asarray(values)
    hit = np.isin(values, fills)
    if not hit.any():
        return values
    out = values.astype(np.result_type(values.dtype, np.float32), copy=True)
    out[hit] = np.nan
    return out
