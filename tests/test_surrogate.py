"""Surrogate: physical units, coordinates, batching, compare(), query, bad input."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from pdeforge import Surrogate
from pdeforge.datasets.format import UNKNOWN_SEED
from pdeforge.datasets.readers import open_dataset
from pdeforge.surrogate import SurrogateInputError, resample_coordinate
from pdeforge.train.checkpoint import CheckpointError
from pdeforge.train.cli import run_cli
from pdeforge.train.evaluate import evaluate
from tests.conftest import run_cli as run_pdeforge
from tests.conftest import run_clis


@pytest.fixture(scope="module")
def trained(darcy16, tmp_path_factory):
    """A small MgNO trained for 3 epochs: (LightningCLI, checkpoint path)."""
    work = tmp_path_factory.mktemp("surrogate")
    cli = run_cli(
        [
            "fit",
            "--model.model=mgno",
            '--model.model_kwargs={"channels": 8, "n_layers": 2, "levels": 3}',
            f"--data.path={darcy16}",
            "--trainer.max_epochs=3",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--data.batch_size=4",
            f"--trainer.default_root_dir={work}",
            f"--trainer.logger.init_args.save_dir={work}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    return cli, Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def surrogate(trained):
    return Surrogate.load(trained[1], device="cpu")


@pytest.fixture(scope="module")
def data(darcy16):
    with open_dataset(darcy16) as ds:
        return ds.load()


def test_predictions_are_the_lightning_modules_in_physical_units(trained, surrogate, data):
    cli, _ = trained
    x = torch.as_tensor(data.coefficient.values[:5], dtype=torch.float32)[:, None]
    cli.model.eval()
    with torch.no_grad():
        expected = cli.model(x)[:, 0].numpy()
    got = surrogate.predict(data[["coefficient"]].isel(sample=slice(0, 5)))
    np.testing.assert_allclose(got.solution.values, expected, rtol=1e-5, atol=1e-7)
    assert got.solution.attrs["units"] == data.solution.attrs["units"]
    # physical scale: the prediction is of the size of the stored solutions
    assert 0.1 < float(np.abs(got.solution).mean() / np.abs(data.solution).mean()) < 10


def test_xarray_coordinates_round_trip(surrogate, data):
    shifted = (
        data[["coefficient"]]
        .isel(sample=slice(0, 2))
        .assign_coords(x=data.x.values + 10.0, y=data.y.values * 2)
    )
    out = surrogate.predict(shifted)
    np.testing.assert_array_equal(out.x.values, shifted.x.values)
    np.testing.assert_array_equal(out.y.values, shifted.y.values)
    assert out.solution.dims == ("sample", "x", "y")


def test_batch_single_and_input_types_agree(surrogate, data):
    a = data.coefficient.values[:4]
    batch = surrogate.predict(a).solution.values
    singles = np.stack([surrogate.predict(a[i]).solution.values for i in range(4)])
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-8)
    torch_in = surrogate.predict(torch.as_tensor(a)[:, None]).solution.values
    np.testing.assert_array_equal(batch, torch_in)
    xr_single = surrogate.predict(data.coefficient.isel(sample=0))
    assert xr_single.solution.dims == ("x", "y")
    np.testing.assert_allclose(xr_single.solution.values, batch[0], rtol=1e-5, atol=1e-8)
    small_batches = surrogate.predict(a, batch_size=3).solution.values
    np.testing.assert_allclose(small_batches, batch, rtol=1e-5, atol=1e-8)


def test_other_resolution_gets_coordinates_of_the_same_grid_kind(surrogate):
    with pytest.warns(UserWarning, match="zero-shot"):
        out = surrogate.predict(np.full((1, 32, 32), 5.0))
    np.testing.assert_allclose(out.x.values, (np.arange(32) + 0.5) / 32)
    np.testing.assert_allclose(resample_coordinate(np.linspace(0, 1, 5), 9), np.linspace(0, 1, 9))


def test_warm_up_leaves_the_zero_shot_warning_to_the_call_it_prepares(trained):
    fresh = Surrogate.load(trained[1], device="cpu")
    fine = np.full((2, 32, 32), 5.0)
    fresh.warm_up(fine)
    with pytest.warns(UserWarning, match="zero-shot"):
        out = fresh.predict(fine)
    assert out.attrs["grid_mode"] == "zero-shot" and out.attrs["training_grid"] == "16x16"
    assert fresh.predict(np.full((1, 16, 16), 5.0)).attrs["grid_mode"] == "training grid"
    # once a grid: another grid is warned about too (it was silent after the first)
    with pytest.warns(UserWarning, match="predicting on a 24x24 grid"):
        fresh.predict(np.full((1, 24, 24), 5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.predict(fine)


def test_nan_inputs_are_refused_naming_the_samples(surrogate, data):
    a = data.coefficient.values[:6].copy()
    a[[1, 4], 3, 3] = np.nan
    with pytest.raises(SurrogateInputError, match=r"in 2 sample\(s\) \(first: \[1, 4\]\); a "
                                                  r"dataset file's samples marked not "
                                                  r"converged may hold NaN: drop them"):
        surrogate.predict(a)


def test_evaluate_feeds_the_model_its_own_axes_whatever_order_the_file_stores(
        trained, darcy16, tmp_path):
    # the format does not fix the order of the spatial dims; a file stored as (y, x) was
    # fed to the (x, y) model transposed, with no word (square grid: the shapes agree)
    from pdeforge.datasets.check import check_file

    _, ckpt = trained
    swapped = tmp_path / "yx.nc"
    with xr.open_dataset(darcy16, engine="h5netcdf", decode_cf=False) as ds:
        ds.transpose("sample", "y", "x", ...).to_netcdf(swapped, engine="h5netcdf")
    assert not check_file(swapped).errors
    with xr.open_dataset(swapped, engine="h5netcdf") as ds:
        assert ds.solution.dims == ("sample", "y", "x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (both hold the training samples: said elsewhere)
        got, expected = (evaluate(ckpt, p, progress=False) for p in (swapped, darcy16))
    for key in ("rel_l2", "rel_h1", "max_error", "frmse_low", "frmse_mid"):
        assert got[key] == pytest.approx(expected[key], rel=1e-6), key


def test_query_and_evaluate_say_when_the_data_are_not_the_trainings(trained, tmp_path):
    # query was silent where evaluate warned (other problem options), and both took a
    # vertex grid of as many points as the cell-centred training grid silently
    from pdeforge.datasets.runner import generate
    from pdeforge.surrogate import query

    _, ckpt = trained
    lognormal = tmp_path / "lognormal.nc"
    generate("darcy", 2, lognormal, resolution=16, seed=9, progress=False,
             options={"coefficient": "lognormal"})
    with pytest.warns(UserWarning, match=r"other problem options .*coefficient: 'piecewise' "
                                         r"-> 'lognormal'.*the predictions are those of"):
        query(ckpt, lognormal, tmp_path / "p.nc", progress=False)
    vertex = tmp_path / "vertex.nc"
    generate("darcy", 2, vertex, resolution=16, seed=9, progress=False,
             options={"scheme": "vertex"})
    for call in (lambda: query(ckpt, vertex, tmp_path / "v.nc", progress=False),
                 lambda: evaluate(ckpt, vertex, progress=False)):
        with pytest.warns(UserWarning, match=r"x points \(0, 0.06667 ... 1\) are not the "
                                             r"training grid's \(0.03125, 0.09375 ... 0.9688\)"):
            call()


def test_compare_agrees_with_pdeforge_evaluate(trained, surrogate, darcy16, data):
    _, ckpt = trained
    comparison = surrogate.compare(data[["coefficient"]])
    evaluated = evaluate(ckpt, darcy16, progress=False)
    assert comparison.n_samples == evaluated["n_samples"] == 24
    assert comparison.rel_l2 == pytest.approx(evaluated["rel_l2"], rel=1e-4)
    assert comparison.max_error == pytest.approx(evaluated["max_error"], rel=1e-3)
    assert comparison.solver_seconds > 0 and comparison.surrogate_seconds > 0
    assert comparison.speedup == pytest.approx(
        comparison.solver_seconds / comparison.surrogate_seconds
    )
    # the reference solutions are the stored ones (same solver, same inputs)
    np.testing.assert_allclose(
        comparison.solution.solution.values, data.solution.values, rtol=1e-5, atol=1e-9
    )


def test_info_and_repr_describe_the_model_and_its_training(surrogate):
    info = surrogate.info()
    assert info["model"] == "mgno" and info["inputs"] == ["coefficient"]
    assert info["grid"] == {"x": 16, "y": 16} and info["epochs_trained"] == 3
    assert info["validation"]["monitor"] == "val/rel_l2"
    assert "mgno" in repr(surrogate) and "coefficient" in repr(surrogate)


def test_each_checkpoint_reports_its_own_validation_score(trained):
    """last.ckpt holds the last epoch's weights: it reports their score, and the run's best
    beside it when that is another checkpoint's; the best checkpoint reports the best."""
    folder = trained[1].parent
    (best_path,) = folder.glob("best-*.ckpt")
    best, last = Surrogate.load(best_path, device="cpu"), Surrogate.load(trained[1], device="cpu")
    scores = trained[0].trainer.checkpoint_callback.best_k_models
    assert best.info()["validation"]["score"] == pytest.approx(float(scores[str(best_path)]))
    best_epoch = torch.load(best_path, weights_only=True)["epoch"]
    # the index the file is named by (best-epoch=NNN), and how many epochs had trained
    assert best.info()["validation"]["epoch"] == best_epoch
    assert best_path.name == f"best-epoch={best_epoch:03d}.ckpt"
    assert best.info()["validation"]["after_epochs"] == best_epoch + 1
    final = float(trained[0].trainer.callback_metrics["val/rel_l2"])  # the last epoch's
    v = last.info()["validation"]
    assert v["score"] == pytest.approx(final) and v["after_epochs"] == 3 and v["epoch"] == 2
    assert v["best_score"] == pytest.approx(best.info()["validation"]["score"])
    assert v["best_checkpoint"] == best_path.name
    assert ("run's best" in repr(last)) == (v["score"] != pytest.approx(v["best_score"]))
    assert f"val/rel_l2={v['score']:.4g}" in repr(last)


def test_a_last_checkpoint_behind_the_best_shows_both_scores(trained, tmp_path):
    checkpoint = torch.load(trained[1], weights_only=True)
    own = checkpoint["pdeforge"]["validation"]["val/rel_l2"]
    (key,) = [k for k, c in checkpoint["callbacks"].items()
              if k.startswith("ModelCheckpoint") and c["monitor"] == "val/rel_l2"]
    checkpoint["callbacks"][key].update(best_model_score=torch.tensor(own / 2),
                                        best_model_path="/elsewhere/best-epoch=1.ckpt")
    torch.save(checkpoint, tmp_path / "last.ckpt")
    text = repr(Surrogate.load(tmp_path / "last.ckpt", device="cpu"))
    assert f"val/rel_l2={own:.4g} (run's best {own / 2:.4g})" in text
    del checkpoint["pdeforge"]["validation"]  # as written before this was recorded
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = Surrogate.load(tmp_path / "old.ckpt", device="cpu")
    assert f"run's best val/rel_l2={own / 2:.4g})" in repr(old)
    assert "score" not in old.info()["validation"]


def test_bad_inputs_are_explained(surrogate, data):
    with pytest.raises(SurrogateInputError, match="NaN"):
        surrogate.predict(np.full((16, 16), np.nan))
    with pytest.raises(SurrogateInputError, match=r"do not fit a 2D model"):
        surrogate.predict(np.ones((2, 1, 1, 16, 16)))
    with pytest.raises(SurrogateInputError, match=r"missing.*needs \['coefficient'\]"):
        surrogate.predict(data.rename(coefficient="K"))
    with pytest.raises(SurrogateInputError, match="has 2 channel"):
        surrogate.predict(np.ones((3, 2, 16, 16)))
    with pytest.raises(SurrogateInputError, match="numpy, torch or xarray"):
        surrogate.predict({"coefficient": 1})


def test_tampered_checkpoint_is_refused(trained, tmp_path):
    checkpoint = torch.load(trained[1], weights_only=True)
    checkpoint["hook"] = shutil.rmtree
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(CheckpointError, match="refusing to load"):
        Surrogate.load(bad)


@pytest.mark.parametrize("part", ["normalizer", "weight"])
def test_a_checkpoint_with_nan_in_it_is_refused(trained, tmp_path, part):
    checkpoint = torch.load(trained[1], weights_only=True)
    state = checkpoint["state_dict"]
    name = next(k for k, t in state.items()
                if t.is_floating_point() and ("norm" in k.lower()) == (part == "normalizer"))
    state[name] = torch.full_like(state[name], float("nan"))
    bad = tmp_path / "nan.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(CheckpointError, match=rf"NaN or infinite values in {re.escape(name)}"):
        Surrogate.load(bad)


def test_query_writes_a_checked_dataset_of_predictions(trained, surrogate, darcy32, tmp_path):
    out = tmp_path / "pred.nc"
    proc = run_pdeforge("query", trained[1], "--input", darcy32, "--out", out)
    assert proc.returncode == 0, proc.stderr
    # trained on 16^2: the 32^2 predictions are zero-shot, and the user is told so
    assert "zero-shot (trained on 16x16)" in proc.stdout
    assert "zero-shot" in proc.stderr  # the warning, not swallowed by the warm-up pass
    assert run_pdeforge("check", out).returncode == 0
    with open_dataset(out) as pred, open_dataset(darcy32) as inputs:
        assert pred.solution.attrs["role"] == "output"
        expected = surrogate.predict(inputs[["coefficient"]]).solution.values
        np.testing.assert_allclose(pred.solution.values, expected, rtol=1e-6)
        np.testing.assert_array_equal(pred.x.values, inputs.x.values)
    npy = tmp_path / "inputs.npy"
    np.save(npy, np.ones((3, 16, 16)))
    proc = run_pdeforge("query", trained[1], "--input", npy)
    assert proc.returncode == 0, proc.stderr
    with xr.open_dataset(tmp_path / "inputs_pred.nc", engine="h5netcdf") as pred:
        assert pred.sizes["sample"] == 3
        assert pred.attrs["seed"] == UNKNOWN_SEED  # no seed made these inputs (it said 0)
        assert json.loads(pred.attrs["config"])["seed"] == UNKNOWN_SEED
    proc = run_pdeforge("query", trained[1], "--input", tmp_path / "missing.npy")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_query_never_overwrites_without_asking(trained, darcy16, tmp_path):
    victim = tmp_path / "victim.nc"
    shutil.copy(darcy16, victim)
    before = victim.read_bytes()
    proc = run_pdeforge("query", trained[1], "--input", victim, "--out", victim, "--overwrite")
    assert proc.returncode == 2 and "is the input file" in proc.stderr
    out = tmp_path / "out.nc"
    out.write_text("keep me")
    proc = run_pdeforge("query", trained[1], "--input", victim, "--out", out)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert out.read_text() == "keep me" and victim.read_bytes() == before
    proc = run_pdeforge("query", trained[1], "--input", victim, "--out", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    with open_dataset(out) as pred:
        assert pred.attrs["seed"] == 5  # the input file's seed
    # a bad --out is found before any prediction is made, and never the checkpoint
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(trained[1], ckpt)
    for bad, message in ((ckpt, "is the checkpoint"), (tmp_path, "is a directory"),
                         (tmp_path / "nowhere" / "p.nc", "does not exist; create it"),
                         (tmp_path / "p.npy", "query writes a netCDF4 (HDF5) dataset file")):
        proc = run_pdeforge("query", ckpt, "--input", victim, "--out", bad, "--overwrite")
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert ckpt.read_bytes() == Path(trained[1]).read_bytes()
    # a missing checkpoint is named first, whatever --out is
    proc = run_pdeforge("query", tmp_path / "nope.ckpt", "--input", victim, "--out", victim)
    assert proc.returncode == 2 and "nope.ckpt" in proc.stderr and "--out" not in proc.stderr


def test_more_bad_inputs(surrogate, data):
    with pytest.raises(SurrogateInputError, match="no samples to predict .the batch is empty"):
        surrogate.predict(np.ones((0, 16, 16)))
    with pytest.raises(SurrogateInputError, match="no samples to compare .the batch is empty"):
        surrogate.compare(np.ones((0, 16, 16)))
    with pytest.raises(SurrogateInputError, match="batch_size"):
        surrogate.predict(np.ones((2, 16, 16)), batch_size=0)
    cube = xr.Dataset({"coefficient": (("sample", "x", "y", "z"), np.ones((1, 16, 16, 8)))})
    with pytest.raises(SurrogateInputError, match=r"extra spatial dim\(s\) \['z'\]"):
        surrogate.predict(cube)
    # grid dims under other names: named, with the rename that fixes it
    with pytest.raises(SurrogateInputError, match=r"\['i', 'j'\] are not among them.*"
                                                  r"rename\(i='x', j='y'\)"):
        surrogate.predict(data[["coefficient"]].rename(x="i", y="j"))
    # finite values the model's float32 cannot hold
    with pytest.raises(SurrogateInputError, match=r"inputs reach 1e\+300, beyond the range"):
        surrogate.predict(np.full((16, 16), 1e300))


def test_inputs_on_another_domain_are_warned_about(trained, data, darcy32):
    surrogate = Surrogate.load(trained[1], device="cpu")  # its own warn-once flags
    inputs = data[["coefficient"]].isel(sample=slice(0, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = surrogate.predict(inputs)  # the training grid: no warning
    with open_dataset(darcy32) as fine, warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")  # the same domain at 32^2: zero-shot, not elsewhere
        surrogate.predict(fine[["coefficient"]].load(), resample=True)
        surrogate.predict(inputs.isel(x=slice(None, None, -1)))  # a decreasing x, flipped
    assert not [w for w in record if "domain" in str(w.message)], [str(w.message) for w in record]
    with pytest.warns(UserWarning, match=r"x coordinates \(0.3125 ... 9.688\) do not"):
        scaled = surrogate.predict(inputs.assign_coords(x=inputs.x * 10))
    # (the model sees grid points: the numbers are the same, the user is told)
    np.testing.assert_array_equal(scaled.solution.values, same.solution.values)
    fresh = Surrogate.load(trained[1], device="cpu")
    with pytest.warns(UserWarning, match="y coordinates"):
        fresh.predict(inputs.isel(y=slice(0, 8)), resample=True)  # half the domain


def test_resample_runs_the_model_on_its_training_grid(surrogate, trained, darcy32):
    cli, _ = trained
    with open_dataset(darcy32) as ds:
        fine = ds[["coefficient"]].load()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-shot warning with resample=True
        out = surrogate.predict(fine, resample=True)
    x = torch.as_tensor(fine.coefficient.values, dtype=torch.float32)[:, None]
    down = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    cli.model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(
            cli.model(down), size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(out.solution.values, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert out.solution.shape == (8, 32, 32)
    report = surrogate.compare(fine, resample=True)
    assert report.n_samples == 8 and np.isfinite(report.rel_l2)


def _fit_tiny_fno(path: Path, work: Path, *extra: str, n_modes: int):
    """One epoch of a 4-channel, one-layer FNO on ``path`` (LightningCLI)."""
    return run_cli([
        "fit", "--model.model=fno",
        f'--model.model_kwargs={{"n_modes": {n_modes}, "hidden_channels": 4, "n_layers": 1}}',
        f"--data.path={path}", *extra, "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--data.batch_size=4", f"--trainer.default_root_dir={work}",
        f"--trainer.logger.init_args.save_dir={work}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ])  # fmt: skip


def test_a_3d_fno_trains_predicts_resamples_and_compares(tmp_path):
    # every operator refused dim 3 (darcy3d, helmholtz3d could not be trained), and
    # resampling a 3D grid asked torch for bilinear interpolation of a 5D tensor
    from pdeforge.datasets.runner import generate

    path = tmp_path / "d3.nc"
    generate("darcy3d", 12, path, resolution=8, seed=1, shard_size=12, progress=False)
    cli = _fit_tiny_fno(path, tmp_path, n_modes=4)
    s = Surrogate.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", device="cpu")
    with open_dataset(path) as ds:
        data = ds.load()
    out = s.predict(data[s.inputs].isel(sample=slice(0, 3)))
    assert out.solution.dims == ("sample", "x", "y", "z") and out.solution.shape == (3, 8, 8, 8)
    x = data[s.inputs[0]].values[:2]
    fine = torch.nn.functional.interpolate(torch.as_tensor(x)[:, None], size=(12, 12, 12),
                                           mode="trilinear", align_corners=False)[:, 0].numpy()
    back = s.predict(fine, resample=True).solution.values
    assert back.shape == (2, 12, 12, 12) and np.isfinite(back).all()
    cmp = s.compare(data[s.inputs].isel(sample=slice(0, 2)))
    # the reference solver reproduces the stored solutions the surrogate is scored on
    pred = out.solution.values[:2]
    truth = data.solution.values[:2]
    expected = np.mean(np.linalg.norm((pred - truth).reshape(2, -1), axis=1)
                       / np.linalg.norm(truth.reshape(2, -1), axis=1))
    assert cmp.rel_l2 == pytest.approx(expected, rel=1e-3)


def test_a_per_sample_parameter_input_is_spread_over_the_grid_when_querying(tmp_path):
    # trained with the diffusivity (a per-sample scalar) as a constant channel, the
    # surrogate refused the same variable at query time ("needs the grid dims")
    from pdeforge.datasets.runner import generate

    path = tmp_path / "adv.nc"
    generate("advection-diffusion", 12, path, resolution=12, seed=2, shard_size=12,
             progress=False)
    cli = _fit_tiny_fno(path, tmp_path, "--data.inputs=[velocity_x, velocity_y, diffusivity]",
                        n_modes=6)
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    s = Surrogate.load(ckpt, device="cpu")
    with open_dataset(path) as ds:
        data = ds.load()
    got = s.predict(data[s.inputs]).solution.values
    # the same numbers as the Lightning module on the training dataset's channels
    x = np.stack([data.velocity_x.values, data.velocity_y.values,
                  np.broadcast_to(data.diffusivity.values[:, None, None], (12, 12, 12))], 1)
    cli.model.eval()
    with torch.no_grad():
        expected = cli.model(torch.as_tensor(x, dtype=torch.float32))[:, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    report = evaluate(ckpt, path, progress=False)
    truth = data.solution.values
    rel = np.linalg.norm((got - truth).reshape(12, -1), axis=1) / np.linalg.norm(
        truth.reshape(12, -1), axis=1)
    assert report["rel_l2"] == pytest.approx(rel.mean(), rel=1e-4)
    # shapes that do not fit a 3-channel model: messages that say what would
    with pytest.raises(SurrogateInputError, match=r"shape \(4, 12\) read as one 2D field.*"
                       r"takes 3 input channels.*\(3, n, n\) for one sample"):
        s.predict(np.zeros((4, 12)))
    with pytest.raises(SurrogateInputError, match=r"3 input channel\(s\): give \(3, n, n\) "
                       r"for one sample or \(batch, 3, n, n\)"):
        s.predict(np.zeros((1, 1, 3, 12, 12)))
    # one diffusivity for the whole batch (no sample dim): spread over its samples (a bare
    # xarray "Dimensions {'sample'} do not exist" before)
    shared = data[s.inputs].isel(sample=slice(0, 3)).assign(diffusivity=0.05)
    each = shared.assign(diffusivity=("sample", np.full(3, 0.05)))
    np.testing.assert_array_equal(s.predict(shared).solution.values,
                                  s.predict(each).solution.values)
    # complex inputs are refused, not cut to their real parts with numpy's warning
    for bad in (x[:2] + 1j, data[s.inputs].isel(sample=slice(0, 2)).assign(
            velocity_x=data.velocity_x[:2] * (1 + 1j))):
        with pytest.raises(SurrogateInputError, match="complex numbers"):
            s.predict(bad)
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    proc = run_pdeforge("query", ckpt, "--input", obj, "--out", tmp_path / "o.nc")
    assert proc.returncode == 2 and "not a numeric .npy array" in proc.stderr


def test_nlse_predictions_keep_the_time_axis(tmp_path):
    # trajectories (sample, t, x) are trained with t as channels; predictions came back
    # as (sample, psi_re_channel, x) without the file's t
    from pdeforge.datasets.runner import generate

    path = tmp_path / "nlse.nc"
    generate("nlse", 12, path, resolution=32, seed=0, shard_size=12, progress=False,
             options={"t_end": 0.4, "n_times": 3, "length": 20.0, "eta_max": 1.2})
    cli = _fit_tiny_fno(path, tmp_path, n_modes=8)
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    s = Surrogate.load(ckpt, device="cpu")
    with open_dataset(path) as ds:
        data = ds.load()
    out = s.predict(data[s.inputs].isel(sample=slice(0, 4)))
    for name in ("psi_re", "psi_im"):
        assert out[name].dims == ("sample", "t", "x") and out[name].shape == (4, 3, 32)
    np.testing.assert_array_equal(out.t.values, data.t.values)
    diff = out.psi_re - data.psi_re.isel(sample=slice(0, 4))  # aligned by t and x
    assert diff.dims == ("sample", "t", "x") and np.isfinite(diff).all()
    q = tmp_path / "q.nc"
    proc = run_pdeforge("query", ckpt, "--input", path, "--out", q)
    assert proc.returncode == 0, proc.stderr
    assert run_pdeforge("check", q).returncode == 0
    with open_dataset(q) as pred:
        assert pred.psi_im.dims == ("sample", "t", "x")
    # x is periodic (x_0 + i L / n): another resolution gets the points of the same
    # period, and resampling wraps around (it took the grid for vertices of [x_0, x_last])
    assert s.periodic_dims == ["x"]
    x32 = data.x.values
    x48 = -10.0 + np.arange(48) * 20.0 / 48
    np.testing.assert_allclose(s.grid_coords((48,))["x"], x48, rtol=0, atol=1e-12)
    def field(x):
        return 1 / np.cosh(x - 8.0) + 1 / np.cosh(x + 10.0)  # straddles x = -L/2 = L/2

    def periodic_field(x):
        return field(x) + field(x + 20.0) + field(x - 20.0)

    _, back = s._resampler((48,), {})  # from the training grid to 48 points
    up = back(torch.as_tensor(periodic_field(x32))[None, None])
    err = np.abs(up[0, 0].numpy() - periodic_field(x48)).max()
    h = 20.0 / 32
    assert err <= h**2 / 8 * 1.1  # linear interpolation's bound (|f''| <= 1)
    assert run_pdeforge("check", path).returncode == 0  # the attribute is in the format
    _evaluate_checks_the_data_against_the_training_data(ckpt, path, tmp_path)


def _evaluate_checks_the_data_against_the_training_data(ckpt, path, tmp_path):
    """`pdeforge evaluate` on an NLSE checkpoint (t as channels, periodic x): it compared
    any file with the right channel count, whatever its times, domain or options, and
    took periodic strides that do not divide the grid."""
    from pdeforge.datasets.runner import generate
    from pdeforge.train.evaluate import EvaluationError, evaluate

    base = {"t_end": 0.4, "n_times": 3, "length": 20.0, "eta_max": 1.2}
    with pytest.warns(UserWarning, match="trained on .*nlse.nc: its samples include the "
                                         "training split"):
        evaluate(ckpt, path, progress=False)
    later = tmp_path / "later.nc"  # the same channel count at other times
    generate("nlse", 4, later, resolution=32, seed=3, progress=False,
             options={**base, "t_end": 0.8})
    with pytest.raises(EvaluationError, match=r"'psi_re' is given at t = \[0, 0.4, 0.8\], "
                                              r"the model was trained at t = \[0, 0.2, 0.4\]"):
        evaluate(ckpt, later, progress=False)
    more = tmp_path / "more.nc"  # more output times: named, not only a channel count
    generate("nlse", 2, more, resolution=32, seed=3, progress=False,
             options={**base, "n_times": 5})
    with pytest.raises(EvaluationError, match=r"'psi_re' is given at t = \[0, 0.1, 0.2, ..., "
                                              r"0.4\], the model was trained at t = "):
        evaluate(ckpt, more, progress=False)
    wider = tmp_path / "wider.nc"  # another domain and amplitudes, same times
    generate("nlse", 4, wider, resolution=32, seed=3, progress=False,
             options={**base, "length": 40.0, "eta_max": 1.5, "rtol": 1e-8})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(ckpt, wider, progress=False)
    text = " | ".join(str(w.message) for w in caught)
    assert "x coordinates (-20 ... 18.75) do not span the training grid's domain" in text
    # the solver's tolerance is not a change of distribution
    assert ("other problem options than the checkpoint's training data (eta_max: 1.2 -> "
            "1.5, length: 20.0 -> 40.0)") in text, text
    assert np.isfinite(result["rel_l2"])
    other = tmp_path / "other.nc"  # another seed of the same problem: silent
    generate("nlse", 4, other, resolution=32, seed=3, progress=False, options=base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate(ckpt, other, progress=False)
    # each output's own relative error beside the pooled one (which weighs them by norm)
    with open_dataset(other) as ds:
        data = ds.load()
    predicted = Surrogate.load(ckpt).predict(data[["psi0_re", "psi0_im"]])
    for name in ("psi_re", "psi_im"):
        p, t = predicted[name].values, data[name].values
        manual = np.mean([np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(p, t,
                                                                                 strict=True)])
        assert result["per_output"][name]["rel_l2"] == pytest.approx(manual, rel=1e-4)
    finer = tmp_path / "finer.nc"  # the training's seed and options at another resolution
    generate("nlse", 4, finer, resolution=64, seed=0, progress=False, options=base)
    with pytest.warns(UserWarning, match=r"seed \(0\) and problem options of the checkpoint's "
                                         "training data: its sample i draws"):
        evaluate(ckpt, finer, progress=False, resolution=32)
    # the coarse periodic grid x_0 + i L / 8 spans the same period: no domain warning
    # (its last point, L - L / 8, was more than a training step from the training's)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluate(ckpt, other, resolution=8, device="cpu:0",  # (torch.load refused
                        progress=False)["resolution"] == [8]          # to map to cpu:0)
    assert not [w for w in caught if "span" in str(w.message)], [str(w.message) for w in caught]
    assert all(Path(f).is_absolute() for f in Surrogate.load(ckpt).data_info["files"])
    # periodic x of 32 points: strides 2 and 4 give periodic grids of 16 and 8 points;
    # stride 3 would keep 11 points that are not one period's grid
    with pytest.warns(UserWarning, match="zero-shot"):
        assert evaluate(ckpt, other, resolution=16, progress=False)["resolution"] == [16]
    with pytest.raises(EvaluationError, match=r"resolution 11 cannot be reached .* 32 "
                                              r"\(periodic\).*possible: \[32, 16, 8, 4, 2\]"):
        evaluate(ckpt, other, resolution=11, progress=False)
    for device in ("cuda:7", "tpu"):  # the device, not the checkpoint, is at fault
        with pytest.raises(SurrogateInputError, match="device"):
            evaluate(ckpt, other, device=device, progress=False)


def test_evaluate_subsamples_as_the_training_did(tmp_path):
    # a model fitted with --data.subsample 3 (every third point from cell 1: the coarse
    # cells' centres) and evaluated at n / 3 sees the points it was trained on
    from pdeforge.datasets.runner import generate

    path = tmp_path / "d48.nc"
    generate("darcy", 12, path, resolution=48, seed=4, shard_size=12, progress=False)
    cli = _fit_tiny_fno(path, tmp_path, "--data.subsample=3", n_modes=6)
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    s = Surrogate.load(ckpt, device="cpu")
    with open_dataset(path) as ds:
        kept = ds.isel(x=slice(1, None, 3), y=slice(1, None, 3)).load()
    np.testing.assert_array_equal(s.coords["x"], kept.x.values)
    np.testing.assert_allclose(kept.x.values, (np.arange(16) + 0.5) / 16, rtol=0, atol=1e-12)
    # resampled from the file's own grid, the model sees exactly the points it was
    # trained on, and its predictions there are the direct ones (a subsampled grid was
    # taken for a vertex grid: 7.9 % off)
    with open_dataset(path) as ds:
        full = ds.load()
    np.testing.assert_allclose(s.grid_coords((48, 48))["x"], full.x.values, rtol=0, atol=1e-12)
    fine = s.predict(full[["coefficient"]], resample=True).solution.values[:, 1::3, 1::3]
    direct = s.predict(kept[["coefficient"]]).solution.values
    np.testing.assert_allclose(fine, direct, rtol=1e-5, atol=1e-6 * np.abs(direct).max())
    with pytest.warns(UserWarning, match="trained on"):
        result = evaluate(ckpt, path, resolution=16, progress=False)
    pred = s.predict(kept[["coefficient"]]).solution.values
    manual = np.mean([np.linalg.norm(p - t) / np.linalg.norm(t)
                      for p, t in zip(pred, kept.solution.values, strict=True)])
    assert result["rel_l2"] == pytest.approx(manual, rel=1e-4)


def test_thermal_predictions_are_zero_in_the_slot_as_the_data_are(tmp_path):
    # the slot's points entered the loss and the metrics, and predictions there were not
    # zero (up to 0.08), while the data store T = 0 there
    from pdeforge.datasets.runner import generate

    path = tmp_path / "thermal.nc"
    generate("thermal", 12, path, resolution=16, seed=0, shard_size=12, progress=False)
    cli = _fit_tiny_fno(path, tmp_path, n_modes=6)
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    s = Surrogate.load(ckpt, device="cpu")
    assert s.inputs == ["boundary_data", "plate"]
    with open_dataset(path) as ds:
        data = ds.load()
    slot = data.plate.values[0] == 0
    assert slot.sum() > 0
    pred = s.predict(data[s.inputs]).temperature.values
    assert np.all(pred[:, slot] == 0) and np.abs(pred[:, ~slot]).max() > 0
    on = np.linspace(0.04, 0.96, 24)  # another grid, resampled: zero in the slot there too
    fine_inputs = data[s.inputs].interp(x=on, y=on, method="nearest")
    fine = s.predict(fine_inputs, resample=True).temperature.values
    fine_slot = fine_inputs.plate.values[0] == 0
    assert fine_slot.sum() > 0 and np.all(fine[:, fine_slot] == 0)
    truth = data.temperature.values
    rel = np.linalg.norm((pred - truth).reshape(12, -1), axis=1) / np.linalg.norm(
        truth.reshape(12, -1), axis=1)
    assert evaluate(ckpt, path, progress=False)["rel_l2"] == pytest.approx(rel.mean(), rel=1e-4)
    # the predictions file says so as the data file does (the attribute was dropped)
    out = tmp_path / "q.nc"
    assert run_pdeforge("query", ckpt, "--input", path, "--out", out).returncode == 0
    with open_dataset(out) as q:
        assert q.temperature.attrs["valid_where"] == "plate"
        assert np.all(q.temperature.values[:, slot] == 0)


def _parameter_only_file(path: Path, n: int = 12, size: int = 10) -> Path:
    """A file from another program: one number per sample (role parameter) sets a field,
    plus a per-sample scalar output."""
    kappa = np.linspace(0.5, 2.0, n)
    x = (np.arange(size) + 0.5) / size
    bump = np.sin(np.pi * x)[:, None] * np.sin(np.pi * x)[None, :]
    xr.Dataset(
        {
            "kappa": (("sample",), kappa, {"role": "parameter", "units": "1"}),
            "u": (("sample", "x", "y"), (kappa[:, None, None] * bump).astype(np.float32),
                  {"role": "output", "units": "1"}),
            "u_mean": (("sample",), kappa * bump.mean(), {"role": "output", "units": "1"}),
            "converged": (("sample",), np.ones(n, bool), {"role": "diagnostic", "units": "1"}),
            "solve_seconds": (("sample",), np.zeros(n), {"role": "diagnostic", "units": "s"}),
        },
        coords={"x": ("x", x, {"units": "m"}), "y": ("y", x, {"units": "m"})},
        attrs={"pdeforge_format": 1, "problem": "bump", "solver": "formula",
               "pdeforge_version": "external", "seed": 0, "n_samples": n, "config": "{}",
               "created": "2026-01-01T00:00:00+00:00", "status": "complete"},
    ).to_netcdf(path, engine="h5netcdf", encoding={"u": {"chunksizes": (1, size, size)}})
    return path


def test_a_model_of_parameters_only_trains_by_default_and_is_queried_with_the_numbers(tmp_path):
    """Parameters are default inputs (constant channels); such a surrogate takes the
    numbers alone (xarray, numpy, a file) and predicts on the training grid; a scalar
    output is left out of the defaults with a warning; compare says it needs a pdeforge
    family."""
    path = _parameter_only_file(tmp_path / "bump.nc")
    with pytest.warns(UserWarning, match=r"scalar output\(s\) \['u_mean'\]"):
        cli = _fit_tiny_fno(path, tmp_path, n_modes=4)
    s = Surrogate.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", device="cpu")
    assert s.inputs == ["kappa"] and s.outputs == ["u"]
    with open_dataset(path) as ds:
        data = ds.load()
    full = s.predict(data).u
    alone = s.predict(data[["kappa"]]).u
    np.testing.assert_array_equal(alone.values, full.values)
    np.testing.assert_allclose(alone.x.values, data.x.values)
    numbers = s.predict(data.kappa.values[:, None]).u
    np.testing.assert_array_equal(numbers.values, full.values)
    # another file's grid is not the inputs' grid: the numbers are, on the training grid
    with open_dataset(_parameter_only_file(tmp_path / "fine.nc", size=20)) as fine:
        other = s.predict(fine.load()).u
    assert other.shape == (12, 10, 10)
    np.testing.assert_allclose(other.values, full.values, rtol=1e-6)
    one = s.predict(np.array([data.kappa.values[3]])).u
    assert one.dims == ("x", "y")
    np.testing.assert_allclose(one.values, full.values[3], rtol=1e-5)
    with pytest.raises(SurrogateInputError, match=r"takes 1 number\(s\) per sample"):
        s.predict(np.ones((4, 2)))
    with pytest.raises(SurrogateInputError, match="'bump' is none of its families"):
        s.compare(data[["kappa"]])
    assert run_pdeforge("query", str(s.path), "--input", str(path), "--out",
                        str(tmp_path / "q.nc")).returncode == 0
    with open_dataset(tmp_path / "q.nc") as q:  # the numbers stay parameters, as given
        assert q.kappa.dims == ("sample",) and q.kappa.attrs["role"] == "parameter"
        np.testing.assert_array_equal(q.kappa.values, data.kappa.values)


def test_query_skips_failed_samples_whose_inputs_are_nan(trained, darcy16, tmp_path):
    """The format lets a sample its solver failed on hold NaN (converged = false): query
    predicts the others and writes NaN, converged = false for it; NaN in a sample marked
    converged is an error naming the sample."""
    import h5py

    failed = tmp_path / "failed.nc"
    shutil.copy(darcy16, failed)
    with h5py.File(failed, "r+") as f:
        f["coefficient"][2] = np.nan
        f["converged"][2] = 0
    out, ref = tmp_path / "q.nc", tmp_path / "ref.nc"
    procs = run_clis([("query", trained[1], "--input", failed, "--out", out),
                      ("query", trained[1], "--input", darcy16, "--out", ref)])
    assert procs[0].returncode == 0, procs[0].stderr
    assert "1 sample(s) marked not converged hold NaN" in procs[0].stderr
    assert run_pdeforge("check", out).returncode == 0
    with open_dataset(out) as q, open_dataset(ref) as r:
        assert q.converged.values.tolist() == [i != 2 for i in range(q.sizes["sample"])]
        assert q.converged.attrs["long_name"].startswith("predicted by the surrogate")
        assert np.isnan(q.solution.values[2]).all()
        keep = [i for i in range(q.sizes["sample"]) if i != 2]
        np.testing.assert_allclose(q.solution.values[keep], r.solution.values[keep],
                                   rtol=1e-6)
    # evaluate leaves the sample out of its metrics, and now says so (it did not)
    with pytest.warns(UserWarning, match=r"1 of 24 samples of .*failed.nc are marked not "
                      r"converged .* left out of the metrics"):
        scored = evaluate(trained[1], failed, device="cpu", progress=False)
    assert (scored["n_samples"], scored["n_not_converged"]) == (23, 1)
    with h5py.File(failed, "r+") as f:
        f["converged"][2] = 1
    proc = run_pdeforge("query", trained[1], "--input", failed, "--out", tmp_path / "x.nc")
    assert proc.returncode == 2
    assert "inputs of 1 sample(s) hold NaN or inf although the file marks them converged " \
           "(first: [2])" in proc.stderr


def test_warnings_point_at_the_callers_line(trained):
    s = Surrogate.load(trained[1], device="cpu")
    with pytest.warns(UserWarning, match="zero-shot") as record:
        s.predict(np.ones((2, 1, 24, 24)))  # trained on 16x16
    assert [Path(w.filename).name for w in record] == [Path(__file__).name]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_a_device_the_machine_lacks_is_named_not_the_checkpoint(trained):
    # torch.load's "Attempting to deserialize object on a CUDA device" came out as "the
    # PyTorch archive is incomplete or damaged"
    for device, message in (("cuda", "CUDA is not available on this machine"),
                            ("tpu", "unknown device 'tpu'")):
        with pytest.raises(SurrogateInputError, match=message) as info:
            Surrogate.load(trained[1], device=device)
        assert "damaged" not in str(info.value)


@pytest.mark.parametrize("labels", ["int", "str", "date", "duration"])
def test_query_keeps_the_sample_labels_of_the_input_file(trained, darcy16, tmp_path, labels):
    # (dates and durations were dropped silently; the format keeps them CF-encoded)
    with open_dataset(darcy16) as ds:
        n = ds.sizes["sample"]
        ids = {"int": np.arange(100, 100 + n),
               "str": np.array([f"run_{i:03d}" for i in range(n)]),
               "date": np.datetime64("2024-01-01") + np.arange(n).astype("timedelta64[D]"),
               "duration": np.arange(n).astype("timedelta64[h]").astype("timedelta64[ns]"),
               }[labels]
        labelled = tmp_path / "labelled.nc"
        ds.load().assign_coords(sample=("sample", ids, {"long_name": "run id"})).to_netcdf(
            labelled, engine="h5netcdf")
    out = tmp_path / "q.nc"
    proc = run_pdeforge("query", trained[1], "--input", labelled, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert run_pdeforge("check", out).returncode == 0
    with open_dataset(out) as q:
        np.testing.assert_array_equal(q.sample.values, ids)
        assert q.sample.attrs["long_name"] == "run id"


def test_a_file_with_a_decreasing_coordinate_reads_trains_and_predicts_increasing(tmp_path):
    """The format leaves the direction of a coordinate open: a file whose y decreases
    (another program's) gives the same items, model and predictions as the same data
    stored in increasing y, and predictions come out in increasing y."""
    from pdeforge.datasets import TorchDataset, check_file
    from pdeforge.datasets.runner import generate

    up = tmp_path / "up.nc"
    generate("darcy", 12, up, resolution=12, seed=3, shard_size=12, progress=False)
    down = tmp_path / "down.nc"
    with open_dataset(up) as ds:
        ds.load().isel(y=slice(None, None, -1)).to_netcdf(down, engine="h5netcdf")
    report = check_file(down)
    assert report.ok and any("'y' decreases" in w for w in report.warnings), report
    with open_dataset(down) as d, open_dataset(up) as u:  # the reader reverses y
        np.testing.assert_array_equal(d.y.values, u.y.values)
        np.testing.assert_array_equal(d.solution.values, u.solution.values)
    a, b = TorchDataset(up), TorchDataset(down)
    for i in (0, 7):
        for u, d in zip(a[i], b[i], strict=True):
            np.testing.assert_array_equal(u.numpy(), d.numpy())
    cli_up = _fit_tiny_fno(up, tmp_path / "u", n_modes=4)
    cli_down = _fit_tiny_fno(down, tmp_path / "d", n_modes=4)
    s_up = Surrogate.load(Path(cli_up.trainer.log_dir) / "checkpoints" / "last.ckpt", "cpu")
    s_down = Surrogate.load(Path(cli_down.trainer.log_dir) / "checkpoints" / "last.ckpt", "cpu")
    np.testing.assert_array_equal(s_down.coords["y"], s_up.coords["y"])
    with open_dataset(down) as ds:
        data = ds.load()
    p_down = s_down.predict(data[["coefficient"]]).solution
    p_up = s_up.predict(data[["coefficient"]]).solution
    assert np.all(np.diff(p_down.y.values) > 0)
    np.testing.assert_allclose(p_down.values, p_up.values, rtol=1e-5, atol=1e-6)
    out = tmp_path / "q.nc"
    assert run_pdeforge("query", str(s_down.path), "--input", str(down), "--out",
                        str(out)).returncode == 0
    with open_dataset(out) as q:  # inputs and predictions share the increasing y
        np.testing.assert_array_equal(
            q.coefficient.values, data.coefficient.sortby("y").values.astype(np.float32))


def test_samples_to_predict_takes_a_value_shared_by_every_sample():
    # query's scan of the inputs raised xarray's bare "Dimensions {'sample'} do not exist"
    # on an input without a sample dim (one value for the whole batch)
    from pdeforge.surrogate import _samples_to_predict

    data = xr.Dataset({"a": (("sample", "x"), np.ones((3, 4))), "nu": ((), 0.05)})
    assert _samples_to_predict(data, None, "f.nc").tolist() == [True] * 3
    data["nu"] = ((), np.nan)
    with pytest.raises(SurrogateInputError, match="inputs of 3 sample"):
        _samples_to_predict(data, None, "f.nc")


def test_sample_labels_batch_sizes_and_domains_as_a_user_gives_them(trained, data):
    """A numpy integer batch size was refused, predictions dropped the inputs' sample
    labels, and compare took inputs on another domain without the warning predict gives
    (found by a training review)."""
    s = Surrogate.load(trained[1], device="cpu")
    inputs = data[["coefficient"]].isel(sample=slice(0, 4)).assign_coords(
        sample=[10, 20, 30, 40])
    out = s.predict(inputs, batch_size=np.int64(3))
    assert out.sample.values.tolist() == [10, 20, 30, 40]
    # the coordinates' units and kind as training read them (a query from .npy wrote x
    # without units, which check warned about)
    numpy_out = s.predict(inputs.coefficient.values)
    for got in (out, numpy_out):
        assert got.x.attrs["units"] == data.x.attrs["units"] and got.x.attrs["grid"] == "cell"
    assert s.compare(inputs).prediction.sample.values.tolist() == [10, 20, 30, 40]
    with pytest.raises(SurrogateInputError, match="batch_size"):
        s.predict(inputs, batch_size=True)
    moved = inputs.assign_coords(x=inputs.x * 100, y=inputs.y * 100)
    with pytest.warns(UserWarning, match="do not span the training grid's domain"):
        Surrogate.load(trained[1], device="cpu").compare(moved)


@pytest.mark.parametrize("scheme, size", [("cell", 23), ("vertex", 21)])
def test_resampling_places_a_partial_domain_model_s_points_where_training_took_them(
        tmp_path, scheme, size):
    """--data.subsample 3 that does not divide the axis: the model's points cover part of
    the file's domain. Resampled from the file's grid, it must see its training points
    there (they were read ~one fine step off: 2.3 % on 11^3 cells, 1.5 % on 9^3
    vertices, with no warning), from an xarray input and from a bare array alike."""
    from pdeforge.datasets.runner import generate

    path = tmp_path / f"d{size}.nc"
    generate("darcy", 8, path, resolution=size, seed=5, shard_size=8, progress=False,
             options={"scheme": scheme})
    with pytest.warns(UserWarning, match="does not divide"):
        cli = _fit_tiny_fno(path, tmp_path, "--data.subsample=3", n_modes=3)
    s = Surrogate.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", device="cpu")
    first = 1 if scheme == "cell" else 0
    with open_dataset(path) as ds:
        full = ds.load()
    kept = full.isel(x=slice(first, None, 3), y=slice(first, None, 3))
    np.testing.assert_array_equal(s.coords["x"], kept.x.values)
    direct = s.predict(kept[["coefficient"]]).solution.values
    scale = np.abs(direct).max()
    np.testing.assert_allclose(s.grid_coords((size, size))["x"], full.x.values, atol=1e-12)
    for given in (full[["coefficient"]], full.coefficient.values):
        fine = s.predict(given, resample=True).solution.values
        np.testing.assert_allclose(fine[:, first::3, first::3], direct, rtol=0,
                                   atol=1e-5 * scale)


def _fit_tiny(path: Path, work: Path, model: str, kwargs: str, *extra: str):
    """One epoch of a small ``model`` on ``path`` (LightningCLI)."""
    return run_cli([
        "fit", f"--model.model={model}", f"--model.model_kwargs={kwargs}",
        f"--data.path={path}", *extra, "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--data.batch_size=4", f"--trainer.default_root_dir={work}",
        f"--trainer.logger.init_args.save_dir={work}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ])  # fmt: skip


@pytest.mark.parametrize("family, model, kwargs", [
    ("nlse", "deeponet", '{"basis": 8, "sensors": 16, "trunk_layers": [16], '
                         '"branch_layers": [16]}'),
    # pod_shape left to training: the training grid (16 points)
    ("nlse", "deeponet", '{"pod_modes": 4, "sensors": 16, "branch_layers": [16]}'),
    ("nlse", "lsm", '{"width": 8, "n_stages": 2, "heads": 2, "num_basis": 4, '
                    '"num_tokens": 2, "patch_size": 2}'),
    ("darcy", "deeponet", '{"basis": 8, "sensors": 8, "trunk_layers": [16], '
                          '"branch_layers": [16], "cnn_channels": [4]}'),
    ("darcy", "fno", '{"n_modes": 4, "hidden_channels": 4, "n_layers": 1}'),
])
def test_zero_shot_places_the_grid_s_points_where_training_had_them(
        tmp_path, family, model, kwargs):
    """Operators that read positions (DeepONet's trunk, LSM's appended coordinates) took
    any grid as spanning 0 ... 1 between its first and last points: on a periodic or cell
    grid of another size that misplaced every point (the helper: a DeepONet given an NLSE
    grid's every other point, 13 % off its own predictions). Trained on every 2nd (NLSE)
    or 3rd (Darcy cells) point of a file and given the whole file, the model's points
    keep their training positions, so its predictions there are the direct ones."""
    from pdeforge.datasets.runner import generate

    path = tmp_path / f"{family}.nc"
    if family == "nlse":
        generate("nlse", 8, path, resolution=32, seed=2, shard_size=8, progress=False,
                 options={"t_end": 0.2, "n_times": 2, "length": 30.0})
        stride, first, inputs, output = 2, 0, ["psi0_re", "psi0_im"], "psi_re"
    else:
        generate("darcy", 8, path, resolution=24, seed=2, shard_size=8, progress=False)
        stride, first, inputs, output = 3, 1, ["coefficient"], "solution"
    cli = _fit_tiny(path, tmp_path, model, kwargs, f"--data.subsample={stride}")
    s = Surrogate.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", device="cpu")
    with open_dataset(path) as ds:
        full = ds.load()
    kept = full.isel({d: slice(first, None, stride) for d in s.grid_dims})
    direct = s.predict(kept[inputs])[output].values
    seen = []  # the positions LSM appends
    forward = s.module.operator.forward
    s.module.operator.forward = lambda x, **kw: seen.append(kw) or forward(x, **kw)
    if s.always_resampled:  # POD-DeepONet: its basis lives on the training grid
        predicted = s.predict(full[inputs])
        assert predicted.attrs["grid_mode"] == "resampled"
        fine = predicted[output].values
    else:
        with pytest.warns(UserWarning, match="zero-shot"):
            fine = s.predict(full[inputs])[output].values
    if family == "darcy":  # evaluate on the whole file runs the model as predict did
        with pytest.warns(UserWarning, match="zero-shot"):
            result = evaluate(s.path, path, progress=False)
        manual = np.mean([np.linalg.norm(p - t) / np.linalg.norm(t)
                          for p, t in zip(fine, full[output].values, strict=True)])
        assert result["rel_l2"] == pytest.approx(manual, rel=1e-4)
    if model in ("lsm", "fno"):  # they convolve another grid: their positions must agree
        n = len(kept[s.grid_dims[0]])
        trained = np.linspace(0, 1, n) if model == "lsm" else np.arange(n) / n
        for positions in seen[0]["coordinates"]:
            np.testing.assert_allclose(positions.numpy()[first::stride], trained, atol=1e-6)
        return
    at_training_points = fine[(Ellipsis, *[slice(first, None, stride)] * len(s.grid_dims))]
    np.testing.assert_allclose(at_training_points, direct, rtol=0,
                               atol=1e-5 * np.abs(direct).max())
    if family == "nlse" and model == "deeponet" and not s.always_resampled:
        # a periodic axis rolled (fftshift-style) is refused: read in order, the model
        # saw a rolled field (39 % off with resample=True, with a warning about the domain)
        rolled = full[inputs].roll(x=7, roll_coords=True)
        with pytest.raises(SurrogateInputError, match="neither increasing nor decreasing"):
            s.predict(rolled, resample=True)
        np.testing.assert_array_equal(  # sorted again, it is the same input
            s.predict(rolled.sortby("x"))[output].values, fine)


def _foreign_file(path: Path, times=(0.0, 0.02, 0.04), n: int = 12, seed: int = 0) -> Path:
    """A dataset another program wrote (plain xarray, the published format): an input
    history ``h`` (sample, t, x, y) on a non-square vertex grid, a vector output ``vel``
    (sample, component, x, y) with text component labels, fixed-length byte sample
    labels."""
    import json

    rng = np.random.default_rng(seed)
    x, y = np.linspace(0.0, 1.0, 9), np.linspace(0.0, 2.0, 17)
    modes = rng.standard_normal((n, 3))
    base = (modes[:, 0, None, None] * np.sin(np.pi * x)[:, None]
            + modes[:, 1, None, None] * np.cos(np.pi * y)[None, :] + modes[:, 2, None, None])
    h = np.stack([base * np.exp(-t) for t in times], axis=1)
    vel = np.stack([2 * h.mean(axis=1), -h[:, 0]], axis=1)
    ds = xr.Dataset(
        {"h": (("sample", "t", "x", "y"), h.astype(np.float32),
               {"role": "input", "units": "m"}),
         "vel": (("sample", "component", "x", "y"), vel.astype(np.float32),
                 {"role": "output", "units": "m/s"}),
         "peak": (("sample",), np.abs(vel).max(axis=(1, 2, 3)),
                  {"role": "output", "units": "m/s"}),
         "converged": (("sample",), np.ones(n, bool), {"role": "diagnostic",
                                                       "long_name": "ok"}),
         "solve_seconds": (("sample",), np.zeros(n), {"role": "diagnostic", "units": "s"})},
        coords={"sample": ("sample", np.array([f"run{i:03d}".encode() for i in range(n)],
                                              dtype="S6"), {"long_name": "run id"}),
                "t": ("t", np.asarray(times), {"units": "s", "long_name": "time"}),
                "component": ("component", np.array(["vx", "vy"]),
                              {"long_name": "velocity component"}),
                "x": ("x", x, {"units": "m", "grid": "vertex"}),
                "y": ("y", y, {"units": "m", "grid": "vertex"})},
        attrs={"pdeforge_format": 1, "problem": "history", "solver": "analytic",
               "pdeforge_version": "external", "seed": seed, "n_samples": n,
               "config": json.dumps({"problem": "history"}),
               "created": "2026-01-01T00:00:00+00:00", "status": "complete"})
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_a_foreign_file_s_labels_times_and_non_square_strides_survive_the_round_trip(
        tmp_path):
    """Review with files another program wrote: `evaluate --resolution` could not take a
    non-square grid, not even at the training's own stride ("possible: []"); predict and
    query took inputs at other times silently, and query wrote the times as 0, 1, 2 in
    units "1"; text component labels came back as 0, 1; byte sample labels as 0 ... n-1;
    a per-sample scalar output as a field."""
    from pdeforge.surrogate import query
    from pdeforge.train.evaluate import EvaluationError

    path = _foreign_file(tmp_path / "hist.nc")
    assert run_pdeforge("check", path).returncode == 0
    cli = _fit_tiny(path, tmp_path, "fno", '{"n_modes": 3, "hidden_channels": 4, '
                    '"n_layers": 1}', "--data.subsample=2", "--data.outputs=[vel, peak]")
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    s = Surrogate.load(ckpt, device="cpu")
    assert s.grid_shape == (5, 9)
    test = _foreign_file(tmp_path / "test.nc", seed=1)
    # the training's own stride on the non-square grid, and the whole grid
    own = evaluate(ckpt, test, stride=2, progress=False)
    assert own["resolution"] == [5, 9]
    with pytest.raises(EvaluationError, match=r"no stride gives every axis one size: pass a "
                                              r"stride instead \(--stride k\), possible: 1 "
                                              r"\(9x17\), 2 \(5x9\), 4 \(3x5\), 8 \(2x3\)"):
        evaluate(ckpt, test, resolution=5, progress=False)
    with pytest.raises(EvaluationError, match="stride 3 does not subsample the grid"):
        evaluate(ckpt, test, stride=3, progress=False)
    cli_run = run_pdeforge("evaluate", ckpt, "--data", test, "--stride", "2", "--no-progress")
    assert cli_run.returncode == 0, cli_run.stderr
    # inputs at other times: refused, as evaluate refuses them
    later = _foreign_file(tmp_path / "later.nc", times=(0.0, 0.05, 0.09), seed=1)
    with open_dataset(later) as ds:
        with pytest.raises(SurrogateInputError, match=r"'h' is given at t = \[0, 0.05, "
                                                      r"0.09\], the model was trained at t"):
            s.predict(ds[s.inputs].load())
    with pytest.raises(SurrogateInputError, match=r"'h' is given at t"):
        query(ckpt, later, tmp_path / "later_pred.nc", progress=False)
    # labels, times and components as the files have them
    with open_dataset(test) as ds:
        data = ds.load()
    out = s.predict(data[s.inputs], resample=True)
    assert out.vel.dims == ("sample", "component", "x", "y")
    assert out.component.values.tolist() == ["vx", "vy"]
    assert out.component.attrs["long_name"] == "velocity component"
    assert out.peak.dims == ("sample",)  # one number per sample, as in the file
    # no pdeforge solver made these data: compare says so, not that the grid is not square
    with pytest.raises(SurrogateInputError, match="is none of its families"):
        s.compare(data[s.inputs])
    with pytest.warns(UserWarning, match="zero-shot"):
        query(ckpt, test, tmp_path / "pred.nc", progress=False)
    with xr.open_dataset(tmp_path / "pred.nc", engine="h5netcdf") as pred:
        assert pred.t.values.tolist() == [0.0, 0.02, 0.04] and pred.t.attrs["units"] == "s"
        assert pred.component.values.tolist() == ["vx", "vy"]
        assert pred.sample.values.tolist() == [f"run{i:03d}" for i in range(12)]
        assert pred.peak.dims == ("sample",)
        np.testing.assert_array_equal(pred.h.values, data.h.values)
    assert run_pdeforge("check", tmp_path / "pred.nc").returncode == 0


def test_a_dim_of_one_point_selected_away_or_read_as_dates(tmp_path):
    """Inputs whose one-point t was selected away (data.isel(t=0)) were refused for their
    dims; t read as dates (CF "since" units) was compared as text (review)."""
    path = _foreign_file(tmp_path / "one.nc", times=(0.5,))
    cli = _fit_tiny(path, tmp_path, "fno", '{"n_modes": 3, "hidden_channels": 4, '
                    '"n_layers": 1}')
    s = Surrogate.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", device="cpu")
    with open_dataset(path) as ds:
        data = ds.load()[s.inputs]
    np.testing.assert_array_equal(s.predict(data.isel(t=0)).vel.values,
                                  s.predict(data).vel.values)
    with pytest.raises(SurrogateInputError, match=r"'h' is given at t = \[0.6\]"):
        s.predict(data.isel(t=0).assign_coords(t=0.6))
    dated = data.assign_coords(t=np.array(["2000-01-01T00:00:00.5"], dtype="datetime64[ms]"))
    with pytest.raises(SurrogateInputError, match="decode_times=False"):
        s.predict(dated)


def test_data_in_other_units_than_the_trainings_are_named(trained, data, darcy16,
                                                           darcy32, tmp_path):
    """The checkpoint records each variable's units; predict, evaluate and the files of
    a run compared none of them (a field in other units is other numbers to the model)."""
    from pdeforge.train.data import OperatorDataModule

    surrogate = Surrogate.load(trained[1], device="cpu")
    inputs = data[["coefficient"]].isel(sample=slice(0, 2))
    other = inputs.copy()
    other["coefficient"] = other.coefficient.assign_attrs(units="darcy")
    with pytest.warns(UserWarning, match=r"the inputs' units differ from the training "
                      r"data: 'coefficient' is in 'darcy', in '1' there"):
        surrogate.predict(other)
    other["coefficient"] = other.coefficient.assign_attrs(units=np.bytes_(b"darcy"))
    with pytest.warns(UserWarning, match="'coefficient' is in 'darcy'"):  # as files hold it
        Surrogate.load(trained[1], device="cpu").predict(other)
    unlabelled = inputs.copy()
    unlabelled["coefficient"].attrs.pop("units", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no units, or the same: nothing to say
        surrogate.predict(unlabelled)
        surrogate.predict(inputs)
    import h5py

    for source in (darcy32, darcy16):
        moved = tmp_path / f"pa_{source.name}"
        shutil.copy(source, moved)
        with h5py.File(moved, "r+") as f:
            f["solution"].attrs["units"] = "Pa"
    with pytest.warns(UserWarning, match=r"pa_darcy32.nc: units differ from the training "
                      r"data: 'solution' is in 'Pa', in '1' there"):
        evaluate(trained[1], tmp_path / "pa_darcy32.nc", device="cpu", resample=True)
    with pytest.warns(UserWarning, match=r"pa_darcy16.nc: units differ from .*/darcy16.nc: "
                      r"'solution' is in 'Pa', in '1' there"):
        OperatorDataModule(path=str(darcy16), val_path=str(tmp_path / "pa_darcy16.nc"))


def test_an_mgno_checkpoint_with_the_coarsest_post_smoothing_weights_still_loads(
        darcy16, tmp_path):
    """Before, MgNO built post-smoothing weights on the coarsest level (never used): such
    checkpoints were refused ('weights do not fit ... altered') once the weights were
    dropped, and a run resumed from one by torch (the optimizer's state held them)."""
    from pdeforge.train.checkpoint import load_module

    kwargs = '{"channels": 4, "n_layers": 1, "levels": 3, "post_smoothing": 1}'
    cli = _fit_tiny(darcy16, tmp_path, "mgno", kwargs)
    path = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    new = torch.load(path, weights_only=True)
    # as the earlier version saved it: the coarsest level's weights after the other
    # post-smoothing ones, in the weights and in the optimizer's state (AdamW's moments)
    checkpoint = torch.load(path, weights_only=True)
    last = "operator.convs.0.post.1.0.S.weight"
    dead = [f"operator.convs.0.post.2.0.{name}.weight" for name in ("A", "S")]
    state, weights = {}, checkpoint["state_dict"]
    for key in weights:
        state[key] = weights[key]
        if key == last:
            state.update({k: torch.full((4, 4, 3, 3), 7.0) for k in dead})
    checkpoint["state_dict"] = state
    opt = checkpoint["optimizer_states"][0]
    names = [k for k in weights if k in dict(cli.model.named_parameters())]
    at = names.index(last) + 1
    moments = [opt["state"][i] for i in range(len(names))]
    fake = {"step": moments[0]["step"], "exp_avg": torch.full((4, 4, 3, 3), 7.0),
            "exp_avg_sq": torch.full((4, 4, 3, 3), 7.0)}
    moments[at:at] = [fake, fake]
    opt["state"] = dict(enumerate(moments))
    opt["param_groups"][0]["params"] = list(range(len(moments)))
    old = tmp_path / "old.ckpt"  # (a per-level list config: tests/operators/test_mgno.py)
    torch.save(checkpoint, old)
    load_module(old, "cpu")
    x = np.random.default_rng(0).random((2, 1, 16, 16))
    np.testing.assert_array_equal(Surrogate.load(old, device="cpu").predict(x).solution.values,
                                  Surrogate.load(path, device="cpu").predict(x).solution.values)
    # each weight gets its own moments back (a resume was refused: "a parameter group
    # that doesn't match the size of optimizer's group")
    cli.model.on_load_checkpoint(checkpoint)
    upgraded, saved = checkpoint["optimizer_states"][0], new["optimizer_states"][0]
    assert upgraded["param_groups"][0]["params"] == saved["param_groups"][0]["params"]
    assert upgraded["state"].keys() == saved["state"].keys()
    for i, moment in saved["state"].items():
        assert torch.equal(upgraded["state"][i]["exp_avg"], moment["exp_avg"]), i
    work = tmp_path / "resumed"
    resumed = run_cli([
        "fit", "--model.model=mgno", f"--model.model_kwargs={kwargs}",
        f"--data.path={darcy16}", f"--ckpt_path={old}", "--trainer.max_epochs=2",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--data.batch_size=4",
        f"--trainer.default_root_dir={work}", f"--trainer.logger.init_args.save_dir={work}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ])  # fmt: skip
    assert resumed.trainer.current_epoch == 2


def test_query_names_an_output_folder_it_cannot_write_before_predicting(trained, darcy16,
                                                                        tmp_path, monkeypatch):
    """A read-only --out folder was found only once every prediction was made, and the
    HDF5 error then blamed the input file or the checkpoint as damaged (review)."""
    import tempfile

    import pdeforge.surrogate as module

    def refuse(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    def never(*args, **kwargs):
        raise AssertionError("predicted although --out cannot be written")

    with monkeypatch.context() as m:
        m.setattr(tempfile, "TemporaryFile", refuse)
        m.setattr(Surrogate, "predict", never)
        with pytest.raises(SurrogateInputError, match=r"the folder .* is not writable "
                                                      r"\(Read-only file system\)"):
            module.query(trained[1], darcy16, tmp_path / "q.nc", progress=False)

    # a write that fails later (a disk filled meanwhile) is the output's, not the inputs'
    def full(*args, **kwargs):
        raise RuntimeError("Can't write data (file write failed: time = Fri, errno = 28, "
                           "error message = 'No space left on device')")

    import pdeforge.datasets.predictions as predictions

    monkeypatch.setattr(predictions, "write_predictions", full)
    with pytest.raises(SurrogateInputError, match=r"cannot write the predictions to .*q.nc "
                                                  r"\(No space left on device\); make room"):
        module.query(trained[1], darcy16, tmp_path / "q.nc", progress=False)


def test_compare_predicts_what_predict_does_on_the_inputs_coordinates(surrogate, darcy32):
    """compare predicted from the bare array, i.e. on the kind of grid the training had,
    where the inputs' coordinates made it another (a vertex grid, zero-shot or resampled
    on 32^2 from 16^2): not what predict gives for the same inputs (review: up to 10 % of
    the prediction's spread apart)."""
    with open_dataset(darcy32) as ds:
        fine = ds.load()
    n = fine.sizes["x"]
    vertex = fine[["coefficient"]].isel(sample=slice(0, 3)).assign_coords(
        x=np.linspace(0, 1, n), y=np.linspace(0, 1, n))
    for resample in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predicted = surrogate.predict(vertex, resample=resample)
            compared = surrogate.compare(vertex, resample=resample)
        np.testing.assert_array_equal(compared.prediction.solution.values,
                                      predicted.solution.values)


def test_compare_refuses_a_bad_batch_size_before_running_the_solver(surrogate, data,
                                                                     monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the solver ran")

    monkeypatch.setattr(Surrogate, "reference_problem", never)
    with pytest.raises(SurrogateInputError, match="batch_size must be a positive integer"):
        surrogate.compare(data[["coefficient"]], batch_size=0)
    nan = data[["coefficient"]].copy(deep=True)
    nan.coefficient[1, 2, 3] = np.nan
    with pytest.raises(SurrogateInputError, match="NaN or infinite"):
        surrogate.compare(nan)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_descending_unsigned_coordinates_are_reversed_like_signed_ones(surrogate, data,
                                                                       dtype, tmp_path):
    """np.diff of unsigned integers wraps around: a decreasing uint coordinate read as
    increasing (predictions in the reversed order, labelled so), and check passed a
    uint coordinate out of order."""
    from pdeforge.datasets import check_file
    from pdeforge.datasets.format import is_decreasing

    n = data.sizes["x"]
    pixels = data[["coefficient"]].isel(sample=slice(0, 2)).assign_coords(
        x=np.arange(n, dtype=dtype), y=np.arange(n, dtype=dtype))
    assert is_decreasing(np.arange(n, dtype=dtype)[::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ahead = surrogate.predict(pixels)
        back = surrogate.predict(pixels.isel(x=slice(None, None, -1)))
    np.testing.assert_array_equal(back.x.values, np.arange(n))
    np.testing.assert_array_equal(back.solution.values, ahead.solution.values)
    shuffled = tmp_path / "shuffled.nc"
    order = np.arange(n)
    order[[2, 3]] = order[[3, 2]]
    data.isel(x=order).assign_coords(x=np.arange(n, dtype=dtype)[order]).to_netcdf(
        shuffled, engine="h5netcdf")
    report = check_file(shuffled)
    assert any("coordinate 'x' is not strictly increasing or decreasing" in e
               for e in report.errors), report.format()


def test_empty_selections_and_bfloat16_tensors(surrogate, data, tmp_path):
    """An empty xarray selection and an empty .npy gave numpy's reshape traceback; a
    bfloat16 tensor torch's 'unsupported ScalarType' (review)."""
    empty = data[["coefficient"]].isel(sample=slice(0, 0))
    for call in (surrogate.predict, surrogate.compare):
        with pytest.raises(SurrogateInputError, match="no samples"):
            call(empty)
    np.save(tmp_path / "empty.npy", np.zeros((0, 16, 16)))
    proc = run_pdeforge("query", surrogate.path, "--input", tmp_path / "empty.npy",
                        "--out", tmp_path / "q.nc")
    assert proc.returncode == 2 and "holds no samples" in proc.stderr, proc.stderr
    x = torch.as_tensor(data.coefficient.values[:3])
    np.testing.assert_array_equal(
        surrogate.predict(x.bfloat16()).solution.values,
        surrogate.predict(x.bfloat16().float()).solution.values)


def test_query_writes_float64_inputs_as_given(trained, darcy16, tmp_path):
    """The predictions file rounded float64 inputs to float32: not the inputs given."""
    from pdeforge.surrogate import query

    with open_dataset(darcy16) as ds:
        exact = ds.load().assign(coefficient=ds.coefficient.astype(np.float64) * (1 + 1e-12))
    given = tmp_path / "f64.nc"
    exact.to_netcdf(given, engine="h5netcdf")
    query(trained[1], given, tmp_path / "q.nc", progress=False)
    with open_dataset(tmp_path / "q.nc") as q:
        assert q.coefficient.dtype == np.float64
        np.testing.assert_array_equal(q.coefficient.values, exact.coefficient.values)
    np.save(tmp_path / "f32.npy", exact.coefficient.values.astype(np.float32))
    query(trained[1], tmp_path / "f32.npy", tmp_path / "q32.nc", progress=False)
    with open_dataset(tmp_path / "q32.nc") as q:
        assert q.coefficient.dtype == np.float32


def test_query_warns_about_inputs_of_another_problem(trained, tmp_path):
    """evaluate warned about another family's file; query did not, and wrote it as the
    model's problem without a word."""
    from pdeforge.datasets.runner import generate
    from pdeforge.surrogate import query

    other = tmp_path / "poisson.nc"
    generate("poisson", 2, other, resolution=16, seed=1, progress=False)
    with open_dataset(other) as ds:
        renamed = ds.load().rename(source="coefficient")
    renamed.to_netcdf(tmp_path / "as_coefficient.nc", engine="h5netcdf")
    with pytest.warns(UserWarning, match="holds 'poisson' data and the checkpoint was "
                                         "trained on 'darcy' data"):
        query(trained[1], tmp_path / "as_coefficient.nc", tmp_path / "q.nc", progress=False)
    with open_dataset(tmp_path / "q.nc") as q:
        assert json.loads(q.attrs["config"])["inputs_problem"] == "poisson"
