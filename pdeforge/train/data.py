"""``OperatorDataModule``: dataset files in the published format as Lightning data.

Any file that passes ``pdeforge check`` trains: inputs default to the per-sample
variables whose ``role`` is ``input`` or ``parameter`` (a scalar is a constant channel),
outputs to the fields whose ``role`` is ``output``. One file is split into
train/validation/test by fractions with a fixed seed (non-converged samples are left
out), or separate files give the validation and test sets. ``subsample`` keeps every
k-th grid point for training and validation; ``test_subsample`` (default: the same)
lets a model trained at 64 be tested at 128 from a 128 file.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from pdeforge.datasets.check import open_h5
from pdeforge.datasets.format import (
    ATTR_CONFIG,
    ATTR_FORMAT,
    ATTR_PROBLEM,
    ATTR_SOLVER,
    SPATIAL_DIMS,
    as_text,
    attr_value,
    attr_values,
    coordinate,
)
from pdeforge.datasets.grid import (
    CELL,
    PERIODIC,
    VERTEX,
    axis_extent,
    axis_kind,
    subsample_starts,
    subsampled_size,
)
from pdeforge.datasets.torch_dataset import TorchDataset, decreasing_dims
from pdeforge.errors import PdeforgeError


class TrainingDataError(PdeforgeError, ValueError):
    """The data given for training cannot be used as asked (names, grids, splits)."""


class Subsampled(Dataset):
    """Every ``stride``-th grid point of each (x, y) item of ``base``, from the points
    ``starts`` (one per grid axis; default the first)."""

    def __init__(self, base: Dataset, stride: int, dim: int,
                 starts: tuple[int, ...] | None = None) -> None:
        self.base, self.stride, self.dim = base, stride, dim
        self.starts = tuple(starts) if starts is not None else (0,) * dim

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[item]
        if self.stride == 1:
            return x, y
        index = (Ellipsis,) + tuple(slice(start, None, self.stride) for start in self.starts)
        return x[index].contiguous(), y[index].contiguous()


def extra_dims_record(h5: Any, dataset: TorchDataset, name: str) -> dict[str, Any] | None:
    """The non-spatial dims of variable ``name`` (an NLSE trajectory's ``t``, which
    become channels) with their sizes and coordinates, as a checkpoint records them
    (``data_info["extra_dims"]``), or None for a variable on the grid alone."""
    dims, shape, _ = dataset._fields[name]
    other = [(d, int(n)) for d, n in zip(dims[1:], shape[1:], strict=True)
             if d not in SPATIAL_DIMS]
    if not other:
        return None
    coords = {d: _labels(h5, d, n) for d, n in other}
    return {
        "dims": [d for d, _ in other],
        "sizes": [n for _, n in other],
        # numbers, or text labels (a component dim's "vx", "vy"); their units and names
        # too, so that predictions carry them
        "coords": {d: v for d, v in coords.items() if v is not None},
        "coord_attrs": {d: names_of(h5[d]) for d in coords if coords[d] is not None},
    }


def names_of(variable: Any) -> dict[str, str]:
    """A coordinate's ``units`` and ``long_name`` (text ones), for the predictions'
    coordinates."""
    attrs = attr_values(variable.attrs)
    return {key: attrs[key] for key in ("units", "long_name") if isinstance(attrs.get(key), str)}


def _labels(h5: Any, dim: str, size: int) -> list | None:
    """The values of a non-grid dim's coordinate: numbers (:func:`coordinate`) or text
    labels, as a list; None where the file has none."""
    values = coordinate(h5, dim, size)
    if values is not None:
        raw = h5[dim][:]  # integers stay integers
        return (raw if np.issubdtype(raw.dtype, np.integer) else values).tolist()
    if dim in h5 and getattr(h5[dim], "shape", None) == (size,):
        raw = h5[dim][:]
        if raw.dtype.kind in "SO":
            return as_text(raw).tolist()
    return None


def channel_axes_mismatch(name: str, trained: dict | None, given: dict | None) -> str | None:
    """What makes ``given`` (an :func:`extra_dims_record` of the data, or one made of an
    xarray input) other than the training's record of variable ``name``: other non-grid
    dims, or other points along them (other output times: the model's channel i is the
    training's time i); None when they agree or either lacks the coordinate."""
    trained_dims = list(trained["dims"]) if trained else []
    given_dims = list(given["dims"]) if given else []
    if trained_dims != given_dims:
        return (f"variable {name!r} has the dims {given_dims} besides the grid, the model "
                f"was trained on {trained_dims}")
    for d in trained_dims:
        want, have = trained.get("coords", {}).get(d), given.get("coords", {}).get(d)
        if want is None or have is None:
            continue
        want, have = np.asarray(want), np.asarray(have)
        if have.dtype.kind in "mM" and want.dtype.kind in "iuf":
            return (f"{name!r} is given at {d} as dates or durations, the model was trained "
                    f"at the numbers {d} = {_few(want)}: open the file with xarray's "
                    "decode_times=False (its units hold 'since'), or give the numbers")
        if want.dtype.kind in "iuf" and have.dtype.kind in "iuf":
            # within a millionth of the points' spacing (of their size for one point: a
            # tolerance from the largest value let t = 1000, 1000.001 pass for its shift)
            gaps = np.abs(np.diff(want.astype(np.float64)))
            scale = (float(gaps.min()) if gaps.size and gaps.min() > 0
                     else max(float(np.max(np.abs(want))), 1.0) if want.size else 1.0)
            same = want.shape == have.shape and (
                want.size == 0 or np.max(np.abs(want - have)) <= 1e-6 * scale)
        else:
            same = want.shape == have.shape and bool(np.all(want.astype(str)
                                                            == have.astype(str)))
        if not same:
            return (f"{name!r} is given at {d} = {_few(have)}, the model was trained at "
                    f"{d} = {_few(want)}: its channels are those {d} values; give the data "
                    f"at the training's {d}")
    return None


def units_mismatch(trained: Mapping[str, str], given: Mapping[str, Any],
                   reference: str = "the training data") -> str | None:
    """The variables whose units in ``given`` (a name to its ``units`` attribute) are not
    those of ``reference`` (``trained``: the checkpoint's record, or another file's), or
    None. A variable without units on either side is not compared. The model sees
    numbers: a field in mm given to a model trained in m is 1000 times too large."""
    differ = [
        f"{name!r} is in {have.strip()!r}, in {want.strip()!r} there"
        for name, want in trained.items()
        if isinstance(want, str) and want.strip()
        and isinstance(have := given.get(name), str) and have.strip()
        and have.strip() != want.strip()
    ]
    if not differ:
        return None
    return (f"units differ from {reference}: {'; '.join(differ)}; the model sees numbers, "
            "not units: convert the data to those units")


def _few(values: np.ndarray) -> str:
    # (10 digits: times a step apart near 1000 read "1000, 1000" at 4)
    text = [f"{v:.10g}" if isinstance(v, float | np.floating) else str(v)
            for v in values.tolist()]
    return "[" + ", ".join(text[:3]) + (", ..." if len(text) > 4 else "") + (
        f", {text[-1]}]" if len(text) > 3 else "]")


def _generate_command(path: Path) -> str:
    """A command that makes the missing dataset ``path``: the family and resolution its
    name says (``darcy_64.nc``, as the shipped configs name their data), its folder
    made first when missing."""
    from pdeforge.datasets.problems import PROBLEMS

    match = re.fullmatch(r"(.+)_(\d+)\.nc", path.name)
    if match and match.group(1) in PROBLEMS:
        command = (f"pdeforge generate {match.group(1)} --n 1200 --resolution "
                   f"{match.group(2)} --out {path}")
    else:
        command = f"pdeforge generate darcy --n 1200 --out {path}"
    if not path.parent.exists():
        command = f"mkdir -p {path.parent} && {command}"
    return command


def _parts(data: Dataset) -> list[Dataset]:
    """The files' datasets behind one dataset or a ConcatDataset of several."""
    return list(data.datasets) if isinstance(data, ConcatDataset) else [data]


def _as_paths(path: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if path is None:
        return []
    if isinstance(path, str | os.PathLike):
        return [Path(path)]
    return [Path(p) for p in path]


class OperatorDataModule(pl.LightningDataModule):
    """Lightning data from pdeforge dataset files.

    Args:
        path: one dataset file or a list of files with the same variables and grid.
        inputs: input variable names (default: role ``input`` or ``parameter``).
        outputs: output variable names (default: role ``output``).
        val_path: separate validation file(s); then ``path`` gives training (and test,
            unless ``test_path``) data by the split fractions.
        test_path: separate test file(s).
        split: fractions (train, val, test) of the samples of ``path``; fractions of the
            sets given by separate files are ignored. The remainder is unused.
        split_seed: seed of the permutation that assigns samples to splits.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (files are opened lazily per worker).
        subsample: keep every k-th grid point for training and validation.
        test_subsample: the same for testing (default: ``subsample``).
        max_train: use at most this many training samples (after the split).
        in_memory: read the files into memory (True/False/"auto" by size).
    """

    def __init__(
        self,
        path: str | list[str],
        inputs: list[str] | str | None = None,
        outputs: list[str] | str | None = None,
        val_path: str | list[str] | None = None,
        test_path: str | list[str] | None = None,
        split: list[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        subsample: int = 1,
        test_subsample: int | None = None,
        max_train: int | None = None,
        in_memory: bool | str = "auto",
    ) -> None:
        super().__init__()
        self.paths = _as_paths(path)
        if not self.paths:
            raise TrainingDataError(
                "data.path is empty: give a dataset file, e.g. --data.path data.nc"
            )
        self.val_paths, self.test_paths = _as_paths(val_path), _as_paths(test_path)
        for p in self.paths + self.val_paths + self.test_paths:
            if not p.exists():
                raise TrainingDataError(
                    f"dataset file {str(p)!r} does not exist; generate one with "
                    f"`{_generate_command(p)}` or fix --data.path"
                )
        split = tuple(float(s) for s in split)
        if len(split) != 3 or min(split) < 0 or sum(split) > 1 + 1e-9:
            raise TrainingDataError(
                f"data.split must be three fractions (train, val, test) summing to at most 1, "
                f"got {list(split)}"
            )
        for label, value in (
            ("subsample", subsample),
            ("test_subsample", test_subsample),
            ("batch_size", batch_size),
            ("max_train", max_train),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise TrainingDataError(f"data.{label} must be a positive integer, got {value!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise TrainingDataError(
                f"data.num_workers must be an integer >= 0 (0: load in the training process), "
                f"got {num_workers!r}"
            )
        # one name is accepted for a one-element list
        self.inputs = [inputs] if isinstance(inputs, str) else inputs
        self.outputs = [outputs] if isinstance(outputs, str) else outputs
        self.split, self.split_seed = split, split_seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.subsample = subsample
        self.test_subsample = subsample if test_subsample is None else test_subsample
        self.max_train, self.in_memory = max_train, in_memory

        # Read the metadata now (cheap, no field data) so that the model's channel
        # counts and dimension can be linked to the data when both are instantiated.
        probe = self._open(self.paths[0], in_memory=False)
        self.inputs, self.outputs = probe.inputs, probe.outputs
        self.in_channels, self.out_channels = probe.in_channels, probe.out_channels
        self.dim = len(probe.grid_shape)
        self.grid_dims = probe.grid_dims
        self.grid_shape = probe.grid_shape
        for other in self.paths[1:] + self.val_paths + self.test_paths:
            self._check_compatible(probe, self._open(other, in_memory=False), other)
        self.info = self._describe(probe)
        # the grid the model sees (the file's, subsampled)
        self.model_grid = [len(self.info["coords"][d]) for d in self.grid_dims]
        self._train: Dataset | None = None
        self._val: Dataset | None = None
        self._test: Dataset | None = None

    # -- metadata -------------------------------------------------------------------------
    def _open(self, path: Path, in_memory: bool | str | None = None) -> TorchDataset:
        try:
            return TorchDataset(
                path,
                self.inputs,
                self.outputs,
                in_memory=self.in_memory if in_memory is None else in_memory,
                # every file's items on the first training file's axes (the format does
                # not fix the order of the spatial dims)
                grid_dims=getattr(self, "grid_dims", None),
            )
        except PdeforgeError as exc:
            # the hint only where the choice of variables is what the error is about (not
            # for a damaged file or a missing coordinate)
            text = str(exc)
            names = [*(self.inputs or []), *(self.outputs or [])]
            words = text.replace(str(path), "").lower()  # (a path may hold any word)
            about_variables = "variable" in words or any(repr(str(n)) in text for n in names)
            hint = " (check --data.inputs / --data.outputs)" if about_variables else ""
            raise TrainingDataError(f"{text}{hint}") from None

    def _check_compatible(self, ref: TorchDataset, other: TorchDataset, path: Path) -> None:
        if other.grid_shape != ref.grid_shape and other.grid_dims == ref.grid_dims:
            # (collation failed on the first mixed batch; validation and test files at
            # another size were scored with the training grid's steps, silently zero-shot)
            raise TrainingDataError(
                f"{path} is on a {'x'.join(map(str, other.grid_shape))} grid, {self.paths[0]} "
                f"on {'x'.join(map(str, ref.grid_shape))}: the files of a run (training, "
                "validation, test) share one grid. Evaluate a checkpoint on another grid "
                "with `pdeforge evaluate` (zero-shot, or --resample), or test on every k-th "
                "point with --data.test_subsample k")
        if (other.in_channels, other.out_channels, other.grid_dims) != (
            ref.in_channels,
            ref.out_channels,
            ref.grid_dims,
        ):
            raise TrainingDataError(
                f"{path} does not match {self.paths[0]}: channels in/out "
                f"{other.in_channels}/{other.out_channels} on grid {other.grid_dims} vs "
                f"{ref.in_channels}/{ref.out_channels} on {ref.grid_dims}"
            )
        message = units_mismatch(ref.units, other.units, str(self.paths[0]))
        if message:
            warnings.warn(f"{path}: {message}", stacklevel=3)

    def _describe(self, probe: TorchDataset) -> dict[str, Any]:
        """What a checkpoint needs to know about the data (JSON values only)."""
        channels = {n: probe._channels(probe._fields, n) for n in probe.inputs + probe.outputs}
        with open_h5(probe.path) as h5:
            coords, periodic, kinds, extents, coord_attrs, full = {}, [], {}, {}, {}, {}
            file_extents: dict[str, list[float]] = {}
            decreasing = decreasing_dims(h5, self.grid_dims)
            for d in self.grid_dims:
                values = np.asarray(h5[d][:], dtype=np.float64)
                if d in decreasing:  # the items are flipped to increasing d
                    values = values[::-1]
                full[d] = values
                attrs = attr_values(h5[d].attrs)
                coord_attrs[d] = names_of(h5[d])
                kinds[d] = axis_kind(values, attrs)
                if kinds[d] is not None:  # the file's domain, whatever the subsample
                    extents[d] = list(axis_extent(values, kinds[d]))
                    file_extents[d] = list(extents[d])
                if kinds[d] == PERIODIC:
                    periodic.append(d)
            starts = self.subsample_starts(kinds)
            for i, d in enumerate(self.grid_dims):
                values = full[d]
                kept = values[starts[i]:: self.subsample]
                coords[d] = kept.tolist()
                if kinds[d] is None or subsampled_size(len(values), kinds[d],
                                                        self.subsample) is not None:
                    continue
                # the stride does not divide the axis into a grid of its kind on its
                # domain: the kept points cover part of it (the model's domain is theirs),
                # or, periodic, no period at all
                if kinds[d] == PERIODIC:
                    raise TrainingDataError(
                        f"--data.subsample {self.subsample} does not divide the {len(values)} "
                        f"points of the periodic axis {d!r} of {probe.path}: the kept points "
                        "would not be one period of a periodic grid; choose a subsample that "
                        f"divides {len(values)}")
                whole = extents[d]
                extents[d] = list(axis_extent(kept, kinds[d]))
                warnings.warn(
                    f"--data.subsample {self.subsample} does not divide the "
                    f"{'intervals' if kinds[d] == VERTEX else 'cells'} of the {kinds[d]} axis "
                    f"{d!r} of {probe.path} ({len(values)} points): the model's grid covers "
                    f"[{extents[d][0]:.6g}, {extents[d][1]:.6g}], part of the file's "
                    f"[{whole[0]:.6g}, {whole[1]:.6g}]; a subsample that divides it "
                    "keeps the whole domain", stacklevel=2)
            cells = [d for d in self.grid_dims if kinds[d] == CELL]
            if self.subsample % 2 == 0 and cells:
                warnings.warn(
                    f"--data.subsample {self.subsample} of the cell-centred grid of "
                    f"{probe.path} keeps points shifted by {(self.subsample - 1) / 2:g} fine "
                    f"spacings from the centres of the coarser grid's cells (along {cells}): "
                    "another resolution and resampling place the model's points at those "
                    "centres; an odd subsample keeps them exactly, or generate the data at "
                    "the coarse resolution", stacklevel=2)
            units = probe.units
            # variables with non-spatial dims (an NLSE trajectory's t) become channels;
            # their dims and coordinates let predictions be given those dims back
            extra_dims = {name: record for name in list(self.inputs) + list(self.outputs)
                          if (record := extra_dims_record(h5, probe, name)) is not None}
            # an output defined only where an input is 1 (thermal: the plate, not the
            # slot): the model's predictions are multiplied by that input (module.py)
            masks = {}
            for name in self.outputs:
                where = attr_value(h5[name].attrs, "valid_where")
                if not where:
                    continue
                if where in self.inputs and channels[where] == 1:
                    masks[name] = str(where)
                else:
                    warnings.warn(f"{name!r} is defined where {where!r} is 1, but {where!r} is "
                                  "not a one-channel input here: predictions outside it are "
                                  f"not set to zero (add {where!r} to data.inputs)",
                                  stacklevel=2)
            problem = str(attr_value(h5.attrs, ATTR_PROBLEM) or "")
            config = attr_value(h5.attrs, ATTR_CONFIG)
            try:  # a file from another program may carry no or no valid JSON config
                generation = json.loads(config) if isinstance(config, str) and config else {}
            except ValueError:
                generation = {}
            version = int(attr_value(h5.attrs, ATTR_FORMAT) or 1)
        return {
            "problem": problem,
            "format_version": version,
            # absolute: a relative path would name another file from another directory
            "files": [str(p.absolute()) for p in self.paths],
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "channels": channels,
            "extra_dims": extra_dims,
            "masks": masks,
            "units": units,
            "grid_dims": list(self.grid_dims),
            "coords": coords,
            "periodic_dims": periodic,
            # each axis's kind (the file's periodic/grid attributes, else guessed) and the
            # domain it covers: another resolution of the model's grid is placed by them
            "grid_kinds": kinds,
            "coord_attrs": coord_attrs,
            "grid_extents": extents,
            # the file's domain (the model's above is part of it where the subsample does
            # not divide an axis): inputs of other sizes without coordinates are placed on it
            "file_extents": file_extents,
            "subsample": self.subsample,
            "subsample_starts": list(starts),
            "generation_config": generation if isinstance(generation, dict) else {},
            # inputs that are one number per sample: a surrogate of only those is queried
            # with the numbers, on the training grid
            "scalar_inputs": [n for n in self.inputs if len(probe._fields[n][0]) == 1],
            # outputs that are one number per sample (trained as a constant channel): the
            # surrogate gives them back as one number, the mean of its channel
            "scalar_outputs": [n for n in self.outputs if len(probe._fields[n][0]) == 1],
            "split": list(self.split),
            "split_seed": self.split_seed,
        }

    def subsample_starts(self, kinds: Mapping[str, str | None],
                         stride: int | None = None) -> tuple[int, ...]:
        """The first point kept on each axis by ``stride`` (default: the training's
        subsample; ``grid.subsample_starts``: an odd stride of a cell axis keeps the
        coarse cells' centres)."""
        return subsample_starts([kinds.get(d) for d in self.grid_dims],
                                self.subsample if stride is None else stride)

    # -- splits ---------------------------------------------------------------------------
    def _concat(self, paths: list[Path]) -> Dataset:
        sets = [self._open(p) for p in paths]
        return sets[0] if len(sets) == 1 else ConcatDataset(sets)

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        full = self._concat(self.paths)
        n = len(full)  # converged samples only
        order = np.random.default_rng(self.split_seed).permutation(n)
        f_train, f_val, f_test = self.split
        n_train = int(round(f_train * n))
        n_val = 0 if self.val_paths else int(round(f_val * n))
        n_test = 0 if self.test_paths else int(round(f_test * n))
        if n_train + n_val + n_test > n:
            n_test = n - n_train - n_val
        train_idx = order[:n_train]
        if self.max_train is not None:
            train_idx = train_idx[: self.max_train]
        val_idx = order[n_train : n_train + n_val]
        test_idx = order[n_train + n_val : n_train + n_val + n_test]
        if n == 0:
            from pdeforge.datasets.problems import PROBLEMS

            # the advice of the family that made the file (nlse has no --solver), for
            # the solvers that ran (a direct solve has no --maxiter to raise)
            from pdeforge.datasets.problems.base import solvers_ran

            family = PROBLEMS.get(str(self.info.get("problem") or ""))
            with open_h5(self.paths[0]) as f:
                ran = solvers_ran(attr_value(f.attrs, ATTR_SOLVER))
            hint = ((family.nonconverged_advice(ran) if family is not None else "")
                    or "regenerate it with other solver settings")
            raise TrainingDataError(
                f"no converged sample in {', '.join(map(str, self.paths))}: every sample's solve "
                "failed when the data were generated (`pdeforge info FILE` shows the "
                f"diagnostics). {hint}"
            )
        if len(train_idx) == 0:
            raise TrainingDataError(
                f"the training split of {n} converged sample(s) is empty; raise data.split[0] "
                "or generate more samples"
            )
        skipped = sum(int(np.sum(~d._converged)) for d in _parts(full)
                      if getattr(d, "_converged", None) is not None)
        if not self.val_paths and n_val == 0:
            # checkpoints are chosen by val/rel_l2: without validation samples no best
            # checkpoint is written and Lightning only warns about an empty loader
            because = (f"data.split[1] = {f_val:g} of {n} converged sample(s)"
                       + (f" ({skipped} not converged were skipped)" if skipped else ""))
            if f_val > 0:
                raise TrainingDataError(
                    f"the validation split is empty: {because} rounds to none. Generate more "
                    "samples, raise data.split[1], or give data.val_path"
                )
            warnings.warn(f"no validation samples ({because}): no best checkpoint will be "
                          "chosen, only last.ckpt written", stacklevel=2)
        starts = tuple(self.info["subsample_starts"])
        self._train = Subsampled(Subset(full, train_idx.tolist()), self.subsample, self.dim,
                                 starts)
        val = self._concat(self.val_paths) if self.val_paths else Subset(full, val_idx.tolist())
        test = self._concat(self.test_paths) if self.test_paths else Subset(full, test_idx.tolist())
        self._val = Subsampled(val, self.subsample, self.dim, starts)
        self._test = Subsampled(test, self.test_subsample, self.dim, self.subsample_starts(
            self.info["grid_kinds"], self.test_subsample))
        self.split_sizes = {
            "train": len(self._train),
            "val": len(self._val),
            "test": len(self._test),
        }
        self.info["split_sizes"] = self.split_sizes

    @property
    def train_dataset(self) -> Dataset:
        self.setup()
        assert self._train is not None
        return self._train

    def _loader(self, data: Dataset | None, shuffle: bool) -> DataLoader:
        self.setup()
        assert data is not None
        # one process: an order that is a function of (seed, epoch), so that a resumed run
        # draws the batches of the run it continues (a plain shuffle draws from the global
        # RNG, which a resume re-seeds); several processes: Lightning's DistributedSampler,
        # itself seeded by epoch
        trainer = getattr(self, "trainer", None)
        distributed = trainer is not None and trainer.world_size > 1
        sampler = None
        if shuffle and not distributed:
            sampler = EpochShuffle(len(data), torch.initial_seed())
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=ignore_first_sigterm if self.num_workers > 0 else None,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train if self._train is not None else self.train_dataset, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._val, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._test, False)

    def training_batches(self, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training split in order, for fitting normalisers (training data only)."""
        loader = DataLoader(self.train_dataset, batch_size=batch_size, shuffle=False)
        yield from loader


def ignore_first_sigterm(worker_id: int) -> None:
    """A DataLoader worker's start: SIGTERM is the main process's to handle. A batch
    scheduler's time limit signals the whole process group; a worker it killed ended the
    run in torch's "DataLoader worker ... is killed by signal" error (exit 1, no resume
    advice) before the main process could stop as for SIGTERM (exit 143, what it kept).
    Only the first SIGTERM is passed over: the main process ends its workers with one
    more when it stops (ignoring every SIGTERM made that exit wait for them forever)."""
    import signal

    def pass_over(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, pass_over)


class EpochShuffle(torch.utils.data.Sampler):
    """A random order of ``n`` samples drawn anew each epoch from (seed, epoch) alone.

    Lightning calls ``set_epoch`` at the start of every epoch (as for its
    DistributedSampler), so a run resumed at epoch e shuffles as the run it continues did
    at epoch e, and a resumed run repeats the uninterrupted one.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        return iter(torch.randperm(self.n, generator=generator).tolist())
