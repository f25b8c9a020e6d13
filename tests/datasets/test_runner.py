"""Generation runner: determinism across workers, resume after kill -9, config checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import h5py
import numpy as np
import pytest

from pdeforge.datasets import runner
from pdeforge.datasets.problems.darcy import Darcy
from pdeforge.datasets.runner import generate
from pdeforge.errors import ConfigMismatchError, ConvergenceError, PdeforgeError

TIMING = {"solve_seconds"}


def assert_same_dataset(a, b):
    """Every variable equal bit for bit except wall-time diagnostics; same config."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert set(fa) == set(fb)
        for name in fa:
            if name in TIMING or not isinstance(fa[name], h5py.Dataset):
                continue
            x, y = fa[name][()], fb[name][()]
            assert x.dtype == y.dtype, name
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
        for key in ("config", "problem", "solver", "seed", "n_samples", "status"):
            assert fa.attrs[key] == fb.attrs[key], key


def test_workers_one_and_two_identical(tmp_path):
    kw = dict(resolution=24, seed=5, shard_size=3, progress=False,
              options={"coefficient": "lognormal"})
    one = generate("darcy", 10, tmp_path / "one.nc", workers=1, **kw)
    two = generate("darcy", 10, tmp_path / "two.nc", workers=2, **kw)
    assert one.shards_total == two.shards_total == 4
    assert_same_dataset(one.path, two.path)  # (root attributes too: the solver that ran)
    assert one.solver_used == two.solver_used == ["direct"]  # from the Dask workers too
    assert not (tmp_path / "two.nc.parts").exists()


def test_nlse_workers_one_and_two_identical(tmp_path):
    """The batched NLSE solver cuts a shard into chunks that share one adaptive step: the
    cut must not follow the thread count (2 here, 1 in a Dask worker's process)."""
    kw = dict(resolution=128, shard_size=32, progress=False,
              options={"t_end": 1.0, "n_times": 5, "eta_max": 1.0})
    one = generate("nlse", 64, tmp_path / "one.nc", workers=1, **kw)
    two = generate("nlse", 64, tmp_path / "two.nc", workers=2, **kw)
    assert_same_dataset(one.path, two.path)


def test_existing_scheduler(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        res = generate("darcy", 5, tmp_path / "s.nc", resolution=12, shard_size=2,
                       scheduler=cluster.scheduler_address, progress=False)
    ref = generate("darcy", 5, tmp_path / "r.nc", resolution=12, shard_size=2, progress=False)
    assert_same_dataset(res.path, ref.path)


def test_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT", "1s")
    with pytest.raises(PdeforgeError, match="cannot reach the Dask scheduler"):
        generate("darcy", 2, tmp_path / "x.nc", resolution=8, scheduler="tcp://127.0.0.1:9",
                 progress=False)


@pytest.fixture
def foreign_server():
    """A TCP server that is not a Dask scheduler: it accepts and then stays silent
    (``answer=None``, like an HTTP server waiting for a request line) or sends bytes."""
    import socket
    import threading

    servers = []

    def start(answer: bytes | None):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        servers.append(srv)
        conns = []

        def serve():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                conns.append(conn)
                if answer is not None:
                    conn.sendall(answer)

        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{srv.getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


@pytest.mark.parametrize("answer", [None, bytes(range(256)) * 8])
def test_a_server_that_is_not_a_scheduler_is_a_clear_error(tmp_path, monkeypatch,
                                                             foreign_server, answer):
    """Dask's connect timeout covers the TCP connect only: a silent server made generate
    wait forever, garbage ended in a MemoryError traceback."""
    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT", "1s")
    address = foreign_server(answer)
    t0 = time.time()
    match = "no Dask scheduler answered" if answer is None else "did not answer as a Dask"
    with pytest.raises(PdeforgeError, match=match):
        generate("darcy", 2, tmp_path / "x.nc", resolution=8, scheduler=address,
                 progress=False)
    assert time.time() - t0 < 30
    assert not (tmp_path / "x.nc.parts").exists()


def test_a_scheduler_without_workers_is_named_then_the_run_waits_for_one(tmp_path):
    import threading

    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        timer = threading.Timer(2.0, cluster.scale, args=(1,))
        timer.start()
        try:
            with pytest.warns(UserWarning, match="has no workers yet"):
                res = generate("darcy", 4, tmp_path / "w.nc", resolution=8, shard_size=2,
                               scheduler=cluster.scheduler_address, progress=False)
        finally:
            timer.cancel()
    assert res.shards_computed == 2


def test_a_lost_scheduler_keeps_the_finished_shards(tmp_path, monkeypatch):
    """The scheduler goes away after the first shard is stored: a one-line error that
    says what was kept; the same command on a new cluster resumes."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=None)
    store = runner._write_shard
    stored = []

    def write_then_lose_the_scheduler(*args, **kwargs):
        store(*args, **kwargs)
        stored.append(1)
        if len(stored) == 1:
            cluster.close()

    monkeypatch.setattr(runner, "_write_shard", write_then_lose_the_scheduler)
    kw = dict(resolution=8, shard_size=2, progress=False)
    try:
        with pytest.raises(PdeforgeError, match="lost the Dask scheduler.*shards are kept"):
            generate("darcy", 8, tmp_path / "l.nc", scheduler=cluster.scheduler_address, **kw)
    finally:
        cluster.close()
    assert len(list((tmp_path / "l.nc.parts").glob("shard-*.nc"))) >= 1
    monkeypatch.setattr(runner, "_write_shard", store)
    res = generate("darcy", 8, tmp_path / "l.nc", **kw)
    assert res.shards_computed < res.shards_total
    assert_same_dataset(res.path, generate("darcy", 8, tmp_path / "r.nc", **kw).path)


def test_sample_depends_only_on_seed_and_index():
    prob = Darcy(20)
    batch = prob.generate(9, [3, 4, 5])
    alone = prob.generate(9, [5])
    assert np.array_equal(batch["solution"][2], alone["solution"][0])
    assert np.array_equal(batch["coefficient"][2], alone["coefficient"][0])


def test_kill_minus_nine_then_resume_gives_identical_file(tmp_path):
    out = tmp_path / "k.nc"
    parts = tmp_path / "k.nc.parts"
    args = ["generate", "darcy", "--n", "120", "--resolution", "96", "--shard-size", "4",
            "--seed", "2", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "pdeforge", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(parts.glob("shard-*.nc"))) < 3:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("shard-*.nc")))
    assert not out.exists(), "the run finished before it could be killed"
    assert 3 <= done_before < 30
    resumed = subprocess.run([sys.executable, "-m", "pdeforge", *args], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{30 - done_before} of 30 shards computed" in resumed.stdout
    ref = generate("darcy", 120, tmp_path / "ref.nc", resolution=96, shard_size=4, seed=2,
                   progress=False)
    assert_same_dataset(out, ref.path)
    assert not parts.exists()


def test_resume_with_other_config_is_an_error(tmp_path, monkeypatch):
    out = tmp_path / "m.nc"
    calls = []
    real = runner._compute_shard

    def fail_after_two(text, start, stop, progress=None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(start)
        return real(text, start, stop, progress)

    monkeypatch.setattr(runner, "_compute_shard", fail_after_two)
    with pytest.raises(PdeforgeError, match="re-run the same command to resume"):
        generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    monkeypatch.setattr(runner, "_compute_shard", real)
    assert len(list((tmp_path / "m.nc.parts").glob("shard-*.nc"))) == 2
    with pytest.raises(ConfigMismatchError, match=r"options.coefficient: 'piecewise' -> "
                       r"'lognormal'"):
        generate("darcy", 8, out, resolution=12, shard_size=2, progress=False,
                 options={"coefficient": "lognormal"})
    with pytest.raises(ConfigMismatchError, match="resolution: 12 -> 16"):
        generate("darcy", 8, out, resolution=16, shard_size=2, progress=False)
    res = generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    assert res.shards_computed == 2 and res.shards_total == 4


def test_complete_output_is_kept_and_mismatch_refused(tmp_path):
    out = tmp_path / "c.nc"
    generate("darcy", 3, out, resolution=8, progress=False)
    again = generate("darcy", 3, out, resolution=8, progress=False)
    assert again.already_complete
    with pytest.raises(ConfigMismatchError, match="n_samples: 3 -> 4"):
        generate("darcy", 4, out, resolution=8, progress=False)
    # another family: the problem is named first (it came after ~30 option changes)
    with pytest.raises(ConfigMismatchError, match=r"\(problem: 'darcy' -> 'poisson'; "):
        generate("poisson", 3, out, resolution=8, progress=False)
    res = generate("darcy", 4, out, resolution=8, progress=False, overwrite=True)
    assert res.n_samples == 4


def test_foreign_output_file_is_not_overwritten(tmp_path):
    out = tmp_path / "notes.nc"
    out.write_text("my notes")
    with pytest.raises(PdeforgeError, match="not a pdeforge dataset.*not an HDF5"):
        generate("darcy", 2, out, resolution=8, progress=False)
    assert out.read_text() == "my notes"


def test_a_truncated_output_file_is_called_damaged_not_foreign(tmp_path):
    out = tmp_path / "d.nc"
    generate("darcy", 4, out, resolution=8, progress=False)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(PdeforgeError, match="damaged HDF5 file.*truncated.*--overwrite"):
        generate("darcy", 4, out, resolution=8, progress=False)


def _stopped_after_two_shards(problem, out, monkeypatch, resolution):
    """A run of 6 samples in shards of 2 interrupted after its first two shards."""
    monkeypatch.setattr(runner, "_compute_shard", _interrupting(runner._compute_shard, 2))
    with pytest.raises(PdeforgeError):
        generate(problem, 6, out, resolution=resolution, shard_size=2, progress=False)
    monkeypatch.undo()


def test_damaged_shard_is_recomputed(tmp_path, monkeypatch):
    out = tmp_path / "d.nc"
    _stopped_after_two_shards("darcy", out, monkeypatch, 8)
    shard = tmp_path / "d.nc.parts" / "shard-000000.nc"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated by a bad copy
    with pytest.warns(UserWarning, match="damaged"):
        res = generate("darcy", 6, out, resolution=8, shard_size=2, progress=False)
    assert res.shards_computed == 2
    ref = generate("darcy", 6, tmp_path / "ref.nc", resolution=8, shard_size=2, progress=False)
    assert_same_dataset(out, ref.path)


def test_shards_of_an_earlier_revision_of_the_family_are_recomputed(tmp_path, monkeypatch):
    # a thermal run interrupted before the slot's cells changed (revision 2) and resumed
    # after it would otherwise assemble one file of two geometries
    out = tmp_path / "t.nc"
    _stopped_after_two_shards("thermal", out, monkeypatch, 12)
    shards = sorted((tmp_path / "t.nc.parts").glob("shard-*.nc"))
    assert len(shards) == 2
    with h5py.File(shards[0], "r+") as f:
        del f.attrs[runner.SHARD_REVISION]  # as written before revisions: 1
    with pytest.warns(UserWarning, match=r"shard-000000.nc was made by an earlier pdeforge "
                                         r"whose thermal samples differ \(revision 1, now 2\)"):
        res = generate("thermal", 6, out, resolution=12, shard_size=2, progress=False)
    assert res.shards_computed == 2  # the old one and the missing one
    ref = generate("thermal", 6, tmp_path / "ref.nc", resolution=12, shard_size=2,
                   progress=False)
    assert_same_dataset(out, ref.path)


def _interrupting(real, after):
    calls = []

    def wrapped(text, start, stop, progress=None):
        if len(calls) == after:
            raise KeyboardInterrupt
        calls.append(start)
        return real(text, start, stop, progress)

    return wrapped


def test_nonconverged_samples_recorded_or_strict_error(tmp_path, monkeypatch):
    real = Darcy.generate

    def flaky(self, seed, indices, progress=None):
        out = real(self, seed, indices, progress)
        for row, i in enumerate(indices):
            if i in (1, 4):
                out["converged"][row] = False
                out["solution"][row] = np.nan
        return out

    monkeypatch.setattr(Darcy, "generate", flaky)
    with pytest.raises(ConvergenceError, match=r"2 sample\(s\) did not converge \(indices 1, 4\)"):
        generate("darcy", 6, tmp_path / "s.nc", resolution=8, shard_size=2, strict=True,
                 progress=False)
    assert (tmp_path / "s.nc.parts").exists()  # nothing computed is lost
    with pytest.warns(UserWarning, match="2 of 6 samples did not converge"):
        res = generate("darcy", 6, tmp_path / "w.nc", resolution=8, shard_size=2,
                       progress=False)
    assert res.nonconverged == [1, 4]
    with h5py.File(res.path, "r") as f:
        assert f["converged"][:].tolist() == [1, 0, 1, 1, 0, 1]
    from pdeforge.datasets import check_file

    assert check_file(res.path).ok


def test_config_is_enough_to_regenerate(darcy_file, tmp_path):
    with h5py.File(darcy_file, "r") as f:
        config = json.loads(f.attrs["config"])
    again = generate(config["problem"], config["n_samples"], tmp_path / "again.nc",
                     resolution=config["resolution"], seed=config["seed"],
                     options=config["options"], dtype=config["dtype"],
                     compression=config["compression"], shard_size=config["shard_size"],
                     progress=False)
    assert_same_dataset(darcy_file, again.path)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("compression", ["none", "lzf", "gzip"])
def test_dtype_and_compression(tmp_path, dtype, compression):
    res = generate("darcy", 3, tmp_path / "d.nc", resolution=10, dtype=dtype,
                   compression=compression, progress=False)
    with h5py.File(res.path, "r") as f:
        assert f["solution"].dtype == np.dtype(dtype)
        assert f["solution"].compression == (None if compression == "none" else compression)
        assert f["solution"].chunks == (1, 10, 10)


def _partial(tmp_path, name, after=2, **kwargs):
    """A run of 8 darcy samples in shards of 2 interrupted after ``after`` shards."""
    out = tmp_path / name
    real = runner._compute_shard
    runner._compute_shard = _interrupting(real, after)
    try:
        with pytest.raises(PdeforgeError, match="re-run the same command to resume"):
            generate("darcy", 8, out, resolution=12, shard_size=2, progress=False, **kwargs)
    finally:
        runner._compute_shard = real
    return out, tmp_path / f"{name}.parts"


def test_overwrite_resumes_a_partial_run_of_the_same_config(tmp_path):
    # --overwrite deleted this command's own finished shards (and a run started with
    # --overwrite over another config's file could then never be resumed)
    out = tmp_path / "o.nc"
    generate("darcy", 8, out, resolution=12, shard_size=2, seed=8, progress=False)
    _, parts = _partial(tmp_path, "o.nc", overwrite=True)
    assert len(list(parts.glob("shard-*.nc"))) == 2
    with pytest.raises(ConfigMismatchError, match="seed: 8 -> 0.*partial run of this config "
                       r".*add --overwrite to resume it"):
        generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    res = generate("darcy", 8, out, resolution=12, shard_size=2, progress=False,
                   overwrite=True)
    assert res.shards_computed == 2 and not parts.exists()
    ref = generate("darcy", 8, tmp_path / "ref.nc", resolution=12, shard_size=2,
                   progress=False)
    assert_same_dataset(out, ref.path)


def test_a_lost_or_unreadable_manifest_is_rebuilt_or_refused_from_the_shards(tmp_path):
    out, parts = _partial(tmp_path, "m.nc")
    (parts / "config.json").unlink()
    # another seed: the shards say they are of seed 0 (they were moved away as "damaged"
    # and deleted with the parts folder)
    with pytest.raises(ConfigMismatchError, match=r"seed: 0 -> 3; read from its shards"):
        generate("darcy", 8, out, resolution=12, shard_size=2, seed=3, progress=False)
    assert len(list(parts.glob("shard-*.nc"))) == 2
    (parts / "config.json").write_text('{"problem": "da')  # unreadable
    with pytest.warns(UserWarning, match="missing or unreadable; rebuilt"):
        res = generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    assert res.shards_computed == 2


def _garble_first_chunk(path, name="solution"):
    """Finite garbage written over bytes of the first chunk of ``name`` (a bad disk)."""
    with h5py.File(path, "r") as f:  # where the values lie in the file
        info = f[name].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + 64 : info.byte_offset + 96] = b"\x3f" * 32
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("defect", ["garbage in its data", "missing variable",
                                    "fewer samples", "other dtype"])
def test_a_damaged_or_incomplete_shard_is_recomputed(tmp_path, defect):
    # a shard short of a variable, a sample or its dtype passed and was assembled as
    # zeros (or ended in a KeyError traceback)
    out, parts = _partial(tmp_path, "f.nc")
    shard = parts / "shard-000001.nc"
    if defect == "garbage in its data":
        _garble_first_chunk(shard)
    else:
        with h5py.File(shard, "r+") as f:
            data = f["solution"][()]
            del f["solution"]
            if defect == "fewer samples":
                f.create_dataset("solution", data=data[:1])
            elif defect == "other dtype":
                f.create_dataset("solution", data=data.astype(np.float16))
    with pytest.warns(UserWarning, match="shard-000001.nc was damaged"):
        res = generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    assert res.shards_computed == 3
    ref = generate("darcy", 8, tmp_path / "ref.nc", resolution=12, shard_size=2,
                   progress=False)
    assert_same_dataset(out, ref.path)


def test_file_system_errors_and_stale_parts_get_clear_handling(tmp_path, monkeypatch):
    out, parts = _partial(tmp_path, "s.nc")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "_write_shard", full)
    with pytest.raises(PdeforgeError, match=r"cannot write shard 2 .*No space left.*finished "
                       "shards are kept in .*: re-run the same command to resume"):
        generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    monkeypatch.undo()
    assert len(list(parts.glob("shard-*.nc"))) == 2
    real_usage = runner.shutil.disk_usage

    def filled_when_all_shards_are_there(path):  # another program fills the disk
        done = len(list(parts.glob("shard-*.nc"))) == 4
        return real_usage(path)._replace(free=1 << 20) if done else real_usage(path)

    monkeypatch.setattr(runner.shutil, "disk_usage", filled_when_all_shards_are_there)
    with pytest.raises(PdeforgeError, match="not enough free space to assemble"):
        generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    monkeypatch.undo()
    assert len(list(parts.glob("shard-*.nc"))) == 4 and not out.exists()
    generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    parts.mkdir()  # as a kill between the final rename and the clean-up leaves it
    (parts / "shard-000000.nc").write_bytes(b"x")
    assert generate("darcy", 8, out, resolution=12, shard_size=2,
                    progress=False).already_complete
    assert not parts.exists()
    with pytest.raises(PdeforgeError, match="is a directory; give a file name"):
        generate("darcy", 2, f"{tmp_path}/newdir/", resolution=8, progress=False)


def test_an_interrupt_before_any_shard_says_nothing_was_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_compute_shard", _interrupting(runner._compute_shard, 0))
    with pytest.raises(PdeforgeError, match="before any shard was finished; nothing to keep"):
        generate("darcy", 4, tmp_path / "e.nc", resolution=8, shard_size=2, progress=False)
    assert not (tmp_path / "e.nc.parts").exists()


def test_idle_workers_are_warned_about_on_a_fresh_run_only(tmp_path, monkeypatch):
    """A resume cannot take the advice (a smaller --shard-size changes the config)."""
    kw = dict(resolution=8, shard_size=2, progress=False)
    with pytest.warns(UserWarning, match="2 will be idle"):
        generate("darcy", 4, tmp_path / "f.nc", workers=4, **kw)
    real = runner._compute_shard
    monkeypatch.setattr(runner, "_compute_shard", _interrupting(real, 1))
    with pytest.raises(PdeforgeError, match="interrupted; finished shards are kept"):
        generate("darcy", 4, tmp_path / "r.nc", **kw)
    monkeypatch.setattr(runner, "_compute_shard", real)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = generate("darcy", 4, tmp_path / "r.nc", workers=2, **kw)
    assert res.shards_computed == 1


def test_a_worker_killed_again_and_again_ends_in_one_line(tmp_path):
    """Dask's KilledWorker (e.g. the OOM killer, each time a shard runs): the error says
    which shard and what to try, not a Dask traceback, and does not promise shards that
    were never kept. (Every shard kills its worker: when a worker dies, Dask fails every
    task it held, so which shard is named first is not fixed.)"""
    import dask
    from distributed import LocalCluster

    dying = tmp_path / "dying_worker.py"  # preloaded by the worker
    dying.write_text(
        "import os\n"
        "from pdeforge.datasets import runner\n"
        "runner._compute_shard = lambda *args, **kwargs: os._exit(1)\n"
    )
    kw = dict(resolution=8, shard_size=2, progress=False)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
        preload=[str(dying)],
    ) as cluster, pytest.raises(PdeforgeError, match=r"shard \d \(samples \d-\d\) ended with "
                                "its Dask worker killed again and again.*no shard had "
                                "finished, so there is nothing to resume"):
        generate("darcy", 8, tmp_path / "k.nc", scheduler=cluster.scheduler_address, **kw)
    assert not (tmp_path / "k.nc.parts").exists()


def test_a_script_without_the_main_guard_is_told_to_add_it(tmp_path):
    """Each local worker process imports the caller's script: one that calls generate()
    at its top level must get the fix, not a lock error and 'Nanny failed to start'."""
    script = tmp_path / "noguard.py"
    script.write_text(
        "from pdeforge.datasets.runner import generate\n"
        "generate('darcy', 4, 'n.nc', resolution=8, shard_size=2, workers=2, progress=False)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "Dask could not start 2 local worker processes" in last
    assert 'if __name__ == "__main__":' in last
    assert "another `pdeforge generate` is writing" not in proc.stderr


@pytest.mark.parametrize("problem, resolution, dtype, options", [
    ("darcy", 12, "float32", {}),
    ("nlse", 32, "float64", {"t_end": 0.1, "n_times": 3, "eta_max": 1.0}),
])
def test_the_room_a_run_asks_for_is_the_data_it_writes(tmp_path, problem, resolution, dtype,
                                                       options):
    out = generate(problem, 3, tmp_path / "d.nc", resolution=resolution, dtype=dtype,
                   options=options, progress=False).path
    prob, config = runner.resolve_config(problem, 3, resolution=resolution, dtype=dtype,
                                         options=options)
    with h5py.File(out, "r") as f:
        stored = sum(f[s.name].size * f[s.name].dtype.itemsize for s in prob.variables())
    assert runner.bytes_per_sample(prob, config) * 3 == stored
    # a shard (uncompressed, with HDF5's headers and checksums) fits in what a run asks
    # the disk for before writing it, within 2x (the estimate was 2 KiB for 26 KiB)
    text = runner.config_json(config)
    shard = tmp_path / "shard.nc"
    runner._write_shard(shard, prob, config, text, 0, runner._compute_shard(text, 0, 3))
    assert shard.stat().st_size <= runner._shard_bytes(prob, config, 3) <= (
        2 * shard.stat().st_size)


def test_a_run_bigger_than_the_disk_is_refused_before_computing(tmp_path, monkeypatch):
    out = tmp_path / "d.nc"
    with pytest.raises(PdeforgeError, match=r"--n 1000000000000 samples of darcy .* take about "
                       r"[0-9.]+ TiB .* has [0-9.]+ \w+ free; lower --n"):
        generate("darcy", 10**12, out, resolution=8, progress=False)
    # beyond what any compression reaches (deflate: about 1000:1) as well
    with pytest.raises(PdeforgeError, match="TiB"):
        generate("darcy", 10**12, out, resolution=8, compression="gzip", progress=False)
    assert not out.exists() and not (tmp_path / "d.nc.parts").exists()
    real_usage = runner.shutil.disk_usage
    monkeypatch.setattr(runner.shutil, "disk_usage",
                        lambda p: real_usage(p)._replace(free=4096))
    with pytest.raises(PdeforgeError, match=r"take about [0-9.]+ KiB .* has 4.0 KiB free"):
        generate("darcy", 4, out, resolution=8, progress=False)
    # compressed output may fit where the estimate does not: a warning, and the run goes
    # on to the check before each (uncompressed) shard is written (HDF5 crashed the
    # process when the disk filled under a write)
    with pytest.warns(UserWarning, match="uncompressed; --compression gzip may shrink it"), \
            pytest.raises(PdeforgeError, match=r"cannot write shard 0 .*: about [0-9.]+ KiB "
                          r"needed, 4.0 KiB free \(the disk filled up during the run\); make room; "
                          "no shard had finished"):
        generate("darcy", 4, out, resolution=8, compression="gzip", progress=False)
    # a resumed run is told to make room, not to lower --n (which discards its shards)
    monkeypatch.undo()
    resumed, parts = _partial(tmp_path, "r.nc")
    monkeypatch.setattr(runner.shutil, "disk_usage",
                        lambda p: real_usage(p)._replace(free=4096))
    with pytest.raises(PdeforgeError, match=r"make room on that disk \(the finished shards "
                       r"in .*r.nc.parts are kept for this command\)$"):
        generate("darcy", 8, resumed, resolution=12, shard_size=2, progress=False)
    # shards of another config are not kept for this one (--overwrite discards them)
    with pytest.raises(PdeforgeError, match="lower --n or --resolution"):
        generate("darcy", 8, resumed, resolution=8, shard_size=2, progress=False,
                 overwrite=True)


def test_a_partial_run_of_another_config_beside_a_complete_output_is_kept(tmp_path):
    # a run with --overwrite and another seed stopped after two shards; the complete
    # file's own command then deleted those shards as its leftovers
    out = tmp_path / "k.nc"
    generate("darcy", 8, out, resolution=12, shard_size=2, seed=8, progress=False)
    _, parts = _partial(tmp_path, "k.nc", overwrite=True)
    with pytest.warns(UserWarning, match=r"k.nc.parts holds a partial run of another "
                      r"config \(seed: 8 -> 0; read from its manifest\), left in place"):
        again = generate("darcy", 8, out, resolution=12, shard_size=2, seed=8,
                         progress=False)
    assert again.already_complete and len(list(parts.glob("shard-*.nc"))) == 2
    res = generate("darcy", 8, out, resolution=12, shard_size=2, progress=False,
                   overwrite=True)
    assert res.shards_computed == 2 and not parts.exists()
    # one killed before its first shard left only its manifest: no work, removed
    parts.mkdir()
    (parts / "config.json").write_text(json.dumps({"problem": "darcy", "seed": 8}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert generate("darcy", 8, out, resolution=12, shard_size=2,
                        progress=False).already_complete
    assert not parts.exists()


def test_overwrite_regenerates_a_complete_output_that_no_longer_reads_back(tmp_path):
    out = tmp_path / "g.nc"
    generate("darcy", 4, out, resolution=12, shard_size=2, progress=False)
    ref = tmp_path / "ref.nc"
    ref.write_bytes(out.read_bytes())
    _garble_first_chunk(out)
    # --overwrite said "already complete" and kept the damaged file
    with pytest.warns(UserWarning, match="g.nc is damaged .*--overwrite regenerates it"):
        res = generate("darcy", 4, out, resolution=12, shard_size=2, progress=False,
                       overwrite=True)
    assert not res.already_complete and res.shards_computed == 2
    assert_same_dataset(out, ref)
    # a file that reads back is not recomputed
    assert generate("darcy", 4, out, resolution=12, shard_size=2, progress=False,
                    overwrite=True).already_complete


@pytest.mark.parametrize("config", ["[1, 2]", '{"problem": "darcy"}', "not json"])
def test_another_programs_file_with_a_config_attribute_is_not_taken_for_ours(tmp_path,
                                                                              config):
    # '[1, 2]' ended in a TypeError traceback; a mapping was compared as pdeforge's
    out = tmp_path / "theirs.h5"
    with h5py.File(out, "w") as f:
        f.attrs["config"] = config
        f["u"] = np.arange(3.0)
    with pytest.raises(PdeforgeError, match="not a pdeforge dataset this run can resume "
                       r"\(it has no pdeforge generation config: attributes "
                       r"pdeforge_format and config\).*--overwrite"):
        generate("darcy", 2, out, resolution=8, progress=False)
    with h5py.File(out, "r") as f:
        assert list(f) == ["u"]


def test_a_full_disk_reported_by_hdf5_as_runtime_error_is_named(tmp_path, monkeypatch):
    # HDF5 reports a write that failed while h5py closes an object as RuntimeError with
    # the errno in its text: a full disk was reported as "the file is damaged"
    out, parts = _partial(tmp_path, "r.nc")

    def full(*args, **kwargs):
        raise RuntimeError("Can't decrement id ref count (file write failed: time = Fri "
                           "Dec  4 14:50:22 2026\n, filename = 'x', file descriptor = 4, "
                           "errno = 28, error message = 'No space left on device', buf = "
                           "0x55e0, total write size = 36)")

    monkeypatch.setattr(runner, "_write_shard", full)
    with pytest.raises(PdeforgeError, match=r"cannot write shard 2 .*\(No space left on "
                       r"device\); make room.*re-run the same command to resume"):
        generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    monkeypatch.setattr(runner, "_write_shard", lambda *a, **k: 1 / 0)  # not a write
    with pytest.raises(ZeroDivisionError):
        generate("darcy", 8, out, resolution=12, shard_size=2, progress=False)
    assert len(list(parts.glob("shard-*.nc"))) == 2


def test_a_complete_output_in_a_read_only_folder_and_a_file_named_like_the_parts(
        tmp_path, monkeypatch):
    out = tmp_path / "ro.nc"
    generate("darcy", 4, out, resolution=8, shard_size=2, progress=False)
    # (root ignores permissions: the folder is made read-only as os.access sees it)
    real_access = runner.os.access
    monkeypatch.setattr(runner.os, "access",
                        lambda p, mode: mode != os.W_OK and real_access(p, mode))
    assert generate("darcy", 4, out, resolution=8, shard_size=2,
                    progress=False).already_complete  # it said "not writable"
    with pytest.raises(PdeforgeError, match="is not writable"):
        generate("darcy", 4, tmp_path / "new.nc", resolution=8, progress=False)
    monkeypatch.undo()
    (tmp_path / "ro.nc.parts").write_text("notes")
    assert generate("darcy", 4, out, resolution=8, shard_size=2,
                    progress=False).already_complete  # the folder is not needed
    with pytest.raises(PdeforgeError, match=r"ro.nc.parts is a file, where a run keeps its "
                       "shards in a folder of that name; move or delete it"):
        generate("darcy", 4, out, resolution=8, seed=1, progress=False, overwrite=True)
    assert (tmp_path / "ro.nc.parts").read_text() == "notes"


def test_a_run_the_start_lets_begin_is_not_refused_at_assembly(tmp_path, monkeypatch):
    """The start asked for the shards and the output, the assembly for 10 % and 16 MiB
    more: a run given the least room the start accepted computed every shard, then was
    refused (a review's bisection: 1.7 % short)."""
    out = tmp_path / "d.nc"
    prob, config = runner.resolve_config("darcy", 16, resolution=16, shard_size=4)
    real = runner.shutil.disk_usage

    def disk(free0):  # a disk with free0 bytes before the run, less what it wrote
        def usage(path):
            used = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
            return real(path)._replace(free=free0 - used)
        return usage

    lo, hi = 0, 1 << 30  # the least room the start accepts
    while hi - lo > 256:
        mid = (lo + hi) // 2
        monkeypatch.setattr(runner.shutil, "disk_usage", disk(mid))
        try:
            runner._check_room(prob, config, out)
            hi = mid
        except PdeforgeError:
            lo = mid
    monkeypatch.setattr(runner.shutil, "disk_usage", disk(hi))
    res = generate("darcy", 16, out, resolution=16, shard_size=4, progress=False)
    assert res.n_samples == 16 and out.exists()


def test_a_worker_of_another_pdeforge_or_of_none_is_refused(tmp_path):
    """The task sent to a --scheduler's workers (by value) checks the worker's pdeforge
    source first: a worker of another checkout computed its shards silently (stamped
    with this code's revision), one without pdeforge left the run waiting (review)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import cloudpickle

    import pdeforge
    from pdeforge.datasets import runner

    _, config = runner.resolve_config("darcy", 2, resolution=8, seed=0, shard_size=2)
    (tmp_path / "task.pkl").write_bytes(cloudpickle.dumps(runner._checked_task()))
    (tmp_path / "config.json").write_text(runner.config_json(config))
    call = ("import pickle, sys\n"
            "task = pickle.load(open('task.pkl', 'rb'))\n"
            "try:\n"
            "    out = task(open('config.json').read(), 0, 2)\n"
            "    print('computed', sorted(out)[:2])\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n")
    block = ("class Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] == 'pdeforge':\n"
             "            raise ModuleNotFoundError(name)\n"
             "sys.meta_path.insert(0, Block())\n")
    other = tmp_path / "other"
    shutil.copytree(Path(pdeforge.__file__).parent, other / "pdeforge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    changed = other / "pdeforge" / "datasets" / "problems" / "elliptic.py"
    changed.write_text(changed.read_text() + "\n# another revision\n")

    def run(code, pythonpath=None):
        env = {**__import__("os").environ}
        if pythonpath:
            env["PYTHONPATH"] = str(pythonpath)
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120).stdout

    assert run(call).startswith("computed")  # the same source: the shard is computed
    assert f"{runner.OTHER_PDEFORGE}runs another pdeforge source" in run(call, other)
    # a worker that imported the other source, whose files then became this one's, still
    # runs the other code: refused
    original = Path(runner.__file__).parent / "problems" / "elliptic.py"
    restore = f"open({str(changed)!r}, 'w').write(open({str(original)!r}).read())\n"
    twice = call + restore + call
    assert run(twice, other).count("runs another pdeforge source") == 2
    assert f"{runner.OTHER_PDEFORGE}cannot import pdeforge" in run(
        "import sys\n" + block + call)
