"""Base of the problem families whose reference solver is one sparse linear solve a sample.

A family builds, for each sample, the system A x = b from random inputs drawn with
``sample_rng(seed, i)``; :class:`LinearFamily.generate` hands the systems of one shard to
:func:`pdeforge.solvers.krylov.solve_sequence` (sorted, recycled, preconditioner reuse,
as the options say) and maps the solutions back to fields. Under Dask each worker recycles
along its own shards; the shard layout is part of the config, so the file does not depend
on the number of workers.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from pdeforge.datasets.format import (
    DIAGNOSTIC,
    OUTPUT,
    SPATIAL_DIMS,
    Coordinate,
    VarSpec,
    diagnostic_specs,
)
from pdeforge.datasets.grid import CELL, GRID_ATTR
from pdeforge.datasets.problems.base import SOLVER_USED, Option, ProblemFamily
from pdeforge.errors import PdeforgeError
from pdeforge.solvers.diffusion import grid_points
from pdeforge.solvers.krylov import METHODS, PRECONDITIONERS, SequenceResult, solve_sequence
from pdeforge.solvers.krylov.base import UnsolvableSystemError

SOLVER_OPTIONS = (
    Option("solver", str, "auto", "linear solver: sorted+recycled (skr), recycled (gcrodr), "
           "independent GMRES, sparse LU, or auto by matrix class and size", METHODS,
           numerics=True),
    Option("rtol", float, 1e-8, "relative residual target (a direct solve above it gets up "
           "to 3 steps of iterative refinement, then counts as not converged)", None,
           True, numerics=True),
    Option("preconditioner", str, "auto", "preconditioner of the iterative solvers (auto: "
           "with --solver auto, auto's own choice; with an iterative solver, AMG for SPD "
           "matrices, ILU otherwise)", ("auto", *PRECONDITIONERS), numerics=True),
    Option("restart", int, 40, "GMRES / GCRO-DR cycle length m", None, True, numerics=True),
    Option("recycle", int, 20, "recycled subspace dimension k (0: no recycling)", None,
           numerics=True),
    Option("maxiter", int, 20_000, "matrix-vector products allowed per sample", None, True,
           numerics=True),
)


@dataclass
class LinearSample:
    """One sample's system and what to store besides the solution.

    Attributes:
        A: sparse matrix over the unknowns; None when the inputs admit no solve (e.g. an
            overflowing coefficient): the sample is stored with converged=false.
        b: right-hand side.
        inputs: arrays to store (name -> array with the variable's per-sample shape).
        features: vector describing the sample for sorting (e.g. its parameter field).
        unknowns: mask of the grid points that are unknowns (others keep ``fill``).
    """

    A: Any
    b: np.ndarray
    inputs: dict[str, np.ndarray]
    features: np.ndarray
    unknowns: np.ndarray | None = None


class LinearFamily(ProblemFamily):
    """A family solved by one sparse linear system per sample on a d-dimensional grid."""

    @classmethod
    def nonconverged_advice(cls, solvers_used: Sequence[str] | None = None) -> str:
        if solvers_used is not None and not solvers_used:
            # no solve ran at all: every sample's system had nothing to solve (a zero row
            # from extreme coefficients), so raising --maxiter cannot help
            return (
                "No solver ran: the samples' systems admit no solve (a zero row or a "
                "singular matrix from extreme inputs, e.g. --k-low 1e-300); narrow the "
                "options' range. Their outputs are stored as NaN"
            )
        if solvers_used and all(name == "direct" for name in solvers_used):
            # no iteration to raise, no preconditioner to change (the advice was
            # "raise --maxiter ... or --solver direct" after a direct solve)
            return (
                "The sparse direct solve left a residual above --rtol: the systems are too "
                "ill-conditioned for double precision with these inputs (extreme "
                "coefficients: narrow the options' range, e.g. a velocity against the "
                "smallest diffusivity, or the ratio of the coefficient's values); "
                "`pdeforge info` shows the residuals"
            )
        return cls.nonconverged_hint

    nonconverged_hint = (
        "The iterative solver did not reach --rtol within --maxiter (`pdeforge info` shows "
        "the residuals): raise --maxiter, choose another --preconditioner, or --solver "
        "direct; residuals near 1e-15 mean an --rtol below what double precision reaches "
        "(the solver stopped there): use a larger --rtol; a sample whose inputs admit no "
        "solve is stored with NaN outputs"
    )

    dim: int = 2
    spd: bool | None = None  # None: detected by solve_sequence (on every distinct matrix)
    default_resolution = 64
    min_resolution = 8
    max_resolution = 4096

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["recycle"] < 0:
            raise PdeforgeError(f"--recycle must be >= 0 (0: no recycling), got "
                                f"{options['recycle']}")
        if options["recycle"] >= options["restart"] and options["solver"] != "direct":
            # (a direct solve uses neither: generate warns that they are unused)
            raise PdeforgeError(
                f"--recycle {options['recycle']} must be smaller than --restart "
                f"{options['restart']}"
            )
        if not options["rtol"] < 1:
            raise PdeforgeError(f"--rtol must be < 1, got {options['rtol']}")
        if options["solver"] == "direct" and options["preconditioner"] != "auto":
            raise PdeforgeError(
                f"--preconditioner {options['preconditioner']} has no effect with --solver "
                "direct (a sparse LU solve takes no preconditioner): leave --preconditioner "
                "out, or pick an iterative --solver (skr, gcrodr, gmres)")
        return options

    def unused_options(self) -> dict[str, str]:
        solver = self.config["solver"]
        if solver == "direct":  # a sparse LU: no iterations (the preconditioner is refused)
            return dict.fromkeys(("restart", "recycle", "maxiter"), "with --solver direct")
        if solver == "gmres":
            return {"recycle": "with --solver gmres (it recycles nothing)"}
        return {}

    def check_first_sample(self, seed: int) -> None:
        """Refuse ``--preconditioner amg`` before any work when sample 0's matrix is not
        Hermitian (amg is for SPD systems): the first solve found it, under Dask after
        the workers had started, each logging it. Whether a family's matrices are
        Hermitian may depend on its options (helmholtz: Dirichlet walls yes, absorbing
        ones no), so the matrix is asked, as the preconditioner would ask it."""
        c = self.config
        if c["preconditioner"] != "amg" or c["solver"] == "direct":
            return
        from pdeforge.solvers.krylov.preconditioners import AMG_ASYMMETRY

        A = self.build(seed, 0).A
        if A is None:
            return
        A = sp.csr_matrix(A)
        if abs(A - A.conj().T).max() > AMG_ASYMMETRY * (abs(A).max() or 1.0):
            raise PdeforgeError(
                f"--preconditioner amg (smoothed aggregation) is for symmetric positive "
                f"definite systems, and {self.name}'s matrices with these options are not "
                "symmetric (Hermitian): use 'ilu' or 'ilu0' (or auto)")

    @property
    def solver_name(self) -> str:
        c = self.config
        return (f"pdeforge.solvers.krylov.solve_sequence(method={c['solver']}, "
                f"preconditioner={c['preconditioner']}, rtol={c['rtol']:g})")

    @property
    def dims(self) -> tuple[str, ...]:
        return SPATIAL_DIMS[: self.dim]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.resolution,) * self.dim

    def points(self) -> np.ndarray:
        return grid_points(self.resolution, "cell")

    def coordinates(self) -> list[Coordinate]:
        pts = self.points()
        return [Coordinate(d, pts, {"units": "1", "long_name": f"{d} (cell centre) on [0, 1]",
                                    GRID_ATTR: CELL})
                for d in self.dims]

    @abstractmethod
    def field_specs(self) -> list[VarSpec]:
        """Inputs and outputs (the diagnostics are added by :meth:`variables`)."""

    @abstractmethod
    def build(self, seed: int, index: int) -> LinearSample:
        """The system of sample ``index``."""

    @abstractmethod
    def outputs(self, sample: LinearSample, x: np.ndarray) -> dict[str, np.ndarray]:
        """Output arrays from the solution vector."""

    def variables(self) -> list[VarSpec]:
        return self.field_specs() + diagnostic_specs([
            VarSpec("iterations", (), DIAGNOSTIC, "int64",
                    {"long_name": "matrix-vector products of the iterative solver (0: direct)"}),
            VarSpec("residual", (), DIAGNOSTIC, "float64",
                    {"long_name": "relative residual ||b - A x|| / ||b|| of the float64 "
                     "solution (before the fields are stored in the file's dtype)"}),
        ])

    def to_grid(self, sample: LinearSample, x: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter the unknowns back onto the full grid."""
        if sample.unknowns is None:
            return x.reshape(self.shape)
        grid = np.full(self.shape, fill, dtype=x.dtype)
        grid[sample.unknowns] = x
        return grid

    def grid_inputs(self, inputs: dict[str, np.ndarray], names: tuple[str, ...]
                    ) -> dict[str, np.ndarray]:
        """``inputs`` as float64 arrays after the checks every family's
        :meth:`system_from_inputs` needs: exactly ``names``, each of the grid's shape,
        finite."""
        if set(inputs) != set(names):
            raise PdeforgeError(f"{self.name} takes the input(s) "
                                f"{' and '.join(map(repr, names))}, got {sorted(inputs)}")
        fields = {}
        for name in names:
            v = np.asarray(inputs[name], dtype=np.float64)
            if v.shape != self.shape:
                raise PdeforgeError(f"{self.name} at resolution {self.resolution} needs a "
                                    f"{name} of shape {self.shape}, got {v.shape}")
            if not np.all(np.isfinite(v)):
                raise PdeforgeError(f"the {name} contains NaN or infinite values")
            fields[name] = v
        return fields

    def system_from_inputs(self, inputs: dict[str, np.ndarray]) -> LinearSample:
        """The system of one sample whose input fields are given (name -> array).

        Families implement it so that :meth:`solve_inputs` (and ``Surrogate.compare``) can
        run the reference solver on inputs the user chose.
        """
        raise PdeforgeError(
            f"problem {self.name!r} cannot yet solve inputs given by the user; "
            "supported: darcy, darcy3d, helmholtz, helmholtz3d, nlse"
        )

    def solve_inputs(
        self, inputs: dict[str, np.ndarray], progress: Callable[[int], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Reference solutions for a batch of inputs {name: (n, *grid)}.

        Returns the same arrays as :meth:`generate` (outputs and diagnostics, including
        ``solve_seconds`` per sample).
        """
        sizes = {k: np.shape(v)[0] if np.ndim(v) else 0 for k, v in inputs.items()}
        if len(set(sizes.values())) != 1 or 0 in sizes.values():
            raise PdeforgeError(f"inputs must share a leading sample axis, got sizes {sizes}")
        n = next(iter(sizes.values()))
        samples = [self.system_from_inputs({k: np.asarray(v[i]) for k, v in inputs.items()})
                   for i in range(n)]
        return self._solve(samples, progress)

    def generate(
        self,
        seed: int,
        indices: Sequence[int],
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        return self._solve([self.build(seed, i) for i in indices], progress)

    def _solve(
        self, samples: list[LinearSample], progress: Callable[[int], None] | None
    ) -> dict[str, np.ndarray]:
        valid = [k for k, s in enumerate(samples) if s.A is not None]
        c = self.config
        n = len(samples)
        converged = np.zeros(n, dtype=bool)
        seconds = np.zeros(n)
        iterations = np.zeros(n, dtype=np.int64)
        residuals = np.full(n, np.nan)
        solutions: dict[int, np.ndarray] = {}
        used = None
        reported = [0]

        def advance(k: int) -> None:
            step = min(k, n - reported[0])
            if progress is not None and step > 0:
                progress(step)
                reported[0] += step

        def keep(res: SequenceResult, rows: list[int]) -> None:
            """Store what ``res`` solved of the samples ``valid`` (its systems, in order)."""
            nonlocal used
            mine = [valid[j] for j in rows]
            converged[mine] = res.converged[rows]
            seconds[mine] = res.seconds[rows] + res.sort_seconds / len(valid)
            iterations[mine] = res.iterations[rows]
            residuals[mine] = res.residuals[rows]
            solutions.update({valid[j]: res.solutions[j] for j in rows})
            used = (res.method if res.method == "direct" or res.preconditioner == "none"
                    else f"{res.method}/{res.preconditioner}")

        while valid:
            try:
                res = solve_sequence(
                    [samples[k].A for k in valid], np.stack([samples[k].b for k in valid]),
                    features=np.stack([samples[k].features for k in valid]),
                    method=c["solver"], rtol=c["rtol"], restart=c["restart"],
                    recycle=c["recycle"],
                    preconditioner=c["preconditioner"],  # "auto": solve_sequence resolves it
                    maxiter=c["maxiter"], spd=self.spd, progress=advance, dim=self.dim,
                )
            except UnsolvableSystemError as exc:
                # inputs whose system has no solution in double precision (a zero row or
                # a singular factor from extreme coefficients: --velocity 1e37, --k-low
                # 1e-300): that sample is stored not converged with NaN outputs (it
                # aborted the whole run, blaming the assembly); the systems solved before
                # it are kept and the rest solved as a sequence of their own
                if exc.system is None:
                    raise
                part = getattr(exc, "partial", None)
                done = [] if part is None else np.flatnonzero(part.solved).tolist()
                if done:
                    keep(part, done)
                drop = {exc.system, *done}
                valid = [k for j, k in enumerate(valid) if j not in drop]
                continue
            keep(res, list(range(len(valid))))
            break
        advance(n - reported[0])  # the samples without a system, or not solved again
        out: dict[str, list] = {}
        for k, s in enumerate(samples):
            # a non-converged solution is kept as computed, flagged by converged=false and
            # its residual; a sample without a system (invalid inputs) gets NaN outputs
            outs = (self.outputs(s, solutions[k]) if k in solutions else
                    {v.name: np.full(self.output_shape(v), np.nan)
                     for v in self.field_specs() if v.role == OUTPUT})
            for name, value in {**s.inputs, **outs}.items():
                out.setdefault(name, []).append(value)
        arrays = {name: np.stack(v) for name, v in out.items()}
        arrays.update(converged=converged, solve_seconds=seconds, iterations=iterations,
                      residual=residuals)
        if used is not None:
            arrays[SOLVER_USED] = used  # type: ignore[assignment]  (a str, see SOLVER_USED)
        return arrays

    def output_shape(self, spec: VarSpec) -> tuple[int, ...]:
        sizes = dict(zip(self.dims, self.shape, strict=True))
        return tuple(sizes[d] for d in spec.dims)
