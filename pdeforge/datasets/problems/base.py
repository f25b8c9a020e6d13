"""The interface every problem family implements, and its command-line options.

A problem family turns (seed, sample index) into one sample: random inputs drawn from a
generator seeded by exactly that pair, then the reference solver's outputs and
diagnostics. Nothing else may influence a sample, so the same file comes out whatever the
number of workers, shards or the order in which samples are computed.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pdeforge.datasets.format import Coordinate, VarSpec
from pdeforge.errors import PdeforgeError


@dataclass(frozen=True)
class Option:
    """One problem or solver option: a config key and the CLI flag ``--<name-with-dashes>``.

    ``default=None`` means "resolved by the problem" (e.g. a GRF length scale that depends
    on the coefficient model); the resolved value is what the stored config records.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: Sequence[Any] | None = None
    positive: bool = False
    #: an option of how the reference solution is computed or discretised (solver,
    #: tolerances, grid scheme), not of the problem's distribution: data differing only
    #: in these are the same problem (``pdeforge evaluate`` warns about the others)
    numerics: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def validate(self, value: Any) -> Any:
        if value is None:
            return None
        try:
            value = self.type(value)
        except (TypeError, ValueError):
            raise PdeforgeError(
                f"option {self.flag}: expected {self.type.__name__}, got {value!r}"
            ) from None
        if isinstance(value, float) and not np.isfinite(value):
            raise PdeforgeError(f"option {self.flag}: must be a finite number, got {value!r}")
        if self.choices is not None and value not in self.choices:
            choices = ", ".join(map(str, self.choices))
            raise PdeforgeError(f"option {self.flag}: {value!r} is not one of {choices}")
        if self.positive and not value > 0:
            raise PdeforgeError(f"option {self.flag}: must be > 0, got {value!r}")
        return value


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample ``index``: a pure function of (seed, index)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


#: optional key of :meth:`ProblemFamily.generate`'s result: a str naming what the solver
#: ran on these samples (e.g. what ``--solver auto`` picked for them); the runner records
#: it in each shard and joins the shards' names into the file's ``solver`` attribute
SOLVER_USED = "solver_used"
#: between the family's solver name and the shards' ``SOLVER_USED`` names in the file's
#: ``solver`` attribute
SOLVERS_RAN = "; ran: "


def solvers_ran(solver_attribute: Any) -> list[str] | None:
    """The ``SOLVER_USED`` names a file's ``solver`` attribute lists, or None where it
    lists none (a file of another program, an older one, or one where no solve ran)."""
    if not isinstance(solver_attribute, str) or SOLVERS_RAN not in solver_attribute:
        return None
    return solver_attribute.rsplit(SOLVERS_RAN, 1)[1].split(", ")


class ProblemFamily(ABC):
    """A family of PDE problems with random inputs and a reference solver.

    Subclasses set the class attributes and implement the abstract methods; the runner
    does the rest (sharding, parallelism, files).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    default_resolution: ClassVar[int]
    min_resolution: ClassVar[int]
    max_resolution: ClassVar[int] = 8192
    #: raised when the family's samples change for an unchanged config (a fix of its
    #: geometry, say): a resumed run recomputes shards of another revision instead of
    #: assembling a file of two kinds of samples
    revision: ClassVar[int] = 1

    #: why a sample of the family can end not converged, and what to change (appended to
    #: the warning of `pdeforge generate`)
    nonconverged_hint: str = ""

    @classmethod
    def nonconverged_advice(cls, solvers_used: Sequence[str] | None = None) -> str:
        """What to change when samples did not converge, given the solvers that ran
        (``SOLVER_USED`` of the shards, or :func:`solvers_ran` of a file; an empty list:
        none ran, None: not known); by default :attr:`nonconverged_hint`. A class method:
        training gives it for a file."""
        return cls.nonconverged_hint

    def __init__(self, resolution: int | None = None, **options: Any) -> None:
        resolution = self.default_resolution if resolution is None else resolution
        if int(resolution) != resolution:
            raise PdeforgeError(f"--resolution must be an integer, got {resolution!r}")
        resolution = int(resolution)
        if resolution < self.min_resolution:
            raise PdeforgeError(
                f"--resolution {resolution} is too small for problem {self.name!r}: "
                f"use at least {self.min_resolution}"
            )
        if resolution > self.max_resolution:
            raise PdeforgeError(
                f"--resolution {resolution} is too large for problem {self.name!r}: "
                f"at most {self.max_resolution}"
            )
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise PdeforgeError(
                f"problem {self.name!r} has no option(s) {unknown}; "
                f"its options are {sorted(known)}"
            )
        self.resolution = resolution
        raw = {name: options.get(name, opt.default) for name, opt in known.items()}
        self.config = self.resolve_options({k: known[k].validate(v) for k, v in raw.items()})

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Fill options left at None with their resolved values; validate combinations."""
        return options

    def unused_options(self) -> dict[str, str]:
        """Options that the other options make this config ignore, each with why (e.g.
        ``{"restart": "with --solver direct"}``); ``generate`` warns about those the user
        gave. By default none."""
        return {}

    def caveats(self) -> list[str]:
        """What these options leave unchecked in the data, for ``generate`` to warn about
        once before a run (by default nothing)."""
        return []

    def check_first_sample(self, seed: int) -> None:
        """Refuse, before any work, options that sample 0 shows cannot work (a family
        with such options overrides this; by default nothing to check)."""
        return None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(f"{cls.name} options")
        for opt in cls.options:
            default_text = "resolved by the problem" if opt.default is None else opt.default
            kwargs: dict[str, Any] = {
                "dest": opt.name,
                "default": None,
                "help": f"{opt.help} (default: {default_text})",
            }
            if opt.choices is not None:
                kwargs["choices"] = list(opt.choices)
            if opt.type is not bool:
                kwargs["type"] = opt.type
                group.add_argument(opt.flag, **kwargs)
            else:
                group.add_argument(opt.flag, action=argparse.BooleanOptionalAction, **kwargs)

    @classmethod
    def options_from_namespace(cls, ns: argparse.Namespace) -> dict[str, Any]:
        return {o.name: getattr(ns, o.name) for o in cls.options if getattr(ns, o.name) is not None}

    # -- what the file holds -----------------------------------------------------------

    @property
    @abstractmethod
    def solver_name(self) -> str:
        """Human-readable name of the reference solver (root attribute ``solver``)."""

    @abstractmethod
    def coordinates(self) -> list[Coordinate]:
        """1-D coordinate variables of the grid."""

    @abstractmethod
    def variables(self) -> list[VarSpec]:
        """Every per-sample variable, diagnostics included (see ``diagnostic_specs``)."""

    @abstractmethod
    def generate(
        self,
        seed: int,
        indices: Sequence[int],
        progress: Callable[[int], None] | None = None,
    ) -> Mapping[str, np.ndarray]:
        """Samples ``indices``: arrays with a leading axis of len(indices) per variable.

        Families may solve the samples of one call jointly (e.g. recycling a Krylov
        subspace along them), but sample i's random inputs must come from
        ``sample_rng(seed, i)`` alone. ``progress(k)`` is called as k more samples are done.
        """
