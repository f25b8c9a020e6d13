"""Training on bad input: one clear line each; a file from another program trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5netcdf
import numpy as np
import pytest
import torch

from pdeforge.train.checkpoint import CheckpointError, load_module
from pdeforge.train.cli import run_cli
from tests.conftest import run_cli as run_pdeforge
from tests.conftest import run_clis
from tests.train.conftest import CONFIGS
from tests.train.test_fit import QUIET, epoch_losses, fit

MGNO = next(c for c in CONFIGS if c.stem == "darcy_mgno")
FNO = next(c for c in CONFIGS if c.stem == "darcy_fno")


# `pdeforge train fit` of the tiny MGNO, quiet: what every test here adds its options to
TRAIN_FIT = ("train", "fit", "--config", MGNO, "--preset", "tiny", *QUIET)


def pdeforge_train(*args, **kwargs):
    return run_pdeforge(*TRAIN_FIT, *args, **kwargs)


def test_missing_variable_is_named_with_the_available_ones(darcy16, tmp_path):
    proc = pdeforge_train(f"--data.path={darcy16}", "--data.inputs=[permeability]", cwd=tmp_path)
    assert proc.returncode == 2
    assert "'permeability'" in proc.stderr and "coefficient" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_variables_hint_comes_only_with_errors_about_variables(darcy16, tmp_path):
    proc = pdeforge_train(f"--data.path={darcy16}", "--data.inputs=[permeability]", cwd=tmp_path)
    assert "check --data.inputs" in proc.stderr
    damaged = tmp_path / "damaged.nc"
    damaged.write_bytes(darcy16.read_bytes()[:3000])
    proc = pdeforge_train(f"--data.path={damaged}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "check --data.inputs" not in proc.stderr, proc.stderr


def test_a_version_given_by_hand_never_replaces_a_run(darcy16, tmp_path):
    proc = pdeforge_train(f"--data.path={darcy16}", "--trainer.max_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "runs/pdeforge/version_0"
    before = (run / "metrics.csv").read_bytes(), (run / "checkpoints/last.ckpt").read_bytes()
    proc = pdeforge_train(f"--data.path={darcy16}", "--trainer.logger.init_args.version=0",
                          cwd=tmp_path)
    assert proc.returncode == 2 and "holds a run already" in proc.stderr
    assert "--ckpt_path runs/pdeforge/version_0/checkpoints/last.ckpt" in proc.stderr
    assert ((run / "metrics.csv").read_bytes(), (run / "checkpoints/last.ckpt").read_bytes()) \
        == before
    proc = pdeforge_train(f"--data.path={darcy16}", "--trainer.max_epochs=1",
                          "--trainer.logger.init_args.version=mine", cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "runs/pdeforge/mine/metrics.csv").is_file()
    # Lightning's advertisement for its cloud logger is not printed at every fit
    assert "litlogger" not in proc.stdout + proc.stderr and "GPU available" in proc.stdout + \
        proc.stderr  # (its other messages are)


def test_missing_file_says_how_to_make_one(tmp_path, monkeypatch):
    proc = pdeforge_train("--data.path=nowhere.nc", cwd=tmp_path)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "pdeforge generate" in proc.stderr
    # the configs' own path (data/darcy_64.nc): the suggested command makes that file, at
    # 64^2 (it gave the default 32^2 and a folder generate refuses to create)
    from pdeforge.train.data import _generate_command

    monkeypatch.chdir(tmp_path)  # where data/ does not exist
    assert _generate_command(Path("data/darcy_64.nc")) == (
        "mkdir -p data && pdeforge generate darcy --n 1200 --resolution 64 --out "
        "data/darcy_64.nc")
    assert _generate_command(tmp_path / "helmholtz3d_24.nc").endswith(
        f"generate helmholtz3d --n 1200 --resolution 24 --out {tmp_path}/helmholtz3d_24.nc")
    assert _generate_command(tmp_path / "mine.nc") == (
        f"pdeforge generate darcy --n 1200 --out {tmp_path}/mine.nc")


@pytest.mark.parametrize(("option", "message"), [
    ("--model.lr=-1", "model.lr must be a positive number"),
    ('--model.model_kwargs={"n_layers": 0}', "n_layers must be a positive integer"),
])
def test_bad_model_settings_get_one_line(darcy16, tmp_path, option, message):
    proc = pdeforge_train(f"--data.path={darcy16}", option, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("option", "message"), [
    ("--trainer.max_epochs=-5", "`max_epochs` must be a non-negative integer or -1"),
    ("--trainer.devices=0", "a Trainer setting: see `pdeforge train fit --help`"),
    ("--data.num_workers=-1", "data.num_workers must be an integer >= 0"),
])
def test_bad_trainer_and_loader_settings_get_one_line(darcy16, tmp_path, option, message):
    # Lightning's MisconfigurationException and the DataLoader's ValueError were tracebacks
    proc = pdeforge_train(f"--data.path={darcy16}", option, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


@pytest.mark.parametrize(("content", "message"), [
    (b"\x89HDF\r\n\x1a\n\x00\x00", "is not text (a dataset or checkpoint?)"),
    (b"model: [unclosed\n  x: 1\n", "is not valid YAML"),
    (b"- model\n- data\n", "holds a list, not a mapping of sections"),
])
def test_a_config_that_is_not_a_yaml_recipe_gets_one_line(darcy16, tmp_path, content, message):
    (tmp_path / "recipe.yaml").write_bytes(content)
    for preset in ((), ("--preset", "tiny")):  # the preset reads the config's model itself
        proc = run_pdeforge("train", "fit", "--config", "recipe.yaml", *preset,
                            f"--data.path={darcy16}", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"config file 'recipe.yaml' {message}" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_model_kwargs_dict_dropping_recipe_settings_is_warned_about(darcy16, tmp_path):
    base = ("train", "fit", "--config", MGNO, f"--data.path={darcy16}", "--print_config")
    whole = run_pdeforge(*base, "--model.model_kwargs", '{"channels": 8}', cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert "levels=6, n_layers=4, padding_mode='zeros' fall back" in whole.stderr
    assert "--model.model_kwargs.channels=" in whole.stderr
    one = run_pdeforge(*base, "--model.model_kwargs.channels=8", cwd=tmp_path)
    assert one.returncode == 0 and "warning" not in one.stderr
    # the one-by-one form keeps the recipe's other settings
    assert "channels: 8" in one.stdout and "levels: 6" in one.stdout


def test_missing_config_file(tmp_path):
    proc = run_pdeforge("train", "fit", "--config", "nope.yaml", "--preset", "tiny", cwd=tmp_path)
    assert proc.returncode == 2 and "config file 'nope.yaml' does not exist" in proc.stderr


def test_grid_too_small_for_the_model(darcy16, tmp_path):
    proc = run_pdeforge(
        "train",
        "fit",
        "--config",
        MGNO,
        "--preset",
        "tiny",
        *QUIET,
        f"--data.path={darcy16}",
        '--model.model_kwargs={"levels": 6, "padding_mode": "reflect"}',
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "at least 33 points per axis" in proc.stderr and "fewer levels" in proc.stderr


def test_resuming_from_a_checkpoint_of_another_model_is_refused(darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = fit(MGNO, darcy16, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    proc = run_pdeforge(
        "train",
        "fit",
        "--config",
        FNO,
        "--preset",
        "tiny",
        *QUIET,
        f"--data.path={darcy16}",
        f"--ckpt_path={last}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "holds a mgno model" in proc.stderr and "config asks for fno" in proc.stderr


def test_a_pickled_object_in_a_checkpoint_is_refused(darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = fit(MGNO, darcy16, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["payload"] = shutil.rmtree  # unpickling this would import a function
    tampered = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, tampered)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_module(tampered)
    module, _ = load_module(last)  # the untouched file loads
    assert module.operator.name == "mgno"


def write_foreign_file(path: Path, n: int = 20, size: int = 16, converged: int = 1) -> None:
    """A dataset in the published format written with h5netcdf alone (no pdeforge code)."""
    rng = np.random.default_rng(0)
    x = (np.arange(size) + 0.5) / size
    a = rng.uniform(1, 2, size=(n, size, size)).astype(np.float32)
    u = (np.sin(np.pi * x)[None, :, None] * np.sin(np.pi * x)[None, None, :] / a).astype(np.float32)
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"sample": n, "x": size, "y": size}
        f.attrs.update(
            {
                "pdeforge_format": 1,
                "problem": "external",
                "solver": "hand-written",
                "pdeforge_version": "none",
                "seed": 0,
                "n_samples": n,
                "config": '{"problem": "external", "n_samples": 20, "seed": 0}',
                "created": "2026-01-01T00:00:00Z",
                "status": "complete",
            }
        )
        for name in ("x", "y"):
            v = f.create_variable(name, (name,), "f8")
            v[:] = x
            v.attrs["units"] = "m"
        for name, data, role in (("a", a, "input"), ("u", u, "output")):
            v = f.create_variable(name, ("sample", "x", "y"), "f4", chunks=(1, size, size))
            v[:] = data
            v.attrs.update({"role": role, "units": "1"})
        conv = f.create_variable("converged", ("sample",), "i1")
        conv[:] = converged
        conv.attrs.update({"role": "diagnostic", "dtype": "bool", "long_name": "converged"})
        secs = f.create_variable("solve_seconds", ("sample",), "f8")
        secs[:] = 0.0
        secs.attrs.update({"role": "diagnostic", "units": "s"})


def test_a_file_written_by_another_program_trains_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "foreign.nc"
    write_foreign_file(data)
    assert run_pdeforge("check", data).returncode == 0
    cli = run_cli(["fit", "--config", str(FNO), "--preset", "tiny", *QUIET, f"--data.path={data}"])
    assert cli.model.data_info["inputs"] == ["a"] and cli.model.data_info["outputs"] == ["u"]
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    proc = run_pdeforge("evaluate", last, "--data", data)
    assert proc.returncode == 0, proc.stderr
    assert '"n_samples": 20' in proc.stdout


@pytest.mark.parametrize(("problem", "solver", "advice"), [
    ("external", None, "regenerate it with other solver settings"),
    ("darcy", "x; ran: skr-rcg/amg", "choose another --preconditioner, or --solver direct"),
    # a direct solve: no --maxiter to raise (generate's own advice, now training's too)
    ("darcy", "x; ran: direct", "too ill-conditioned for double precision"),
    ("nlse", None, "raise --resolution"),  # it was told of a --solver nlse does not have
])
def test_a_file_with_no_converged_sample_says_so(tmp_path, problem, solver, advice):
    import h5py

    from pdeforge.train.data import OperatorDataModule, TrainingDataError

    data = tmp_path / "failed.nc"
    write_foreign_file(data, n=4, converged=0)
    with h5py.File(data, "r+") as f:
        f.attrs["problem"] = problem
        if solver is not None:
            f.attrs["solver"] = solver
    with pytest.raises(TrainingDataError, match="no converged sample in .*failed.nc") as info:
        OperatorDataModule(path=str(data)).setup()
    assert advice in str(info.value)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(darcy16, tmp_path):
    proc = run_pdeforge(
        "train",
        "fit",
        "--config",
        FNO,
        "--preset",
        "tiny",
        *QUIET,
        f"--data.path={darcy16}",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_epochs=1",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    assert list(tmp_path.glob("runs/pdeforge/version_*/checkpoints/last.ckpt"))


def test_bf16_mixed_precision_trains(darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = fit(FNO, darcy16, "--trainer.precision=bf16-mixed", "--trainer.max_epochs=1")
    assert cli.trainer.precision == "bf16-mixed"
    assert np.isfinite(cli.trainer.callback_metrics["val/rel_l2"].item())


def test_unreadable_checkpoints_are_named_for_what_they_are(darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.ckpt").write_text("hello\n")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    cli = fit(MGNO, darcy16, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    (tmp_path / "cut.ckpt").write_bytes(last.read_bytes()[:2000])
    for name, message in (
        ("text.ckpt", "not a PyTorch checkpoint"),
        ("empty.ckpt", "is empty"),
        ("cut.ckpt", "truncated"),
    ):
        with pytest.raises(CheckpointError, match=message):
            load_module(tmp_path / name)
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file; the "
                                              r"newest checkpoints in it: .*last.ckpt"):
        load_module(Path(cli.trainer.log_dir))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint|cannot read") as info:
        load_module(darcy16)  # a dataset file is not called unsafe
    assert "run code" not in str(info.value)
    proc = run_pdeforge("evaluate", tmp_path / "text.ckpt", "--data", darcy16)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = pdeforge_train(f"--data.path={darcy16}", "--ckpt_path=nope.ckpt", cwd=tmp_path)
    assert proc.returncode == 2 and "nope.ckpt does not exist" in proc.stderr
    proc = pdeforge_train(
        f"--data.path={darcy16}", f"--ckpt_path={tmp_path / 'text.ckpt'}", cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_damaged_and_mismatched_weights_are_named_before_anything_runs(
    darcy16, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cli = fit(MGNO, darcy16, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    # bytes flipped inside a tensor: torch.load reads them as garbage (NaN predictions);
    # the archive's checksum finds them
    raw = bytearray(last.read_bytes())
    weights = cli.model.operator.head.weight.detach().numpy().tobytes()
    at = bytes(raw).find(weights[:32])
    assert at > 0
    raw[at : at + 16] = bytes(16)
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_module(flipped)
    # 8 damaged bytes anywhere (a name in the archive's directory that is no longer
    # UTF-8 raised a bare UnicodeDecodeError): a CheckpointError, or the same weights
    original = load_module(last)[0].state_dict()
    for at in np.linspace(0, len(raw) - 8, 40).astype(int):
        damaged = bytearray(last.read_bytes())
        damaged[at : at + 8] = b"\xff" * 8
        (tmp_path / "damaged.ckpt").write_bytes(bytes(damaged))
        try:
            state = load_module(tmp_path / "damaged.ckpt")[0].state_dict()
        except CheckpointError:
            continue
        for key, value in original.items():
            assert torch.equal(state[key], value), (at, key)
    # a tensor of another shape and a missing one: named, for every command
    checkpoint = torch.load(last, weights_only=True)
    key = "operator.head.weight"
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key][:, :3]
    checkpoint["state_dict"].pop("operator.linears.0.bias")
    torch.save(checkpoint, tmp_path / "reshaped.ckpt")
    with pytest.raises(CheckpointError, match=r"missing \['operator.linears.0.bias'\]; "
                                              r"other shapes \['operator.head.weight"):
        load_module(tmp_path / "reshaped.ckpt")
    commands, messages = [], []
    for args in ((*TRAIN_FIT, f"--data.path={darcy16}", "--trainer.max_epochs=3"),
                 ("train", "test", "--config", MGNO, "--preset", "tiny", *QUIET,
                  f"--data.path={darcy16}"),
                 ("evaluate", "--data", darcy16)):
        for bad, message in ((flipped, "fails its checksum"),
                             (tmp_path / "reshaped.ckpt", "do not fit the mgno model")):
            where = [f"--ckpt_path={bad}"] if args[0] == "train" else []
            commands.append(
                (*args, *where) if args[0] == "train" else (args[0], bad, *args[1:]))
            messages.append(message)
    for command, message, proc in zip(
        commands, messages, run_clis(commands, cwd=tmp_path), strict=True
    ):
        assert proc.returncode == 2, (command, proc.stderr[-2000:])
        assert message in proc.stderr and "Traceback" not in proc.stderr, command


def test_checkpoints_without_crcs_load_and_non_tensor_weights_are_named(
    darcy16, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cli = fit(MGNO, darcy16, "--trainer.max_epochs=1")
    checkpoint = torch.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt",
                            weights_only=True)
    torch.serialization.set_crc32_options(False)  # torch then writes CRC 0 for every entry
    try:
        torch.save(checkpoint, tmp_path / "nocrc.ckpt")
    finally:
        torch.serialization.set_crc32_options(True)
    module, _ = load_module(tmp_path / "nocrc.ckpt")
    assert module.operator.name == "mgno"
    checkpoint["state_dict"]["operator.head.weight"] = [1.0, 2.0]
    torch.save(checkpoint, tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match=r"operator.head.weight not a tensor"):
        load_module(tmp_path / "list.ckpt")


def test_train_help_and_untrained_test_runs(darcy16, tmp_path):
    proc = run_pdeforge("train", "--help")
    assert proc.returncode == 0 and "--preset" in proc.stdout
    proc = run_pdeforge(
        "train",
        "test",
        "--config",
        MGNO,
        "--preset",
        "tiny",
        *QUIET,
        f"--data.path={darcy16}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "untrained model" in proc.stderr


def test_one_variable_name_is_accepted_for_a_list(darcy16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = fit(MGNO, darcy16, "--trainer.max_epochs=1", "--data.inputs=coefficient")
    assert cli.datamodule.inputs == ["coefficient"]


def test_an_empty_validation_split_is_refused_or_warned_about(tmp_path):
    # Lightning only warned about an empty loader and no best checkpoint was written
    import h5py

    from pdeforge.train.data import OperatorDataModule, TrainingDataError

    data = tmp_path / "few.nc"
    write_foreign_file(data, n=6)
    with h5py.File(data, "r+") as f:
        f["converged"][3:] = 0
    with pytest.raises(TrainingDataError, match=r"validation split is empty: data.split\[1\] = "
                       r"0.1 of 3 converged sample\(s\) \(3 not converged were skipped\)"):
        OperatorDataModule(path=str(data)).setup()
    with pytest.warns(UserWarning, match="no validation samples .* only last.ckpt"):
        OperatorDataModule(path=str(data), split=[1.0, 0.0, 0.0]).setup()
    OperatorDataModule(path=str(data), split=[0.4, 0.3, 0.3]).setup()  # one each: fine


def test_resuming_on_another_problems_data_is_refused(tmp_path, monkeypatch):
    # same channel counts (two inputs, one output): it trained on with the old data's
    # normalisers and labelled the checkpoint with the old problem and files
    from pdeforge.datasets.runner import generate

    monkeypatch.chdir(tmp_path)
    poisson, adv = tmp_path / "poisson.nc", tmp_path / "adv.nc"
    generate("poisson", 12, poisson, resolution=12, seed=0, shard_size=12, progress=False)
    generate("advection-diffusion", 12, adv, resolution=12, seed=0, shard_size=12,
             progress=False)
    cli = fit(FNO, poisson, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    proc = run_pdeforge("train", "fit", "--config", FNO, "--preset", "tiny", *QUIET,
                        f"--data.path={adv}", f"--ckpt_path={last}", "--trainer.max_epochs=2",
                        cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "trained on other data (problem: poisson -> advection-diffusion" in proc.stderr
    assert "Train on the new data without --ckpt_path" in proc.stderr
    # the refused run leaves no version folder holding only its config
    assert sorted(p.name for p in (tmp_path / "runs" / "pdeforge").iterdir()) == ["version_0"]
    # the same problem again resumes
    again = fit(FNO, poisson, f"--ckpt_path={last}", "--trainer.max_epochs=2")
    assert again.trainer.current_epoch == 2


def test_train_predict_points_to_query(tmp_path):
    # LightningCLI's predict ended in a traceback (no predict_dataloader)
    proc = run_pdeforge("train", "predict", "--config", MGNO, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pdeforge query CKPT --input FILE --out FILE" in proc.stderr
    # nor is it listed among the subcommands
    helped = run_pdeforge("train", "--help", cwd=tmp_path)
    assert "{fit,validate,test}" in helped.stdout and "predict" not in helped.stdout


def test_testing_a_checkpoint_on_another_grid_is_not_taken_for_a_resume(darcy16, darcy32,
                                                                       tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = fit(FNO, darcy16, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    tested = run_cli(["test", "--config", str(FNO), "--preset", "tiny", *QUIET,
                      f"--data.path={darcy32}", "--data.split=[0.5, 0.25, 0.25]",
                      f"--ckpt_path={last}"])
    assert "test/rel_l2" in tested.trainer.callback_metrics
    assert tested.model.data_info["files"] == cli.model.data_info["files"]  # its training data


def test_a_mask_input_left_out_is_warned_about(tmp_path):
    from pdeforge.datasets.runner import generate
    from pdeforge.train.data import OperatorDataModule

    path = tmp_path / "thermal.nc"
    generate("thermal", 4, path, resolution=12, seed=0, progress=False)
    with pytest.warns(UserWarning, match="'temperature' is defined where 'plate' is 1, but "
                      "'plate' is not a one-channel input here.*add 'plate' to data.inputs"):
        dm = OperatorDataModule(path=str(path), inputs=["boundary_data"])
    assert dm.info["masks"] == {}
    assert OperatorDataModule(path=str(path)).info["masks"] == {"temperature": "plate"}


def test_a_checkpoint_keeps_its_variables_when_the_defaults_grow(tmp_path, monkeypatch):
    """A run trained on advection-diffusion without its parameter (the default before
    parameters were inputs) resumes and is tested with no --data.inputs: the checkpoint's
    variables, not today's defaults."""
    from pdeforge.datasets.runner import generate

    monkeypatch.chdir(tmp_path)
    adv = tmp_path / "adv.nc"
    generate("advection-diffusion", 12, adv, resolution=12, seed=0, shard_size=12, progress=False)
    cli = fit(FNO, adv, "--data.inputs=[velocity_x, velocity_y]", "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    tested = run_cli(["test", "--config", str(FNO), "--preset", "tiny", *QUIET,
                      f"--data.path={adv}", f"--ckpt_path={last}"])
    assert tested.datamodule.inputs == ["velocity_x", "velocity_y"]
    again = fit(FNO, adv, f"--ckpt_path={last}", "--trainer.max_epochs=2")
    assert again.datamodule.inputs == ["velocity_x", "velocity_y"]
    assert again.trainer.current_epoch == 2


def test_default_root_dir_moves_the_run_with_its_checkpoints(darcy16, tmp_path, monkeypatch):
    """--trainer.default_root_dir was ignored: the default logger kept writing to runs/."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    cli = fit(FNO, darcy16, "--trainer.max_epochs=1", f"--trainer.default_root_dir={mine}")
    assert Path(cli.trainer.log_dir).is_relative_to(tmp_path / "mine")
    assert (Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "runs").exists()
    # evaluating on a missing file says so, without the model's variables
    from pdeforge.errors import DatasetFormatError
    from pdeforge.train.evaluate import evaluate

    with pytest.raises(DatasetFormatError, match="no such file; check the path$"):
        evaluate(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", tmp_path / "no.nc")
    # a mistyped checkpoint name lists the run's checkpoints
    with pytest.raises(CheckpointError, match=r"does not exist; checkpoints found: .*last.ckpt"):
        load_module(Path(cli.trainer.log_dir) / "checkpoints" / "best-epoch=099.ckpt")


def test_a_mistyped_config_gets_one_line_naming_the_recipes(tmp_path):
    proc = run_pdeforge("train", "fit", "--config", "configs/darcy_mgon.yaml",
                        "--data.path=x.nc", cwd=Path(__file__).parents[2])
    assert proc.returncode != 0
    assert "config file 'configs/darcy_mgon.yaml' does not exist" in proc.stderr
    assert "configs/darcy_mgno.yaml" in proc.stderr and len(proc.stderr.splitlines()) <= 3


@pytest.mark.parametrize("loss", ["l2", "h1"])
def test_the_loss_is_the_same_for_outputs_stored_in_any_units(tmp_path, monkeypatch, loss):
    """neuraloperator's relative losses added 1e-8 to the target's norm in the data's
    units: outputs stored x 1e-11 (norms about 1e-10) trained on a loss about 100x
    smaller than the same data's. The losses are now the same to rounding."""
    import h5py

    monkeypatch.chdir(tmp_path)
    plain, tiny = tmp_path / "plain.nc", tmp_path / "tiny_units.nc"
    write_foreign_file(plain)
    shutil.copy(plain, tiny)
    with h5py.File(tiny, "r+") as f:
        f["u"][...] = f["u"][...] * 1e-11
    runs = []
    for data in (plain, tiny):
        cli = run_cli(["fit", "--config", str(FNO), "--preset", "tiny", *QUIET,
                       f"--data.path={data}", "--trainer.max_epochs=2",
                       f"--model.loss={loss}", "--seed_everything=3"])
        runs.append(epoch_losses(Path(cli.trainer.log_dir)))
    assert len(runs[0]) == 2 and runs[0][0] > 1e-3
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-3)


def test_testing_on_the_training_data_split_otherwise_is_said(darcy16, tmp_path,
                                                             monkeypatch):
    """`train test` with another split seed scored samples the model trained on, silently
    (review; evaluate warns about a training file)."""
    import warnings

    monkeypatch.chdir(tmp_path)
    cli = fit(FNO, darcy16, "--trainer.max_epochs=1")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    test = ["test", "--config", str(FNO), "--preset", "tiny", *QUIET,
            f"--data.path={darcy16}", f"--ckpt_path={last}"]
    with pytest.warns(UserWarning, match=r"split otherwise \(data.split_seed 0 -> 1\): the "
                                         r"test split holds samples it trained on"):
        run_cli([*test, "--data.split_seed=1"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli(test)
    assert not [w for w in caught if "holds samples it trained on" in str(w.message)]


def test_a_device_torch_does_not_know_is_named_not_the_checkpoint(darcy16, tmp_path):
    """torch's error for a bad map_location was reported as a damaged checkpoint."""
    from pdeforge.train.checkpoint import read_checkpoint

    cli = fit(MGNO, darcy16, "--trainer.max_epochs=1",
              f"--trainer.default_root_dir={tmp_path}",
              f"--trainer.logger.init_args.save_dir={tmp_path}")
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="unknown device 'gpu0'") as info:
        read_checkpoint(last, map_location="gpu0")
    assert "damaged" not in str(info.value)
