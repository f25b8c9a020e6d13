"""The command line as a user meets it: one-line errors, exit codes, no tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from pdeforge.datasets import open_dataset
from pdeforge.errors import DatasetFormatError
from tests.conftest import run_cli


def _one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_generate_info_check_end_to_end(tmp_path):
    out = tmp_path / "d.nc"
    gen = run_cli("generate", "darcy", "--n", "5", "--resolution", "12", "--out", out,
                  "--coefficient", "lognormal", "--scheme", "vertex", "--no-progress")
    assert gen.returncode == 0, gen.stderr
    assert "wrote" in gen.stdout and "5 samples" in gen.stdout
    assert "solver ran: direct" in gen.stdout  # what --solver auto picked at 12^2
    chk = run_cli("check", out)
    assert chk.returncode == 0 and "OK" in chk.stdout
    info = run_cli("info", out, "--json")
    d = json.loads(info.stdout)
    assert d["attrs"]["problem"] == "darcy" and d["dims"] == {"sample": 5, "x": 12, "y": 12}
    assert d["config"]["options"]["scheme"] == "vertex"
    assert d["attrs"]["solver"].endswith("(method=auto, preconditioner=auto, rtol=1e-08); "
                                         "ran: direct")
    assert d["config"]["options"]["tau"] == 7.0  # resolved lognormal default
    assert d["diagnostics"]["converged"] == {"true": 5, "false": 0}
    # counts and times add up; residuals do not
    assert d["diagnostics"]["iterations"]["total"] is not None  # 0: a direct solve
    assert d["diagnostics"]["solve_seconds"]["total"] > 0
    assert d["diagnostics"]["residual"]["total"] is None
    text = run_cli("info", out).stdout
    residual_line = next(ln for ln in text.splitlines() if ln.strip().startswith("residual"))
    assert "max" in residual_line and "total" not in residual_line
    assert "input       coefficient" in text and "5 converged, 0 not" in text
    again = run_cli("generate", "darcy", "--n", "5", "--resolution", "12", "--out", out,
                    "--coefficient", "lognormal", "--scheme", "vertex", "--no-progress")
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["generate", "heat", "--n", "3", "--out", "x.nc"], ["invalid choice: 'heat'", "darcy"]),
        (["generate", "darcy", "--n", "0", "--out", "x.nc"], ["--n", "positive integer"]),
        (["generate", "darcy", "--n", "-2", "--out", "x.nc"], ["--n", "positive integer"]),
        (["generate", "darcy", "--n", "3", "--out", "x.nc", "--resolution", "4"],
         ["--resolution 4 is too small", "at least 8"]),
        (["generate", "darcy", "--n", "3", "--out", "missing/dir/x.nc"],
         ["output directory missing/dir does not exist", "mkdir -p"]),
        (["generate", "darcy", "--n", "3", "--out", "x.nc", "--coefficient", "gamma"],
         ["invalid choice: 'gamma'"]),
        (["generate", "darcy", "--n", "3", "--out", "x.nc", "--tau", "-1"],
         ["--tau", "must be > 0"]),
        (["check"], ["the following arguments are required: FILE"]),
        (["generate", "darcy", "--n", "3", "--out", "x.nc", "--velocity", "3"],
         ["unrecognized arguments: --velocity 3", "see pdeforge generate darcy --help"]),
        (["generate", "advection-diffusion", "--n", "2", "--resolution", "12", "--out", "x.nc",
          "--solver", "skr", "--preconditioner", "amg", "--no-progress"],
         ["amg (smoothed aggregation) is for symmetric", "use 'ilu' or 'ilu0'"]),
        (["generate", "darcy", "--n", "2", "--resolution", "12", "--out", "x.nc",
          "--solver", "direct", "--preconditioner", "ilu"],
         ["--preconditioner ilu has no effect with --solver direct", "leave --preconditioner out"]),
    ],
)
def test_bad_inputs(tmp_path, args, fragments):
    _one_line_error(run_cli(*args, cwd=tmp_path), *fragments)


def test_check_warns_about_samples_marked_not_converged(tmp_path):
    out = tmp_path / "nc.nc"  # 3 iterations cannot reach 1e-12: every sample fails
    gen = run_cli("generate", "darcy", "--n", "3", "--resolution", "12", "--out", out,
                  "--solver", "gmres", "--preconditioner", "none", "--rtol", "1e-12",
                  "--maxiter", "3", "--no-progress")
    assert gen.returncode == 0, gen.stderr
    assert "3 of 3 samples did not converge" in gen.stderr and "raise --maxiter" in gen.stderr
    chk = run_cli("check", out)
    assert chk.returncode == 0, chk.stdout  # a valid file, with a warning
    assert "3 of 3 samples are marked not converged (first: [0, 1, 2])" in chk.stdout


def test_resume_with_different_config(tmp_path):
    out = tmp_path / "r.nc"
    assert run_cli("generate", "darcy", "--n", "3", "--resolution", "8", "--out", out,
                   "--no-progress").returncode == 0
    proc = run_cli("generate", "darcy", "--n", "3", "--resolution", "8", "--out", out,
                   "--seed", "1", "--no-progress")
    _one_line_error(proc, "different config", "seed: 0 -> 1", "--overwrite")


@pytest.fixture
def bad_files(tmp_path, darcy_file):
    text = tmp_path / "notes.nc"
    text.write_text("this is not HDF5\n" * 20)
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(darcy_file.read_bytes()[: darcy_file.stat().st_size // 2])
    head = tmp_path / "head.nc"
    head.write_bytes(darcy_file.read_bytes()[:4])
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    (tmp_path / "unfinished.nc.parts").mkdir()  # what an interrupted generation leaves
    return {"text": text, "truncated": truncated, "head": head, "empty": empty,
            "missing": tmp_path / "nope.nc", "unfinished": tmp_path / "unfinished.nc"}


@pytest.mark.parametrize("kind", ["text", "truncated", "head", "empty", "missing", "unfinished"])
@pytest.mark.parametrize("command", ["check", "info"])
def test_bad_files_on_the_command_line(bad_files, kind, command):
    proc = run_cli(command, bad_files[kind])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    message = {"text": "not an HDF5", "truncated": "damaged HDF5", "head": "not an HDF5",
               "empty": "not an HDF5", "missing": "no such file",
               "unfinished": "same `pdeforge generate` command again"}[kind]
    assert message in proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", ["text", "truncated", "head", "empty", "missing"])
def test_bad_files_in_open_dataset(bad_files, kind):
    with pytest.raises(DatasetFormatError):
        open_dataset(bad_files[kind])


def test_hdf5_file_that_is_not_a_dataset(tmp_path, darcy_file):
    import h5py

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["a"] = [1, 2, 3]
    with pytest.raises(DatasetFormatError, match="not a pdeforge dataset"):
        open_dataset(path)
    proc = run_cli("check", path)
    assert proc.returncode == 1 and "missing root attribute" in proc.stdout
    partial = tmp_path / "partial.nc"
    shutil.copy(darcy_file, partial)
    with h5py.File(partial, "r+") as f:
        f.attrs["status"] = "shard"
    with pytest.raises(DatasetFormatError, match="incomplete"):
        open_dataset(partial)


def test_commands_outside_nlse_and_training_do_not_import_torch(tmp_path):
    """torch takes seconds to import on a slow machine: ``--help``, a Darcy dataset and
    its check must not wait for it (a fresh interpreter, not the test server's fork)."""
    code = (
        "import sys\n"
        "from pdeforge.cli import main\n"
        "for argv in (['--help'], ['generate', 'darcy', '--n', '2', '--resolution', '12',\n"
        "             '--out', 'd.nc'], ['check', 'd.nc'], ['info', 'd.nc']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, (argv, exc.code)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_ctrl_c_while_the_parser_imports_is_one_line(monkeypatch, capsys):
    """A Ctrl-C in the first second (the families' imports, scipy's) printed importlib's
    traceback."""
    from pdeforge import cli

    def importing():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", importing)
    assert cli.main(["info", "x.nc"]) == 130
    assert capsys.readouterr().err == "pdeforge: interrupted\n"
