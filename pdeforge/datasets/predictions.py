"""Write surrogate predictions as a dataset file in the published format (version 1).

The file holds the inputs (role ``input``, float64 where given so, else float32; a
number per sample: ``parameter``, float64),
the predicted outputs (role ``output``) and
the diagnostics every file has (``converged`` true, ``solve_seconds`` = the surrogate's
time per sample); ``solver`` names the surrogate and its checkpoint. It is written under
a temporary name and renamed, so a crash never leaves a partial file under the final
name, and it passes ``pdeforge check``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pdeforge.datasets.check import check_file
from pdeforge.datasets.format import (
    INPUT,
    OUTPUT,
    PARAMETER,
    SAMPLE,
    STATUS_COMPLETE,
    UNKNOWN_SEED,
    Coordinate,
    DatasetWriter,
    VarSpec,
    as_text,
    config_json,
    diagnostic_specs,
)
from pdeforge.errors import DatasetFormatError


def write_predictions(
    path: str | os.PathLike,
    inputs: xr.Dataset,
    predictions: xr.Dataset,
    *,
    problem: str,
    solver: str,
    seconds_per_sample: float,
    config: dict[str, Any],
    seed: int = UNKNOWN_SEED,
    converged: np.ndarray | None = None,
) -> Path:
    """Write ``inputs`` and ``predictions`` (both with a ``sample`` dim) to ``path``;
    ``converged`` marks the samples predicted (default: all), the others' fields may be
    NaN; ``seed`` is the inputs' (``UNKNOWN_SEED`` where they carry none)."""
    path = Path(path)
    n = predictions.sizes[SAMPLE]
    grid_dims = [d for d in predictions.dims if d != SAMPLE and d in predictions.coords]
    coords = [
        Coordinate(
            d, np.asarray(predictions[d].values), dict(predictions[d].attrs) or {"units": "1"}
        )
        for d in grid_dims
    ]
    if SAMPLE in inputs.coords:  # the input file's sample labels (ids) are kept
        label = _sample_labels(inputs[SAMPLE])
        if label is not None:
            coords.insert(0, label)
    specs, block = [], {}
    for ds, role in ((inputs, INPUT), (predictions, OUTPUT)):
        for name, var in ds.data_vars.items():
            attrs = {k: v for k, v in var.attrs.items() if k in ("units", "long_name")}
            if role == OUTPUT and var.attrs.get("valid_where") in inputs.data_vars:
                attrs["valid_where"] = var.attrs["valid_where"]  # its mask is written too
            attrs.setdefault("long_name", str(name))
            extra_dims = [d for d in var.dims if d != SAMPLE]
            if role == INPUT and not extra_dims:  # a number per sample: as it was given
                specs.append(VarSpec(str(name), (), PARAMETER, "float64", attrs))
            else:  # inputs as precise as given (float64 ones were rounded to float32)
                dtype = ("float64" if role == INPUT and var.dtype == np.float64
                         else "float32")
                specs.append(VarSpec(str(name), tuple(extra_dims), role, dtype, attrs))
            block[str(name)] = np.asarray(var.transpose(SAMPLE, *extra_dims).values)
    # (said of the surrogate: "solver converged" read as if a solver had run and agreed)
    specs += [dataclasses.replace(spec, attrs={
        "long_name": "predicted by the surrogate (not whether any solver converged)"})
        if spec.name == "converged" else spec for spec in diagnostic_specs()]
    block["converged"] = (np.ones(n, dtype=bool) if converged is None
                          else np.asarray(converged, dtype=bool))
    block["solve_seconds"] = np.full(n, seconds_per_sample)
    extra_coords = [_extra_coordinate(d, predictions, inputs)
                    for spec in specs for d in spec.dims if d not in grid_dims]
    coords += list({c.name: c for c in extra_coords}.values())
    attrs = {
        "problem": problem,
        "solver": solver,
        "pdeforge_version": _version(),
        "seed": seed,
        "config": config_json({**config, "problem": problem, "n_samples": n, "seed": seed}),
        "status": STATUS_COMPLETE,
    }
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with DatasetWriter(tmp, specs=specs, coords=coords, n_samples=n, attrs=attrs) as w:
            w.write(0, block)
        report = check_file(tmp)
        if not report.ok:
            raise DatasetFormatError(f"prediction file failed its own check:\n{report.format()}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _sample_labels(var: xr.DataArray) -> Coordinate | None:
    """The inputs' sample labels as the file stores them: numbers and text as they are,
    dates and durations CF-encoded (numbers with "<unit> since <date>" units, as xarray
    writes and decodes them: they were dropped); other kinds are dropped with a warning."""
    labels = as_text(var.values)  # (h5py's fixed-length bytes: text)
    attrs = dict(var.attrs) or {"long_name": "sample"}
    if labels.dtype.kind in "iufUO":
        return Coordinate(SAMPLE, labels, attrs)
    if labels.dtype.kind in "mM":
        from xarray.coding.times import encode_cf_datetime, encode_cf_timedelta

        if labels.dtype.kind == "M":
            numbers, units, calendar = encode_cf_datetime(labels)
            attrs.update(units=units, calendar=calendar)
        else:
            numbers, units = encode_cf_timedelta(labels)
            # (xarray decodes a duration only where ``dtype`` says it is one)
            attrs.update(units=units, dtype=str(labels.dtype))
        return Coordinate(SAMPLE, np.asarray(numbers), attrs)
    warnings.warn(f"the inputs' sample labels of dtype {labels.dtype} are not written to "
                  "the predictions (the format keeps numbers, text, dates and durations); "
                  "the samples are numbered in their order", UserWarning, stacklevel=3)
    return None


def _extra_coordinate(dim: str, predictions: xr.Dataset, inputs: xr.Dataset) -> Coordinate:
    """A non-grid dim's coordinate (an output's t, a component's labels) as the predictions
    or the inputs have it, values and attributes; an index where neither has one (it was
    always an index: output times came out as 0, 1, 2 in units "1")."""
    for ds in (predictions, inputs):
        if dim in ds.coords:
            return Coordinate(dim, as_text(ds[dim].values),
                              dict(ds[dim].attrs) or {"long_name": dim})
    return Coordinate(dim, np.arange(predictions.sizes.get(dim, inputs.sizes.get(dim))),
                      {"units": "1", "long_name": f"{dim} (index)"})


def _version() -> str:
    from pdeforge import __version__

    return __version__
