"""Lightning callbacks of ``pdeforge train``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose record of the best models survives a resumed run.

    A run resumed with ``--ckpt_path`` writes into a new ``version_N`` folder (Lightning's
    CSV logger would delete the old folder's metrics.csv if it reopened it), and
    Lightning's ``ModelCheckpoint`` drops its best score when its folder has changed: the
    resumed run then called its first epoch's model the best even when an earlier epoch
    of the run had scored better. Here the record (scores and paths of the best models)
    comes back whatever the folder (the files where the record names them, relative to
    the directory the recording run ran in, or beside the checkpoint being resumed),
    limited to the files that still exist and to ``save_top_k``, so "best" is the best
    of the whole run, also across several resumes. Lightning never deletes a file
    outside the callback's own folder, so the old folders' checkpoints stay where they
    are.
    """

    def _generate_state_key(self, **kwargs: Any) -> str:
        # stored under ModelCheckpoint's key, so that checkpoints written before this
        # class (and by Lightning's own callback) restore into it and the other way round
        return f"ModelCheckpoint{kwargs!r}"

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._run_trainer = trainer  # for the path of the checkpoint being restored

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # "The dirpath has changed ... won't be reloaded"
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        old = state_dict.get("dirpath")
        if self.monitor is None and state_dict.get("monitor") is None:
            # the latest state's record is the checkpoint being resumed, not the path the
            # resumed run wrote it to (relative to that run's directory: a run stopped
            # before its first epoch here named another run's last.ckpt to resume)
            # (as the trainer names it: Lightning then never deletes it as the previous
            # last checkpoint, also where it is the file this run writes)
            trainer = getattr(self, "_run_trainer", None)
            self.best_model_path = str(getattr(trainer, "ckpt_path", None) or "")
            self.best_k_models = {}
            self.last_model_path = ""
            return
        if old is None or self.monitor is None or state_dict.get("monitor") != self.monitor:
            return
        # the record is rebuilt from the files themselves: Lightning compares folder
        # names, and a relative name (the default) resumed from another directory names
        # another folder
        folders = self._old_folders(str(old))
        base = self._old_base(str(old))
        kept = {}
        recorded = state_dict.get("best_k_models") or {}
        for name, score in recorded.items():
            # where the record says, then beside the checkpoint being resumed (a run
            # resumed twice keeps its best in the first folders: the record names them)
            where = [Path(name)] if Path(name).is_absolute() else (
                [base / name] if base is not None else [])
            where += [f / Path(name).name for f in folders]
            found = next((p for p in where if p.is_file()), None)
            if found is not None:
                kept[_shown(found)] = score
        if not kept:  # gone, or not to be found: the resumed run starts its own record
            if recorded:
                warnings.warn(
                    f"the best checkpoints the resumed run recorded "
                    f"({', '.join(Path(n).name for n in recorded)}) are neither in {old} nor "
                    "beside the checkpoint being resumed nor where its record names them: "
                    "the best model is counted from this run's epochs on",
                    stacklevel=2,
                )
            self.best_k_models, self.best_model_path, self.best_model_score = {}, "", None
            self.kth_best_model_path = ""
            self.kth_value = torch.tensor(float("inf") if self.mode == "min" else float("-inf"))
            return
        better_first = sorted(kept, key=lambda p: float(kept[p]), reverse=self.mode == "max")
        if self.save_top_k > 0:  # a resume with a smaller save_top_k keeps the best k
            better_first = better_first[: self.save_top_k]
        self.best_k_models = {p: kept[p] for p in better_first}
        self.best_model_path = better_first[0]
        self.best_model_score = kept[better_first[0]]
        self.kth_best_model_path = better_first[-1]
        self.kth_value = kept[better_first[-1]]

    def _old_folders(self, old: str) -> list[Path]:
        """Where the resumed run's checkpoint folder may be now, in order: ``old`` itself
        when absolute, then the folder of the checkpoint being resumed (its best
        checkpoints lie beside its last.ckpt, also in a run folder moved or renamed). A
        relative ``old`` (Lightning keeps the logger's folder relative to the working
        directory of that run) is never read from the working directory, where another
        run's files of the same names may be."""
        folders = [Path(old)] if Path(old).is_absolute() else []
        resumed = self._resumed_folder()
        if resumed is not None:
            folders.append(resumed)
        return folders

    def _resumed_folder(self) -> Path | None:
        """The folder of the checkpoint being resumed (None before setup or without)."""
        trainer = getattr(self, "_run_trainer", None)
        resumed = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        return Path(resumed).resolve().parent if resumed else None

    def _old_base(self, old: str) -> Path | None:
        """The working directory of the run that wrote the checkpoint being resumed,
        where the relative paths of its record start: the checkpoint's folder less the
        relative ``old`` (its ``dirpath``), or None where they do not end alike (a
        folder renamed) or ``old`` is absolute."""
        folder, parts = self._resumed_folder(), Path(old).parts
        if folder is None or Path(old).is_absolute() or not parts or ".." in parts:
            return None
        if folder.parts[-len(parts):] != parts:
            return None
        return Path(*folder.parts[: -len(parts)])


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies under it (as Lightning
    shows the checkpoints it writes), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())
