"""Readers of dataset files: xarray (labelled, lazy) and the variable-role helpers.

``open_dataset`` is plain ``xarray.open_dataset(path, engine="h5netcdf")`` behind a
check that the file is a readable, complete format-1 dataset, so that a truncated or
foreign file fails at once with a clear message instead of deep inside a training loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pdeforge.datasets.check import (
    check_file,
    metadata_only,
    open_h5,
    reading,
)
from pdeforge.datasets.format import (
    ATTR_FORMAT,
    ATTR_STATUS,
    FORMAT_VERSION,
    SPATIAL_DIMS,
    STATUS_COMPLETE,
    attr_value,
    is_decreasing,
)
from pdeforge.errors import DatasetFormatError


def verify_dataset(path: str | Path, require_complete: bool = True, rules: bool = True) -> None:
    """Raise :class:`DatasetFormatError` unless ``path`` is a readable format-1 dataset.

    Besides the root attributes below, the structural rules of ``pdeforge check`` (dims,
    coordinates, roles, dtypes, diagnostics; not the scan of every value) are applied, so
    that a file another program wrote is refused with the rule it breaks rather than read
    wrongly (a complex field cut to its real part, a missing or non-finite coordinate);
    ``rules=False`` skips them (``pdeforge info`` describes any file it can open).
    """
    # (root attributes that no longer decode: the damaged file's error)
    with reading(path), open_h5(path) as h5:
        fmt = attr_value(h5.attrs, ATTR_FORMAT)
        if fmt is None:
            raise DatasetFormatError(
                f"{path} is an HDF5 file but not a pdeforge dataset (no root attribute "
                f"{ATTR_FORMAT!r}); see DESIGN.md for the format, `pdeforge check` lists "
                "what is missing"
            )
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            raise DatasetFormatError(
                f"{path} has {ATTR_FORMAT}={fmt!r} ({type(fmt).__name__}); the attribute is "
                f"the integer {FORMAT_VERSION}: write it as an integer (h5py: "
                f"attrs[{ATTR_FORMAT!r}] = {FORMAT_VERSION})"
            )
        if fmt != FORMAT_VERSION:
            raise DatasetFormatError(
                f"{path} has {ATTR_FORMAT}={fmt!r}; this pdeforge reads format "
                f"{FORMAT_VERSION}: upgrade pdeforge or regenerate the file"
            )
        status = attr_value(h5.attrs, ATTR_STATUS)
        if require_complete and status is None:
            raise DatasetFormatError(
                f"{path} has no root attribute {ATTR_STATUS!r}: a finished dataset says "
                f"{ATTR_STATUS}={STATUS_COMPLETE!r} (DESIGN.md; `pdeforge check` lists what "
                "else is missing)"
            )
        if require_complete and status != STATUS_COMPLETE:
            raise DatasetFormatError(
                f"{path} is incomplete (status={status!r}); re-run the `pdeforge generate` "
                "command that made it, which resumes and finishes it (a file written by "
                f"another program: set {ATTR_STATUS}={STATUS_COMPLETE!r} once every sample "
                "is in)"
            )
    if not rules:
        return
    errors = check_file(path, scan_data=False).errors
    if not require_complete:  # an unfinished file: its status is known to say so
        errors = [e for e in errors if not e.startswith("status is")]
    metadata = [e for e in errors if metadata_only(e)]
    errors = [e for e in errors if not metadata_only(e)]
    if metadata:
        warnings.warn(
            f"{path}: its metadata depart from the dataset format (DESIGN.md): "
            + "; ".join(metadata[:4])
            + (f"; and {len(metadata) - 4} more" if len(metadata) > 4 else "")
            + "; the data are read as they are",
            UserWarning,
            stacklevel=3,
        )
    if errors:
        shown = "; ".join(errors[:4]) + (f"; and {len(errors) - 4} more" if len(errors) > 4
                                         else "")
        raise DatasetFormatError(
            f"{path} does not follow the dataset format (DESIGN.md): {shown}. "
            f"`pdeforge check {path}` lists every problem"
        )


def open_dataset(path: str | Path, *, require_complete: bool = True, **kwargs: Any):
    """Open a pdeforge dataset lazily as an ``xarray.Dataset``.

    Args:
        path: dataset file (format version 1).
        require_complete: refuse files whose ``status`` is not ``complete``.
        **kwargs: passed to ``xarray.open_dataset`` (e.g. ``chunks={}`` for dask arrays).

    Spatial coordinates that decrease in the file come out increasing (the axis reversed,
    as every pdeforge reader presents it).

    Raises:
        DatasetFormatError: missing, non-HDF5, truncated or non-pdeforge file.

    The values are read lazily, by xarray, when used (``.load()``, ``.values``): a chunk
    damaged after writing (its Fletcher-32 checksum fails) then raises h5py's ``OSError``
    there, not an error of pdeforge's; ``pdeforge check FILE`` reads every chunk and names
    the damaged variables and samples, and :class:`TorchDataset` names them when it reads.
    """
    import xarray as xr

    verify_dataset(path, require_complete)
    try:
        ds = xr.open_dataset(path, engine="h5netcdf", **kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure here is a bad file
        raise DatasetFormatError(f"{path}: xarray cannot open it as netCDF4 ({exc})") from None
    # the format allows a decreasing spatial coordinate (files of other programs); the
    # readers present increasing ones (a lazy reversed view: nothing is read here)
    return increasing(ds, SPATIAL_DIMS)


def increasing(data: Any, dims: Sequence[str]) -> Any:
    """``data`` (an xarray Dataset or DataArray) with every dim of ``dims`` whose
    coordinate decreases reversed (the format allows either direction; pdeforge's readers,
    training and predictions use increasing coordinates)."""
    flip = {d: slice(None, None, -1) for d in dims if d in data.coords
            and is_decreasing(data[d].values)}
    return data.isel(flip) if flip else data
