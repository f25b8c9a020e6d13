"""`pdeforge train fit` on every shipped config: loss decreases, reload, resume, evaluate."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pdeforge import Surrogate
from pdeforge.datasets.readers import open_dataset
from pdeforge.datasets.runner import generate
from pdeforge.train.checkpoint import load_module
from pdeforge.train.cli import run_cli
from pdeforge.train.evaluate import evaluate
from pdeforge.train.metrics import METRIC_NAMES
from tests.conftest import run_cli as run_pdeforge
from tests.train.conftest import CONFIGS

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def epoch_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_epoch")]
    return [float(r["train/loss_epoch"]) for r in rows]


def fit(config: Path, data: Path, *extra: str):
    return run_cli(
        ["fit", "--config", str(config), "--preset", "tiny", f"--data.path={data}", *QUIET, *extra]
    )


def test_every_model_has_a_shipped_darcy_config():
    import yaml

    assert {c.stem for c in CONFIGS} == {
        f"darcy_{m}" for m in ("deeponet", "fno", "lsm", "mgno", "mgtfno")
    }
    # the best checkpoint is chosen by the loss's own measure: with the H1 loss,
    # val/rel_l2 rose 0.52 -> 0.77 while val/rel_h1 fell 0.98 -> 0.25 and "best" was an
    # untrained epoch (review)
    for config in CONFIGS:
        recipe = yaml.safe_load(config.read_text())
        monitor = (recipe.get("checkpoint") or {}).get("monitor", "val/rel_l2")
        assert monitor == {"h1": "val/rel_h1", "l2": "val/rel_l2"}[recipe["model"]["loss"]]


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_tiny_fit_learns_and_the_checkpoint_predicts_the_same(
    config, darcy16, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cli = fit(config, darcy16)
    run_dir = Path(cli.trainer.log_dir)
    losses = epoch_losses(run_dir)
    assert len(losses) == 2 and losses[1] < losses[0], losses
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file() and list((run_dir / "checkpoints").glob("best-*.ckpt"))
    module, checkpoint = load_module(last)
    assert checkpoint["pdeforge"]["operator"] == cli.model.operator.name
    assert checkpoint["pdeforge"]["data"]["inputs"] == ["coefficient"]
    x = torch.stack([cli.datamodule.train_dataset[i][0] for i in range(3)])
    cli.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), cli.model(x))


@pytest.mark.parametrize("stem", ["darcy_fno", "darcy_mgno"])  # StepLR, OneCycle
def test_resume_from_last_checkpoint_continues_training(stem, darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = next(c for c in CONFIGS if c.stem == stem)
    first = fit(config, darcy16)
    steps = first.trainer.global_step
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    second = fit(config, darcy16, "--trainer.max_epochs=3", f"--ckpt_path={last}")
    assert second.trainer.current_epoch == 3
    assert second.trainer.global_step == steps * 3 // 2
    # the normaliser came back from the checkpoint, not refitted on anything else
    torch.testing.assert_close(second.model.in_norm.mean, first.model.in_norm.mean)
    # fewer steps per epoch (a larger batch) and more epochs: the schedule stretches
    third = fit(
        config,
        darcy16,
        "--trainer.max_epochs=4",
        "--data.batch_size=8",
        f"--ckpt_path={Path(second.trainer.log_dir) / 'checkpoints' / 'last.ckpt'}",
    )
    assert third.trainer.current_epoch == 4


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_resuming_with_fewer_epochs_than_the_schedule_was_planned_for_is_said(scheduler):
    # a run planned over 200 epochs, stopped at 10 and resumed with max_epochs 13: it
    # ended at step 169 with OneCycle's rate still warming up, and nothing was said
    from types import SimpleNamespace

    from pdeforge.train.module import OperatorModule

    module = OperatorModule(model="deeponet", model_kwargs={}, dim=1,
                            scheduler=scheduler)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    per_epoch, planned = 13, 200
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3,
                                                 total_steps=planned * per_epoch)
             if scheduler == "onecycle" else
             torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=planned))
    for _ in range(10 * per_epoch if scheduler == "onecycle" else 10):
        opt.step()
        sched.step()

    def trainer(max_epochs):
        return SimpleNamespace(
            estimated_stepping_batches=max_epochs * per_epoch, max_epochs=max_epochs,
            current_epoch=10, global_step=10 * per_epoch,
            lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])

    module._trainer = trainer(13)
    with pytest.warns(UserWarning, match=r"resumed with --trainer.max_epochs 13 at .* steps "
                                         r"an epoch, but .* planned over .*ends mid-schedule"):
        module.on_train_start()
    module._trainer = trainer(planned)  # the planned length: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.on_train_start()


def test_last_checkpoint_is_the_last_state_even_after_an_epoch_that_did_not_improve(
    darcy16, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config = next(c for c in CONFIGS if c.stem == "darcy_fno")
    # mode=max: as the validation error falls, no epoch after the first is a new "best";
    # Lightning's own save_last then left last.ckpt at the first epoch
    cli = fit(config, darcy16, "--trainer.max_epochs=3", "--checkpoint.mode=max")
    saved = torch.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt",
                       weights_only=False, map_location="cpu")
    assert (saved["epoch"], saved["global_step"]) == (2, cli.trainer.global_step)
    assert cli.trainer.checkpoint_callback.monitor == "val/rel_l2"  # the best-model callback


def test_normaliser_sees_the_training_split_only(darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = next(c for c in CONFIGS if c.stem == "darcy_mgno")
    cli = fit(config, darcy16, "--trainer.max_epochs=1", "--data.split=[0.5, 0.25, 0.25]")
    train = torch.stack(
        [cli.datamodule.train_dataset[i][0] for i in range(len(cli.datamodule.train_dataset))]
    ).double()
    everything = torch.stack(
        [
            cli.datamodule._train.base.dataset[i][0]
            for i in range(len(cli.datamodule._train.base.dataset))
        ]
    ).double()
    mean, std = cli.model.in_norm.mean.double(), cli.model.in_norm.std.double()
    torch.testing.assert_close(mean, train.mean(dim=(0, 2, 3)), rtol=1e-5, atol=0)
    torch.testing.assert_close(std, train.std(dim=(0, 2, 3), unbiased=False), rtol=1e-5, atol=0)
    assert not torch.allclose(mean, everything.mean(dim=(0, 2, 3)), rtol=1e-4)


def test_several_training_files_and_the_test_subcommand(darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = next(c for c in CONFIGS if c.stem == "darcy_deeponet")
    cli = fit(config, darcy16, "--trainer.max_epochs=1", f"--data.path=[{darcy16}, {darcy16}]")
    assert cli.datamodule.split_sizes["train"] == round(0.8 * 48)
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    tested = run_cli(
        [
            "test",
            "--config",
            str(config),
            "--preset",
            "tiny",
            *QUIET,
            f"--data.path={darcy16}",
            f"--ckpt_path={last}",
        ]
    )
    assert "test/rel_l2" in tested.trainer.callback_metrics


def test_train_test_at_another_subsample_scores_with_its_own_steps(darcy32, tmp_path,
                                                                   monkeypatch):
    """Loading the checkpoint after setup reset the test split's steps to the training
    grid's: `train test --data.test_subsample 1` of a subsample-2 model read rel_h1 0.946
    against evaluate's 0.984 and fRMSE 4x off (review)."""
    monkeypatch.chdir(tmp_path)
    config = next(c for c in CONFIGS if c.stem == "darcy_fno")
    cli = fit(config, darcy32, "--trainer.max_epochs=1", "--data.subsample=2",
              "--data.split=[0.5, 0.25, 0.25]")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    tested = run_cli(["test", "--config", str(config), "--preset", "tiny", *QUIET,
                      f"--data.path={darcy32}", "--data.subsample=2",
                      "--data.split=[0.5, 0.25, 0.25]", "--data.test_subsample=1",
                      f"--ckpt_path={last}"])
    assert tested.model.test_metrics.steps == pytest.approx([1 / 32, 1 / 32])
    assert tested.model.val_metrics.steps == pytest.approx([1 / 16, 1 / 16])


def test_files_of_a_run_on_other_grids_are_refused(darcy16, darcy32):
    """A validation or test file at another resolution was scored zero-shot with the
    training grid's steps, silently; two training files of two sizes failed in torch's
    collate (review)."""
    from pdeforge.train.data import OperatorDataModule, TrainingDataError

    for kwargs in ({"val_path": darcy32}, {"test_path": darcy32},
                   {"path": [darcy16, darcy32]}):
        args = {"path": darcy16, **kwargs}
        with pytest.raises(TrainingDataError, match=r"darcy32.nc is on a 32x32 grid, .*"
                                                     r"darcy16.nc on 16x16: the files of a "
                                                     r"run .* share one grid"):
            OperatorDataModule(**args)


def test_a_validation_file_stored_on_other_axes_is_read_on_the_training_files(
        darcy16, tmp_path):
    # it was refused ("on grid ('y', 'x') vs ('x', 'y')") though the format lets files
    # order their spatial dims as they like
    import xarray as xr

    from pdeforge.train.data import OperatorDataModule

    swapped = tmp_path / "yx.nc"
    with xr.open_dataset(darcy16, engine="h5netcdf", decode_cf=False) as ds:
        ds.transpose("sample", "y", "x", ...).to_netcdf(swapped, engine="h5netcdf")
    dm = OperatorDataModule(darcy16, val_path=swapped, batch_size=4)
    dm.setup("fit")
    assert dm.grid_dims == ("x", "y")
    with open_dataset(darcy16) as ds:
        expected = ds.coefficient.values
    x, _ = dm._val[2]
    np.testing.assert_array_equal(x[0].numpy(), expected[2].astype(np.float32))


def test_a_coarser_evaluation_of_the_training_grid_is_not_another_domain(
        darcy32, tmp_path, monkeypatch):
    # a model trained at 32 cells evaluated at 16 on its own data: the even stride's
    # shifted points were also reported as data on another domain ("check the units and
    # the domain of the inputs"), besides the warning about the shift
    monkeypatch.chdir(tmp_path)
    config = next(c for c in CONFIGS if c.stem == "darcy_fno")
    cli = fit(config, darcy32, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match="keeps points shifted by 0.5 fine spacings") as said:
        evaluate(last, darcy32, resolution=16, progress=False)
    assert not [str(w.message) for w in said if "span" in str(w.message)]


def test_evaluate_reports_every_metric_and_another_resolution(
    darcy16, darcy32, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config = next(c for c in CONFIGS if c.stem == "darcy_mgno")
    cli = fit(config, darcy16, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match="zero-shot"):
        native = evaluate(last, darcy32, progress=False)
    with pytest.warns(UserWarning, match=r"cell-centred grid .* by 2 keeps points shifted by "
                      r"0.5 fine spacings") as said:  # (2j + 1/2) / 32 is not (j + 1/2) / 16
        coarse = evaluate(last, darcy32, resolution=16, progress=False)
    assert not [str(w.message) for w in said if "span" in str(w.message)]
    assert (native["grid_mode"], coarse["grid_mode"]) == ("zero-shot", "training grid")
    # resampled: the model on its training grid, the inputs and predictions interpolated,
    # as Surrogate.predict(..., resample=True) makes them
    resampled = evaluate(last, darcy32, resample=True, progress=False)
    assert resampled["grid_mode"] == "resampled"
    with open_dataset(darcy32) as ds:
        pred = Surrogate.load(last, device="cpu").predict(
            ds[["coefficient"]], resample=True).solution.values
        truth = ds.solution.values
    per_sample = [np.linalg.norm(p - t) / np.linalg.norm(t) for p, t in zip(pred, truth,
                                                                           strict=True)]
    assert resampled["rel_l2"] == pytest.approx(np.mean(per_sample), rel=1e-4)
    assert resampled["rel_l2"] != pytest.approx(native["rel_l2"], rel=1e-3)
    # a file of another problem with the same variable names: evaluated, with a warning
    other = tmp_path / "relabelled.nc"
    shutil.copy(darcy32, other)
    with h5py.File(other, "r+") as f:
        f.attrs["problem"] = "poisson"
    with pytest.warns(UserWarning, match="'poisson' data and the checkpoint was trained on "
                                         "'darcy'"):
        assert evaluate(last, other, resolution=16, progress=False)["problem"] == "poisson"
    for result in (native, coarse):
        assert set(METRIC_NAMES) | {"n_samples"} <= set(result)
        assert result["n_samples"] == 8 and result["trained_resolution"] == [16, 16]
    assert native["resolution"] == [32, 32] and coarse["resolution"] == [16, 16]
    assert native["frmse_high"] is not None and coarse["frmse_high"] is None  # 16 < 24 points
    proc = run_pdeforge("evaluate", last, "--data", darcy32, "--resolution", "16")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rel_l2"] == pytest.approx(coarse["rel_l2"], rel=1e-6)
    assert "evaluate: 100%" in proc.stderr  # the bar, which --no-progress hides
    quiet = run_pdeforge("evaluate", last, "--data", darcy32, "--no-progress")
    assert quiet.returncode == 0 and "evaluate:" not in quiet.stderr, quiet.stderr
    quiet = run_pdeforge("query", last, "--input", darcy32, "--out", tmp_path / "q.nc",
                         "--no-progress")
    assert quiet.returncode == 0 and "predict:" not in quiet.stderr, quiet.stderr
    # an odd stride keeps the coarse grid's cell centres (it started at the first cell,
    # one fine cell off them, without a warning): 48 cells by 3 from cell 1
    darcy48 = tmp_path / "darcy48.nc"
    generate("darcy", 4, darcy48, resolution=48, seed=12, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by3 = evaluate(last, darcy48, resolution=16, progress=False)
    with open_dataset(darcy48) as ds:
        kept = ds.isel(x=slice(1, None, 3), y=slice(1, None, 3)).load()
    np.testing.assert_allclose(kept.x.values, (np.arange(16) + 0.5) / 16, atol=1e-12)
    pred = Surrogate.load(last, device="cpu").predict(kept[["coefficient"]]).solution.values
    truth = kept.solution.values
    manual = np.mean([np.linalg.norm(p - t) / np.linalg.norm(t) for p, t in zip(pred, truth,
                                                                                strict=True)])
    assert by3["grid_mode"] == "training grid"
    assert by3["rel_l2"] == pytest.approx(manual, rel=1e-4)


def test_a_nan_training_loss_stops_the_fit_and_keeps_the_finite_checkpoints(
    darcy16, tmp_path, monkeypatch
):
    """A loss that turns NaN in the second epoch (here forced) stops the fit with a clear
    error before that epoch's checkpoints are written: last.ckpt keeps epoch 0's finite
    weights."""
    from pdeforge.train.module import OperatorModule, TrainingDivergedError

    monkeypatch.chdir(tmp_path)
    forward = OperatorModule.forward

    def poisoned(self, x, **kwargs):
        out = forward(self, x, **kwargs)
        return out * float("nan") if self.training and self.current_epoch >= 1 else out

    monkeypatch.setattr(OperatorModule, "forward", poisoned)
    config = next(c for c in CONFIGS if c.stem == "darcy_fno")
    with pytest.raises(TrainingDivergedError, match="NaN or inf in epoch 1"):
        fit(config, darcy16, "--trainer.max_epochs=3")
    (last,) = Path("runs").glob("pdeforge/version_*/checkpoints/last.ckpt")
    saved = torch.load(last, weights_only=False, map_location="cpu")
    assert saved["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values()
               if torch.is_tensor(v) and v.is_floating_point())


def test_optimizer_flags_that_would_bypass_the_module_s_are_not_offered(darcy16, tmp_path,
                                                                         monkeypatch, capsys):
    """LightningCLI's --optimizer SGD replaced the module's AdamW and schedule behind the
    resume checks, and resuming without it failed on "betas" (review); a negative
    max_train dropped one sample silently."""
    from pdeforge.train.data import OperatorDataModule, TrainingDataError

    monkeypatch.chdir(tmp_path)
    config = next(c for c in CONFIGS if c.stem == "darcy_fno")
    with pytest.raises(SystemExit):
        fit(config, darcy16, "--optimizer=SGD")
    assert "unrecognized arguments: --optimizer=SGD" in capsys.readouterr().err
    with pytest.raises(TrainingDataError, match="data.max_train must be a positive integer"):
        OperatorDataModule(path=darcy16, max_train=-1)
