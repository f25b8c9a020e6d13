"""Stopping and resuming `pdeforge train fit`: exit codes, what is kept, what a resume
may change, and the best model of the whole run."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from pdeforge.datasets.runner import generate
from pdeforge.train.checkpoint import read_checkpoint
from pdeforge.train.cli import checkpoint_paths, epochs_done
from tests.conftest import run_cli, run_clis
from tests.train.test_errors import MGNO, TRAIN_FIT, pdeforge_train
from tests.train.test_fit import fit

STOPPER = """
    import os
    import signal

    from pytorch_lightning import Callback


    class StopAfter(Callback):
        '''Send this process a signal at the end of epoch ``epoch`` (after its
        checkpoints), or of that epoch's batch ``batch`` when one is given.'''

        def __init__(self, epoch: int = 1, signal_name: str = "SIGTERM", batch: int = -1):
            self.epoch, self.signal_name, self.batch = epoch, signal_name, batch

        def _stop(self):
            os.kill(os.getpid(), getattr(signal, self.signal_name))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == self.epoch and batch_idx == self.batch:
                self._stop()

        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == self.epoch and self.batch < 0:
                self._stop()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signal_name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_stops_training_with_its_exit_status_and_says_how_to_resume(
    signal_name, code, darcy16, tmp_path
):
    (tmp_path / "stopper.py").write_text(textwrap.dedent(STOPPER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = pdeforge_train(
        f"--data.path={darcy16}", "--trainer.max_epochs=5",
        "--trainer.callbacks+=stopper.StopAfter",
        "--trainer.callbacks.epoch=1", f"--trainer.callbacks.signal_name={signal_name}",
        cwd=tmp_path, env=env,
    )
    # a batch scheduler must not take the stopped run for a finished one (Lightning
    # exits 0 on SIGTERM)
    assert proc.returncode == code, proc.stderr[-2000:]
    last = Path("runs/pdeforge/version_0/checkpoints/last.ckpt")
    assert (tmp_path / last).is_file()
    assert f"--ckpt_path {last}" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # and the command it names continues the run
    proc = pdeforge_train(f"--data.path={darcy16}", "--trainer.max_epochs=3",
                          f"--ckpt_path={last}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_checkpoint(tmp_path / "runs/pdeforge/version_1/checkpoints/last.ckpt")[
        "epoch"] == 2


def _val_scores(run_dir: Path, key: str) -> dict[str, float]:
    with open(run_dir / "metrics.csv") as f:
        return {r["epoch"]: float(r[key]) for r in csv.DictReader(f) if r.get(key)}


@pytest.mark.parametrize("mode", ["min", "max"])
def test_the_best_checkpoint_is_the_best_of_the_whole_resumed_run(
    mode, darcy16, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    first = fit(MGNO, darcy16, "--trainer.max_epochs=2", f"--checkpoint.mode={mode}")
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    second = fit(MGNO, darcy16, "--trainer.max_epochs=4", f"--checkpoint.mode={mode}",
                 f"--ckpt_path={last}")
    key = second.trainer.checkpoint_callback.monitor  # (the recipe's: val/rel_h1)
    scores = {**_val_scores(Path(first.trainer.log_dir), key),
              **_val_scores(Path(second.trainer.log_dir), key)}
    assert sorted(scores) == ["0", "1", "2", "3"]
    pick = min if mode == "min" else max
    epoch = pick(scores, key=scores.get)
    best, _ = checkpoint_paths(second.trainer)
    assert Path(best).is_file() and f"best-epoch={int(epoch):03d}" in best, (best, scores)
    callback = second.trainer.checkpoint_callback
    assert float(callback.best_model_score) == pytest.approx(scores[epoch], rel=1e-6)
    # the earlier folder's checkpoints are all still there
    assert (Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt").is_file()


def test_a_resume_may_not_change_the_training_settings_or_train_nothing(
    darcy16, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    first = fit(MGNO, darcy16, "--trainer.max_epochs=2")
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    changed = (
        ("--model.lr=0.05", "model.lr 0.0005 -> 0.05"),
        ("--model.loss=l2", "model.loss 'h1' -> 'l2'"),
        ("--model.scheduler=cosine", "model.scheduler 'onecycle' -> 'cosine'"),
    )
    train = (*TRAIN_FIT, f"--data.path={darcy16}", f"--ckpt_path={last}")
    # the same samples split otherwise: trained-on samples would be validated on
    resplit = (("--data.split=[0.6,0.2,0.2]", "data.split [0.8, 0.1, 0.1] -> [0.6, 0.2, 0.2]"),
               ("--data.split_seed=1", "data.split_seed 0 -> 1"))
    procs = run_clis(
        [(*train, "--trainer.max_epochs=4", option) for option, _ in changed + resplit]
        + [(*train, f"--trainer.max_epochs={epochs}") for epochs in (1, 2)]
        # another test fraction leaves training and validation as they were: taken
        + [(*train, "--trainer.max_epochs=3", "--data.split=[0.8,0.1,0.05]")],
        cwd=tmp_path,
    )
    assert procs.pop().returncode == 0
    for (_, message), proc in zip(changed, procs[:3], strict=True):
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in proc.stderr and "optimiser and schedule" in proc.stderr
    for (_, message), proc in zip(resplit, procs[3:5], strict=True):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert message in proc.stderr and "samples it has trained on" in proc.stderr
    for proc in procs[5:]:
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "has already trained 2 epoch(s)" in proc.stderr
        assert "--trainer.max_epochs above 2" in proc.stderr
    # no folder is left behind by the refused runs (version_1: the accepted one)
    assert sorted(p.name for p in Path("runs/pdeforge").iterdir()) == ["version_0",
                                                                       "version_1"]


def test_resuming_on_other_samples_warns_and_records_both(darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = fit(MGNO, darcy16, "--trainer.max_epochs=1")
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    moved = tmp_path / "moved.nc"  # the same samples under another name: no warning
    shutil.copy(darcy16, moved)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cli = fit(MGNO, moved, "--trainer.max_epochs=2", f"--ckpt_path={last}")
    assert not [w for w in record if "other data of the same kind" in str(w.message)]
    assert "earlier_files" not in cli.model.data_info
    other = tmp_path / "other.nc"  # other samples of the same problem and grid
    generate("darcy", 24, other, resolution=16, seed=99, shard_size=24, progress=False)
    before = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match="other data of the same kind"):
        cli = fit(MGNO, other, "--trainer.max_epochs=3", f"--ckpt_path={before}")
    info = read_checkpoint(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt")[
        "pdeforge"]["data"]
    assert info["files"] == [str(other)]
    assert info["earlier_files"] == [str(moved)]
    # a file added to the same data: other samples, another split
    before = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match="other data of the same kind"):
        fit(MGNO, f"[{other},{moved}]", "--trainer.max_epochs=4", f"--ckpt_path={before}")


def test_a_stopped_run_that_finished_no_epoch_says_so(darcy16, tmp_path):
    (tmp_path / "stopper.py").write_text(textwrap.dedent(STOPPER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = pdeforge_train(f"--data.path={darcy16}", "--trainer.callbacks+=stopper.StopAfter",
                          "--trainer.callbacks.epoch=0", "--trainer.callbacks.batch=1",
                          cwd=tmp_path, env=env)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert "no epoch had finished" in proc.stderr


def test_a_resumed_run_repeats_the_uninterrupted_one(darcy16, tmp_path, monkeypatch):
    """Same weights at the end: the batches of every epoch come from (seed, epoch), not
    from the global RNG that a resume re-seeds (it differed by 1.4e-3 before)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "halt.py").write_text(textwrap.dedent("""
        from pytorch_lightning import Callback


        class HaltAfter(Callback):
            def __init__(self, epoch: int = 1):
                self.epoch = epoch

            def on_train_epoch_end(self, trainer, pl_module):
                if trainer.current_epoch == self.epoch:
                    trainer.should_stop = True
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    whole = fit(MGNO, darcy16, "--trainer.max_epochs=4", "--trainer.default_root_dir=whole",
                "--trainer.logger.init_args.save_dir=whole")
    # the same run (same schedule), stopped after epoch 1, then resumed
    part = fit(MGNO, darcy16, "--trainer.max_epochs=4", "--trainer.callbacks+=halt.HaltAfter",
               "--trainer.default_root_dir=part", "--trainer.logger.init_args.save_dir=part")
    assert part.trainer.current_epoch == 2
    last = Path(part.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = fit(MGNO, darcy16, "--trainer.max_epochs=4", "--trainer.default_root_dir=part",
                  "--trainer.logger.init_args.save_dir=part", f"--ckpt_path={last}")
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_epochs_done_counts_finished_epochs_only():
    def loops(processed):
        return {"fit_loop": {"epoch_progress": {"current": {"processed": processed}}}}

    assert epochs_done({"epoch": 3, "loops": loops(4)}) == 4  # written at epoch 3's end
    assert epochs_done({"epoch": 9, "loops": loops(9)}) == 9  # during epoch 9: unfinished
    assert epochs_done({"epoch": 3}) == 4  # no loop state: an epoch-end checkpoint
    assert epochs_done({}) is None


def test_the_best_record_is_found_from_another_directory_and_trimmed_to_save_top_k(
    darcy16, tmp_path, monkeypatch
):
    (tmp_path / "first").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    first = fit(MGNO, darcy16, "--trainer.max_epochs=3", "--checkpoint.save_top_k=-1")
    run = tmp_path / "first" / first.trainer.log_dir
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 3
    key = first.trainer.checkpoint_callback.monitor  # (the recipe's: val/rel_h1)
    scores = _val_scores(run, key)
    monkeypatch.chdir(tmp_path)  # resumed from elsewhere: the record's paths are relative
    second = fit(MGNO, darcy16, "--trainer.max_epochs=4",
                 f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    scores.update(_val_scores(Path(second.trainer.log_dir), key))
    callback = second.trainer.checkpoint_callback
    epoch = min(scores, key=scores.get)
    assert f"best-epoch={int(epoch):03d}" in callback.best_model_path
    assert Path(callback.best_model_path).is_file()
    assert len(callback.best_k_models) == 1  # save_top_k is 1 again
    # the first run's folder moved and renamed: its best files are found beside last.ckpt
    shutil.move(tmp_path / "first", tmp_path / "moved")
    moved = tmp_path / "moved" / first.trainer.log_dir / "checkpoints"
    scores = _val_scores(moved.parent, key)
    third = fit(MGNO, darcy16, "--trainer.max_epochs=4", f"--ckpt_path={moved / 'last.ckpt'}")
    scores["3"] = _val_scores(Path(third.trainer.log_dir), key)["3"]
    epoch = min(scores, key=scores.get)
    best = third.trainer.checkpoint_callback.best_model_path
    assert f"best-epoch={int(epoch):03d}" in best and Path(best).is_file()
    assert ("moved" in best) == (epoch != "3")
    # only last.ckpt copied elsewhere: the record is not to be found, and the user is told
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(moved / "last.ckpt", alone / "last.ckpt")
    with pytest.warns(UserWarning, match="neither in .* nor beside the checkpoint"):
        fit(MGNO, darcy16, "--trainer.max_epochs=4", f"--ckpt_path={alone / 'last.ckpt'}")


def test_a_cosine_schedule_resumed_with_more_epochs_anneals_to_the_new_end(
    darcy16, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    first = fit(MGNO, darcy16, "--trainer.max_epochs=2", "--model.scheduler=cosine")
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert first.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    second = fit(MGNO, darcy16, "--trainer.max_epochs=4", "--model.scheduler=cosine",
                 f"--ckpt_path={last}")
    scheduler = second.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.T_max == 4
    # the rate went on along the 4-epoch schedule (from lr/2 at epoch 2 to 0 at 4): the
    # weights moved; kept at the 2-epoch schedule's 0 (its recursive form), they would not
    assert second.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    before = read_checkpoint(last)["state_dict"]
    moved = max(float((p.detach() - before[f"operator.{k}"]).abs().max())
                for k, p in second.model.operator.named_parameters())
    assert moved > 1e-4


def test_a_run_resumed_twice_keeps_the_best_of_its_first_folder(tmp_path, monkeypatch):
    """version_0 -> version_1 (its best, epoch 2) -> version_6 -> version_7: the record
    version_6's last.ckpt carries names version_1's file, which lies neither in version_6
    nor beside its last.ckpt; it was dropped with a warning and a worse epoch became the
    best. The record's relative paths start where that run ran: the resumed checkpoint's
    folder less its dirpath."""
    from types import SimpleNamespace

    from pdeforge.train.callbacks import RunCheckpoint

    work = tmp_path / "work"
    runs = work / "runs" / "pdeforge"
    for version in ("version_1", "version_6", "version_7"):
        (runs / version / "checkpoints").mkdir(parents=True)
    best = runs / "version_1" / "checkpoints" / "best-epoch=002.ckpt"
    best.write_bytes(b"weights")
    resumed = runs / "version_6" / "checkpoints" / "last.ckpt"
    resumed.write_bytes(b"weights")
    state = {
        "monitor": "val/rel_l2", "dirpath": "runs/pdeforge/version_6/checkpoints",
        "best_model_score": torch.tensor(0.516),
        "best_model_path": "runs/pdeforge/version_1/checkpoints/best-epoch=002.ckpt",
        "best_k_models": {"runs/pdeforge/version_1/checkpoints/best-epoch=002.ckpt":
                          torch.tensor(0.516)},
        "kth_best_model_path": "runs/pdeforge/version_1/checkpoints/best-epoch=002.ckpt",
        "kth_value": torch.tensor(0.516), "last_model_path": str(resumed),
        "current_score": torch.tensor(0.9),
    }
    monkeypatch.chdir(tmp_path)  # resumed from another directory than the runs'
    callback = RunCheckpoint(dirpath=runs / "version_7" / "checkpoints",
                             monitor="val/rel_l2", mode="min")
    callback._run_trainer = SimpleNamespace(ckpt_path=str(resumed))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.load_state_dict(state)
    assert Path(callback.best_model_path).resolve() == best.resolve()
    assert float(callback.best_model_score) == pytest.approx(0.516)
    # the record's own folder renamed: not found there nor beside last.ckpt, and said so
    best.unlink()
    callback = RunCheckpoint(dirpath=runs / "version_7" / "checkpoints",
                             monitor="val/rel_l2", mode="min")
    callback._run_trainer = SimpleNamespace(ckpt_path=str(resumed))
    with pytest.warns(UserWarning, match="neither in .* nor beside the checkpoint"):
        callback.load_state_dict(state)
    assert callback.best_model_path == ""


def test_the_last_state_of_a_resumed_run_is_the_checkpoint_it_resumed_until_it_writes_one(
        tmp_path, monkeypatch):
    """The last-state callback restored the path the resumed run had written, relative
    to that run's directory: a run resumed from elsewhere and stopped before its first
    epoch ended advised resuming another run's last.ckpt (review)."""
    from types import SimpleNamespace

    from pdeforge.train.callbacks import RunCheckpoint

    monkeypatch.chdir(tmp_path)
    resumed = "../expA/runs/pdeforge/version_0/checkpoints/last.ckpt"
    state = {"monitor": None, "dirpath": "runs/pdeforge/version_0/checkpoints",
             "best_model_score": None,
             "best_model_path": "runs/pdeforge/version_0/checkpoints/last.ckpt",
             "best_k_models": {}, "kth_best_model_path": "", "kth_value": torch.tensor(0.0),
             "last_model_path": "", "current_score": None}
    callback = RunCheckpoint(dirpath=tmp_path / "runs/pdeforge/version_1/checkpoints",
                             monitor=None, filename="last")
    callback._run_trainer = SimpleNamespace(ckpt_path=resumed)
    callback.load_state_dict(state)
    assert callback.best_model_path == resumed
    assert checkpoint_paths(SimpleNamespace(checkpoint_callbacks=[callback]))[1] == resumed


def test_a_run_without_a_logger_never_replaces_nor_deletes_what_its_folder_held(
        darcy16, tmp_path):
    """--trainer.logger false runs in --trainer.default_root_dir itself: a second run
    there replaced the first's last.ckpt (its resume point) and config.yaml, and a run
    stopped before its first epoch deleted the whole folder, a recipe in it too (review)."""
    (tmp_path / "stopper.py").write_text(textwrap.dedent(STOPPER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    alone = ("--trainer.logger=false", "--trainer.default_root_dir=ov", f"--data.path={darcy16}")
    proc = pdeforge_train(*alone, "--trainer.max_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = tmp_path / "ov" / "checkpoints" / "last.ckpt"
    kept = last.read_bytes(), (tmp_path / "ov" / "config.yaml").read_bytes()
    proc = pdeforge_train(*alone, "--trainer.max_epochs=1", "--model.lr=1e-6", cwd=tmp_path)
    assert proc.returncode == 2 and "ov/checkpoints holds another run's checkpoints" in \
        proc.stderr, proc.stderr[-2000:]
    assert "--ckpt_path ov/checkpoints/last.ckpt" in proc.stderr
    assert (last.read_bytes(), (tmp_path / "ov" / "config.yaml").read_bytes()) == kept
    # continuing that run there is what the folder is for
    proc = pdeforge_train(*alone, "--trainer.max_epochs=2", "--ckpt_path=ov/checkpoints/last.ckpt",
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_checkpoint(last)["epoch"] == 1
    # a recipe folder: its config.yaml is the user's
    recipe = tmp_path / "exp" / "config.yaml"
    recipe.parent.mkdir()
    shutil.copy(MGNO, recipe)
    proc = pdeforge_train("--trainer.logger=false", "--trainer.default_root_dir=exp",
                          f"--data.path={darcy16}", "--trainer.callbacks+=stopper.StopAfter",
                          "--trainer.callbacks.epoch=0", "--trainer.callbacks.batch=1",
                          cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "would write its config over exp/config.yaml" in proc.stderr
    assert recipe.read_bytes() == Path(MGNO).read_bytes()


def test_a_failed_run_removes_only_what_it_wrote():
    import tempfile
    from types import SimpleNamespace

    from pdeforge.train.cli import discard_empty_run, run_folder_state

    with tempfile.TemporaryDirectory() as tmp:
        mine = Path(tmp) / "mine"
        mine.mkdir()
        (mine / "config.yaml").write_text("a recipe")
        trainer = SimpleNamespace(log_dir=str(mine), is_global_zero=True)
        before = run_folder_state(trainer)
        (mine / "hparams.yaml").write_text("written by the run")
        discard_empty_run(trainer, before)
        assert sorted(p.name for p in mine.iterdir()) == ["config.yaml"]
        new = Path(tmp) / "new"
        trainer = SimpleNamespace(log_dir=str(new), is_global_zero=True)
        before = run_folder_state(trainer)
        new.mkdir()
        (new / "config.yaml").write_text("written by the run")
        discard_empty_run(trainer, before)
        assert not new.exists()


def test_ckpt_path_last_is_the_newest_runs_and_other_keywords_are_refused(darcy16, tmp_path):
    """Lightning looked for 'last' in the new run's own empty folder: the run started over
    from epoch 0 with a warning only; 'best' and 'hpc' ended in a traceback (review)."""
    proc = pdeforge_train(f"--data.path={darcy16}", "--trainer.max_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = tmp_path / "runs" / "pdeforge"
    proc = pdeforge_train(f"--data.path={darcy16}", "--trainer.max_epochs=2",
                          "--ckpt_path=last", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--ckpt_path last is runs/pdeforge/version_0/checkpoints/last.ckpt" in proc.stderr
    rows = list(csv.DictReader(open(runs / "version_1" / "metrics.csv")))
    assert {r["epoch"] for r in rows if r.get("val/rel_l2")} == {"1"}  # resumed, not redone
    for word in ("best", "hpc"):
        proc = pdeforge_train(f"--data.path={darcy16}", f"--ckpt_path={word}", cwd=tmp_path)
        assert proc.returncode == 2 and "give a checkpoint file" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = pdeforge_train(f"--data.path={darcy16}", "--ckpt_path=last", cwd=tmp_path / "runs")
    assert proc.returncode == 2 and "--ckpt_path last: no last.ckpt in" in proc.stderr
    # a run folder: the checkpoints in it are named, not "does not exist"
    proc = pdeforge_train(f"--data.path={darcy16}", f"--ckpt_path={runs / 'version_0'}",
                          cwd=tmp_path)
    assert proc.returncode == 2 and "is a folder" in proc.stderr and "last.ckpt" in proc.stderr
    # an output folder that is a file: one line before any work
    (tmp_path / "taken").write_text("")
    proc = pdeforge_train(f"--data.path={darcy16}", "--trainer.default_root_dir=taken",
                          cwd=tmp_path)
    assert proc.returncode == 2 and "exists and is not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_run_resumed_from_within_an_epoch_ends_its_schedule_where_the_uninterrupted_did(
        darcy16, tmp_path):
    """OneCycle's total was stretched by a whole epoch where the resumed run finished
    only part of one: the rate never annealed (review: 2.65e-5 at the end against 2e-9)."""
    (tmp_path / "stopper.py").write_text(textwrap.dedent(STOPPER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    common = (f"--data.path={darcy16}", "--trainer.max_epochs=3",
              "--trainer.val_check_interval=0.5")
    assert pdeforge_train(*common, "--trainer.default_root_dir=whole",
                          cwd=tmp_path).returncode == 0
    proc = pdeforge_train(*common, "--trainer.default_root_dir=part",
                          "--trainer.callbacks+=stopper.StopAfter", "--trainer.callbacks.epoch=1",
                          "--trainer.callbacks.batch=3", cwd=tmp_path, env=env)
    assert proc.returncode == 143, proc.stderr[-2000:]
    stopped = tmp_path / "part/pdeforge/version_0/checkpoints/last.ckpt"
    assert 0 < epochs_done(read_checkpoint(stopped)) < 3
    proc = pdeforge_train(*common, "--trainer.default_root_dir=part", f"--ckpt_path={stopped}",
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    whole = read_checkpoint(tmp_path / "whole/pdeforge/version_0/checkpoints/last.ckpt")
    resumed = read_checkpoint(tmp_path / "part/pdeforge/version_1/checkpoints/last.ckpt")
    assert resumed["global_step"] == whole["global_step"]
    assert (resumed["lr_schedulers"][0]["total_steps"]
            == whole["lr_schedulers"][0]["total_steps"])
    lr = [c["optimizer_states"][0]["param_groups"][0]["lr"] for c in (whole, resumed)]
    assert lr[1] == pytest.approx(lr[0], rel=1e-6)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
def test_sigterm_to_the_process_group_with_loader_workers_stops_as_for_sigterm(
        darcy16, tmp_path):
    """A batch scheduler signals the whole group: the DataLoader workers died first and
    the run ended in torch's 'DataLoader worker ... killed by signal' (exit 1, no resume
    advice). The real command, in a session of its own (not the tests' fork server)."""
    import subprocess
    import time

    args = [sys.executable, "-m", "pdeforge", *map(str, TRAIN_FIT), f"--data.path={darcy16}",
            "--trainer.max_epochs=500", "--data.num_workers=2"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    last = tmp_path / "runs/pdeforge/version_0/checkpoints/last.ckpt"
    try:
        deadline = time.monotonic() + 240
        while not last.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert last.is_file(), "no epoch finished"
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "--ckpt_path" in err, err[-2000:]


def test_runs_with_fixed_checkpoint_folders_resume_and_are_protected(darcy16, tmp_path):
    """Review of the refusal above: a fit with a fixed --checkpoint.dirpath could no
    longer be resumed (its last.ckpt lies in the run's version folder); --ckpt_path last
    ignored --last_checkpoint.dirpath; test/validate with --trainer.logger false wrote
    over a recipe's config.yaml; validate into a blocked folder gave a traceback; a failed
    logger-false fit left the folder it had made."""
    data = f"--data.path={darcy16}"
    proc = pdeforge_train(data, "--trainer.max_epochs=1", "--checkpoint.dirpath=ck",
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = "runs/pdeforge/version_0/checkpoints/last.ckpt"
    proc = pdeforge_train(data, "--trainer.max_epochs=2", "--checkpoint.dirpath=ck",
                          f"--ckpt_path={last}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = pdeforge_train(data, "--trainer.max_epochs=1", "--checkpoint.dirpath=ck",
                          cwd=tmp_path)  # a new run would replace the best of that run
    assert proc.returncode == 2 and "ck holds another run's checkpoints" in proc.stderr
    assert "choose another --checkpoint.dirpath" in proc.stderr
    # --ckpt_path last is the last checkpoint's own folder where one is given
    both = ("--checkpoint.dirpath=kept", "--last_checkpoint.dirpath=kept")
    assert pdeforge_train(data, "--trainer.max_epochs=1", *both, cwd=tmp_path).returncode == 0
    proc = pdeforge_train(data, "--trainer.max_epochs=2", *both, "--ckpt_path=last",
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--ckpt_path last is kept/last.ckpt" in proc.stderr
    assert read_checkpoint(tmp_path / "kept" / "last.ckpt")["epoch"] == 1
    # test with logger false into a recipe's folder
    recipe = tmp_path / "exp" / "config.yaml"
    recipe.parent.mkdir()
    shutil.copy(MGNO, recipe)
    proc = run_cli("train", "test", "--config", recipe, "--preset", "tiny", data,
                   "--trainer.logger=false", "--trainer.default_root_dir=exp",
                   f"--ckpt_path={last}", cwd=tmp_path)
    assert proc.returncode == 2 and "would write its config over exp/config.yaml" in proc.stderr
    assert recipe.read_bytes() == Path(MGNO).read_bytes()
    # validate into a folder a file blocks: one line
    (tmp_path / "blocked").write_text("")
    proc = run_cli("train", "validate", "--config", MGNO, "--preset", "tiny", data,
                   "--trainer.default_root_dir=blocked/sub", f"--ckpt_path={last}",
                   cwd=tmp_path)
    assert proc.returncode == 2 and "cannot be created" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # a failed logger-false fit removes the folder it made
    proc = pdeforge_train(data, "--data.inputs=[nosuch]", "--trainer.logger=false",
                          "--trainer.default_root_dir=fresh", cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "fresh").exists()


def test_the_refusals_leave_symlinks_other_names_and_made_folders_right(darcy16, tmp_path):
    """Review of the refusals: a checkpoint anywhere under the folder passed for the
    folder's own (a recipe's config.yaml was written over); a symlinked checkpoints
    folder was refused its own resume; --ckpt_path last ignored --last_checkpoint.filename;
    a refused or failed run left the (nested) folders it made."""
    data = f"--data.path={darcy16}"
    recipe = tmp_path / "exp" / "config.yaml"
    recipe.parent.mkdir()
    shutil.copy(MGNO, recipe)
    proc = pdeforge_train(data, "--trainer.max_epochs=1", "--trainer.default_root_dir=exp",
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("train", "test", "--config", recipe, "--preset", "tiny", data,
                   "--trainer.logger=false", "--trainer.default_root_dir=exp",
                   "--ckpt_path=exp/pdeforge/version_0/checkpoints/last.ckpt", cwd=tmp_path)
    assert proc.returncode == 2 and "would write its config over exp/config.yaml" in proc.stderr
    assert recipe.read_bytes() == Path(MGNO).read_bytes()
    # a symlinked checkpoints folder, another name for the last checkpoint
    (tmp_path / "scratch").mkdir()
    (tmp_path / "sym").mkdir()
    (tmp_path / "sym" / "checkpoints").symlink_to(tmp_path / "scratch")
    alone = (data, "--trainer.logger=false", "--trainer.default_root_dir=sym",
             "--last_checkpoint.filename=final")
    assert pdeforge_train(*alone, "--trainer.max_epochs=1", cwd=tmp_path).returncode == 0
    assert (tmp_path / "scratch" / "final.ckpt").is_file()
    for epochs, resume in ((2, "--ckpt_path=sym/checkpoints/final.ckpt"),
                           (3, "--ckpt_path=last")):
        proc = pdeforge_train(*alone, f"--trainer.max_epochs={epochs}", resume, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_checkpoint(tmp_path / "scratch" / "final.ckpt")["epoch"] == 2
    # refused or failed: the folders the command made go again
    proc = pdeforge_train(data, "--checkpoint.dirpath=sym/checkpoints",
                          "--trainer.default_root_dir=made/here", cwd=tmp_path)
    assert proc.returncode == 2 and "holds another run's checkpoints" in proc.stderr
    proc = pdeforge_train(data, "--data.inputs=[nosuch]", "--trainer.default_root_dir=n1/n2/n3",
                          cwd=tmp_path)
    assert proc.returncode == 2
    proc = pdeforge_train(data, "--data.split=[0.0,0.5,0.5]", "--trainer.default_root_dir=m1/m2",
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not any((tmp_path / name).exists() for name in ("made", "n1", "m1"))
