"""Load a training checkpoint safely: tensors and plain values only, never pickled code."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from pdeforge.errors import PdeforgeError


class CheckpointError(PdeforgeError, ValueError):
    """A checkpoint is missing, unreadable, unsafe or not a pdeforge checkpoint."""


def _nearby(path: Path, most: int = 5) -> str:
    """The newest checkpoints near a missing ``path`` (its run folder, or ./runs), as a
    hint; empty if there are none."""
    # (a run's own folders only, never a search of an arbitrary parent directory)
    roots = [
        p
        for p in (*path.parents[:3], Path("runs"))
        if p.is_dir() and (p.name == "checkpoints" or p.name.startswith("version_")
                           or p == Path("runs"))
    ]
    found: set[Path] = set()
    for root in roots[:2]:
        found.update(root.rglob("*.ckpt"))
        if found:
            break
    return f"; checkpoints found: {_newest(found, most)}" if found else ""


def _newest(paths: set[Path], most: int = 5) -> str:
    """The ``most`` newest of ``paths`` (by modification time), newest first."""
    return ", ".join(map(str, sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True)[:most]))


def _check_archive(path: Path) -> None:
    """Check the CRC of every entry of a checkpoint's zip archive: torch.load does not, so
    flipped bytes inside a tensor loaded as silent garbage (NaN predictions)."""
    bad = None
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                # torch.save writes no CRC (0) under torch.serialization.set_crc32_options(
                # False): such entries cannot be checked
                if info.CRC == 0 or bad is not None:
                    continue
                try:
                    with archive.open(info) as entry:  # zipfile checks the CRC at the end
                        while entry.read(1 << 22):
                            pass
                except zipfile.BadZipFile as exc:  # "Bad CRC-32": the bytes changed
                    bad = info.filename, "fails its checksum" if "CRC" in str(exc) else (
                        f"cannot be read ({exc})")
                except Exception as exc:  # noqa: BLE001 - zipfile's other errors on damage
                    if isinstance(exc, MemoryError):
                        raise
                    bad = info.filename, f"cannot be read ({type(exc).__name__}: {exc})"
    # any failure to read the archive's directory is a damaged file: zipfile raises
    # BadZipFile, EOFError, UnicodeDecodeError (a damaged name), NotImplementedError (a
    # damaged flag), ... on such bytes
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, MemoryError):
            raise
        raise CheckpointError(
            f"cannot read checkpoint {path}: the PyTorch archive is incomplete or damaged "
            f"({exc}); it may be truncated"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its entry {bad[0]!r} {bad[1]} (a corrupted "
            "copy or disk); use another copy, or another checkpoint of the run (last.ckpt, "
            "best-*.ckpt)"
        )


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(weights_only=True)``: a checkpoint that would run code is refused."""
    path = Path(path)
    if path.is_dir():
        # (a run's layout only: never a search of an arbitrary tree)
        patterns = ("*.ckpt", "checkpoints/*.ckpt", "version_*/checkpoints/*.ckpt",
                    "*/version_*/checkpoints/*.ckpt")
        inside = {p for pattern in patterns for p in path.glob(pattern)}
        raise CheckpointError(
            f"{path} is a folder, not a checkpoint file; "
            + (f"the newest checkpoints in it: {_newest(inside)}" if inside
               else "neither it nor its run folders (version_*/checkpoints) hold a *.ckpt")
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist{_nearby(path)}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # zip or pickle
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (it starts with {head!r}); checkpoints come "
            "from `pdeforge train fit` (runs/pdeforge/version_N/checkpoints/*.ckpt)"
        )
    if head.startswith(b"PK"):
        _check_archive(path)
    if isinstance(map_location, str):  # (torch's error for a bad device read as damage)
        try:
            torch.device(map_location)
        except (RuntimeError, TypeError) as exc:
            raise CheckpointError(f"unknown device {map_location!r} ({exc}); use cpu or "
                                  "cuda") from None
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        if "Weights only load failed" not in text:
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint ({text.splitlines()[0] if text else exc!r})"
            ) from None
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({unsafe.group(1)})" if unsafe else ""
        raise CheckpointError(
            f"refusing to load {path}: it contains a Python object{what} other than tensors and "
            "plain values, which could run code when unpickled. Only load checkpoints written "
            "by pdeforge from a source you trust."
        ) from None
    except Exception as exc:  # torch raises KeyError, RuntimeError, OSError... on bad files
        raise CheckpointError(
            f"cannot read checkpoint {path}: the PyTorch archive is incomplete or damaged "
            f"({type(exc).__name__}: {exc}); it may be truncated"
        ) from None
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
    module.on_load_checkpoint(checkpoint)  # checks the state dict's names and shapes
    module.load_state_dict(checkpoint["state_dict"])
    bad = [name for name, t in module.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"checkpoint {path} holds NaN or infinite values in {listed}: every prediction "
            "would be NaN (a run that diverged, or an edited file); use an earlier checkpoint "
            "of the run (best-*.ckpt), or retrain with a lower learning rate"
        )
    return module.eval().to(map_location), checkpoint
