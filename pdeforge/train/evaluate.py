"""``pdeforge evaluate``: metrics of a trained checkpoint on a dataset file, as JSON."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pdeforge.datasets.check import open_h5
from pdeforge.datasets.format import ATTR_PROBLEM, attr_value
from pdeforge.datasets.torch_dataset import TorchDataset
from pdeforge.errors import PdeforgeError
from pdeforge.surrogate import Surrogate, grid_mode, is_cell_centred
from pdeforge.train.checkpoint import load_module
from pdeforge.train.data import Subsampled
from pdeforge.train.metrics import OperatorMetrics


class EvaluationError(PdeforgeError, ValueError):
    """The data cannot be evaluated with this checkpoint as asked."""


def stride_for(shape: tuple[int, ...], resolution: int) -> int:
    """The subsampling stride that turns ``shape`` into ``resolution`` points per axis."""
    for stride in range(1, max(shape) + 1):
        if all(-(-n // stride) == resolution for n in shape):
            return stride
    possible = sorted(
        {
            -(-shape[0] // s)
            for s in range(1, shape[0] + 1)
            if len({-(-n // s) for n in shape}) == 1
        },
        reverse=True,
    )
    raise EvaluationError(
        f"resolution {resolution} cannot be reached by subsampling the grid {shape}; "
        f"possible: {possible[:8]}"
    )


def evaluate(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    *,
    resolution: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
    resample: bool = False,
) -> dict[str, Any]:
    """Metrics of the checkpoint's model on every converged sample of ``data``.

    ``resample``: on another grid than the training one, interpolate the inputs to the
    training grid, predict there and interpolate back (``Surrogate.predict``'s
    ``resample``), instead of running the model zero-shot on the data's grid.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    module, saved = load_module(checkpoint, device)
    info = module.data_info
    with open_h5(data):  # a missing or unreadable file: its own message, not the model's
        pass
    try:
        dataset = TorchDataset(data, info.get("inputs"), info.get("outputs"))
    except PdeforgeError as exc:
        raise EvaluationError(
            f"{exc}; the checkpoint was trained on inputs {info.get('inputs')} and outputs "
            f"{info.get('outputs')}"
        ) from None
    if (dataset.in_channels, dataset.out_channels) != (
        module.hparams.in_channels,
        module.hparams.out_channels,
    ):
        raise EvaluationError(
            f"{data} gives {dataset.in_channels} input / {dataset.out_channels} output channels, "
            f"the model expects {module.hparams.in_channels} / {module.hparams.out_channels}"
        )
    if len(dataset.grid_shape) != module.hparams.dim:
        raise EvaluationError(
            f"{data} is on a {len(dataset.grid_shape)}D grid, the model is {module.hparams.dim}D"
        )
    with open_h5(dataset.path) as h5:
        problem = str(attr_value(h5.attrs, ATTR_PROBLEM) or "")
    trained_on = info.get("problem") or ""
    if problem and trained_on and problem != trained_on:
        warnings.warn(
            f"{data} holds {problem!r} data and the checkpoint was trained on {trained_on!r} "
            "data: the metrics compare a model with another equation's solutions",
            stacklevel=2,
        )
    stride = 1 if resolution is None else stride_for(dataset.grid_shape, resolution)
    if stride > 1 and stride % 2 == 0:
        with open_h5(dataset.path) as h5:
            cells = [d for d in dataset.grid_dims if is_cell_centred(np.sort(h5[d][:]))]
        if cells:
            # every stride-th cell centre of n cells is not a cell centre of n / stride
            # cells: (stride j + 1/2) h against (stride j + stride / 2) h
            warnings.warn(
                f"subsampling the cell-centred grid of {data} by {stride} keeps points "
                f"shifted by {(stride - 1) / 2:g} fine spacings from the cell centres of the "
                f"coarser grid (along {cells}); for the coarse grid's own points generate "
                "the data at that resolution",
                stacklevel=2,
            )
    trained = [len(v) for v in info.get("coords", {}).values()]
    grid = [-(-n // stride) for n in dataset.grid_shape]
    other_grid = bool(trained) and grid != trained
    if other_grid and not resample:  # as Surrogate.predict says
        warnings.warn(
            f"evaluating on a {'x'.join(map(str, grid))} grid a model trained on "
            f"{'x'.join(map(str, trained))}: this measures the model zero-shot; resample=True "
            "(pdeforge evaluate --resample) interpolates the inputs to the training grid "
            "and the predictions back",
            stacklevel=2,
        )
    data_set = Subsampled(dataset, stride, module.hparams.dim)
    loader = DataLoader(data_set, batch_size=batch_size, shuffle=False)
    metrics = OperatorMetrics(module.hparams.out_channels, module.hparams.dim).to(device)
    model = module
    if resample and other_grid:
        surrogate = Surrogate(module, saved, str(checkpoint), device)

        def model(x: torch.Tensor) -> torch.Tensor:
            y, _, _ = surrogate.predict_array(x, len(x), resample=True)
            return torch.as_tensor(y, device=device)

    with torch.no_grad():
        for x, y in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
            metrics.update(model(x.to(device)), y.to(device))
    if metrics.update_count == 0:
        raise EvaluationError(f"{data} has no converged samples to evaluate")
    # a Fourier band the grid does not resolve (high band below 24 points) is null
    result: dict[str, Any] = {
        k: (None if torch.isnan(v) else float(v)) for k, v in metrics.compute().items()
    }
    result.update(
        n_samples=len(dataset),
        problem=problem,
        trained_problem=trained_on,
        grid_mode=grid_mode(grid, trained, resample) if trained else "training grid",
        resolution=grid,
        trained_resolution=trained,
        checkpoint=str(Path(checkpoint)),
        data=str(Path(data)),
    )
    return result
