"""Human and JSON summaries of a dataset file (``pdeforge info FILE``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pdeforge.datasets.check import _first_line, open_h5
from pdeforge.datasets.format import (
    ATTR_CONFIG,
    CONVERGED,
    DIAGNOSTIC,
    REQUIRED_ROOT_ATTRS,
    SAMPLE,
    SPATIAL_DIMS,
    attr_value,
    attr_values,
    is_decreasing,
)
from pdeforge.datasets.grid import axis_kind, declared_kind
from pdeforge.datasets.readers import verify_dataset
from pdeforge.errors import DatasetFormatError


def describe(path: str | Path) -> dict[str, Any]:
    """A JSON-serialisable summary: attributes, sizes, variables, diagnostics, config."""
    import h5netcdf

    path = Path(path)
    note = None
    try:
        verify_dataset(path)  # as the readers open it
    except DatasetFormatError as exc:
        # a file the readers refuse (no or a text format attribute, status "writing", a
        # rule of the format broken) is described all the same, with what the readers
        # will say about it; one that is no HDF5 file still fails
        with open_h5(path):
            pass
        note = str(exc)
    nc = None
    try:  # a file h5netcdf refuses (no dimension scales, ...) fails on its structure
        nc = h5netcdf.File(path, "r")
        nc_variables, nc_dimensions = dict(nc.variables), dict(nc.dimensions)
        for var in nc_variables.values():
            var.dimensions  # noqa: B018 - looked up lazily: a missing scale raises here
    except (ValueError, KeyError) as exc:
        if nc is not None:
            nc.close()
        raise DatasetFormatError(
            f"{path} is not readable as netCDF4 ({_first_line(exc)}); `pdeforge check` "
            "lists what is wrong (e.g. variables without dimension scales)"
        ) from None
    with nc:
        attrs = {k: _jsonable(attr_value(nc.attrs, k)) for k in nc.attrs if k != ATTR_CONFIG}
        try:
            config = json.loads(attr_value(nc.attrs, ATTR_CONFIG))
        except (TypeError, ValueError):
            config = None
        dims = {name: d.size for name, d in nc_dimensions.items()}
        coords, variables, diagnostics = {}, [], {}
        for name, var in nc_variables.items():
            if name in dims:
                values = np.asarray(var[:])
                numeric = values.size and np.issubdtype(values.dtype, np.number)
                coords[name] = {"size": int(values.size),
                                "min": float(values.min()) if numeric else None,
                                "max": float(values.max()) if numeric else None,
                                "decreasing": bool(numeric and is_decreasing(values))}
                if numeric and name in SPATIAL_DIMS and values.size > 1:
                    # the kind, and whether the file says it or it is guessed
                    declared = declared_kind(attr_values(var.attrs))
                    kind = declared or axis_kind(np.sort(values.astype(np.float64)))
                    coords[name]["grid"] = kind if declared else f"{kind} (guessed)"
                continue
            role = attr_value(var.attrs, "role")
            is_bool = attr_value(var.attrs, "dtype") == "bool"  # xarray's bool encoding
            variables.append({
                "name": name, "dims": list(var.dimensions),
                "dtype": "bool" if is_bool else str(var.dtype),
                "role": role, "units": attr_value(var.attrs, "units"),
                "long_name": attr_value(var.attrs, "long_name"),
            })
            if role == DIAGNOSTIC and var.dimensions == (SAMPLE,):
                values = np.asarray(var[:])
                if name == CONVERGED:
                    diagnostics[name] = {"true": int(values.astype(bool).sum()),
                                         "false": int((~values.astype(bool)).sum())}
                elif values.size and np.issubdtype(values.dtype, np.number):
                    v = values.astype(np.float64)
                    v = v[np.isfinite(v)]
                    # A sum means something for work (matrix-vector products) and times,
                    # not for residuals, drifts, tails or factors (nlse's oversample).
                    additive = name == "iterations" or attr_value(var.attrs, "units") == "s"
                    diagnostics[name] = {
                        "finite": int(v.size),
                        "mean": float(v.mean()) if v.size else None,
                        "min": float(v.min()) if v.size else None,
                        "max": float(v.max()) if v.size else None,
                        "total": float(v.sum()) if v.size and additive else None,
                    }
    size = path.stat().st_size
    n = dims.get(SAMPLE, 0)
    return {
        "path": str(path), "attrs": attrs, "file_bytes": size,
        "bytes_per_sample": size / n if n else None, "dims": dims, "coords": coords,
        "variables": variables, "diagnostics": diagnostics, "config": config,
        "format_note": note,
    }


def format_description(d: dict[str, Any]) -> str:
    a = d["attrs"]
    lines = [
        f"file      {d['path']}  ({d['file_bytes'] / 2**20:.2f} MiB, "
        + (f"{d['bytes_per_sample'] / 2**10:.1f} KiB/sample)" if d["bytes_per_sample"] else ")"),
    ]
    if d.get("format_note"):
        lines.append(f"note      {d['format_note']}")
    for key in REQUIRED_ROOT_ATTRS:
        if key in a:
            lines.append(f"{key:<18}{a[key]}")
    lines.append("dims      " + ", ".join(f"{k}={v}" for k, v in d["dims"].items()))
    for name, c in d["coords"].items():
        span = f" in [{c['min']:.4g}, {c['max']:.4g}]" if c["min"] is not None else ""
        span += ", decreasing" if c.get("decreasing") else ""
        span += f", {c['grid']}" if c.get("grid") else ""
        lines.append(f"  coord {name:<8} {c['size']} points{span}")
    lines.append("variables")
    for v in d["variables"]:
        label = v["long_name"] or ""
        if v["units"]:
            label += f" [{v['units']}]"
        lines.append(f"  {v['role'] or '?':<11} {v['name']:<16} ({', '.join(v['dims'])}) "
                     f"{v['dtype']:<8} {label}")
    lines.append("diagnostics")
    for name, s in d["diagnostics"].items():
        if name == CONVERGED:
            lines.append(f"  {name:<16} {s['true']} converged, {s['false']} not")
        elif s["mean"] is None:
            lines.append(f"  {name:<16} no finite values")
        else:
            total = f"  total {s['total']:.4g}" if s["total"] is not None else ""
            lines.append(f"  {name:<16} mean {s['mean']:.4g}  min {s['min']:.4g}  "
                         f"max {s['max']:.4g}{total}")
    lines.append("config")
    lines.append("  " + json.dumps(d["config"], indent=2, sort_keys=True).replace("\n", "\n  "))
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Attribute values as JSON-safe Python (NaN/inf become None, arrays lists)."""
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, bytes | str | int | float | bool) or value is None:
        return value
    return str(value)
