"""pdeforge: classical PDE solvers -> datasets -> neural-operator surrogates."""

from importlib.metadata import PackageNotFoundError, version

from pdeforge.errors import PdeforgeError

try:
    __version__ = version("pdeforge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["PdeforgeError", "__version__"]
