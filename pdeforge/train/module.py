"""``OperatorModule``: any registry operator as a LightningModule, in physical units.

forward(x) = decode_out(operator(encode_in(x))): the per-channel normalisers are buffers of
the module, fitted on the training split only when training starts, so predictions,
losses, metrics and checkpoints are all in the dataset's physical units. The checkpoint
also carries (under ``"pdeforge"``) the operator's full constructor config and what the
data module knows about the data: problem, variables, grid coordinates, format version
and the generation config, so that the checkpoint alone can predict.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from pdeforge import __version__, operators
from pdeforge.datasets.grid import VERTEX
from pdeforge.datasets.torch_dataset import channel_blocks
from pdeforge.errors import PdeforgeError
from pdeforge.train.losses import LOSSES, RelativeLoss
from pdeforge.train.metrics import OperatorMetrics, grid_steps
from pdeforge.train.normalizer import ChannelNormalizer

SCHEDULERS = ("onecycle", "step", "cosine", "none")


class TrainingDivergedError(PdeforgeError, FloatingPointError):
    """The training loss became NaN or inf."""


class TrainingConfigError(PdeforgeError, ValueError):
    """An invalid training option (loss, scheduler, model arguments)."""


class OperatorModule(pl.LightningModule):
    """Train a registry operator.

    Args:
        model: registry name (``pdeforge.operators.available()``).
        model_kwargs: constructor arguments of the operator besides channels and dim.
        in_channels, out_channels, dim: set from the data module by ``pdeforge train``.
        loss: "l2" (relative L2) or "h1" (relative H1 on the data's physical grid), per
            sample and output channel, mean over both (:mod:`pdeforge.train.losses`).
        normalize: "gaussian" (per-channel unit Gaussian, inputs and outputs) or "none".
        lr, weight_decay: AdamW.
        scheduler: "onecycle" (over all training steps), "step" (every ``step_size``
            epochs times ``gamma``), "cosine" (to zero over max_epochs) or "none".
        step_size, gamma: StepLR settings.
        grid_shape: the training grid (set from the data module by ``pdeforge train``);
            POD-DeepONet's ``pod_shape`` defaults to it.
    """

    def __init__(
        self,
        model: str = "mgno",
        model_kwargs: dict[str, Any] | None = None,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 2,
        loss: str = "l2",
        normalize: str = "gaussian",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "onecycle",
        step_size: int = 100,
        gamma: float = 0.5,
        grid_shape: list[int] | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise TrainingConfigError(f"model.loss must be one of {LOSSES}, got {loss!r}")
        if scheduler not in SCHEDULERS:
            raise TrainingConfigError(
                f"model.scheduler must be one of {SCHEDULERS}, got {scheduler!r}"
            )
        if normalize not in ("gaussian", "none"):
            raise TrainingConfigError(
                f"model.normalize must be 'gaussian' or 'none', got {normalize!r}"
            )
        for key, value in (("lr", lr), ("gamma", gamma)):
            if not (math.isfinite(value) and value > 0):
                raise TrainingConfigError(f"model.{key} must be a positive number, got {value}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise TrainingConfigError(f"model.weight_decay must be >= 0, got {weight_decay}")
        if step_size < 1:
            raise TrainingConfigError(f"model.step_size must be >= 1, got {step_size}")
        model_kwargs = dict(model_kwargs or {})
        for reserved in ("in_channels", "out_channels", "dim"):
            if reserved in model_kwargs:
                raise TrainingConfigError(
                    f"model.model_kwargs must not set {reserved!r}: it comes from the data"
                )
        self.save_hyperparameters()
        if (model == "deeponet" and model_kwargs.get("pod_modes") is not None
                and model_kwargs.get("pod_shape") is None and grid_shape):
            model_kwargs["pod_shape"] = [int(n) for n in grid_shape]  # the outputs' grid
        self.operator = operators.build(
            model, in_channels=in_channels, out_channels=out_channels, dim=dim, **model_kwargs
        )
        self.in_norm = ChannelNormalizer(in_channels)
        self.out_norm = ChannelNormalizer(out_channels)
        self.data_info: dict[str, Any] = {}
        self._loss = RelativeLoss(loss, dim)
        self._test_ratio = 1.0  # test_subsample / subsample (setup)
        self.val_metrics = OperatorMetrics(out_channels, dim)
        self.test_metrics = OperatorMetrics(out_channels, dim)
        self._last_validation: dict[str, float] | None = None  # see on_validation_epoch_end
        # whether every training loss of the epoch so far was finite (a device tensor:
        # checked once an epoch, not synchronised at every step)
        self._loss_finite: torch.Tensor | None = None

    # -- model ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Physical inputs (B, C_in, *grid) -> physical outputs (B, C_out, *grid)."""
        if self.hparams.normalize == "gaussian":
            y = self.out_norm.decode(self.operator(self.in_norm.encode(x), **kwargs))
        else:
            y = self.operator(x, **kwargs)
        # masks live on the input grid: not for outputs at other query points (DeepONet)
        return y if kwargs else self.apply_masks(x, y)

    def mask_channels(self) -> list[tuple[int, int, int]]:
        """(first, stop) output channels and the input channel that is 1 where they are
        defined (an output's ``valid_where``, recorded in ``data_info["masks"]``)."""
        info = self.data_info
        masks = info.get("masks") or {}
        if not masks:
            return []
        channels = info.get("channels", {})
        ins = channel_blocks(info.get("inputs", []), channels)
        outs = channel_blocks(info.get("outputs", []), channels)
        return [(*outs[o], ins[i][0]) for o, i in masks.items() if o in outs and i in ins]

    def apply_masks(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y with each masked output multiplied by its mask input (0 where the output is
        not defined, e.g. thermal's slot): the loss, the metrics and the predictions then
        all see the outputs as the data store them there."""
        pairs = self.mask_channels()
        if not pairs:
            return y
        y = y.clone()
        for first, stop, channel in pairs:
            y[:, first:stop] = y[:, first:stop] * x[:, channel : channel + 1]
        return y

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is None:
            return
        self._check_data(datamodule)
        self.data_info = dict(datamodule.info)
        # the test split's own subsample: its steps are the training grid's times the ratio
        # (kept: loading a checkpoint after this sets the grid again, and it reset the
        # ratio to 1, so `train test --data.test_subsample` scored with the wrong steps)
        self._test_ratio = (getattr(datamodule, "test_subsample", None) or self.data_info.get(
            "subsample", 1)) / (self.data_info.get("subsample", 1) or 1)
        self._metrics_grid()
        normalize = (
            stage == "fit"
            and self.hparams.normalize == "gaussian"
            and not bool(self.in_norm.fitted)
        )
        pod = (
            stage == "fit"
            and getattr(self.operator, "pod", False)
            and not bool(self.operator.pod_fitted)
        )
        if not (normalize or pod):
            return
        # One pass over the training split only: validation and test data never reach the
        # statistics or the POD basis; only the outputs are kept, and only for POD.
        outputs = []
        for x, y in datamodule.training_batches():
            if normalize:
                self.in_norm.partial_fit(x)
                self.out_norm.partial_fit(y)
            if pod:
                outputs.append(y)
        if normalize:
            self.in_norm.finish()
            self.out_norm.finish()
        if pod:
            y = torch.cat(outputs)
            self.operator.fit_pod(
                self.out_norm.encode(y) if self.hparams.normalize == "gaussian" else y
            )

    def _check_data(self, datamodule: Any) -> None:
        got = (datamodule.in_channels, datamodule.out_channels, datamodule.dim)
        want = (self.hparams.in_channels, self.hparams.out_channels, self.hparams.dim)
        if got != want:
            raise TrainingConfigError(
                f"the data has (in_channels, out_channels, dim) = {got} but the model was built "
                f"for {want}; train a new model on this data or use data with the same variables"
            )

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        loss = self._loss(self(x), y)
        finite = torch.isfinite(loss.detach())
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0]
        )
        return loss

    def _stop_if_diverged(self) -> None:
        """Raise before the epoch's checkpoints are written (they are saved after validation
        and after this hook at the epoch's end) if a training loss was NaN or inf, so that
        last.ckpt and the best checkpoint keep the last finite state."""
        flag, self._loss_finite = self._loss_finite, None
        if flag is not None and not bool(flag):
            raise TrainingDivergedError(
                f"the training loss became NaN or inf in epoch {self.current_epoch}: lower "
                "--model.lr (or check the data for extreme values); the checkpoints of the "
                "epochs before are kept (--ckpt_path .../last.ckpt resumes from the last one)"
            )

    def on_validation_epoch_start(self) -> None:
        self._stop_if_diverged()  # a no-op outside fit: no training loss was seen

    def on_train_epoch_end(self) -> None:
        self._stop_if_diverged()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        pred = self(x)
        self.log(
            "val/loss", self._loss(pred, y), prog_bar=True,
            batch_size=x.shape[0], sync_dist=True,
        )
        self.val_metrics.update(pred, y)

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics.update_count:
            values = self.val_metrics.compute()
            rel_l2 = values.pop("rel_l2")
            # torchmetrics already reduced the state over processes: every rank holds the
            # same values, so sync_dist only confirms them (and keeps Lightning quiet).
            self.log_dict({f"val/{k}": v.float() for k, v in values.items()}, sync_dist=True)
            self.log("val/rel_l2", rel_l2.float(), prog_bar=True, sync_dist=True)
            if self._trainer is not None and not self.trainer.sanity_checking:
                # kept for on_save_checkpoint: the scores of the weights a checkpoint holds
                # (Lightning's callback state only has the run's best and top-k scores)
                self._last_validation = {
                    "global_step": int(self.global_step), "epoch": int(self.current_epoch),
                    "val/rel_l2": float(rel_l2),
                    **{f"val/{k}": float(v) for k, v in values.items() if v.numel() == 1},
                }
        self.val_metrics.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_metrics.update(self(x), y)

    def on_test_epoch_end(self) -> None:
        if self.test_metrics.update_count:
            values = self.test_metrics.compute()
            self.log_dict({f"test/{k}": v.float() for k, v in values.items()}, sync_dist=True)
        self.test_metrics.reset()

    # -- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimiser = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return optimiser
        if hp.scheduler == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimiser,
                max_lr=hp.lr,
                total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            )
            return {
                "optimizer": optimiser,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
        if hp.scheduler == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimiser, hp.step_size, hp.gamma)
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimiser, T_max=max(1, int(self.trainer.max_epochs or 1))
            )
        return {
            "optimizer": optimiser,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    def on_fit_start(self) -> None:
        # Lightning's model summary counts a complex weight (FNO's spectral weights) as one
        # parameter; pdeforge's count (Surrogate.info, benchmarks) counts real numbers
        from pytorch_lightning.utilities import rank_zero_info

        rank_zero_info(
            f"pdeforge: {self.operator.name} with {self.operator.count_parameters():,} "
            "trainable real numbers (a complex weight counts 2; Lightning's summary counts "
            "it once)"
        )

    def on_train_start(self) -> None:
        # Resuming with a larger max_epochs: OneCycle's schedule was sized for the old run
        # and would fail once it passed its end; stretch its final (annealing) phase.
        # The same when the steps per epoch changed (another batch size or dataset size):
        # the schedule must reach the steps already taken plus the epochs still to run.
        from pytorch_lightning.utilities import rank_zero_warn

        trainer = self.trainer
        per_epoch = trainer.estimated_stepping_batches / max(1, trainer.max_epochs or 1)
        remaining = max(0, (trainer.max_epochs or 1) - trainer.current_epoch)
        # a run resumed from within an epoch (val_check_interval < 1) finishes that epoch's
        # batches, not a whole epoch more: counted whole, the schedule was stretched past
        # the run's end and the rate never annealed (review)
        # (Lightning's word on where it restarted: the batch counter of an epoch-end
        # checkpoint still holds that epoch's batches, fewer than this run's where the
        # data grew)
        loop = getattr(trainer, "fit_loop", None)
        partial = loop is not None and getattr(loop, "restarted_mid_epoch", False) and (
            not loop.epoch_loop.batch_progress.is_last_batch)
        batches = loop.epoch_loop.batch_progress.current.completed if partial else 0
        if 0 < batches < (trainer.num_training_batches or 0):
            remaining -= batches / trainer.num_training_batches
        needed = int(math.ceil(trainer.global_step + remaining * per_epoch - 1e-9)) + 1
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and (
                scheduler.total_steps < needed
            ):
                scheduler.total_steps = needed
                scheduler._schedule_phases[-1]["end_step"] = float(needed - 1)
            # a smaller max_epochs than the resumed schedule was planned for: the run
            # ends with the rate mid-schedule (warming up, or not annealed); said, since
            # the README says a larger max_epochs is the change a resume takes
            planned = None
            if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and (
                    scheduler.total_steps > needed + per_epoch):
                planned = f"{scheduler.total_steps} steps (about " \
                          f"{scheduler.total_steps / max(per_epoch, 1):.0f} epochs)"
            if (isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
                    and trainer.max_epochs is not None
                    and trainer.max_epochs < scheduler.T_max):
                planned = f"{scheduler.T_max} epochs"
            if planned and trainer.global_step > 0:
                rate = scheduler.get_last_lr()[0]
                rank_zero_warn(
                    f"resumed with --trainer.max_epochs {trainer.max_epochs} at "
                    f"{per_epoch:.0f} steps an epoch, but the checkpoint's "
                    f"{type(scheduler).__name__} schedule was planned over {planned}: the "
                    f"run ends mid-schedule (learning rate now {rate:.3g}, not annealed). "
                    "Another max_epochs, batch size or training-set size than the run's "
                    "changes this; to finish the planned schedule resume with the run's "
                    "settings, or start a new run with these"
                )
            # likewise the cosine schedule (restored with the old run's T_max = max_epochs):
            # past T_max its rate would climb back up, and its recursive form cannot leave
            # a rate of 0 (where a finished run ends): it continues as a schedule planned
            # for the new max_epochs, the rate set to that schedule's at this epoch
            epochs = trainer.max_epochs
            if (isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
                    and epochs is not None and epochs > scheduler.T_max):
                scheduler.T_max = int(epochs)
                phase = (1 + math.cos(math.pi * scheduler.last_epoch / scheduler.T_max)) / 2
                for group in scheduler.optimizer.param_groups:
                    low = scheduler.eta_min
                    group["lr"] = low + (group["initial_lr"] - low) * phase
                scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]

    def _require_trained(self, stage: str) -> None:
        if self.hparams.normalize == "gaussian" and not bool(self.out_norm.fitted):
            raise TrainingConfigError(
                f"`{stage}` got an untrained model: pass the weights with "
                "--ckpt_path runs/.../checkpoints/best-....ckpt (or last.ckpt)"
            )

    def on_test_start(self) -> None:
        self._require_trained("test")

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":
            self._require_trained("validate")

    # -- checkpoint -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pdeforge"] = {
            "pdeforge_version": __version__,
            "operator": self.operator.name,
            "operator_config": self.operator.config,
            "normalize": self.hparams.normalize,
            "data": self.data_info,
        }
        last = self._last_validation
        if last is not None and last["global_step"] == checkpoint.get("global_step"):
            checkpoint["pdeforge"]["validation"] = dict(last)  # of exactly these weights

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("pdeforge", {})
        name, config = saved.get("operator"), saved.get("operator_config")
        before, now = dict(saved.get("data", {})), self.data_info
        # `train test` / `validate` with a checkpoint may score it on any data (another
        # grid too); it keeps recording the data it was trained on
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if before and now and fitting:
            # resuming continues a run on its own data: the weights and the normalisers
            # fitted to that data come back, so other data would be trained on with stale
            # normalisers and the checkpoint labelled with the old data (it was)
            def grid(info: dict) -> list[int]:
                return [len(info.get("coords", {}).get(d, [])) for d in info.get("grid_dims", [])]

            changed = [
                f"{key}: {before.get(key)} -> {now.get(key)}"
                for key in ("problem", "inputs", "outputs", "grid_dims", "channels")
                if before.get(key) != now.get(key)
            ] + ([f"grid: {grid(before)} -> {grid(now)}"] if grid(before) != grid(now) else [])
            if changed:
                raise TrainingConfigError(
                    f"the checkpoint was trained on other data ({'; '.join(changed)}); "
                    "--ckpt_path resumes a run on the data it was trained on (its "
                    f"files: {before.get('files')}). Train on the new data without --ckpt_path"
                )
            other = _other_samples(before, now)
            split = _split_changes(before, now)
            if split and not other:
                # the same samples split another way: samples the run has trained on would
                # be validated on (and its best score compared across validation sets)
                raise TrainingConfigError(
                    f"the checkpoint's run split its data otherwise ({'; '.join(split)}): "
                    "resumed on the same data, its validation set would then hold samples "
                    "it has trained on. Resume with the split it was trained with "
                    f"(--data.split '{before['split']}' --data.split_seed "
                    f"{before['split_seed']}), or start a new run without --ckpt_path")
            # the same kind of data: the run's record of its data becomes this run's, with
            # the files of its earlier parts kept where they were other data
            if other:
                warnings.warn(
                    f"resuming on other data of the same kind ({now.get('files')}) than the "
                    f"checkpoint was trained on ({before.get('files')}): training continues "
                    "with the normalisers fitted to the earlier data, and the checkpoint "
                    "records both (data.earlier_files)",
                    stacklevel=2,
                )
                earlier = [*before.get("earlier_files", []), *before.get("files", [])]
                now = {**now, "earlier_files": list(dict.fromkeys(earlier))}
            elif before.get("earlier_files"):
                now = {**now, "earlier_files": before["earlier_files"]}
            before = now
        # (after the data: other data change the channel counts, and the data is the cause)
        if name is not None and (name, config) != (self.operator.name, self.operator.config):
            raise TrainingConfigError(
                f"the checkpoint holds a {name} model {config} but this run builds "
                f"{self.operator.name} {self.operator.config}; resume with the config the "
                "checkpoint was trained with, or start without --ckpt_path"
            )
        testing = self._trainer is not None and self.trainer.state.fn == "test"
        if before and now and testing and not _other_samples(before, now):
            split = _split_changes(before, now)
            if split:  # (evaluate warns likewise about a training file)
                warnings.warn(
                    f"testing the checkpoint on its own data split otherwise ({'; '.join(split)}): "
                    "the test split holds samples it trained on, so the metrics are not a "
                    f"test error; test with its split (--data.split '{before['split']}' "
                    f"--data.split_seed {before['split_seed']})", stacklevel=2)
        self.data_info = before
        self._metrics_grid()
        if isinstance(checkpoint.get("state_dict"), dict):  # (an earlier pdeforge's names)
            keys = list(checkpoint["state_dict"])
            dropped = self.operator.upgrade_state_dict(checkpoint["state_dict"], "operator.")
            if dropped:
                self._drop_optimizer_slots(checkpoint, keys, dropped)
        self._check_state(checkpoint.get("state_dict"))

    def _drop_optimizer_slots(self, checkpoint: dict[str, Any], keys: list[str],
                              dropped: list[str]) -> None:
        """Take the weights an upgrade dropped out of the checkpoint's optimizer state, so
        that a run resumed from it goes on (torch refused it: "a parameter group that
        doesn't match the size of optimizer's group"). The optimizer holds one group of
        every parameter in the module's order (:meth:`configure_optimizers`), which is the
        order of the parameters among the state dict's ``keys`` (buffers left out)."""
        names = [n for n, _ in self.named_parameters()]
        params = set(names) | set(dropped)
        saved = [k for k in keys if k in params]  # the saved optimizer's order
        index = {n: i for i, n in enumerate(names)}
        for opt in checkpoint.get("optimizer_states") or []:
            groups = opt.get("param_groups") or []
            if len(groups) != 1 or len(groups[0].get("params", ())) != len(saved):
                continue  # not the layout pdeforge saves: left for torch to judge
            old_ids, state = groups[0]["params"], opt.get("state", {})
            opt["state"] = {index[name]: state[i] for name, i in zip(saved, old_ids, strict=True)
                            if name in index and i in state}
            groups[0]["params"] = list(range(len(names)))

    def _metrics_grid(self) -> None:
        """Give the metrics the data's physical grid steps, periodic and vertex axes
        (rel_h1, fRMSE); the test split's steps are ``_test_ratio`` times the others'
        (``test_subsample`` / ``subsample``, set by :meth:`setup`)."""
        info = self.data_info
        dims = list(info.get("grid_dims", []))
        steps = grid_steps(info.get("coords", {}), dims)
        kinds = info.get("grid_kinds") or {}
        periodic = [d in info.get("periodic_dims", []) for d in dims]
        vertex = [kinds.get(d) == VERTEX for d in dims]
        if steps is not None and len(steps) == self.hparams.dim and all(h > 0 for h in steps):
            self._loss.set_grid(steps, periodic)
            self.val_metrics.set_grid(steps, periodic, vertex)
            self.test_metrics.set_grid([h * self._test_ratio for h in steps], periodic,
                                       vertex)

    def _check_state(self, state: Any) -> None:
        """Raise a :class:`~pdeforge.train.checkpoint.CheckpointError` naming the tensors of
        a checkpoint's state dict that this module does not have, lacks or holds in other
        shapes (torch's own error is a long list deep inside Lightning's loading)."""
        from pdeforge.train.checkpoint import CheckpointError

        if not isinstance(state, dict):
            raise CheckpointError("the checkpoint has no state_dict of tensors")
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [
            f"{k} {tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else 'not a tensor'}"
            f" (model: {tuple(own[k].shape)})"
            for k in own
            if k in state and (not isinstance(state[k], torch.Tensor)
                               or state[k].shape != own[k].shape)
        ]
        if missing or unexpected or shapes:
            parts = [f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}"
                     for label, items in (("missing", missing), ("unexpected", unexpected),
                                          ("other shapes", shapes)) if items]
            raise CheckpointError(
                f"the checkpoint's weights do not fit the {self.operator.name} model it "
                f"describes ({'; '.join(parts)}): the file was altered or written by another "
                "program; use a checkpoint written by `pdeforge train fit`"
            )


def _split_changes(before: dict, now: dict) -> list[str]:
    """The changes of split that change which samples train: the seed and the training
    fraction (validation takes the next ones, the test fraction the rest)."""
    return [f"data.{key} {before[key]} -> {now[key]}" for key in ("split", "split_seed")
            if key in before and key in now and (
                before[key] != now[key] if key == "split_seed"
                else before[key][:1] != now[key][:1])]


def _other_samples(before: dict, now: dict) -> bool:
    """Whether two records of a run's data (``data_info``) are other samples: other
    generation configs (seed included), or, for files that carry none, other files."""
    if len(before.get("files", [])) != len(now.get("files", [])):
        return True  # files added or left out: other samples, another split
    configs = before.get("generation_config"), now.get("generation_config")
    if any(configs):
        return configs[0] != configs[1]
    resolved = [sorted(str(Path(f).resolve()) for f in info.get("files", []))
                for info in (before, now)]
    return resolved[0] != resolved[1]
