"""pdeforge: classical PDE solvers -> datasets -> neural-operator surrogates."""

from importlib.metadata import PackageNotFoundError, version

from pdeforge.errors import PdeforgeError

try:
    __version__ = version("pdeforge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["PdeforgeError", "Surrogate", "__version__"]


def __getattr__(name: str):
    # lazy: `import pdeforge` (and the CLI's --help) stays free of torch
    if name == "Surrogate":
        from pdeforge.surrogate import Surrogate

        return Surrogate
    raise AttributeError(f"module 'pdeforge' has no attribute {name!r}")
