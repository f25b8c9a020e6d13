"""Lightning callbacks of ``pdeforge train``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose record of the best models survives a resumed run.

    A run resumed with ``--ckpt_path`` writes into a new ``version_N`` folder (Lightning's
    CSV logger would delete the old folder's metrics.csv if it reopened it), and
    Lightning's ``ModelCheckpoint`` drops its best score when its folder has changed: the
    resumed run then called its first epoch's model the best even when an earlier epoch
    of the run had scored better. Here the record (scores and paths of the best models)
    comes back whatever the folder, limited to the files that still exist, so "best" is
    the best of the whole run. Lightning never deletes a file outside the callback's own
    folder, so the old folder's checkpoints stay where they are.
    """

    def _generate_state_key(self, **kwargs: Any) -> str:
        # stored under ModelCheckpoint's key, so that checkpoints written before this
        # class (and by Lightning's own callback) restore into it and the other way round
        return f"ModelCheckpoint{kwargs!r}"

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # "The dirpath has changed ... won't be reloaded"
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        same_folder = state_dict.get("dirpath", self.dirpath) == self.dirpath
        if same_folder or self.monitor is None or state_dict.get("monitor") != self.monitor:
            return
        kept = {p: s for p, s in (state_dict.get("best_k_models") or {}).items()
                if Path(p).is_file()}
        if not kept:
            return  # the earlier files are gone: the resumed run starts its own record
        self.best_k_models = kept
        best = min if self.mode == "min" else max
        self.best_model_path = best(kept, key=lambda p: float(kept[p]))
        self.best_model_score = kept[self.best_model_path]
        self.kth_best_model_path = (max if self.mode == "min" else min)(
            kept, key=lambda p: float(kept[p]))
        self.kth_value = kept[self.kth_best_model_path]
