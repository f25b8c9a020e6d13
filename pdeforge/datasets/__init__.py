"""Problem families, the dataset file format, the generation runner, and readers.

``TorchDataset`` is imported lazily so that the CLI and xarray users do not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pdeforge.datasets.check import CheckReport, check_file
from pdeforge.datasets.readers import open_dataset, verify_dataset
from pdeforge.datasets.runner import generate

if TYPE_CHECKING:
    from pdeforge.datasets.torch_dataset import TorchDataset


def __getattr__(name: str) -> Any:
    if name == "TorchDataset":
        from pdeforge.datasets.torch_dataset import TorchDataset

        return TorchDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CheckReport", "TorchDataset", "check_file", "generate", "open_dataset",
           "verify_dataset"]
