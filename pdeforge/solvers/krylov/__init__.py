"""Krylov subspace recycling for sequences of sparse linear systems (SKR).

``solve_sequence`` is the entry point; the solvers (``GCRODR``, ``RecycledCG``, ``gmres``),
preconditioners and sorting are usable on their own.
"""

from pdeforge.solvers.krylov.base import KrylovResult
from pdeforge.solvers.krylov.gcrodr import GCRODR
from pdeforge.solvers.krylov.gmres import gmres
from pdeforge.solvers.krylov.preconditioners import (
    KINDS as PRECONDITIONERS,
)
from pdeforge.solvers.krylov.preconditioners import (
    PreconditionerCache,
    build_preconditioner,
)
from pdeforge.solvers.krylov.rcg import RecycledCG
from pdeforge.solvers.krylov.sequence import (
    METHODS,
    SequenceResult,
    auto_choice,
    is_spd,
    is_symmetric,
    solve_sequence,
)
from pdeforge.solvers.krylov.sorting import greedy_order, scalable_order, sort_systems

__all__ = [
    "GCRODR", "METHODS", "PRECONDITIONERS", "KrylovResult", "PreconditionerCache",
    "RecycledCG", "SequenceResult", "auto_choice", "build_preconditioner", "gmres",
    "greedy_order", "is_spd", "is_symmetric", "scalable_order", "solve_sequence", "sort_systems",
]
