"""Load a training checkpoint safely: tensors and plain values only, never pickled code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from pdeforge.errors import PdeforgeError


class CheckpointError(PdeforgeError, ValueError):
    """A checkpoint is missing, unreadable, unsafe or not a pdeforge checkpoint."""


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(weights_only=True)``: a checkpoint that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it contains Python objects other than tensors and plain "
            f"values, which could run code when unpickled ({str(exc).splitlines()[0]}). "
            "Only load checkpoints written by pdeforge from a source you trust."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(checkpoint, dict) or "pdeforge" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a pdeforge training checkpoint (no 'pdeforge' section); "
            "checkpoints come from `pdeforge train fit`"
        )
    return checkpoint


def load_module(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Any, dict]:
    """Rebuild the trained ``OperatorModule`` (eval mode) and return it with the checkpoint."""
    from pdeforge.train.module import OperatorModule

    checkpoint = read_checkpoint(path, map_location)
    hparams = dict(checkpoint.get("hyper_parameters", {}))
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    module = OperatorModule(**hparams)
    module.on_load_checkpoint(checkpoint)
    missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model it describes (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return module.eval().to(map_location), checkpoint
