"""Write surrogate predictions as a dataset file in the published format (version 1).

The file holds the inputs (role ``input``; a number per sample: ``parameter``, float64),
the predicted outputs (role ``output``) and
the diagnostics every file has (``converged`` true, ``solve_seconds`` = the surrogate's
time per sample); ``solver`` names the surrogate and its checkpoint. It is written under
a temporary name and renamed, so a crash never leaves a partial file under the final
name, and it passes ``pdeforge check``.
"""

from __future__ import annotations

import dataclasses
import os
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
        labels = as_text(inputs[SAMPLE].values)  # (h5py's fixed-length bytes: text)
        if labels.dtype.kind in "iufUO":
            coords.insert(0, Coordinate(SAMPLE, labels,
                                        dict(inputs[SAMPLE].attrs) or {"long_name": "sample"}))
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
            else:
                specs.append(VarSpec(str(name), tuple(extra_dims), role, "float32", attrs))
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
