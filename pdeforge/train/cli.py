"""``pdeforge train fit|validate|test``: LightningCLI over OperatorModule/DataModule.

Every option of the module, the data module and the Trainer is a command-line flag or a
YAML key (``--config configs/darcy_mgno.yaml``). The data's channel counts and dimension
are linked into the model. ``--preset NAME`` appends a set of overrides after the config:

* ``cpu-small``: a few epochs on the CPU, so a shipped recipe finishes in minutes;
* ``tiny``: two epochs of a shrunken model, for tests and smoke runs.

Defaults: CSV logs and checkpoints under ``runs/`` (best by ``val/rel_l2`` and last), a
progress bar, seed 0, glibc's allocator tuned for CPU training (``pdeforge.runtime``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pdeforge.errors import Interrupted, PdeforgeError, Terminated


class _NoAdvert(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger ("Tip: ... litlogger"), which
    it prints at every fit: not a message about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


for _name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoAdvert())

TINY_MODEL_KWARGS: dict[str, dict[str, Any]] = {
    "mgno": {"channels": 8, "n_layers": 2, "levels": 3},
    "fno": {"n_modes": 8, "hidden_channels": 8, "n_layers": 2},
    "mgtfno": {"n_modes": 8, "hidden_channels": 8, "n_layers": 2, "levels": 1},
    "deeponet": {
        "basis": 16,
        "branch_layers": [32],
        "trunk_layers": [32, 32],
        "sensors": 16,
        "cnn_channels": [8, 8],
    },
    "lsm": {"width": 8, "n_stages": 2, "heads": 2, "patch_size": 2},
}

PRESETS: dict[str, list[str]] = {
    "cpu-small": ["--trainer.max_epochs=10", "--trainer.accelerator=cpu", "--trainer.devices=1"],
    "tiny": [
        "--trainer.max_epochs=2",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.log_every_n_steps=1",
        "--data.batch_size=4",
    ],
}


PRESET_HELP = (
    "Train, validate or test a pdeforge operator (LightningCLI). Besides every option below: "
    "--preset cpu-small (10 epochs on the CPU) or --preset tiny (2 epochs of a shrunken "
    "model), applied after --config and before your own flags. Checkpoints go to "
    "runs/pdeforge/version_N/checkpoints (best by val/rel_l2, and last). One model setting "
    "of a recipe: --model.model_kwargs.KEY=VALUE (a whole --model.model_kwargs {...} "
    "replaces the recipe's)."
)


class TrainCommandError(PdeforgeError, ValueError):
    """A ``pdeforge train`` command line that cannot run."""


def _config_value(args: Sequence[str], i: int) -> str | None:
    """The value of ``args[i]`` if it is a ``--config``/``-c`` flag, else None."""
    if args[i] in ("--config", "-c") and i + 1 < len(args):
        return args[i + 1]
    if args[i].startswith("--config="):
        return args[i].split("=", 1)[1]
    return None


def _config_model(args: Sequence[str]) -> str | None:
    """The model name from the command line's config files and flags (last one wins)."""
    name = None
    for i, arg in enumerate(args):
        value = _config_value(args, i)
        if value is not None:
            path = Path(value)
            if not path.is_file():
                raise _missing_config(value)
            section = _read_config(value).get("model")
            name = section.get("model", name) if isinstance(section, dict) else name
        if arg == "--model.model" and i + 1 < len(args):
            name = args[i + 1]
        elif arg.startswith("--model.model="):
            name = arg.split("=", 1)[1]
    return name


def expand_presets(args: Sequence[str]) -> list[str]:
    """Replace ``--preset NAME`` by its overrides.

    They are placed after the last ``--config`` (so they override the config files) and
    before every other flag (so the user's own flags override the preset).
    """
    args = list(args)
    presets, rest = [], []
    i = 0
    while i < len(args):
        if args[i] == "--preset" and i + 1 < len(args):
            presets.append(args[i + 1])
            i += 2
            continue
        if args[i].startswith("--preset="):
            presets.append(args[i].split("=", 1)[1])
        else:
            rest.append(args[i])
        i += 1
    extra: list[str] = []
    for preset in presets:
        if preset not in PRESETS:
            raise TrainCommandError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
        extra += PRESETS[preset]
        if preset == "tiny":
            model = _config_model(rest) or "mgno"
            extra += ["--model.model_kwargs", json.dumps(TINY_MODEL_KWARGS.get(model, {}))]
    if not extra:
        return rest
    at = 1 if rest and not rest[0].startswith("-") else 0  # after the subcommand
    for j, arg in enumerate(rest):
        if arg in ("--config", "-c"):
            at = j + 2
        elif arg.startswith("--config="):
            at = j + 1
    return rest[:at] + extra + rest[at:]


def _check_config_files(args: Sequence[str]) -> None:
    """A ``--config`` file that does not exist: one line naming the shipped recipes (the
    parser printed its whole usage first)."""
    args = list(args)
    for i in range(len(args)):
        path = _config_value(args, i)
        inline = path is not None and (path.lstrip().startswith(("{", "[")) or ":" in path)
        if path is None or inline:
            continue
        if not Path(path).is_file():
            raise _missing_config(path)
        _read_config(path)


def _read_config(path: str) -> dict:
    """The mapping a ``--config`` file holds; a file that is not YAML text (a dataset, a
    checkpoint, a typo) or not a mapping of sections is a :class:`TrainCommandError`."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TrainCommandError(
            f"config file {path!r} is not text (a dataset or checkpoint?); --config takes a "
            "YAML recipe such as configs/darcy_mgno.yaml, the data goes to --data.path"
        ) from None
    except yaml.YAMLError as exc:
        raise TrainCommandError(
            f"config file {path!r} is not valid YAML: {' '.join(str(exc).split())}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainCommandError(
            f"config file {path!r} holds a {type(data).__name__}, not a mapping of sections "
            "(model:, data:, trainer:); see configs/darcy_mgno.yaml"
        )
    return data


def _missing_config(path: str) -> TrainCommandError:
    """The error for a ``--config`` file that does not exist, naming the recipes."""
    shipped = sorted(p.name for p in Path("configs").glob("*.yaml"))
    return TrainCommandError(
        f"config file {path!r} does not exist"
        + (f"; the recipes here: {', '.join(f'configs/{n}' for n in shipped)}"
           if shipped else "; the shipped recipes are configs/darcy_<model>.yaml in the "
           "repository")
    )


def _warn_replaced_kwargs(args: Sequence[str]) -> None:
    """Warn when a ``--model.model_kwargs {...}`` on the command line drops keys that the
    config files set: a whole dict replaces the config's (jsonargparse), so a user changing
    one size silently got the model's defaults for the recipe's other settings."""
    config_kwargs: dict = {}
    for i, arg in enumerate(args):
        value = _config_value(args, i)
        if value is not None and Path(value).is_file():
            section = _read_config(value).get("model")
            given = section.get("model_kwargs") if isinstance(section, dict) else None
            config_kwargs = dict(given) if isinstance(given, dict) else config_kwargs
        elif arg == "--model.model_kwargs" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--model.model_kwargs="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if arg.startswith("--model.model_kwargs"):
            try:
                asked = yaml.safe_load(value)
            except yaml.YAMLError:
                continue  # the parser reports it
            if not isinstance(asked, dict):
                continue
            dropped = sorted(set(config_kwargs) - set(asked))
            if dropped:
                one = next(iter(asked), "channels")
                warnings.warn(
                    f"--model.model_kwargs {value} replaces the config's model_kwargs whole: "
                    f"{', '.join(f'{k}={config_kwargs[k]!r}' for k in dropped)} "
                    "fall back to the model's defaults; to change single settings and keep "
                    f"the recipe's others, give them one by one (--model.model_kwargs.{one}=...)",
                    stacklevel=2,
                )
            config_kwargs = asked


def train_main(args: Sequence[str]) -> int:
    """``pdeforge train ARGS``."""
    if list(args[:1]) == ["predict"]:  # LightningCLI's, which needs a predict loader
        raise TrainCommandError(
            "`pdeforge train predict` is not offered: predictions with a checkpoint are "
            "`pdeforge query CKPT --input FILE --out FILE` (or Surrogate.load(CKPT).predict)"
        )
    _check_config_files(args)
    _warn_replaced_kwargs(args)
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        cli = run_cli(args)
    except MisconfigurationException as exc:  # Lightning's word on a Trainer setting
        hint = ("torch finds no GPU here: --trainer.accelerator cpu, or auto to take a GPU "
                "where there is one" if "gpu" in str(exc).lower() else
                "a Trainer setting: see `pdeforge train fit --help`")
        raise TrainCommandError(f"{exc} ({hint})") from None
    if cli.subcommand == "fit" and cli.trainer.is_global_zero:
        best, last = checkpoint_paths(cli.trainer)
        print(f"checkpoints: best {best or '-'}; last {last or '-'}")
    return 0


def _variables_of(path) -> set[str]:
    """Names of the variables of the (first) dataset file ``path``; empty if unreadable
    (the data module then reports the file)."""
    import h5py

    first = path[0] if isinstance(path, list | tuple) and path else path
    try:
        with h5py.File(first, "r") as f:
            return set(f.keys())
    except (OSError, TypeError, ValueError):
        return set()


#: what a run writes before its first epoch: a run that failed holding only these is removed
RUN_PREAMBLE = frozenset({"config.yaml", "hparams.yaml"})


def _log_dir(trainer) -> Path | None:
    try:
        return Path(trainer.log_dir) if trainer is not None and trainer.log_dir else None
    except Exception:  # noqa: BLE001 - no logger, no folder
        return None


def run_folder_state(trainer, made: frozenset[Path] = frozenset()
                     ) -> tuple[Path, bool, frozenset[str]] | None:
    """(the run's folder, whether it existed, which of ``RUN_PREAMBLE`` it held) before
    the run: what :func:`discard_empty_run` may remove is only what the run wrote;
    ``made``: folders this command made before (its check of the output folder)."""
    log_dir = _log_dir(trainer)
    if log_dir is None:
        return None
    held = frozenset(n for n in RUN_PREAMBLE if (log_dir / n).is_file())
    return log_dir, log_dir.is_dir() and log_dir.resolve() not in made, held


def discard_empty_run(trainer, before: tuple[Path, bool, frozenset[str]] | None) -> None:
    """Remove what a run that failed before writing anything of its own (a refused
    resume, bad data found at setup) wrote, so that failed attempts do not leave
    version_N folders holding only the config; a folder with checkpoints or metrics
    stays. A folder that existed before the run (``--trainer.logger false`` runs in
    ``--trainer.default_root_dir`` itself) keeps what it held: it was deleted whole,
    the user's own files (a recipe's config.yaml) with it."""
    import shutil

    log_dir = _log_dir(trainer)
    if (log_dir is None or before is None or before[0] != log_dir or not log_dir.is_dir()
            or not trainer.is_global_zero or holds_run(log_dir)):
        return
    _, existed, held = before
    if not existed:
        shutil.rmtree(log_dir, ignore_errors=True)
        return
    for name in RUN_PREAMBLE - held:
        (log_dir / name).unlink(missing_ok=True)


def remove_empty_folders(folders) -> None:
    """Remove each of ``folders`` that is empty, the deepest first."""
    for folder in sorted({Path(f) for f in folders}, key=lambda f: len(f.parts),
                         reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _same_folder(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one folder, as written (a symlinked folder stays itself) or
    resolved."""
    return (Path(os.path.abspath(a)) == Path(os.path.abspath(b))
            or a.resolve() == b.resolve())


def refuse_replacing_a_run(trainer, ckpt_path: str | None, subcommand: str = "fit") -> None:
    """Refuse a new fit whose checkpoint folder holds checkpoints already, and any run
    whose run folder holds a config.yaml it would write over, unless it resumes a
    checkpoint of that folder. With the default logger every run has a new version_N
    folder; with ``--trainer.logger false`` a run writes into --trainer.default_root_dir
    itself (and a fixed ``--checkpoint.dirpath`` is shared by runs): the last run's
    last.ckpt (its resume point), a recipe's config.yaml were replaced. A resumed fit
    continues its run's checkpoints wherever they are."""
    log_dir = _log_dir(trainer)
    if log_dir is None or not trainer.is_global_zero:
        return
    no_logger = trainer.logger is None
    resumed = Path(ckpt_path) if ckpt_path else None
    folders = [Path(cb.dirpath) if cb.dirpath else log_dir / "checkpoints"
               for cb in trainer.checkpoint_callbacks]
    if subcommand == "fit" and resumed is None:
        for cb, folder in zip(trainer.checkpoint_callbacks, folders, strict=True):
            taken = sorted(str(p) for p in folder.glob("*.ckpt"))
            if not taken:
                continue
            shown = ", ".join(taken[:3]) + (f" and {len(taken) - 3} more"
                                            if len(taken) > 3 else "")
            last = next((p for p in taken if p.endswith("last.ckpt")), None)
            elsewhere = ("choose another --trainer.default_root_dir or keep the default "
                         "logger (a new version_N folder every run)" if cb.dirpath is None
                         else "choose another --checkpoint.dirpath (or leave it out: "
                         "checkpoints then go to the run's own folder)")
            raise TrainCommandError(
                f"{folder} holds another run's checkpoints ({shown}), which this run "
                f"would replace: {elsewhere}, or remove them"
                + (f"; to continue that run use --ckpt_path {last}" if last else ""))
    # (without a logger only: the CSV and TensorBoard loggers write into a new version
    # folder, and a logger of one fixed folder (wandb) rewrites its config every run)
    config = log_dir / "config.yaml"
    own = resumed is not None and any(_same_folder(resumed.parent, f) for f in folders)
    if no_logger and config.is_file() and not own:
        raise TrainCommandError(
            f"this run would write its config over {config} (a recipe of yours?): choose "
            "another --trainer.default_root_dir or keep the default logger (a new "
            "version_N folder every run), or move that file")


def newest_last_checkpoint(trainer_config: Any, last_config: Any = None) -> str:
    """``--ckpt_path last``: the last checkpoint in ``--last_checkpoint.dirpath`` where
    one is given, else the last.ckpt of the newest run (by time written) under the
    logger's folder (``<save_dir>/<name>/version_*/checkpoints``), or under
    ``<default_root_dir>/checkpoints`` without a logger."""
    last_config = last_config or {}
    name = f"{last_config.get('filename') or 'last'}.ckpt"
    if last_config.get("dirpath"):
        found = Path(str(last_config["dirpath"])) / name
        if not found.is_file():
            raise TrainCommandError(
                f"--ckpt_path last: no {name} in --last_checkpoint.dirpath "
                f"{last_config['dirpath']}; give the checkpoint file to resume")
        return str(found)
    trainer_config = trainer_config or {}
    root = Path(str(trainer_config.get("default_root_dir") or "runs"))
    logger = trainer_config.get("logger")
    args = getattr(logger, "init_args", None)
    if logger in (None, False) or args is None:
        where = [root / "checkpoints" / name]
        pattern = f"{root / 'checkpoints'}"
    else:
        save_dir = args.get("save_dir")
        save_dir = root if save_dir in (None, "runs") and str(root) != "runs" else Path(
            str(save_dir or "runs"))
        base = save_dir / str(args.get("name") or "")
        where = list(base.glob(f"version_*/checkpoints/{name}"))
        pattern = f"{base}/version_*/checkpoints"
    found = [p for p in where if p.is_file()]
    if not found:
        raise TrainCommandError(
            f"--ckpt_path last: no {name} in {pattern}; give the checkpoint file to "
            "resume (e.g. path/to/version_N/checkpoints/last.ckpt)")
    return str(max(found, key=lambda p: p.stat().st_mtime))


def holds_run(folder: Path) -> bool:
    """Whether a version folder holds more than what a run writes before its first epoch
    (``RUN_PREAMBLE``): checkpoints, metrics, anything else."""
    return any(not (p.name in RUN_PREAMBLE and p.parent == folder)
               for p in folder.rglob("*") if p.is_file())


#: OperatorModule settings a resumed run cannot change: LightningCLI would silently take
#: the checkpoint's values (with its optimiser and scheduler state) over the command's
RESUME_SETTINGS = ("loss", "normalize", "lr", "weight_decay", "scheduler")
STEP_SETTINGS = ("step_size", "gamma")  # only where the scheduler is "step"


def _check_resume(ckpt_path: str, checkpoint: dict, model: Any, trainer: Any) -> None:
    """Refuse a resumed ``fit`` whose training settings differ from the checkpoint's, or
    whose ``max_epochs`` leaves nothing to train."""
    saved = checkpoint.get("hyper_parameters", {})
    keys = RESUME_SETTINGS + (STEP_SETTINGS if saved.get("scheduler") == "step" else ())
    changed = [f"model.{k} {saved[k]!r} -> {model.get(k)!r}" for k in keys
               if k in saved and model.get(k) is not None and model.get(k) != saved[k]]
    if changed:
        raise TrainCommandError(
            f"--ckpt_path {ckpt_path} was trained with other settings ({'; '.join(changed)}): "
            "a resumed run continues the checkpoint's optimiser and schedule, so they cannot "
            "change. Resume with the config and options it was trained with, or start a new "
            "run without --ckpt_path"
        )
    done = epochs_done(checkpoint)
    max_epochs = trainer.get("max_epochs") if trainer is not None else None
    if done is not None and isinstance(max_epochs, int) and 0 <= max_epochs <= done:
        raise TrainCommandError(
            f"--ckpt_path {ckpt_path} has already trained {done} epoch(s) and "
            f"--trainer.max_epochs is {max_epochs}: nothing is left to train. Give "
            f"--trainer.max_epochs above {done} to train on"
        )


def epochs_done(checkpoint: dict) -> int | None:
    """Whole training epochs a checkpoint has finished: Lightning's count of processed
    epochs (a checkpoint written during epoch e, e.g. with val_check_interval < 1, has
    finished e), else ``epoch + 1`` (checkpoints written at an epoch's end); None if the
    checkpoint holds neither."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        epoch = checkpoint.get("epoch")
        return epoch + 1 if isinstance(epoch, int) else None


def interruption(exc: BaseException, trainer) -> Interrupted | None:
    """The :class:`Interrupted` error for a run stopped by Ctrl-C or SIGTERM, naming what
    it kept and how to resume; None for other exceptions.

    Lightning turns Ctrl-C during a run into ``sys.exit(1)`` and SIGTERM into a
    ``SystemExit`` without a code, whose exit status 0 a batch scheduler takes for
    success: the command exits 130 and 143 instead.
    """
    from pytorch_lightning.trainer.states import TrainerStatus
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if isinstance(exc, (SIGTERMException, Terminated)):  # Terminated: `pdeforge demo`'s
        what, code = "stopped by SIGTERM", 143
    elif isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, SystemExit) and exc.code == 1
        and trainer is not None and trainer.state.status == TrainerStatus.INTERRUPTED
    ):
        what, code = "interrupted", 130
    else:
        return None
    if trainer is None or trainer.state.fn != "fit":
        return Interrupted(what, exit_code=code)
    best, last = checkpoint_paths(trainer)
    finished = trainer.fit_loop.epoch_progress.current.processed
    if last and trainer.max_epochs is not None and 0 <= trainer.max_epochs <= finished:
        what += (f" after its last epoch had finished; kept: last {last}, best "
                 f"{best or '-'}")
    elif last:
        what += (f"; kept: last {last}, best {best or '-'}; to continue, run the same "
                 f"command with --ckpt_path {last}")
    else:
        what += "; no epoch had finished, so there is nothing to resume"
    return Interrupted(f"training {what}", exit_code=code)


def checkpoint_paths(trainer) -> tuple[str, str]:
    """(best, last) checkpoint paths of a fit ('' where none was written): the monitored
    callback's best, and the last state (the ``last_checkpoint`` callback, or Lightning's
    save_last where a user switched it on)."""
    best = last = ""
    for cb in trainer.checkpoint_callbacks:
        if cb.monitor is None:  # (the last state's, whatever --last_checkpoint.filename)
            last = cb.best_model_path or last
        else:
            best = best or cb.best_model_path
            last = last or getattr(cb, "last_model_path", "")
    return best, last


def run_cli(args: Sequence[str]):
    """Run LightningCLI with pdeforge's module, data module and defaults; return the CLI."""
    from pytorch_lightning.cli import LightningCLI

    from pdeforge.runtime import tune_cpu_allocator
    from pdeforge.train.callbacks import RunCheckpoint
    from pdeforge.train.data import OperatorDataModule
    from pdeforge.train.module import OperatorModule

    class PdeforgeCLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            # not `predict`, which `pdeforge train` refuses (query predicts): `train
            # --help` listed it among the subcommands
            subs = dict(LightningCLI.subcommands())
            subs.pop("predict", None)
            return subs

        def add_arguments_to_parser(self, parser) -> None:
            for key in ("in_channels", "out_channels", "dim"):
                parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
            parser.link_arguments("data.model_grid", "model.grid_shape", apply_on="instantiate")
            # Always checkpoint the best model (by validation relative L2) and the last one;
            # every setting stays an option: --checkpoint.monitor, --checkpoint.save_top_k ...
            parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
            # The last state goes to last.ckpt after every epoch from a callback of its own
            # (no monitor: the latest is kept). Lightning 2.6's save_last writes last.ckpt
            # only when a best-k checkpoint is written, so after an epoch that did not
            # improve, last.ckpt held the best epoch, and resuming from it repeated epochs.
            parser.add_lightning_class_args(RunCheckpoint, "last_checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": "val/rel_l2",
                    "checkpoint.mode": "min",
                    "checkpoint.save_last": False,
                    "checkpoint.filename": "best-{epoch:03d}",
                    "last_checkpoint.monitor": None,
                    "last_checkpoint.save_top_k": 1,
                    "last_checkpoint.filename": "last",
                    "last_checkpoint.enable_version_counter": False,
                }
            )

        def _parse_ckpt_path(self) -> None:
            # LightningCLI replaces the model's arguments by the checkpoint's; a checkpoint
            # of another architecture would silently change the model the user asked for.
            sub = self.config.get("subcommand")
            ckpt_path = self.config[sub].get("ckpt_path") if sub else None
            if ckpt_path == "last":  # the newest run's last.ckpt (Lightning's lookup is
                # in the new run's own, empty folder: it started over from epoch 0)
                ckpt_path = self.config[sub]["ckpt_path"] = newest_last_checkpoint(
                    self.config[sub].get("trainer"), self.config[sub].get("last_checkpoint"))
                print(f"pdeforge: --ckpt_path last is {ckpt_path}", file=sys.stderr)
            elif ckpt_path in ("best", "hpc", "registry"):
                raise TrainCommandError(
                    f"--ckpt_path {ckpt_path} names a checkpoint of a fit in the same "
                    "process (or a cluster's or a registry's), which `pdeforge train` never "
                    "has: give a checkpoint file (runs/pdeforge/version_N/checkpoints/"
                    "best-*.ckpt or last.ckpt), or --ckpt_path last for the newest run's "
                    "last.ckpt"
                )
            if ckpt_path and not Path(ckpt_path).exists():
                raise TrainCommandError(
                    f"--ckpt_path {ckpt_path} does not exist; checkpoints are written to "
                    "runs/pdeforge/version_*/checkpoints/ (last.ckpt, best-*.ckpt)"
                )
            if ckpt_path:
                from pdeforge.train.checkpoint import read_checkpoint

                # (a folder: read_checkpoint names the checkpoints in it)
                checkpoint = read_checkpoint(ckpt_path)
                saved = checkpoint.get("hyper_parameters", {})
                # with a checkpoint, data.inputs / data.outputs default to the variables it
                # was trained on, not to today's defaults (parameters became default inputs
                # after some checkpoints were written)
                data = self.config[sub]["data"]
                trained = (checkpoint.get("pdeforge") or {}).get("data") or {}
                present = _variables_of(data.get("path"))
                for key in ("inputs", "outputs"):
                    # (only where the data has them: other data is reported as such later)
                    if data.get(key) is None and trained.get(key) and set(trained[key]) <= present:
                        data[key] = list(trained[key])
                model = self.config[sub]["model"]
                asked = (model.get("model"), dict(model.get("model_kwargs") or {}))
                found = (saved.get("model"), dict(saved.get("model_kwargs") or {}))
                if asked != found:
                    raise TrainCommandError(
                        f"--ckpt_path {ckpt_path} holds a {found[0]} model {found[1]} but the "
                        f"config asks for {asked[0]} {asked[1]}; use the config the checkpoint "
                        "was trained with, or start without --ckpt_path"
                    )
                if sub == "fit":
                    _check_resume(ckpt_path, checkpoint, model, self.config[sub]["trainer"])
            super()._parse_ckpt_path()

        def before_instantiate_classes(self) -> None:
            # --trainer.default_root_dir moves the run; the default logger (whose save_dir
            # is where the checkpoints go) follows it unless a logger was given too
            sub = self.config.get("subcommand")
            trainer = (self.config[sub] if sub else self.config).get("trainer")
            root = trainer.get("default_root_dir") if trainer is not None else None
            logger = trainer.get("logger") if trainer is not None else None
            args = getattr(logger, "init_args", None)
            if (
                root not in (None, "runs")
                and str(getattr(logger, "class_path", "")).endswith("CSVLogger")
                and args is not None
                and args.get("save_dir") == "runs"
            ):
                args["save_dir"] = root
            if sub is not None:  # a folder the run cannot write: one line, before any work
                from pdeforge.errors import output_directory

                save_dir = args.get("save_dir") if args is not None else None
                folder = Path(str(save_dir or root or "runs"))
                made, up = [], folder.absolute()
                while not up.exists() and up != up.parent:  # (and the parents it makes)
                    made.append(up)
                    up = up.parent
                output_directory(folder, "--trainer.logger.init_args.save_dir" if save_dir
                                 not in (None, root, "runs") else
                                 "--trainer.default_root_dir")
                # (a run that fails before it wrote anything removes them again)
                self._made_folders = frozenset(f.resolve() for f in made)
            if sub == "fit" and args is not None and args.get("version") is not None:
                # a version given by hand: Lightning would reuse an existing run's folder,
                # deleting its metrics.csv and replacing its last.ckpt
                version = args["version"]
                folder = (Path(str(args.get("save_dir") or "runs")) / str(args.get("name") or "")
                          / (f"version_{version}" if isinstance(version, int) else str(version)))
                if folder.is_dir() and holds_run(folder):
                    raise TrainCommandError(
                        f"--trainer.logger.init_args.version {version}: {folder} holds a run "
                        "already, whose metrics and checkpoints this run would replace; "
                        "leave the version out (a new version_N), choose another, or remove "
                        "that folder; to continue that run use --ckpt_path "
                        f"{folder / 'checkpoints' / 'last.ckpt'}"
                    )

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except BaseException:  # (bad data found here: the folders made for the run
                # by before_instantiate_classes go again, where they are still empty)
                remove_empty_folders(getattr(self, "_made_folders", ()))
                raise

        def _run_subcommand(self, subcommand: str) -> None:
            made = getattr(self, "_made_folders", frozenset())
            before = run_folder_state(self.trainer, made)
            try:
                refuse_replacing_a_run(self.trainer, self.config[subcommand].get("ckpt_path"),
                                       subcommand)
                super()._run_subcommand(subcommand)
            except BaseException as exc:
                discard_empty_run(self.trainer, before)
                if made:  # the logger's own folders (runs/pdeforge) inside them too
                    log_dir = _log_dir(self.trainer)
                    inside = [f for f in (log_dir.absolute().parents if log_dir else [])
                              if any(f.resolve() == m or m in f.resolve().parents
                                     for m in made)]
                    remove_empty_folders([*inside, *made])
                interrupted = interruption(exc, self.trainer)
                if interrupted is not None:
                    raise interrupted from None
                raise

    tune_cpu_allocator()
    # `pdeforge train` hands LightningCLI its own argument list on purpose.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
    argv = expand_presets(args)
    from jsonargparse import lazy_instance
    from pytorch_lightning.loggers import CSVLogger

    return PdeforgeCLI(
        OperatorModule,
        OperatorDataModule,
        args=argv,
        seed_everything_default=0,
        # the module's --model.lr / --model.scheduler make the optimiser and schedule, and
        # resumes check them; LightningCLI's --optimizer / --lr_scheduler replaced them
        # behind those checks (and a resume without them then failed on "betas")
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "default_root_dir": "runs",
            "logger": lazy_instance(CSVLogger, save_dir="runs", name="pdeforge"),
        },
        parser_kwargs={
            "prog": "pdeforge train",
            "description": PRESET_HELP,
            **{sub: {"description": PRESET_HELP} for sub in ("fit", "validate", "test")},
        },
    )
