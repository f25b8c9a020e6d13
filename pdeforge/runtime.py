"""Process-level settings that make CPU training practical.

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a
fresh ``mmap`` and returns it with ``munmap`` when freed. Training a neural operator
allocates and frees activations of tens to hundreds of MiB at every step, so each step
page-faults all of that memory again: on the 2-core development machine a dense FNO
forward+backward at 8 x 192^2 took 3.05 s with the default and 0.75 s with the settings
below (same process, same numbers; ``benchmarks/operators.py`` records its own run).
No dependency offers this (jemalloc/tcmalloc would have to be preloaded before Python
starts), so :func:`tune_cpu_allocator` calls glibc's ``mallopt`` through ctypes.

The price is that freed memory stays with the process (peak RSS is not returned to the
system until it exits), which is what a training or benchmark process wants; it is
therefore applied by pdeforge's entry points, never on import: training, the
benchmarks, and ``pdeforge generate`` with the local Dask workers it starts (sparse LU and
ILU factors and Krylov bases of tens of MB a system: advection-diffusion 512^2 with spilu
took 2.41-2.58 s a system with the default, 1.87-2.13 s tuned).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied = False


def tune_cpu_allocator(mmap_threshold: int = 1 << 30) -> bool:
    """Keep large freed blocks in glibc's heap; return True when the settings took effect.

    Returns False (and changes nothing) where the C library is not glibc, e.g. macOS,
    Windows or musl.
    """
    global _applied
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)))
    ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and ok
    _applied = _applied or ok
    return ok


def allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` has succeeded in this process."""
    return _applied
