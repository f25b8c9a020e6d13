"""``pdeforge evaluate``: metrics of a trained checkpoint on a dataset file, as JSON."""

from __future__ import annotations

import json
import operator
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pdeforge.datasets.check import DAMAGED_FIX, open_h5
from pdeforge.datasets.format import (
    ATTR_CONFIG,
    ATTR_PROBLEM,
    attr_value,
    attr_values,
    coordinate,
)
from pdeforge.datasets.grid import (
    CELL,
    PERIODIC,
    VERTEX,
    axis_kind,
    subsample_starts,
    subsampled_size,
)
from pdeforge.datasets.torch_dataset import TorchDataset, channel_blocks, decreasing_dims
from pdeforge.errors import PdeforgeError
from pdeforge.surrogate import (
    Surrogate,
    _check_device,
    domain_mismatch,
    grid_mode,
    points_mismatch,
)
from pdeforge.train.checkpoint import load_module
from pdeforge.train.data import (
    Subsampled,
    channel_axes_mismatch,
    extra_dims_record,
    units_mismatch,
)
from pdeforge.train.metrics import OperatorMetrics, grid_steps


class EvaluationError(PdeforgeError, ValueError):
    """The data cannot be evaluated with this checkpoint as asked."""


#: the coarsest grid evaluate subsamples to: one point per axis is not a grid
MIN_RESOLUTION = 2


def stride_for(
    shape: tuple[int, ...], resolution: int, kinds: list[str | None] | None = None
) -> int:
    """The subsampling stride that turns ``shape`` into ``resolution`` points per axis,
    each axis of ``kinds`` (:data:`PERIODIC`, :data:`CELL`, :data:`VERTEX`, None for
    unknown) staying a grid of its kind on the same domain."""
    kinds = list(kinds) if kinds is not None else [None] * len(shape)
    try:
        if isinstance(resolution, bool):
            raise TypeError
        points = operator.index(resolution)  # numpy integers too
    except TypeError:
        points = 0
    if points < MIN_RESOLUTION:
        raise EvaluationError(
            f"--resolution must be an integer of at least {MIN_RESOLUTION} (points per axis), "
            f"got {resolution!r}"
        )
    resolution = points

    sizes = _stride_grids(shape, kinds)
    for stride, reached in sizes.items():
        if set(reached) == {resolution}:
            return stride
    # the resolutions one stride gives every axis
    possible = sorted({r[0] for r in sizes.values() if len(set(r)) == 1}, reverse=True)
    raise EvaluationError(
        f"resolution {resolution} cannot be reached by subsampling the grid of "
        f"{_axes(shape, kinds)} points into a grid of the same kind on the same domain "
        f"{KIND_RULE}; "
        + (f"possible: {possible[:8]}" if possible else
           "no stride gives every axis one size: pass a stride instead (--stride k), "
           f"possible: {_described(sizes)}")
    )


#: which strides keep an axis a grid of its kind on its domain
KIND_RULE = ("(periodic and cell-centred axes take a stride that divides their point "
             "count, vertex axes one that divides their intervals)")


def _stride_grids(shape: tuple[int, ...], kinds: list[str | None]
                  ) -> dict[int, tuple[int, ...]]:
    """{stride: the grid it leaves} for the strides that keep every axis a grid of its kind
    (:func:`subsampled_size`) of at least ``MIN_RESOLUTION`` points."""
    out = {}
    for stride in range(1, max(shape) + 1):
        grid = tuple(subsampled_size(n, k, stride) for n, k in zip(shape, kinds, strict=True))
        if all(g is not None and g >= MIN_RESOLUTION for g in grid):
            out[stride] = grid
    return out


def _axes(shape: tuple[int, ...], kinds: list[str | None]) -> str:
    return ", ".join(f"{n} ({k or 'unknown kind'})" for n, k in zip(shape, kinds, strict=True))


def _described(sizes: dict[int, tuple[int, ...]]) -> str:
    return ", ".join(f"{s} ({'x'.join(map(str, g))})" for s, g in list(sizes.items())[:8])


def check_stride(shape: tuple[int, ...], stride: int, kinds: list[str | None] | None = None
                 ) -> int:
    """``stride`` (every stride-th point of each axis) if it keeps every axis of ``kinds``
    a grid of its kind on the same domain, else an :class:`EvaluationError` naming the
    strides that do."""
    kinds = list(kinds) if kinds is not None else [None] * len(shape)
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
        raise EvaluationError(f"--stride must be a positive integer, got {stride!r}")
    sizes = _stride_grids(shape, kinds)
    if int(stride) not in sizes:
        raise EvaluationError(
            f"stride {stride} does not subsample the grid of {_axes(shape, kinds)} points "
            f"into a grid of the same kind on the same domain {KIND_RULE}; possible: "
            f"{_described(sizes)}")
    return int(stride)


def _axis_kind(h5: Any, dim: str, values: np.ndarray | None,
               trained_periodic: list[str]) -> str | None:
    """The kind of grid axis ``dim`` with (increasing) coordinates ``values``: its
    attributes', else guessed (``grid.axis_kind``)."""
    if values is None or len(values) < 2:
        return None
    # (NLSE files written before the attribute existed: the checkpoint knows)
    if dim in trained_periodic:
        return PERIODIC
    return axis_kind(values, attr_values(h5[dim].attrs))


def _check_channel_axes(h5: Any, dataset: TorchDataset, info: dict, data: Any) -> None:
    """Refuse data whose channels stand for other points of a non-grid axis (other output
    times) than the training data's: the model's channel i is the training's time i.
    (Checkpoints from before ``extra_dims`` was recorded are not checked.)"""
    if "extra_dims" not in info:
        return
    for name in list(info.get("inputs", [])) + list(info.get("outputs", [])):
        problem = channel_axes_mismatch(name, info["extra_dims"].get(name),
                                        extra_dims_record(h5, dataset, name))
        if problem:
            raise EvaluationError(f"{data}: {problem} (evaluate data with the training "
                                  "data's layout)")


def comparable_config(config: Any) -> dict:
    """A generation config (a dict, or the JSON text of a file's ``config`` attribute) as
    a dict to compare, or {} where there is nothing to compare: no or invalid JSON, or
    another program's config, which does not hold its options as a dict."""
    if isinstance(config, str | bytes):
        try:
            config = json.loads(config or "{}")
        except ValueError:
            return {}
    if not isinstance(config, dict) or not isinstance(config.get("options", {}), dict):
        return {}
    return config


def _distribution_changes(trained: dict, config: dict) -> dict[str, tuple[Any, Any]]:
    """The problem options (not the solver's: :attr:`Option.numerics`) in which a data
    file's generation ``config`` differs from the training data's, as (trained, data)."""
    from pdeforge.datasets.problems import PROBLEMS

    family = PROBLEMS.get(str(config.get("problem")))
    if family is None or trained.get("problem") != config.get("problem"):
        return {}
    numerics = {o.name for o in family.options if o.numerics}
    # an option a file does not record (written before the option existed) had its
    # default; one resolved by the problem (default None) is compared only when both have it
    defaults = {o.name: o.default for o in family.options if o.default is not None}
    before = {**defaults, **trained.get("options", {})}
    now = {**defaults, **config.get("options", {})}
    return {k: (before.get(k), now.get(k)) for k in sorted(set(before) | set(now))
            if k not in numerics and k in before and k in now and before[k] != now[k]}


def distribution_message(data: Any, changed: dict[str, tuple[Any, Any]], what: str) -> str:
    """The warning about data generated with other problem options (``changed``, from
    :func:`_distribution_changes`) than the training data; ``what`` names what is then
    off the training distribution ("the metrics measure", "the predictions are")."""
    listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
    return (f"{data} was generated with other problem options than the checkpoint's "
            f"training data ({listed}): {what} the model outside the distribution it was "
            "trained on")


def evaluate(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    *,
    resolution: int | None = None,
    stride: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
    resample: bool = False,
) -> dict[str, Any]:
    """Metrics of the checkpoint's model on every converged sample of ``data``.

    ``resolution``: subsample the data's grid to this many points per axis; ``stride``:
    keep every stride-th point of each axis (a non-square grid's way; the training's own
    stride is taken as training took it). ``resample``: on another grid than the
    training one, interpolate the inputs to the training grid, predict there and
    interpolate back (``Surrogate.predict``'s ``resample``), instead of running the model
    zero-shot on the data's grid.
    """
    device = _check_device(device)  # (else torch.load's error blamed the checkpoint file)
    module, saved = load_module(checkpoint, device)
    info = module.data_info
    with open_h5(data):  # a missing or unreadable file: its own message, not the model's
        pass
    try:
        # the items on the model's axes, whatever order the file stores them in
        dataset = TorchDataset(data, info.get("inputs"), info.get("outputs"),
                               grid_dims=info.get("grid_dims") or None)
    except PdeforgeError as exc:
        if DAMAGED_FIX in str(exc):  # the file's bytes, not the choice of variables
            raise
        raise EvaluationError(
            f"{exc}; the checkpoint was trained on inputs {info.get('inputs')} and outputs "
            f"{info.get('outputs')}"
        ) from None
    with open_h5(dataset.path) as h5:
        _check_channel_axes(h5, dataset, info, data)  # named before the channel count
        if (dataset.in_channels, dataset.out_channels) != (
            module.hparams.in_channels,
            module.hparams.out_channels,
        ):
            raise EvaluationError(
                f"{data} gives {dataset.in_channels} input / {dataset.out_channels} output "
                f"channels, the model expects {module.hparams.in_channels} / "
                f"{module.hparams.out_channels}"
            )
        if len(dataset.grid_shape) != module.hparams.dim:
            raise EvaluationError(f"{data} is on a {len(dataset.grid_shape)}D grid, the model "
                                  f"is {module.hparams.dim}D")
        problem = str(attr_value(h5.attrs, ATTR_PROBLEM) or "")
        flipped = decreasing_dims(h5, dataset.grid_dims)
        coords = {}
        for d in dataset.grid_dims:
            values = coordinate(h5, d)
            if values is not None:  # increasing, as the items are
                coords[d] = values[::-1] if d in flipped else values
        kinds = [_axis_kind(h5, d, coords.get(d), list(info.get("periodic_dims", [])))
                 for d in dataset.grid_dims]
        config = comparable_config(attr_value(h5.attrs, ATTR_CONFIG))
    trained_on = info.get("problem") or ""
    if problem and trained_on and problem != trained_on:
        warnings.warn(
            f"{data} holds {problem!r} data and the checkpoint was trained on {trained_on!r} "
            "data: the metrics compare a model with another equation's solutions",
            stacklevel=2,
        )
    generation = comparable_config(info.get("generation_config"))
    changed = _distribution_changes(generation, config)
    if changed:
        warnings.warn(distribution_message(data, changed, "the metrics measure"),
                      stacklevel=2)
    # (older checkpoints stored the paths as given: a relative one names no file here)
    trained_files = {str(Path(f).resolve())
                     for f in [*info.get("files", []), *info.get("earlier_files", [])]
                     if Path(f).is_absolute()}
    if str(Path(data).resolve()) in trained_files:
        warnings.warn(
            f"the checkpoint was trained on {data}: its samples include the training "
            "split, so the metrics are not a test error; evaluate a file generated with "
            "another --seed (or run `pdeforge train test` on the held-out split)",
            stacklevel=2,
        )
    elif (generation.get("problem") and config.get("problem") == generation.get("problem")
          and config.get("seed") is not None and config.get("seed") == generation.get("seed")
          and not changed):
        # sample i is a pure function of (seed, i): the same draws at any resolution
        warnings.warn(
            f"{data} was generated with the seed ({config.get('seed')}) and problem options "
            "of the checkpoint's training data: its sample i draws the random inputs of "
            "training sample i, so the metrics include training samples and are not a test "
            "error; evaluate a file generated with another --seed",
            stacklevel=2,
        )
    # the training's own stride reaches its grid even where it does not divide the axes
    # (the model then covers part of the domain, recorded with it)
    own, own_starts = info.get("subsample", 1), info.get("subsample_starts") or (0,) * len(kinds)
    own_grid = [-(-(n - start) // own) for n, start in zip(dataset.grid_shape, own_starts,
                                                          strict=True)]
    if resolution is not None and stride is not None:
        raise EvaluationError("pass a resolution or a stride, not both")
    trained_grid = [len(info.get("coords", {}).get(d, ())) for d in dataset.grid_dims]
    if own > 1 and own_grid == trained_grid and (
            stride == own or (resolution is not None and own_grid == [resolution] * len(kinds))):
        stride = own
    elif stride is not None:
        stride = check_stride(dataset.grid_shape, stride, kinds)
    else:
        stride = 1 if resolution is None else stride_for(dataset.grid_shape, resolution, kinds)
    # the points the model was trained on where the training subsampled this way (as
    # recorded; checkpoints from before the record took the first point), else the
    # coarse cells' centres
    trained_stride = info.get("subsample", 1) == stride
    starts = (tuple(info.get("subsample_starts") or (0,) * len(kinds)) if trained_stride
              else subsample_starts(kinds, stride))
    cells = [d for d, k in zip(dataset.grid_dims, kinds, strict=True) if k == CELL]
    # (the training's own points are not warned about: they are what the model knows)
    if stride > 1 and stride % 2 == 0 and cells and not trained_stride:
        # every stride-th cell centre of n cells is not a cell centre of n / stride
        # cells: (stride j + 1/2) h against (stride j + stride / 2) h; an odd stride
        # starts at cell (stride - 1) / 2 and keeps them exactly (subsample_starts)
        warnings.warn(
            f"subsampling the cell-centred grid of {data} by {stride} keeps points "
            f"shifted by {(stride - 1) / 2:g} fine spacings from the cell centres of the "
            f"coarser grid (along {cells}); for the coarse grid's own points generate "
            "the data at that resolution or take an odd stride",
            stacklevel=2,
        )
    kept = {d: coords[d][starts[i]::stride] for i, d in enumerate(dataset.grid_dims)
            if d in coords}
    periodic = [d for d, k in zip(dataset.grid_dims, kinds, strict=True) if k == PERIODIC]
    # the domain the data's whole grid covers (a cell grid's reaches half a cell past its
    # points): an even stride's shifted points are the warning above, not another domain
    # (they were reported as one, "check the units"); with the training's own stride the
    # points it was trained on
    spans = kept if trained_stride else {d: v for d, v in coords.items()
                                         if d in dataset.grid_dims}
    trained_kinds = info.get("grid_kinds") or {}
    message = domain_mismatch(
        info.get("coords", {}), spans, list(dataset.grid_dims), periodic,
        {d: (trained_kinds.get(d), k) for d, k in zip(dataset.grid_dims, kinds, strict=True)})
    if not message and (stride == 1 or trained_stride):  # (an even stride: warned above)
        message = points_mismatch(info.get("coords", {}), kept, list(dataset.grid_dims))
    if message:
        warnings.warn(f"{data}: its {message}", stacklevel=2)
    message = units_mismatch(info.get("units") or {}, dataset.units)
    if message:
        warnings.warn(f"{data}: {message}", stacklevel=2)
    trained = [len(v) for v in info.get("coords", {}).values()]
    grid = [-(-(n - start) // stride) for n, start in zip(dataset.grid_shape, starts,
                                                         strict=True)]
    other_grid = bool(trained) and grid != trained
    surrogate = Surrogate(module, saved, str(checkpoint), device) if other_grid else None
    resample = resample or bool(surrogate and surrogate.always_resampled)
    if other_grid and not resample:  # as Surrogate.predict says
        warnings.warn(
            f"evaluating on a {'x'.join(map(str, grid))} grid a model trained on "
            f"{'x'.join(map(str, trained))}: this measures the model zero-shot; resample=True "
            "(pdeforge evaluate --resample) interpolates the inputs to the training grid "
            "and the predictions back",
            stacklevel=2,
        )
    data_set = Subsampled(dataset, stride, module.hparams.dim, starts)
    loader = DataLoader(data_set, batch_size=batch_size, shuffle=False)
    metrics = OperatorMetrics(module.hparams.out_channels, module.hparams.dim).to(device)
    # and each output's own, where there are several (the pooled relative errors weigh
    # the outputs by their norms: 13.6 % pooled hid 38 % on one output, review)
    blocks = channel_blocks(info.get("outputs", []), info.get("channels", {}))
    per_output = {name: (first, stop, OperatorMetrics(stop - first, module.hparams.dim)
                         .to(device)) for name, (first, stop) in blocks.items()}
    if len(blocks) < 2 or max(stop for _, stop in blocks.values()) != (
            module.hparams.out_channels):
        per_output = {}
    for m in [metrics, *(m for _, _, m in per_output.values())]:
        # rel_h1 on the evaluated points' physical steps (a unit domain where they have none)
        m.set_grid(grid_steps(kept, list(dataset.grid_dims)),
                   [d in periodic for d in dataset.grid_dims],
                   [k == VERTEX for k in kinds])
    model = module
    if surrogate is not None:
        # on another grid the surrogate places the evaluated points as training placed
        # its own (resampled, or zero-shot with the positions the model reads)
        at = {d: np.asarray(v, dtype=np.float64) for d, v in kept.items()}

        def model(x: torch.Tensor) -> torch.Tensor:
            return surrogate.forward(x, at, resample)

    with torch.no_grad():
        for x, y in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
            predicted, y = model(x.to(device)), y.to(device)
            metrics.update(predicted, y)
            for first, stop, m in per_output.values():
                m.update(predicted[:, first:stop], y[:, first:stop])
    if metrics.update_count == 0:
        raise EvaluationError(f"{data} has no converged samples to evaluate")
    failed = dataset.n_not_converged  # (the reader's: it read the file's `converged`)
    if failed:  # (the metrics were over the rest, with no word: 2 of 16 samples, review)
        warnings.warn(f"{failed} of {failed + len(dataset)} samples of {data} are marked not "
                      "converged (their solver failed; the format lets their fields hold "
                      "anything) and are left out of the metrics", stacklevel=2)
    zero = int(metrics.zero_targets)
    if zero:
        warnings.warn(
            f"{zero} of {len(dataset)} sample(s) of {data} have targets that are zero at "
            "every evaluated point: their relative errors (rel_l2, rel_h1, nrmse) divide by "
            "zero and swamp the means; evaluate on a finer --resolution or leave such "
            "samples out (rmse, max_error and fRMSE are not affected)", stacklevel=2)
    # a Fourier band the grid does not resolve (high band below 24 points) is null
    def values(m: OperatorMetrics) -> dict[str, float | None]:
        return {k: (None if torch.isnan(v) else float(v)) for k, v in m.compute().items()}

    result: dict[str, Any] = values(metrics)
    if per_output:
        result["per_output"] = {name: values(m) for name, (_, _, m) in per_output.items()}
    result.update(
        n_samples=len(dataset),
        n_not_converged=failed,
        problem=problem,
        trained_problem=trained_on,
        grid_mode=grid_mode(grid, trained, resample) if trained else "training grid",
        resolution=grid,
        trained_resolution=trained,
        checkpoint=str(Path(checkpoint)),
        data=str(Path(data)),
    )
    return result
