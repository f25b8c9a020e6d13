"""Validation of dataset files against format version 1 (``pdeforge check FILE``).

Every rule of DESIGN.md "Dataset file" is checked here. A violation of what the data mean
(dims, roles, attributes, values) is an error: the file is not in the published format. A
departure in how they are stored (chunks of one sample, lzf or gzip level 1) or a
coordinate without units or long_name is a warning: readers and training use such a file
as it is, only slower or less documented.
Used by the CLI, by the runner on every file it assembles, and by the readers' open path
(:func:`open_h5`), which turns unreadable files into one clear error.
"""

from __future__ import annotations

import calendar
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pdeforge.datasets.format import (
    ATTR_CONFIG,
    ATTR_CREATED,
    ATTR_FORMAT,
    ATTR_N_SAMPLES,
    ATTR_PROBLEM,
    ATTR_SEED,
    ATTR_STATUS,
    COMPONENT,
    CONVERGED,
    COORDINATE_DIMS,
    DIAGNOSTIC,
    FORMAT_VERSION,
    INPUT,
    OUTPUT,
    PARAMETER,
    REQUIRED_DIAGNOSTICS,
    REQUIRED_ROOT_ATTRS,
    ROLES,
    SAMPLE,
    SOLVE_SECONDS,
    SPATIAL_DIMS,
    STATUS_COMPLETE,
    attr_value,
    attr_values,
    encoding_problem,
    fill_values,
    is_decreasing,
    masked,
)
from pdeforge.datasets.grid import GRID_ATTR, GRID_KINDS, PERIODIC, axis_kind, declared_kind
from pdeforge.errors import DatasetFormatError, PdeforgeError

#: The fix for an HDF5 file whose axes are not netCDF dimensions.
DIMENSION_SCALES_HINT = ("write it with h5netcdf or xarray, or attach h5py dimension scales "
                         "(sample, x, y, ...) to every axis")

#: The fix for a variable whose stored numbers are not its values.
ENCODED_FIX = ("its stored numbers are not its values; the format stores values as they "
               "are: write them decoded (xarray: drop scale_factor/add_offset/_Unsigned "
               "from the encoding)")


def _listed(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


#: Bytes read at a time when scanning data for non-finite values.
_SCAN_BYTES = 64 * 2**20


#: Parts of errors that concern metadata only: the readers and training read such a file
#: correctly, so they warn about these instead of refusing it (``metadata_only``).
_METADATA_ERRORS = (
    "missing root attribute",
    "root attribute ",
    "config[",
    "but n_samples",
    "has neither units nor long_name",
    ": attribute units must be text",
    ": attribute long_name must be text",
    f"missing per-sample diagnostic {SOLVE_SECONDS!r}",
    f"diagnostic {SOLVE_SECONDS!r}",
    "; fields are float32 or float64",
    # a variable without a (valid) role is one the readers leave alone, and a file whose
    # roles select nothing is refused by the reader's own selection, naming the fix
    ": attribute role is",
    "must have role 'diagnostic'",
    "no per-sample variable with role",
    # a non-numeric variable is refused by a reader only if it is selected
    "inputs, outputs and parameters are numbers",
)


_ORDINAL_DATE = re.compile(r"(\d{4})-?(\d{3})(?=$|[T ])")


def is_iso8601(text: str) -> bool:
    """Whether ``text`` is an ISO 8601 date or time: Python's ``fromisoformat`` (3.11)
    takes calendar and week dates, and ordinal dates (``2026-336``, ``2026336``) are
    rewritten as calendar dates first, which it does not take."""
    match = _ORDINAL_DATE.match(text)
    if match:
        year, day = int(match.group(1)), int(match.group(2))
        if not 1 <= day <= (366 if calendar.isleap(year) else 365):
            return False
        text = (date(year, 1, 1) + timedelta(days=day - 1)).isoformat() + text[match.end():]
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def metadata_only(error: str) -> bool:
    """True for an error of :func:`check_file` that does not change what the data read
    as (missing or ill-typed root attributes, units, ``solve_seconds``, a field's float
    width), False for one that does (dims, coordinates, complex or non-numeric values,
    ``converged``)."""
    return any(part in error for part in _METADATA_ERRORS)


@dataclass
class CheckReport:
    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        lines = [f"{self.path}: " + ("OK" if self.ok else f"{len(self.errors)} problem(s)")]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def open_h5(path: str | Path):
    """Open an HDF5 file read-only, turning every way it can be unreadable into one error."""
    import h5py

    path = Path(path)
    if not path.exists():
        if Path(f"{path}.parts").is_dir():  # the runner's shards of an unfinished run
            raise DatasetFormatError(
                f"{path} is not written yet: {path}.parts holds the shards of a generation "
                "run that did not finish; run the same `pdeforge generate` command again "
                "to resume it (finished shards are kept)")
        raise DatasetFormatError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise DatasetFormatError(f"{path} is a directory, not a dataset file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read the file ({exc})") from None
    if not is_hdf5:
        raise DatasetFormatError(
            f"{path} is not an HDF5/netCDF4 file (wrong file, or truncated at the start); "
            "a pdeforge dataset is an HDF5 (netCDF4) file, as `pdeforge generate` writes "
            "it (DESIGN.md gives the format for files of other programs)"
        )
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetFormatError(
            f"{path} is a damaged HDF5 file ({_first_line(exc)}): it was probably truncated "
            "by an interrupted copy or write; copy or regenerate it"
        ) from None


def _first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type's name when empty), cut to
    ``limit`` characters: one-line errors quote other libraries' multi-line messages."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


#: What to do about a file whose bytes no longer read back.
DAMAGED_FIX = ("the file is damaged (an interrupted copy or write, a bad disk): copy it "
               "again, or regenerate it with the `pdeforge generate` command that made it "
               "and --overwrite")


def is_hdf5_damage(exc: BaseException) -> bool:
    """Whether ``exc`` is HDF5 failing to read bytes it wrote: a chunk's checksum
    (Fletcher-32) or an object header, B-tree or heap that no longer decodes. h5py raises
    these as OSError, KeyError or RuntimeError from its own code; pdeforge's errors and
    other libraries' are not."""
    if not isinstance(exc, OSError | KeyError | RuntimeError) or isinstance(
            exc, PdeforgeError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}h5py{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _raised_by_reader(exc: BaseException) -> bool:
    """Whether ``exc`` came out of h5netcdf or h5py reading the file, rather than out of
    pdeforge's own checks."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if f"{os.sep}h5netcdf{os.sep}" in name or f"{os.sep}h5py{os.sep}" in name:
            return True
        tb = tb.tb_next
    return False


def damaged(path: str | Path, exc: BaseException, what: str = "") -> DatasetFormatError:
    """The error for ``path`` when reading it (``what``: which part) failed with HDF5
    damage (:func:`is_hdf5_damage`)."""
    where = f" ({what})" if what else ""
    return DatasetFormatError(
        f"{path} cannot be read{where}: {_first_line(exc, 160)}; {DAMAGED_FIX}")


@contextmanager
def reading(path: str | Path, what: str = "") -> Iterator[None]:
    """Turn HDF5 damage met inside the block into :func:`damaged`'s error."""
    try:
        yield
    except Exception as exc:
        if is_hdf5_damage(exc):
            raise damaged(path, exc, what) from None
        raise


def check_file(path: str | Path, scan_data: bool = True) -> CheckReport:
    """Validate ``path`` against format version 1.

    Args:
        path: the file.
        scan_data: also read every per-sample variable and coordinate, so that every
            chunk's checksum is verified, and report non-finite values in the
            input/output fields of converged samples (reads the whole file, block by
            block).

    Returns:
        A :class:`CheckReport`; ``report.ok`` is False when the file violates the format.
    """
    report = CheckReport(Path(path))
    try:
        h5 = open_h5(path)
    except DatasetFormatError as exc:
        report.errors.append(str(exc))
        return report
    try:
        with h5, reading(path, "its root attributes"):
            _check_root_attrs(h5, report)
    except DatasetFormatError as exc:  # root attributes that no longer decode
        report.errors.append(str(exc))
        return report
    try:
        import h5netcdf

        with h5netcdf.File(path, "r") as nc:
            _check_structure(nc, report)
            if scan_data and not report.errors:
                _scan_values(nc, report)
    except Exception as exc:  # noqa: BLE001 - h5netcdf's failures: "not valid netCDF4"
        if is_hdf5_damage(exc):
            report.errors.append(str(damaged(path, exc)))
            return report
        if not _raised_by_reader(exc):
            raise  # a fault of check's own, not of the file: shown, not blamed on the file
        hint = "; " + DIMENSION_SCALES_HINT if "dimension scale" in str(exc) else ""
        report.errors.append(f"not readable as netCDF4 by h5netcdf: {_first_line(exc)}{hint}")
        return report
    if not report.errors:
        try:
            import xarray as xr

            with xr.open_dataset(path, engine="h5netcdf") as ds:
                if ds.sizes.get(SAMPLE) is None:
                    report.errors.append("xarray sees no 'sample' dimension")
        except Exception as exc:  # noqa: BLE001
            report.errors.append(f"xarray cannot open the file: {_first_line(exc)}")
    return report


_INT_ATTRS = (ATTR_FORMAT, ATTR_SEED, ATTR_N_SAMPLES)


def _check_root_attrs(h5: Any, report: CheckReport) -> None:
    attrs = h5.attrs
    missing = [a for a in REQUIRED_ROOT_ATTRS if a not in attrs]
    if missing:
        report.errors.append(f"missing root attribute(s): {', '.join(missing)}; add them "
                             "(their types and meanings: DESIGN.md, root attributes)")
    for key in REQUIRED_ROOT_ATTRS:
        value = attr_value(attrs, key)
        if value is None:
            continue
        want = int if key in _INT_ATTRS else str
        if isinstance(value, bool) or not isinstance(value, want):
            report.errors.append(
                f"root attribute {key} must be a single {want.__name__}, got {value!r}")
    created = attr_value(attrs, ATTR_CREATED)
    if isinstance(created, str):
        if not is_iso8601(created):
            report.errors.append(f"root attribute created is not an ISO 8601 time: {created!r}")
    fmt = attr_value(attrs, ATTR_FORMAT)
    # (a version of the wrong type is reported above, as a type error)
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt != FORMAT_VERSION:
        report.errors.append(
            f"root attribute {ATTR_FORMAT} is {fmt!r}; this pdeforge reads version "
            f"{FORMAT_VERSION}"
        )
    status = attr_value(attrs, ATTR_STATUS)
    if status is not None and status != STATUS_COMPLETE:
        report.errors.append(
            f"status is {status!r}, not {STATUS_COMPLETE!r}: the file is incomplete; "
            "re-run the `pdeforge generate` command that made it to finish it (a file "
            f"written by another program: set {ATTR_STATUS}={STATUS_COMPLETE!r} once every "
            "sample is in)"
        )
    cfg_text = attr_value(attrs, ATTR_CONFIG)
    if cfg_text is not None:
        try:
            cfg = json.loads(cfg_text)
        except (TypeError, ValueError):
            report.errors.append("root attribute config is not valid JSON")
        else:
            if not isinstance(cfg, dict):
                report.errors.append("root attribute config must be a JSON object")
            else:
                for key, attr in (("problem", ATTR_PROBLEM), ("seed", ATTR_SEED),
                                  ("n_samples", ATTR_N_SAMPLES)):
                    if key in cfg and attr in attrs and cfg[key] != attr_value(attrs, attr):
                        report.errors.append(
                            f"config[{key!r}] = {cfg[key]!r} disagrees with root attribute "
                            f"{attr} = {attr_value(attrs, attr)!r}"
                        )


def _check_structure(nc: Any, report: CheckReport) -> None:
    dims = {name: d.size for name, d in nc.dimensions.items()}
    if SAMPLE not in dims:
        report.errors.append(
            f"no {SAMPLE!r} dimension"
            + ("" if dims else ": the file has no netCDF dimensions (HDF5 dimension "
               f"scales); {DIMENSION_SCALES_HINT} (DESIGN.md, dataset file)")
        )
        return
    if dims[SAMPLE] == 0:
        report.errors.append("dimension sample has length 0: the file holds no samples")
    n_attr = attr_value(nc.attrs, ATTR_N_SAMPLES)
    if isinstance(n_attr, int) and dims[SAMPLE] != n_attr:
        report.errors.append(
            f"dimension sample has length {dims[SAMPLE]} but n_samples = {n_attr}"
        )
    for d in COORDINATE_DIMS:
        if d not in dims:
            continue
        if d not in nc.variables:
            report.errors.append(f"dimension {d!r} has no coordinate variable {d!r}: add a "
                                 f"1-D variable {d!r} over ({d!r},) holding its points")
            continue
        var = nc.variables[d]
        if var.dimensions != (d,):
            report.errors.append(f"coordinate {d!r} must be 1-D over ({d!r},), "
                                 f"has dims {var.dimensions}")
            continue
        if "units" not in var.attrs and "long_name" not in var.attrs:
            report.warnings.append(f"coordinate {d!r} has neither units nor long_name")
        report.warnings.extend(_untextual(f"coordinate {d!r}", var.attrs))
        values = np.asarray(var[:])
        encoded = encoding_problem(var.attrs, var.dtype)
        fills = fill_values(var.attrs)
        if encoded:
            report.errors.append(f"coordinate {d!r} {encoded}: {ENCODED_FIX}")
        elif fills and np.isin(values, fills).any():
            # xarray reads those points as NaN, while the raw numbers look fine
            report.errors.append(
                f"coordinate {d!r} holds its own no-data value ({_listed(fills)}, attribute "
                "_FillValue or missing_value): readers read that point as NaN; drop the "
                "attribute from the coordinate (xarray: encoding={'" + d + "': "
                "{'_FillValue': None}})"
            )
        elif (not np.issubdtype(values.dtype, np.number)
              or np.issubdtype(values.dtype, np.complexfloating)
              or not np.all(np.isfinite(values))):
            report.errors.append(f"coordinate {d!r} must hold finite real numbers")
        elif d in SPATIAL_DIMS and is_decreasing(values):
            report.warnings.append(
                f"coordinate {d!r} decreases: the readers and training present the data in "
                f"increasing {d} (predictions come out that way)"
            )
        elif values.size > 1 and not np.all(values[1:] > values[:-1]):  # (uint: no diff)
            report.errors.append(
                f"coordinate {d!r} is not strictly "
                + ("increasing or decreasing" if d in SPATIAL_DIMS else "increasing")
            )
        _check_periodic(d, var.attrs, values, report)
        _check_grid_kind(d, var.attrs, values, report)
    roles: dict[str, list[str]] = {r: [] for r in ROLES}
    for name, var in nc.variables.items():
        if name in dims:
            continue  # coordinate variable
        vdims = var.dimensions
        # the stored array's own shape: h5netcdf reports the dimensions' lengths
        stored = getattr(getattr(var, "_h5ds", None), "shape", var.shape)
        for d, size in zip(vdims, stored, strict=False):
            if d in dims and dims[d] != size:
                report.errors.append(
                    f"variable {name!r} has length {size} along {d!r}, but dimension {d!r} "
                    f"has length {dims[d]}: attach the dimension of its own length"
                    + (f" (or give the coordinate {d!r} {size} values)"
                       if d in COORDINATE_DIMS else "")
                )
        role = attr_value(var.attrs, "role")
        if role not in ROLES:
            report.errors.append(
                f"variable {name!r}: attribute role is "
                + ("missing" if role is None else repr(role)) + f", expected one of {ROLES}"
            )
        else:
            roles[role].append(name)
        if "units" not in var.attrs and "long_name" not in var.attrs:
            report.errors.append(f"variable {name!r} has neither units nor long_name")
        report.errors.extend(_untextual(f"variable {name!r}", var.attrs))
        if SAMPLE in vdims and vdims[0] != SAMPLE:
            report.errors.append(
                f"variable {name!r}: dimension sample must come first, dims are {vdims}"
            )
        if np.issubdtype(var.dtype, np.complexfloating):
            report.errors.append(
                f"variable {name!r} is complex; store <name>_re/<name>_im or a component dim"
            )
        encoded = encoding_problem(var.attrs, var.dtype)
        if encoded and role in (INPUT, OUTPUT, PARAMETER):
            report.errors.append(f"variable {name!r} {encoded}: {ENCODED_FIX}")
        if role in (INPUT, OUTPUT, PARAMETER) and not (
            np.issubdtype(var.dtype, np.number) or var.dtype == np.bool_
        ):
            report.errors.append(
                f"variable {name!r} with role {role!r} holds {var.dtype} values; inputs, "
                "outputs and parameters are numbers"
            )
        if role in (INPUT, OUTPUT, PARAMETER) and SAMPLE not in vdims:
            # the readers select per-sample variables only: one the same for every sample
            # is read by nobody, which the writer of the role meant otherwise
            report.warnings.append(
                f"variable {name!r} has role {role!r} but no 'sample' dim (dims {vdims}): "
                "the readers and training select per-sample variables only, so it is not "
                f"one of the {'outputs' if role == OUTPUT else 'inputs'}; store it with a "
                "'sample' dim first (its values repeated for every sample) to use it"
            )
        if role in (INPUT, OUTPUT) and SAMPLE in vdims:
            # (sample misplaced is its own error: the dims besides it are looked at here)
            rest = [d for d in vdims if d != SAMPLE]
            other = [d for d in rest if d not in (*COORDINATE_DIMS, COMPONENT)]
            grid = [d for d in rest if d in SPATIAL_DIMS]
            if other and not grid:
                report.warnings.append(
                    f"field {name!r} has dims {vdims}: none of them is a spatial dim "
                    f"{SPATIAL_DIMS}, so the readers see no grid in it; name its grid dims "
                    "x, y, z (DESIGN.md)"
                )
        where = attr_value(var.attrs, "valid_where")
        if where is not None:
            _check_valid_where(nc, name, role, where, report)
        if role in (INPUT, OUTPUT) and SAMPLE in vdims and len(vdims) > 1:
            # byte order is how the numbers are stored, not what they are
            # (a complex field is reported above, once)
            if var.dtype.newbyteorder("=") not in (np.float32, np.float64) and not (
                    np.issubdtype(var.dtype, np.complexfloating)):
                report.errors.append(
                    f"field {name!r} has dtype {var.dtype}; fields are float32 or float64"
                )
            chunks = var.chunks
            if chunks is None or chunks[0] != 1:
                report.warnings.append(
                    f"field {name!r} is stored with chunks {chunks}; the format stores one "
                    "sample per chunk (chunks=(1, ...) in h5py, encoding={'chunksizes': "
                    "(1, ...)} in xarray) for fast per-sample reads"
                )
            if (getattr(getattr(var, "_h5ds", None), "scaleoffset", None) is not None
                    and np.issubdtype(var.dtype, np.floating)):
                report.warnings.append(
                    f"field {name!r} is stored with HDF5's scale-offset filter, which "
                    "rounds the values (lossy); the format stores them as they are "
                    "(compression none, lzf or gzip level 1)")
            compression, level = var.compression, var.compression_opts
            if compression not in (None, "lzf") and not (
                compression == "gzip" and (level is None or level <= 1)
            ):
                report.warnings.append(
                    f"field {name!r} is compressed with {compression} level {level}; the "
                    "format uses none, lzf or gzip level 1 (fast per-sample reads)"
                )
    for name in REQUIRED_DIAGNOSTICS:
        if name not in nc.variables:
            report.errors.append(f"missing per-sample diagnostic {name!r}")
        elif nc.variables[name].dimensions != (SAMPLE,):
            report.errors.append(f"diagnostic {name!r} must have dims ('sample',)")
        elif attr_value(nc.variables[name].attrs, "role") != DIAGNOSTIC:
            report.errors.append(f"variable {name!r} must have role 'diagnostic'")
    if CONVERGED in nc.variables:
        var = nc.variables[CONVERGED]
        is_bool = var.dtype == np.bool_ or (
            np.issubdtype(var.dtype, np.integer) and attr_value(var.attrs, "dtype") == "bool")
        if not is_bool:
            report.errors.append(
                f"diagnostic 'converged' must be boolean (xarray's encoding: int8 with "
                f"attribute dtype='bool'), got {var.dtype}"
                + ("" if not np.issubdtype(var.dtype, np.integer) else " without dtype='bool'"))
        elif var.dimensions == (SAMPLE,) and not np.all(
            np.isin(np.asarray(var[:]).astype(np.int64), (0, 1))
        ):
            report.errors.append("diagnostic 'converged' holds values other than 0/1")
    if SOLVE_SECONDS in nc.variables and not np.issubdtype(
            nc.variables[SOLVE_SECONDS].dtype, np.floating):
        report.errors.append(f"diagnostic 'solve_seconds' must be floating point, got "
                             f"{nc.variables[SOLVE_SECONDS].dtype}")
    if SOLVE_SECONDS in nc.variables:
        unit = attr_value(nc.variables[SOLVE_SECONDS].attrs, "units")
        if isinstance(unit, str) and unit.strip() not in ("s", "second", "seconds"):
            report.warnings.append(
                f"diagnostic 'solve_seconds' has units {unit!r}; the format's are seconds "
                "('s'): convert the values and set units='s'")
    data = roles[INPUT] + roles[PARAMETER] + roles[OUTPUT]
    if data and not any(d in SPATIAL_DIMS for n in data for d in nc.variables[n].dimensions):
        # (what one field without them only warns about: the readers see no grid at all,
        # and a file that passes check trains)
        dims = {n: nc.variables[n].dimensions for n in data}
        report.errors.append(
            f"no input, parameter or output has a spatial dim {SPATIAL_DIMS} (their dims: "
            f"{dims}), so the readers see no grid: name the grid dims x, y, z (xarray: "
            "ds.rename(lon='x', lat='y'))"
        )
    # what the readers select: per-sample variables (a shared one is warned about above)
    per_sample = {r: [n for n in names if SAMPLE in nc.variables[n].dimensions]
                  for r, names in roles.items()}
    if not per_sample[INPUT] and not per_sample[PARAMETER]:
        report.errors.append("no per-sample variable with role 'input' or 'parameter'")
    if not per_sample[OUTPUT]:
        report.errors.append("no per-sample variable with role 'output'")
    # the format lets variables lie on different grids (a 1-D boundary trace beside a 2-D
    # field), the torch reader takes the variables of one grid: it refused such a file
    # by default, which check had passed without a word
    grids = {n: tuple(d for d in nc.variables[n].dimensions if d in SPATIAL_DIMS)
             for r in (INPUT, PARAMETER, OUTPUT) for n in per_sample[r]}
    kinds = {frozenset(g) for g in grids.values() if g}
    if len(kinds) > 1:
        report.warnings.append(
            f"the per-sample inputs, parameters and outputs lie on different spatial grids "
            f"({', '.join(f'{n}: {g}' for n, g in grids.items() if g)}): training and the "
            "torch reader take variables of one grid, so name those of one grid for them "
            "(--data.inputs / --data.outputs, TorchDataset(inputs=..., outputs=...))"
        )


def _untextual(what: str, attrs: Any) -> list[str]:
    """What of ``units`` and ``long_name`` is not text (plots, predictions and the
    surrogate's coordinates carry them as labels)."""
    return [
        f"{what}: attribute {key} must be text, got {attrs[key]!r}"
        for key in ("units", "long_name")
        if key in attrs and not isinstance(attr_value(attrs, key), str)
    ]


def _check_periodic(d: str, attrs: Any, values: np.ndarray, report: CheckReport) -> None:
    """``periodic`` on a coordinate: 0 or 1, on a spatial dim, on a uniform grid."""
    if "periodic" not in attrs:
        return
    flag = attr_value(attrs, "periodic")
    if isinstance(flag, bool | np.bool_) or not isinstance(flag, int | float) or flag not in (0, 1):
        report.errors.append(
            f"coordinate {d!r}: attribute periodic is {flag!r}; it is the integer 1 (the grid "
            "is periodic) or 0, or absent")
        return
    if flag != 1:
        return
    if d not in SPATIAL_DIMS:
        report.errors.append(f"coordinate {d!r} has periodic = 1, but only a spatial "
                             f"coordinate {SPATIAL_DIMS} can be periodic; remove the attribute")
        return
    steps = _uneven_steps(values)
    if steps:
        report.errors.append(
            f"coordinate {d!r} has periodic = 1 but its points are not evenly spaced "
            f"({steps}); a periodic grid is x_0 + i L / n: store evenly spaced points or "
            "remove the attribute")


def _uneven_steps(values: np.ndarray) -> str | None:
    """"steps a to b" where numeric coordinates are not evenly spaced (beyond rounding),
    else None."""
    if values.size <= 2 or not np.issubdtype(values.dtype, np.number):
        return None
    step = np.diff(values.astype(np.float64))
    eps = np.finfo(values.dtype).eps if np.issubdtype(values.dtype, np.floating) else 0.0
    tol = 1e-6 * abs(step.mean()) + 8 * eps * float(np.abs(values).max())
    if np.abs(step - step.mean()).max() <= tol:
        return None
    return f"steps {step.min():.6g} to {step.max():.6g}"


def _check_grid_kind(d: str, attrs: Any, values: np.ndarray, report: CheckReport) -> None:
    """``grid`` on a spatial coordinate: ``cell`` or ``vertex``, not with ``periodic = 1``;
    a spatial axis that says neither is guessed (``grid.axis_kind``), which is warned
    about: the kind sets the domain that other resolutions of the grid cover."""
    periodic = attr_value(attrs, "periodic") if "periodic" in attrs else None
    uneven = (_uneven_steps(values) if d in SPATIAL_DIMS
              and declared_kind({"periodic": periodic}) != PERIODIC else None)
    if uneven and attr_value(attrs, GRID_ATTR) == "cell":
        report.errors.append(
            f"coordinate {d!r} has {GRID_ATTR} = 'cell' (centres of equal cells) but its "
            f"points are not evenly spaced ({uneven}): store the cell centres, or remove "
            "the attribute")
    elif uneven:
        report.warnings.append(
            f"coordinate {d!r}: its points are not evenly spaced ({uneven}); pdeforge's "
            "grids are uniform: the H1 losses and metrics take the mean step, Fourier "
            "layers and spectral metrics the index as position, and other resolutions "
            "are uniform grids on the same domain; interpolate the data to a uniform "
            "grid first")
    if GRID_ATTR in attrs:
        kind = attr_value(attrs, GRID_ATTR)
        if d not in SPATIAL_DIMS:
            report.errors.append(f"coordinate {d!r} has attribute {GRID_ATTR}, but only a "
                                 f"spatial coordinate {SPATIAL_DIMS} has a grid kind; remove it")
        elif kind not in GRID_KINDS:
            report.errors.append(
                f"coordinate {d!r}: attribute {GRID_ATTR} is {kind!r}; it is 'cell' (the "
                "points are the centres of equal cells) or 'vertex' (the first and last "
                "points are the domain's ends)")
        elif periodic is not None and declared_kind({"periodic": periodic}) == PERIODIC:
            report.errors.append(
                f"coordinate {d!r} has both periodic = 1 and {GRID_ATTR} = {kind!r}; a "
                f"periodic axis (x_0 + i L / n) takes no {GRID_ATTR} attribute: remove one")
        return
    if (d not in SPATIAL_DIMS or values.size < 2 or not np.issubdtype(values.dtype, np.number)
            or not np.all(np.isfinite(values))  # (reported as such above)
            or declared_kind({"periodic": periodic}) == PERIODIC):
        return
    guess = axis_kind(np.sort(values.astype(np.float64)))
    report.warnings.append(
        f"coordinate {d!r} does not say its grid kind: taken as {guess} points from its "
        f"first point (cell: half a step past a multiple of the step), which sets the domain "
        f"of other resolutions and the interpolation between them; add the attribute "
        f"{GRID_ATTR} = 'cell' or 'vertex' (or periodic = 1)")


def _check_valid_where(nc: Any, name: str, role: Any, where: Any, report: CheckReport) -> None:
    """``valid_where`` on an output names a one-channel input of the file (its mask)."""
    if role != OUTPUT:
        report.errors.append(f"variable {name!r} has valid_where but role {role!r}; only an "
                             "output can be defined where an input is 1")
        return
    target = nc.variables.get(where) if isinstance(where, str) else None
    if target is None:
        report.errors.append(
            f"output {name!r}: valid_where = {where!r} names no variable of the file; it "
            "names the one-channel input that is 1 where the output is defined")
        return
    grid = [d for d in nc.variables[name].dimensions if d in SPATIAL_DIMS]
    mask_dims = [d for d in target.dimensions if d != SAMPLE]
    if attr_value(target.attrs, "role") != INPUT or sorted(mask_dims) != sorted(grid):
        report.errors.append(
            f"output {name!r}: valid_where = {where!r}, but {where!r} is not a one-channel "
            f"input on the output's grid {grid} (role "
            f"{attr_value(target.attrs, 'role')!r}, dims {target.dimensions})")


def _scan_values(nc: Any, report: CheckReport) -> None:
    unreadable = []
    for name, var in nc.variables.items():  # every chunk's checksum, fields below
        if attr_value(var.attrs, "role") in (INPUT, OUTPUT) and len(var.dimensions) > 1:
            continue
        try:
            var[...]
        except Exception as exc:
            if not is_hdf5_damage(exc):
                raise
            unreadable.append(f"{name!r} ({_first_line(exc, 80)})")
    if unreadable:
        report.errors.append(f"cannot read {', '.join(unreadable)}: {DAMAGED_FIX}")
        return
    converged = np.asarray(nc.variables[CONVERGED][:]).astype(bool)
    if len(converged) and not converged.all():
        failed = np.flatnonzero(~converged)
        report.warnings.append(
            f"{len(failed)} of {len(converged)} samples are marked not converged (first: "
            f"{failed[:5].tolist()}); the readers skip them by default, and `pdeforge info` "
            "summarises their diagnostics")
    for name, var in nc.variables.items():
        if attr_value(var.attrs, "role") not in (INPUT, OUTPUT) or not var.dimensions:
            continue
        if var.dimensions[0] != SAMPLE or not np.issubdtype(var.dtype, np.floating):
            continue
        per_sample = max(1, int(np.prod(var.shape[1:])) * var.dtype.itemsize)
        step = max(1, _SCAN_BYTES // per_sample)
        bad: list[int] = []
        fills = fill_values(var.attrs)  # "no data" values: NaN, as xarray reads them
        damaged_samples: list[int] = []
        # periodic axes: whether the last point repeats the first in every sample read
        # that can tell (a grid written with its end point, linspace(0, 2 pi, n): its
        # period came out one step too long), and whether any sample could tell
        ends = {d: [True, False] for d in var.dimensions
                if d in SPATIAL_DIMS and d in nc.variables and var.shape[
                    var.dimensions.index(d)] > 2
                and declared_kind(attr_values(nc.variables[d].attrs)) == PERIODIC}
        for start in range(0, var.shape[0], step):
            try:
                raw = np.asarray(var[start : start + step])
            except Exception as exc:
                if not is_hdf5_damage(exc):
                    raise
                # sample by sample, to name the damaged ones
                for i in range(start, min(start + step, var.shape[0])):
                    try:
                        var[i]
                    except Exception as one:
                        if not is_hdf5_damage(one):
                            raise
                        damaged_samples.append(i)
                continue
            block = masked(raw, fills)
            finite = np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
            idx = start + np.flatnonzero(~finite)
            bad += [int(i) for i in idx if converged[i]]
            for axis, d in enumerate(var.dimensions):
                if d in ends:
                    kept = block[converged[start:start + len(block)] & finite]
                    if not kept.size:
                        continue
                    # a repeated end point: the step from the last point to the first
                    # (around the period) is nil up to rounding (sin(k x) at 0 and 2 pi
                    # differ by 1e-16) in every sample whose steps next to the ends are
                    # not (a field flat at the ends, a soliton's tails, tells nothing)
                    size = float(np.abs(kept).max())
                    told = np.maximum(_step(kept, axis, 1, 0),
                                      _step(kept, axis, -1, -2)) > 1e-3 * size
                    wrap = _step(kept, axis, -1, 0)[told]
                    ends[d][0] &= bool(np.all(wrap <= 1e-6 * size))
                    ends[d][1] |= bool(told.any())
        for d, (repeated, varies) in ends.items():
            if repeated and varies and converged.any():
                report.warnings.append(
                    f"field {name!r}: its last point along the periodic axis {d!r} repeats "
                    "the first (in every converged sample not flat at the ends): a periodic "
                    "grid holds one period without its end point (x_0 + i L / n, i < n); "
                    "as stored, the period is read one step too long: drop the last point")
        unwritten = [int(i) for i in _unwritten_samples(var) if converged[i]]
        if unwritten:
            report.errors.append(
                f"field {name!r}: the chunks of {len(unwritten)} converged sample(s) were "
                f"never written (first: {unwritten[:5]}); HDF5 reads them as the fill value "
                f"({float(getattr(var, '_h5ds', var).fillvalue):g}): the writer stopped before "
                "finishing although the file says status = complete. Write those "
                "samples, mark them converged = false, or regenerate the file")
        if damaged_samples:
            report.errors.append(
                f"field {name!r} cannot be read in {len(damaged_samples)} sample(s) (first: "
                f"{damaged_samples[:5]}; a checksum or the file's structure fails): "
                f"{DAMAGED_FIX}")
        if bad:
            nodata = f" or its no-data value(s) {fills}" if fills else ""
            report.errors.append(
                f"field {name!r} has non-finite values{nodata} in {len(bad)} converged "
                f"sample(s) (first: {bad[:5]}): mark those samples converged = false (the "
                "readers then skip them) or store their real values"
            )
        where = attr_value(var.attrs, "valid_where")
        if (attr_value(var.attrs, "role") == OUTPUT and isinstance(where, str)
                and not damaged_samples):  # (a damaged output is reported above)
            try:
                _scan_mask(nc, name, where, converged, report)
            except Exception as exc:
                if not is_hdf5_damage(exc):
                    raise
                report.errors.append(f"cannot read {where!r} ({_first_line(exc, 80)}): "
                                     f"{DAMAGED_FIX}")


def _step(block: np.ndarray, axis: int, i: int, j: int) -> np.ndarray:
    """Per sample, the largest |block[i] - block[j]| along ``axis``."""
    diff = np.abs(block.take([i], axis) - block.take([j], axis))
    return diff.reshape(len(block), -1).max(axis=1)


def _unwritten_samples(var: Any) -> np.ndarray:
    """Samples of a chunked variable (sample first) whose chunks HDF5 never allocated:
    nothing was written there, and reads give the fill value. A writer killed after
    setting ``status = complete`` left such holes, which ``check`` passed (review). A
    chunk of several samples that was written in part is allocated: not found here."""
    h5ds = getattr(var, "_h5ds", None)
    chunks = getattr(h5ds, "chunks", None)
    if not chunks or not h5ds.shape or h5ds.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    expected = int(np.prod([-(-n // c) for n, c in zip(h5ds.shape, chunks, strict=True)]))
    count = h5ds.id.get_num_chunks()
    if count >= expected:  # (the common case: one call)
        return np.zeros(0, dtype=np.int64)
    per_sample = expected // -(-h5ds.shape[0] // chunks[0])
    written = np.zeros(-(-h5ds.shape[0] // chunks[0]), dtype=np.int64)
    for i in range(count):  # each allocated chunk's offset: which samples it holds
        written[h5ds.id.get_chunk_info(i).chunk_offset[0] // chunks[0]] += 1
    missing = np.flatnonzero(written < per_sample)
    samples = (missing[:, None] * chunks[0] + np.arange(chunks[0])).ravel()
    return samples[samples < h5ds.shape[0]]  # (the last chunk may be partly past the end)


def _scan_mask(nc: Any, name: str, where: str, converged: np.ndarray,
               report: CheckReport) -> None:
    """An output's ``valid_where`` mask holds only 0 and 1, and the output is 0 where it
    is 0, in every converged sample: training multiplies predictions by the mask (a
    continuous input named there passed, and the model's outputs were scaled by it)."""
    var, mask = nc.variables[name], nc.variables.get(where)
    grid = [d for d in var.dimensions if d in SPATIAL_DIMS]
    if mask is None or sorted(d for d in mask.dimensions if d != SAMPLE) != sorted(grid):
        return  # (named by _check_valid_where)
    # the output as (sample, its other dims, grid), the mask as (sample or 1, 1..., grid)
    others = [d for d in var.dimensions[1:] if d not in grid]
    order = [var.dimensions.index(d) for d in (SAMPLE, *others, *grid)]
    mask_order = [mask.dimensions.index(d) for d in ([SAMPLE] if SAMPLE in mask.dimensions
                                                      else []) + grid]
    fixed = None if SAMPLE in mask.dimensions else np.asarray(mask[...]).transpose(mask_order)
    step = max(1, _SCAN_BYTES // max(1, int(np.prod(var.shape[1:])) * var.dtype.itemsize))
    not_binary, nonzero = [], []
    for start in range(0, var.shape[0], step):
        stop = min(start + step, var.shape[0])
        keep = converged[start:stop]
        if not keep.any():
            continue
        m = (np.broadcast_to(fixed, (stop - start, *fixed.shape)) if fixed is not None
             else np.asarray(mask[start:stop]).transpose(mask_order))
        y = np.asarray(var[start:stop]).transpose(order)
        m = m.reshape(m.shape[0], *[1] * len(others), *m.shape[1:])
        binary = ((m == 0) | (m == 1)).reshape(len(m), -1).all(axis=1)
        outside = np.where(m == 0, y, 0).reshape(len(y), -1)
        zero = ~np.any(outside != 0, axis=1)
        not_binary += (start + np.flatnonzero(keep & ~binary)).tolist()
        nonzero += (start + np.flatnonzero(keep & binary & ~zero)).tolist()
    if not_binary:
        report.errors.append(
            f"output {name!r}: its valid_where mask {where!r} holds values other than 0 and 1 "
            f"in {len(not_binary)} converged sample(s) (first: {not_binary[:5]}); training "
            f"multiplies the predictions by it: store a 0/1 mask, or remove valid_where")
    if nonzero:
        report.errors.append(
            f"output {name!r} is not 0 where its valid_where mask {where!r} is 0 in "
            f"{len(nonzero)} converged sample(s) (first: {nonzero[:5]}); the format stores "
            "such an output as 0 outside its mask (set those values to 0)")
