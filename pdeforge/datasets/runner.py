"""Generation runner: sharded, resumable, parallel on Dask (DESIGN.md "Generation runner").

``generate()`` cuts samples 0..n-1 into shards of ``shard_size`` consecutive indices. Each
shard is computed (in this process, or as one Dask task), written to a temporary file in
``<out>.parts/`` and renamed into place only when complete, so a kill -9 at any moment
loses at most the shards in flight. Running the same command again resumes: finished
shards are kept, the rest computed. When every shard is there, they are assembled into
``<out>`` (again through a temporary name and a rename), the assembled file is validated,
and the parts directory is removed.

Sample i depends only on (seed, problem config, i); the shard layout is part of the config,
so the output is identical, bit for bit in every variable but the wall-time diagnostic,
whatever the number of workers or the order in which shards finish.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pdeforge.datasets.check import _first_line, open_h5
from pdeforge.datasets.format import (
    ATTR_CONFIG,
    ATTR_FORMAT,
    ATTR_PROBLEM,
    ATTR_SEED,
    ATTR_SOLVER,
    ATTR_STATUS,
    ATTR_VERSION,
    COMPRESSIONS,
    CONVERGED,
    FIELD_DTYPES,
    INPUT,
    OUTPUT,
    STATUS_COMPLETE,
    STATUS_SHARD,
    DatasetWriter,
    attr_value,
    config_json,
)
from pdeforge.datasets.problems import ProblemFamily, build_problem
from pdeforge.datasets.problems.base import SOLVER_USED, SOLVERS_RAN
from pdeforge.errors import (
    ConfigMismatchError,
    ConvergenceError,
    DatasetFormatError,
    Interrupted,
    PdeforgeError,
    Terminated,
)

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 64
SCHEDULER_TIMEOUT = "20s"
#: characters of another library's (Dask's) error message quoted in ours
QUOTE_LIMIT = 200
#: preloaded by the local Dask workers (see the module)
WORKER_SETUP = "pdeforge.datasets.dask_worker"
MANIFEST = "config.json"
#: Keys of the resolved config that define the data (everything is, today).
_SHARD_NAME = "shard-{:06d}.nc"


@dataclass
class GenerateResult:
    """What a call of :func:`generate` did."""

    path: Path
    n_samples: int
    seconds: float
    shards_total: int
    shards_computed: int
    nonconverged: list[int] = field(default_factory=list)
    already_complete: bool = False
    #: samples solved in this call (the others came from a partial run's shards)
    samples_computed: int = 0
    #: what the solver ran, over all shards (e.g. what ``--solver auto`` picked); empty
    #: for families that do not say, or for shards written before this was recorded
    solver_used: list[str] = field(default_factory=list)


def resolve_config(
    problem: str,
    n: int,
    *,
    resolution: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    compression: str = "none",
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> tuple[ProblemFamily, dict[str, Any]]:
    """Validate user inputs and return the problem and the resolved generation config.

    The config is stored in the file (root attribute ``config``) and is enough to
    regenerate it: :func:`problem_from_config` rebuilds the problem from it.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise PdeforgeError(f"--n must be a positive integer number of samples, got {n!r}")
    if (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
            or seed >= 2**63):
        raise PdeforgeError(f"--seed must be an integer in [0, 2^63), got {seed!r}")
    if dtype not in FIELD_DTYPES:
        raise PdeforgeError(f"--dtype must be one of {', '.join(FIELD_DTYPES)}, got {dtype!r}")
    if compression not in COMPRESSIONS:
        raise PdeforgeError(
            f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}"
        )
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size <= 0:
        raise PdeforgeError(f"--shard-size must be a positive integer, got {shard_size!r}")
    prob = build_problem(problem, resolution, **dict(options or {}))
    prob.check_first_sample(int(seed))
    config = {
        "problem": prob.name,
        "n_samples": int(n),
        "seed": int(seed),
        "resolution": prob.resolution,
        "options": prob.config,
        "dtype": dtype,
        "compression": compression,
        "shard_size": int(shard_size),
    }
    # round trip through JSON so that the in-memory config equals the stored one
    return prob, json.loads(config_json(config))


def problem_from_config(config: Mapping[str, Any]) -> ProblemFamily:
    return build_problem(config["problem"], config["resolution"], **config["options"])


def _shard_ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The settings that differ, as "key: old -> new"; another problem first (its options
    all differ then, and it is the one that explains them)."""
    diffs = []
    for key in sorted(set(old) | set(new), key=lambda k: (k != "problem", k)):
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Exclusive lock on an output (released by the kernel even on kill -9).

    Taken before anything under ``<out>.parts`` is touched, ``--overwrite`` included.
    """
    lock = out.with_name(f"{out.name}.lock")
    try:
        fh = open(lock, "a")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise PdeforgeError(f"cannot write next to {out} ({exc.strerror}); choose a "
                            "writable --out") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PdeforgeError(
                f"another `pdeforge generate` is writing {out}; wait for it to finish "
                "or stop it before running this command again"
            ) from None
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


def _damage(path: Path) -> str | None:
    """The first error ``check`` finds in a finished output (every chunk read, its
    checksum verified), or None when it reads back whole."""
    from pdeforge.datasets.check import check_file

    report = check_file(path)
    return report.errors[0] if report.errors else None


def _clear_leftover_parts(out: Path, parts: Path, config: Mapping[str, Any]) -> None:
    """Remove the parts folder beside a complete output, left by a run killed between
    its final rename and its clean-up, unless it holds a partial run of another config:
    one started with --overwrite and interrupted, whose shards are work to keep."""
    with _locked(out):
        other, source = _partial_config(parts)
        # (a folder of another config without a finished shard holds no work)
        if other is None or other == config or not any(parts.glob("shard-*.nc")):
            shutil.rmtree(parts, ignore_errors=True)
            return
    diff = "; ".join(_config_diff(config, other))
    warnings.warn(f"{parts} holds a partial run of another config ({diff}; read from its "
                  f"{source}), left in place: resume it with that config and --overwrite, "
                  "or delete the folder", stacklevel=3)


def _read_existing_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(config, status) of an existing output file, or (None, None) if it is not ours
    (another program's file may have a ``config`` attribute of its own)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            cfg = attr_value(f.attrs, ATTR_CONFIG)
            if cfg is None or ATTR_FORMAT not in f.attrs:
                return None, None
            found = json.loads(cfg)
            return ((found, attr_value(f.attrs, ATTR_STATUS)) if isinstance(found, dict)
                    else (None, None))
    except (OSError, ValueError, TypeError):
        return None, None


def _compute_shard(
    config_text: str, start: int, stop: int, progress: Callable[[int], None] | None = None
) -> dict[str, np.ndarray]:
    """One shard's arrays; runs in this process or on a Dask worker."""
    config = json.loads(config_text)
    problem = _cached_problem(config_text, config)
    return dict(problem.generate(config["seed"], list(range(start, stop)), progress=progress))


#: the problem of the latest config, one per thread: a Dask worker's threads shared one
#: object, and a family's lazy set-up on its first build (a random field, a Laplacian)
#: was seen half done by another thread (AttributeError '_lap', a run lost); the shared
#: dict's clear-then-insert could also hand a thread a KeyError
_PROBLEMS = threading.local()


def _cached_problem(key: str, config: Mapping[str, Any]) -> ProblemFamily:
    cached = getattr(_PROBLEMS, "cache", None)
    if cached is None or cached[0] != key:
        cached = _PROBLEMS.cache = (key, problem_from_config(config))
    return cached[1]


def _root_attrs(problem: ProblemFamily, config: Mapping[str, Any],
                solver_used: list[str] = ()) -> dict:
    from pdeforge import __version__

    solver = problem.solver_name
    if solver_used:
        solver += f"{SOLVERS_RAN}{', '.join(solver_used)}"
    return {
        ATTR_PROBLEM: problem.name,
        ATTR_SOLVER: solver,
        ATTR_VERSION: __version__,
        ATTR_SEED: int(config["seed"]),
        ATTR_CONFIG: config_json(config),
        ATTR_STATUS: STATUS_COMPLETE,
    }


def _assemble(
    path: Path,
    problem: ProblemFamily,
    config: Mapping[str, Any],
    blocks: Iterator[tuple[int, Mapping[str, np.ndarray]]],
    solver_used: list[str] = (),
) -> None:
    """Write the complete dataset through a temporary name, renamed into place at the end.

    The finished temporary file must pass ``check_file`` (structure) before it is
    renamed; a failure is a bug in pdeforge, raised as RuntimeError.
    """
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with DatasetWriter(
            tmp,
            specs=problem.variables(),
            coords=problem.coordinates(),
            n_samples=config["n_samples"],
            attrs=_root_attrs(problem, config, solver_used),
            field_dtype=config["dtype"],
            compression=config["compression"],
        ) as writer:
            for start, block in blocks:
                writer.write(start, block)
        from pdeforge.datasets.check import check_file

        report = check_file(tmp, scan_data=False)
        if report.errors:
            raise RuntimeError(f"assembled file for {path} failed validation: "
                               f"{report.errors}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_shard(
    path: Path, problem: ProblemFamily, config: Mapping[str, Any], config_text: str,
    start: int, block: Mapping[str, np.ndarray],
) -> None:
    """A shard: plain HDF5, one dataset per variable, already in its stored dtype.

    Shards are internal to a run (never read by users), so they skip the netCDF layer:
    creating a netCDF4 file costs ~50 ms, which on a small machine competes with the
    workers for CPU. The temporary name + rename makes the shard appear atomically.
    """
    import h5py

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            for spec in problem.variables():
                # Fletcher-32 checksums: a shard damaged inside its data (not only
                # truncated) then fails to read and is recomputed, instead of entering
                # the output (garbage bytes were assembled, `check` caught them later)
                f.create_dataset(spec.name, data=np.asarray(block[spec.name]).astype(
                    spec.resolved_dtype(config["dtype"]), copy=False), fletcher32=True)
            f.attrs[ATTR_STATUS] = STATUS_SHARD
            f.attrs["shard_start"] = start
            f.attrs[ATTR_CONFIG] = config_text
            f.attrs[SHARD_REVISION] = problem.revision
            if block.get(SOLVER_USED) is not None:
                f.attrs[SOLVER_USED] = str(block[SOLVER_USED])
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


#: a shard's record of its family's ``revision`` (absent in shards written before it: 1)
SHARD_REVISION = "family_revision"


def _shard_revision(path: Path) -> int:
    """The family revision a shard records (1 when it records none or cannot be read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return int(attr_value(f.attrs, SHARD_REVISION) or 1)
    except (OSError, ValueError, TypeError):
        return 1


def _shard_layout(prob: ProblemFamily, config: Mapping[str, Any], n: int
                  ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every variable in a shard of ``n`` samples."""
    sizes = {c.name: len(c.values) for c in prob.coordinates()}
    return {spec.name: ((n, *(sizes[d] for d in spec.dims)),
                        spec.resolved_dtype(config["dtype"]))
            for spec in prob.variables()}


def _shard_is_valid(path: Path, start: int, config_text: str, revision: int,
                    layout: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> bool:
    """Whether a shard is this run's, of this family revision, and whole: every variable
    of ``layout`` there with its shape and dtype (a shard short of a variable or a
    sample was assembled as zeros), every chunk's checksum verified."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ok = (
                attr_value(f.attrs, ATTR_STATUS) == STATUS_SHARD
                and attr_value(f.attrs, "shard_start") == start
                and attr_value(f.attrs, ATTR_CONFIG) == config_text
                and (attr_value(f.attrs, SHARD_REVISION) or 1) == revision
                and all(name in f and (f[name].shape, f[name].dtype) == want
                        for name, want in layout.items())
            )
            for ds in f.values() if ok else ():
                ds[()]  # every chunk read: its checksum (where written) verified
            return ok
    except (OSError, KeyError, ValueError, TypeError):
        return False


def _partial_config(parts: Path) -> tuple[dict[str, Any] | None, str]:
    """The config of the partial run in ``parts`` and where it was read: the manifest,
    or where that is missing or unreadable, the first shard that records one (each shard
    stores its run's config); (None, "none") when neither says."""
    import h5py

    manifest = parts / MANIFEST
    if manifest.exists():
        try:
            found = json.loads(manifest.read_text())
            if isinstance(found, dict):
                return found, "manifest"
        except (OSError, ValueError):
            pass
    for path in sorted(parts.glob("shard-*.nc")):
        try:
            with h5py.File(path, "r") as f:
                text = attr_value(f.attrs, ATTR_CONFIG)
            if text:
                return json.loads(text), "shards"
        except (OSError, ValueError, TypeError):
            continue
    return None, "none"


def generate(
    problem: str,
    n: int,
    out: str | os.PathLike,
    *,
    resolution: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    dtype: str = "float32",
    compression: str = "none",
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> GenerateResult:
    """Generate ``n`` samples of ``problem`` into the dataset file ``out``.

    Args:
        problem: problem family name (``pdeforge.datasets.problems.available()``).
        n: number of samples.
        out: output file; ``<out>.parts/`` holds finished shards until assembly.
        resolution: grid points per axis (family default when None).
        seed: base seed; sample i uses ``sample_rng(seed, i)``.
        options: problem and solver options (see ``pdeforge generate PROBLEM --help``).
        workers: local Dask workers (processes); 1 computes in this process.
        scheduler: address of an existing Dask scheduler (overrides ``workers``).
        shard_size: samples per shard (part of the config: resume needs the same value).
        dtype: ``float32`` or ``float64`` for fields.
        compression: ``none``, ``lzf`` or ``gzip`` (level 1).
        strict: raise instead of recording samples that did not converge.
        overwrite: discard an existing output or partial run made with another config.
        progress: show a progress bar (samples, rate, ETA).

    Returns:
        A :class:`GenerateResult`.

    Raises:
        PdeforgeError: bad inputs, a config mismatch, or (``strict``) non-converged samples.
    """
    import multiprocessing

    # the flag multiprocessing itself checks: a worker process that Dask spawned is
    # importing the caller's script, which calls generate() at its top level
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise PdeforgeError(
            "generate() was called while a new worker process imported your script; put "
            "the call under `if __name__ == \"__main__\":` (needed with workers > 1)"
        )
    t0 = time.perf_counter()
    out_arg, out = os.fspath(out), Path(out)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PdeforgeError(f"--workers must be a positive integer, got {workers!r}")
    prob, config = resolve_config(
        problem, n, resolution=resolution, seed=seed, options=options, dtype=dtype,
        compression=compression, shard_size=shard_size,
    )
    if not out.parent.is_dir():
        blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:  # a file where a folder of the path should be
            raise PdeforgeError(f"--out {out_arg}: {blocker} is a file, not a folder; "
                                "choose another --out")
        raise PdeforgeError(
            f"output directory {out.parent} does not exist; create it first "
            f"(mkdir -p {out.parent}) or choose another --out"
        )
    if out.is_dir() or str(out_arg).endswith(("/", os.sep)):
        raise PdeforgeError(f"--out {out_arg} is a directory; give a file name such as "
                            f"{out}/data.nc")
    text = config_json(config)
    for name, why in prob.unused_options().items():
        if name in (options or {}):
            warnings.warn(f"--{name.replace('_', '-')} is not used {why}; it is kept in the "
                          "config", stacklevel=2)
    for caveat in prob.caveats():
        warnings.warn(caveat, stacklevel=2)
    parts = Path(f"{out}.parts")
    # (a complete output is reported as such before the folder's permissions and the
    # disk's room are looked at: a finished dataset in a read-only folder was refused)
    if out.exists():
        old, status = _read_existing_config(out)
        if old is None and not overwrite:
            try:  # why: damaged (a truncated copy) or another program's file
                with open_h5(out):
                    reason = ("it has no pdeforge generation config: attributes "
                              "pdeforge_format and config")
            except DatasetFormatError as exc:
                reason = str(exc)
            raise PdeforgeError(
                f"{out} exists and is not a pdeforge dataset this run can resume ({reason}); "
                "choose another --out or pass --overwrite to replace it"
            )
        # the same config, complete: --overwrite has nothing to discard unless the file
        # no longer reads back (checked then only: it reads the whole file)
        complete = old == config and status == STATUS_COMPLETE
        damage = _damage(out) if overwrite and complete else None
        if damage is not None:
            warnings.warn(f"{out} is damaged ({damage}); --overwrite regenerates it",
                          stacklevel=2)
        elif complete:
            log.info("%s is already complete with this config; nothing to do", out)
            if parts.is_dir():
                _clear_leftover_parts(out, parts, config)
            shards = -(-config["n_samples"] // config["shard_size"])
            return GenerateResult(out, config["n_samples"], time.perf_counter() - t0,
                                  shards, 0, _nonconverged_in_file(out), True)
        if old is not None and old != config and not overwrite:
            resumable = parts.exists() and _partial_config(parts)[0] == config
            raise ConfigMismatchError(
                f"{out} was generated with a different config "
                f"({'; '.join(_config_diff(old, config))}); "
                + (f"{parts} holds a partial run of this config (started with "
                   "--overwrite): add --overwrite to resume it and replace the file"
                   if resumable else "choose another --out or pass --overwrite to replace it")
            )

    if parts.exists() and not parts.is_dir():
        raise PdeforgeError(f"{parts} is a file, where a run keeps its shards in a folder of "
                            "that name; move or delete it, or choose another --out")
    if not os.access(out.parent, os.W_OK):
        raise PdeforgeError(f"output directory {out.parent} is not writable; choose another "
                            "--out")
    _check_room(prob, config, out)
    ranges = _shard_ranges(config["n_samples"], config["shard_size"])

    with _locked(out):
        if parts.exists() and overwrite:
            # --overwrite discards what another config made; a partial run of this
            # config is resumed (its shards are this command's own work)
            if _partial_config(parts)[0] != config:
                shutil.rmtree(parts)
            elif any(parts.glob("shard-*.nc")):
                log.info("resuming the partial run of this config in %s", parts)
        try:
            parts.mkdir(exist_ok=True)
        except OSError as exc:
            raise PdeforgeError(f"cannot create {parts} ({exc.strerror}); choose a writable "
                                "--out") from None
        try:
            nonconverged, pending, used, flagged = _run_locked(
                prob, config, text, ranges, out, parts, workers, scheduler, strict, progress)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, Terminated)):
                exc = _interrupted(exc, parts)
            if parts.exists() and not any(parts.glob("shard-*.nc")):
                shutil.rmtree(parts)  # nothing computed yet: leave no stale manifest
                if isinstance(exc, Interrupted):
                    what = "stopped by SIGTERM" if exc.exit_code == 143 else "interrupted"
                    raise Interrupted(f"{what} before any shard was finished; nothing to "
                                      "keep", exit_code=exc.exit_code) from None
            if isinstance(exc, Interrupted):
                raise exc from None
            raise
    shutil.rmtree(parts)
    if nonconverged:
        # samples whose fields the stored dtype cannot hold were warned about as they
        # were stored; the solver's hint is for the others
        overflow = set(flagged)
        solver_failed = [i for i in nonconverged if i not in overflow]
        overflowed = len(nonconverged) - len(solver_failed)
        warnings.warn(
            f"{len(nonconverged)} of {config['n_samples']} samples did not converge "
            f"(indices {_short_list(nonconverged)}); they are stored with converged=false"
            + (f" ({overflowed} for fields {config['dtype']} cannot hold, see above)"
               if overflowed else "")
            + (f". {advice}" if (advice := prob.nonconverged_advice(used)) and solver_failed
               else ""),
            stacklevel=2,
        )
    return GenerateResult(out, config["n_samples"], time.perf_counter() - t0, len(ranges),
                          len(pending), nonconverged,
                          samples_computed=sum(ranges[j][1] - ranges[j][0] for j in pending),
                          solver_used=used)


def _run_locked(
    prob: ProblemFamily, config: dict[str, Any], text: str, ranges: list[tuple[int, int]],
    out: Path, parts: Path, workers: int, scheduler: str | None, strict: bool, progress: bool,
) -> tuple[list[int], list[int], list[str], list[int]]:
    """Compute the missing shards and assemble ``out`` (the output's lock is held);
    returns the samples not converged, the shards computed, what the solver ran and the
    samples this run marked not converged for fields the stored dtype cannot hold."""
    from tqdm.auto import tqdm

    manifest = parts / MANIFEST
    old, source = _partial_config(parts)
    if old is not None and old != config:
        raise ConfigMismatchError(
            f"{parts} holds a partial run with a different config "
            f"({'; '.join(_config_diff(old, config))}; read from its {source}); re-run with "
            "the original options to resume, choose another --out, or pass --overwrite to "
            "discard it"
        )
    if source != "manifest":  # missing or unreadable: (re)written, the shards agree
        if source == "shards" or manifest.exists():
            warnings.warn(f"{manifest} was missing or unreadable; rebuilt from the request "
                          "(the shards there were made with this config)", stacklevel=3)
        _atomic_write_text(manifest, json.dumps(config, indent=2, sort_keys=True))
    for stale in parts.glob("*.tmp-*"):
        stale.unlink()
    for stale in out.parent.glob(f"{glob.escape(out.name)}.tmp-*"):
        stale.unlink()

    pending = []
    kept = len(list(parts.glob("shard-*.nc")))
    # (reading every chunk of a large resumed run's shards takes a while: shown)
    for j, (start, stop) in enumerate(tqdm(
            ranges, desc="checking finished shards", unit="shard", file=sys.stderr,
            disable=not progress or kept == 0, leave=False)):
        path = parts / _SHARD_NAME.format(j)
        layout = _shard_layout(prob, config, stop - start)
        if path.exists() and not _shard_is_valid(path, start, text, prob.revision, layout):
            bad = path.with_name(f"{path.name}.invalid-{int(time.time())}")
            found = _shard_revision(path)
            # an earlier revision's shard may hold other variables: its attributes say
            older = found != prob.revision and _shard_is_valid(path, start, text, found, {})
            os.replace(path, bad)
            what = (f"was made by an earlier pdeforge whose {prob.name} samples differ "
                    f"(revision {found}, now {prob.revision})" if older else "was damaged")
            warnings.warn(f"shard {path.name} {what}; moved to {bad.name} and "
                          "recomputing it", stacklevel=2)
        if not path.exists():
            pending.append(j)
    todo = set(pending)  # (a list's `in` made this quadratic in the shards)
    done = sum(stop - start for j, (start, stop) in enumerate(ranges) if j not in todo)

    bar = _progress_bar(config, done, progress)
    flagged: list[int] = []
    try:
        def store(j: int, block: Mapping[str, np.ndarray]) -> None:
            start, stop = ranges[j]
            block = _flag_unstorable(prob, config, block, start, flagged)
            # a shard is stored uncompressed: its size is known. HDF5 crashes the process
            # (exit 139, after the error below) when the disk fills under a write, so a
            # disk filled since the run began is refused before writing
            need = _shard_bytes(prob, config, stop - start)
            free = shutil.disk_usage(parts).free
            if free < need:
                raise PdeforgeError(
                    f"cannot write shard {j} to {parts}: about {_size(need)} needed, "
                    f"{_size(free)} free (the disk filled up during the run); make room; "
                    f"{_what_was_kept(parts)}")
            try:
                _write_shard(parts / _SHARD_NAME.format(j), prob, config, text, start, block)
            except (OSError, RuntimeError) as exc:  # a full disk, a read-only folder, ...
                why = _write_failure(exc)
                if why is None:
                    raise
                raise PdeforgeError(
                    f"cannot write shard {j} to {parts} ({why}); make room "
                    f"or fix the permissions; {_what_was_kept(parts)}"
                ) from None

        if scheduler is None and workers == 1:
            for j in pending:  # in this process: the bar advances sample by sample
                store(j, _compute_shard(text, *ranges[j], progress=bar.update))
        else:
            # a fresh run only: on a resume the shard size is fixed (it is part of the
            # config), so the advice would be refused
            if scheduler is None and done == 0 and len(pending) < workers:
                warnings.warn(
                    f"{len(pending)} shard(s) to compute for {workers} workers: "
                    f"{workers - len(pending)} will be idle (a shard is one worker's); a "
                    f"smaller --shard-size (now {config['shard_size']}) spreads the samples",
                    stacklevel=3,
                )

            def store_and_count(j: int, block: Mapping[str, np.ndarray]) -> None:
                store(j, block)
                bar.update(ranges[j][1] - ranges[j][0])

            try:
                _run_dask(text, ranges, pending, store_and_count, workers, scheduler)
            except _ClusterFailure as exc:
                raise PdeforgeError(f"{exc}; {_what_was_kept(parts)}") from None
    finally:  # Ctrl-C and SIGTERM become Interrupted in generate(), which holds parts
        bar.close()

    nonconverged, used = _shard_records(parts, ranges)
    if nonconverged and strict:
        raise ConvergenceError(
            f"{len(nonconverged)} sample(s) did not converge (indices "
            f"{_short_list(nonconverged)}); shards are kept in {parts}. Change the solver "
            "options and add --overwrite (the kept shards were made with these options), "
            "or drop --strict to record them with converged=false"
        )

    def blocks() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        import h5py

        names = [s.name for s in prob.variables()]
        for j, (start, _stop) in enumerate(tqdm(
                ranges, desc=f"assembling {out.name}", unit="shard", file=sys.stderr,
                disable=not progress, leave=False)):
            with h5py.File(parts / _SHARD_NAME.format(j), "r") as f:
                yield start, {name: f[name][()] for name in names}

    # the output is written next to the shards before they are removed: it needs about
    # their size again (a full disk during the merge ended in a crash of HDF5, exit 139)
    need = _assembly_need(sum(p.stat().st_size for p in parts.glob("shard-*.nc")))
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise PdeforgeError(
            f"not enough free space to assemble {out}: about {_size(need)} needed, "
            f"{_size(free)} free in {out.parent}; make room and re-run the same "
            f"command (the shards are kept in {parts})"
        )
    try:
        _assemble(out, prob, config, blocks(), used)
    except (OSError, RuntimeError) as exc:
        why = _write_failure(exc)
        if why is None:
            raise
        raise PdeforgeError(
            f"cannot write {out} ({why}); make room or fix the permissions "
            f"and re-run the same command (the shards are kept in {parts})"
        ) from None
    return nonconverged, pending, used, flagged


def bytes_per_sample(prob: ProblemFamily, config: Mapping[str, Any]) -> int:
    """Bytes one sample takes in the output, uncompressed (every per-sample variable in
    its stored dtype)."""
    return sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
               for shape, dtype in _shard_layout(prob, config, 1).values())


#: free bytes the assembly asks for besides the output's size (the netCDF headers, HDF5's
#: metadata; a full disk during the merge ended in a crash of HDF5)
ASSEMBLY_MARGIN = 16 << 20

#: HDF5's bytes besides the data of each variable of a shard (its headers, chunk index and
#: checksums): measured 3.3-3.9 KiB a variable for darcy, thermal and nlse shards of 1 to
#: 64 samples, taken as 5 KiB
SHARD_OVERHEAD = 5 << 10


def _assembly_need(shard_bytes: float) -> float:
    """Free bytes the assembly of shards of ``shard_bytes`` asks for (the output beside
    them: their size, 10 % and ASSEMBLY_MARGIN more); the start of a run asks for the
    same, so that a run it lets start is not refused after computing every shard."""
    return 1.1 * shard_bytes + ASSEMBLY_MARGIN


def _shard_bytes(prob: ProblemFamily, config: Mapping[str, Any], n: int) -> int:
    """About the size of a shard of ``n`` samples (stored uncompressed), a little over."""
    return bytes_per_sample(prob, config) * n + SHARD_OVERHEAD * len(prob.variables())


def _check_room(prob: ProblemFamily, config: Mapping[str, Any], out: Path) -> None:
    """Refuse a run whose data cannot fit on the output's disk before computing any of it.

    A run holds its shards and then, while they are assembled, the output beside them:
    about twice the data. Without this check a mistyped ``--n 1e12`` spent minutes
    listing its shards and ended in a MemoryError, and a run too big for the disk
    computed for hours before the disk filled up. Finished shards of a resumed run are
    on the disk already. Compressed output may be smaller than this estimate, so it is
    then only warned about.
    """
    total = config["n_samples"] * bytes_per_sample(prob, config)
    parts = Path(f"{out}.parts")
    # (shards of another config are not this run's: --overwrite discards them, and a
    # run without it is refused for them)
    ours = parts.is_dir() and _partial_config(parts)[0] == config
    kept = sum(p.stat().st_size for p in parts.glob("shard-*.nc")) if ours else 0
    shards = total + -(-config["n_samples"] // config["shard_size"]) * _shard_bytes(
        prob, config, 0)  # (each shard's HDF5 overhead: 26 KiB against a 2 KiB estimate)
    need = max(0, shards - kept) + _assembly_need(shards)
    free = shutil.disk_usage(out.parent).free
    if need <= free:
        return
    message = (
        f"--n {config['n_samples']} samples of {prob.name} at this resolution take about "
        f"{_size(total)} ({_size(need)} with the shards during assembly), but "
        f"{out.parent.resolve()} has {_size(free)} free"
    )
    # deflate shrinks data 1032:1 at best (lzf less): beyond that no compression fits it
    # (--n 1e12 with --compression listed its shards and died of memory)
    if config["compression"] == "none" or total / 1000 > free:
        # a resumed run keeps its config: other --n or --resolution would discard the
        # finished shards
        fix = (f"make room on that disk (the finished shards in {parts} are kept for "
               "this command)" if kept else
               "lower --n or --resolution, or choose an --out on a larger disk")
        raise PdeforgeError(f"{message}; {fix}")
    warnings.warn(f"{message} (uncompressed; --compression {config['compression']} may "
                  "shrink it): the run may stop when the disk is full", stacklevel=3)


def _write_failure(exc: BaseException) -> str | None:
    """The system's reason a write failed (``No space left on device``), or None for an
    error that is not the file system's. HDF5 reports a failed write as OSError or, from
    where h5py closes an object, RuntimeError, with the errno only in its message: a full
    disk was then reported as a damaged file."""
    import re

    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    found = re.search(r"errno = (\d+)", str(exc))
    if found:
        return os.strerror(int(found.group(1)))
    return _first_line(exc) if isinstance(exc, OSError) else None


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError  # unreachable: the loop returns at PiB


def _what_was_kept(parts: Path) -> str:
    """The end of an error that stops a run: where its finished shards are, if any."""
    if any(parts.glob("shard-*.nc")):
        return f"finished shards are kept in {parts}: re-run the same command to resume"
    return "no shard had finished, so there is nothing to resume"


def _interrupted(exc: BaseException, parts: Path) -> Interrupted:
    """The :class:`Interrupted` error for Ctrl-C (exit 130) or SIGTERM (143) during a run
    whose finished shards are kept in ``parts``."""
    what, code = (("stopped by SIGTERM", 143) if isinstance(exc, Terminated)
                  else ("interrupted", 130))
    return Interrupted(
        f"{what}; finished shards are kept in {parts}: re-run the same command to resume",
        exit_code=code,
    )


def _flag_unstorable(
    prob: ProblemFamily, config: Mapping[str, Any], block: Mapping[str, np.ndarray], start: int,
    flagged_out: list[int] | None = None,
) -> dict[str, np.ndarray]:
    """Mark samples whose fields the stored dtype cannot hold as not converged (their
    indices appended to ``flagged_out``).

    A value can be finite in float64 and overflow in float32 (e.g. exp of a large GRF),
    or a whole field lie below float32's normal range and be stored as zeros: such a
    sample must not be stored as converged.
    """
    out = dict(block)
    converged = np.asarray(out["converged"], dtype=bool)
    bad = np.zeros(len(converged), dtype=bool)
    lost = np.zeros(len(converged), dtype=bool)
    for spec in prob.variables():
        if spec.role in (INPUT, OUTPUT) and spec.dims:
            computed = np.asarray(out[spec.name])
            arr = computed.astype(spec.resolved_dtype(config["dtype"]))
            bad |= ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
            if arr.dtype.itemsize < computed.dtype.itemsize:
                lost |= _lost_in_narrowing(computed, arr)
            out[spec.name] = arr
    lost &= ~bad
    flagged = (bad | lost) & converged
    for what, mask in (("NaN/inf fields", bad), ("fields below the smallest normal number "
                        f"of {config['dtype']} ({np.finfo(config['dtype']).tiny:.1e}), "
                        "which it rounds to subnormals or zero", lost)):
        if (mask & converged).any():
            first = start + int(np.argmax(mask & converged))
            warnings.warn(
                f"{int((mask & converged).sum())} sample(s) (first index {first}) have {what} "
                f"in {config['dtype']}; recorded as not converged (narrow the input "
                "distribution or use --dtype float64)", stacklevel=2)
    if flagged.any():
        out["converged"] = converged & ~flagged
        if flagged_out is not None:
            flagged_out.extend(int(i) + start for i in np.flatnonzero(flagged))
    return out


def _lost_in_narrowing(computed: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Samples whose stored values are off the computed ones by more than the stored
    dtype's rounding of the sample's largest value.

    Rounding to float32 moves a value by at most 2^-24 of itself, so every sample passes
    but one whose whole field lies below float32's normal range (1.2e-38): a Darcy
    coefficient of 1e-50 was stored as 0, a field whose solution is not 0. A tiny tail
    next to values of order one (a soliton's far field) rounds to zero harmlessly.
    """
    n = computed.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(stored.astype(computed.dtype) - computed).reshape(n, -1)
        scale = np.abs(computed).reshape(n, -1)
        tol = 2.0 * np.finfo(stored.dtype).eps * np.nanmax(scale, axis=1, initial=0.0)
        return np.nanmax(error, axis=1, initial=0.0) > tol


def _short_list(values: list[int], limit: int = 10) -> str:
    head = ", ".join(map(str, values[:limit]))
    return head + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def _shard_records(parts: Path, ranges: list[tuple[int, int]]) -> tuple[list[int], list[str]]:
    """The samples the shards mark not converged, and the distinct ``SOLVER_USED`` names
    they record (in order of first use), in one pass over the shards."""
    import h5py

    bad: list[int] = []
    used: list[str] = []
    for j, (start, _stop) in enumerate(ranges):
        with h5py.File(parts / _SHARD_NAME.format(j), "r") as f:
            bad += (start + np.flatnonzero(f[CONVERGED][:] == 0)).tolist()
            name = attr_value(f.attrs, SOLVER_USED)
        if isinstance(name, str) and name not in used:
            used.append(name)
    return bad, used


def _nonconverged_in_file(path: Path) -> list[int]:
    import h5py

    with h5py.File(path, "r") as f:
        return np.flatnonzero(f[CONVERGED][:] == 0).tolist()


def _progress_bar(config: Mapping[str, Any], initial: int, enabled: bool):
    from tqdm.auto import tqdm

    res = config["resolution"]
    return tqdm(
        total=config["n_samples"],
        initial=initial,
        unit="sample",
        desc=f"{config['problem']} @ {res}",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        # a family whose shard advances together (nlse) reports fractions of samples:
        # shown as 3.5/4, not 3.4702869311982836/4
        bar_format="{l_bar}{bar}| {n:.{p}f}/{total} [{elapsed}<{remaining}, {rate_fmt}]"
        .replace("{p}", "0" if config["n_samples"] >= 100 else "1"),
    )


#: how a worker that runs another pdeforge than the client's (or none) says so
OTHER_PDEFORGE = "pdeforge-worker-mismatch: "


def _checked_task() -> Callable[..., dict[str, np.ndarray]]:
    """The shard task for workers this process did not start: it first checks that the
    worker imports the same pdeforge source as this process (SHA-256 of each .py file's
    path in the package and bytes: the same code, whatever the version number). A worker
    of another checkout computed its shards silently (velocities 40 % off for an older
    advection-diffusion, stamped with this code's revision), and one without pdeforge
    failed to unpickle the task again and again while the run waited. Defined here so
    that Dask sends it by value (cloudpickle), not as a name the worker's pdeforge may
    lack."""

    def digest() -> str | None:
        import hashlib
        import importlib.util
        import pathlib

        try:
            spec = importlib.util.find_spec("pdeforge")
        except ImportError:  # (None where it is not installed; an import hook may raise)
            spec = None
        if spec is None or spec.origin is None:
            return None
        root = pathlib.Path(spec.origin).parent
        sha = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            sha.update(str(path.relative_to(root)).encode())
            sha.update(path.read_bytes())
        return sha.hexdigest()

    def loaded() -> str | None:
        # the source as this process first used it, kept on the pdeforge module: a
        # long-lived worker whose checkout was updated since runs the modules it
        # imported, while the files read as the new source (review)
        import sys

        module = sys.modules.get("pdeforge")
        cached = getattr(module, "_source_sha256", None)
        if cached is None:
            cached = digest()
            if cached is not None:
                import pdeforge

                pdeforge._source_sha256 = cached
        return cached

    expected = loaded()

    def shard(config_text: str, start: int, stop: int) -> dict[str, np.ndarray]:
        found = loaded()
        if found is None:
            raise RuntimeError(f"{OTHER_PDEFORGE}cannot import pdeforge")
        if found != expected:
            import pdeforge

            raise RuntimeError(f"{OTHER_PDEFORGE}runs another pdeforge source "
                               f"({pdeforge.__file__}) than this one: its samples would "
                               "be another code's, stamped as this one's")
        from pdeforge.datasets.runner import _compute_shard

        return _compute_shard(config_text, start, stop)

    return shard


@contextlib.contextmanager
def _logger_level(name: str, level: int):
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


class _ClusterFailure(Exception):
    """The Dask cluster failed under a run (a worker killed again and again, the scheduler
    lost); the message says what, :func:`_run_locked` adds what was kept."""


def _probe_scheduler(address: str, seconds: float) -> None:
    """Connect to ``address`` and complete Dask's handshake within 1.25 ``seconds`` (the
    connect's own timeout is ``seconds``), else raise :class:`PdeforgeError`.

    ``Client(address, timeout=...)`` bounds only the TCP connect: a server that accepts the
    connection but does not speak Dask's protocol (the dashboard's port given for the
    scheduler's, another service) made it wait for the handshake forever, and garbage
    bytes in answer ended in a raw traceback. The probe runs in its own thread and event
    loop, so that it also works where a loop is running (a notebook).
    """
    import asyncio
    import threading

    from distributed.comm import connect
    from distributed.security import Security

    # the connection arguments Client would use (TLS certificates from Dask's config)
    connection_args = Security().get_connection_args("client")

    async def probe() -> None:
        comm = await asyncio.wait_for(
            connect(address, timeout=seconds, **connection_args), 1.25 * seconds)
        await comm.close()

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(probe())
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            outcome.append(exc)

    # a daemon thread, joined in short waits: Ctrl-C during the probe stops at once (a
    # pool would be joined, i.e. wait out the deadline)
    thread = threading.Thread(target=run, daemon=True, name="pdeforge-scheduler-probe")
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    exc = outcome[0] if outcome else RuntimeError("the probe thread ended without a result")
    hint = "check the address or use --workers K for a local cluster"
    if exc is None:
        return
    if isinstance(exc, TimeoutError):  # an OSError: before the clause below
        raise PdeforgeError(
            f"no Dask scheduler answered at {address!r} within {1.25 * seconds:.0f} s: "
            "nothing listens there, or another service does (e.g. the dashboard's port, "
            f"8787 by default, instead of the scheduler's, 8786); {hint}"
        )
    if isinstance(exc, (OSError, ValueError, TypeError)):  # refused, unknown host, bad address
        raise PdeforgeError(
            f"cannot reach the Dask scheduler at {address!r} "
            f"({_first_line(exc, QUOTE_LIMIT)}); check the address (e.g. tcp://host:8786) "
            "or use --workers K for a local cluster"
        )
    raise PdeforgeError(
        f"the server at {address!r} did not answer as a Dask scheduler "
        f"({type(exc).__name__}: {_first_line(exc, QUOTE_LIMIT)}); {hint}"
    )


def _run_dask(
    config_text: str,
    ranges: list[tuple[int, int]],
    pending: list[int],
    store: Callable[[int, Mapping[str, np.ndarray]], None],
    workers: int,
    scheduler: str | None,
) -> None:
    """Shards as Dask tasks; results are written here, as they arrive, by ``store``.

    A shard whose worker dies again and again (Dask's KilledWorker) or a scheduler lost
    under the run end it with :class:`_ClusterFailure`; the shards stored so far are kept.
    """
    if not pending:
        return
    from distributed import Client, LocalCluster, as_completed
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    cluster = None
    task: Callable[..., Any] = _compute_shard
    quiet = contextlib.nullcontext()
    if scheduler is not None:
        task = _checked_task()
        # a lost scheduler: pdeforge's one line, not the client's logged tracebacks first
        quiet = _logger_level("distributed.client", logging.CRITICAL)
    try:
        if scheduler is not None:
            from dask.utils import parse_timedelta

            _probe_scheduler(scheduler, parse_timedelta(SCHEDULER_TIMEOUT))
            try:
                client = Client(scheduler, timeout=SCHEDULER_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - the probe passed: a failure in between
                raise PdeforgeError(
                    f"cannot connect to the Dask scheduler at {scheduler!r} "
                    f"({type(exc).__name__}: {_first_line(exc, QUOTE_LIMIT)}); check the "
                    "address or use --workers K for a local cluster"
                ) from None
            if not client.scheduler_info(n_workers=1).get("workers"):
                warnings.warn(
                    f"the Dask scheduler at {scheduler} has no workers yet: the run waits "
                    f"until one joins (e.g. `dask worker {scheduler}`); Ctrl-C stops it",
                    stacklevel=4,
                )
        else:
            try:
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    # CRITICAL: a task's error is raised here with pdeforge's one-line
                    # message; at ERROR each worker also logged it with a traceback
                    dashboard_address=None, silence_logs=logging.CRITICAL,
                    preload=[WORKER_SETUP],
                )
            except Exception as exc:  # noqa: BLE001 - Dask's own errors: say what to check
                raise PdeforgeError(
                    f"Dask could not start {workers} local worker processes "
                    f"({type(exc).__name__}: {_first_line(exc, QUOTE_LIMIT)}); from a Python "
                    "script, call generate() under `if __name__ == \"__main__\":` (each "
                    "worker process imports the script), else try fewer --workers"
                ) from None
            client = Client(cluster)
            from pdeforge.runtime import allocator_tuned, tune_cpu_allocator

            if allocator_tuned():  # workers this run started inherit the CLI's setting
                client.run(tune_cpu_allocator)
        with quiet, client:  # (quiet also while the client closes: it logs its reconnects)
            futures = {
                client.submit(task, config_text, *ranges[j], pure=False): j
                for j in pending
            }
            try:
                for fut in as_completed(futures):
                    j = futures[fut]
                    try:
                        block = fut.result()
                    except KilledWorker:
                        raise _ClusterFailure(
                            f"shard {j} (samples {ranges[j][0]}-{ranges[j][1] - 1}) ended "
                            "with its Dask worker killed again and again (out of memory? a "
                            "worker holds one shard's systems and solutions"
                            + ("; fewer --workers leave each more)" if cluster else ")")
                        ) from None
                    except (CancelledError, CommClosedError) as exc:
                        raise _ClusterFailure(
                            f"lost the Dask scheduler while shard {j} ran "
                            f"({type(exc).__name__}: {_first_line(exc, QUOTE_LIMIT)})"
                        ) from None
                    except RuntimeError as exc:
                        if not str(exc).startswith(OTHER_PDEFORGE):
                            raise
                        raise _ClusterFailure(
                            f"a Dask worker at {scheduler} {str(exc)[len(OTHER_PDEFORGE):]}; "
                            "install this pdeforge in the workers' environment (the same "
                            "source) and restart them"
                        ) from None
                    store(j, block)
            finally:
                for fut in futures:
                    fut.cancel()
    finally:
        if cluster is not None:
            cluster.close()
