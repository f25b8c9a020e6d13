"""`pdeforge demo` (what `make demo` runs) end to end on tiny settings."""

from __future__ import annotations

import json

from tests.conftest import run_cli

TINY = ["--n", "24", "--n-test", "6", "--resolution", "16", "--epochs", "2"]


def test_demo_runs_end_to_end_and_reruns_with_new_settings(tmp_path):
    out = tmp_path / "d"
    first = run_cli("demo", "--out-dir", out, *TINY, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "test error", "speedup"):
        assert step in first.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["n_test"] == 6 and 0 < report["test_rel_l2"] < 10 and report["speedup"] > 0
    assert report["direct_ms_per_sample"] > 0 and report["speedup_vs_direct"] > 0
    assert (out / "demo.png").stat().st_size > 10_000
    second = run_cli(
        "demo",
        "--out-dir",
        out,
        "--n",
        "20",
        "--n-test",
        "6",
        "--resolution",
        "16",
        "--epochs",
        "1",
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-2000:]


def test_demo_refuses_a_file_as_output_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    bad = run_cli("demo", "--out-dir", tmp_path / "file")
    assert bad.returncode == 2 and "not a directory" in bad.stderr
    assert (tmp_path / "file").read_text() == "x"
