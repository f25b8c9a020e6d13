"""The notebooks run top to bottom (tiny settings, PDEFORGE_NOTEBOOK_TINY=1)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("0*.ipynb"))


def test_the_three_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_generate.ipynb",
        "02_train.ipynb",
        "03_query_surrogate.ipynb",
    ]


@pytest.mark.slow
def test_notebooks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("PDEFORGE_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("PDEFORGE_NOTEBOOK_DIR", str(tmp_path / "work"))
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        NotebookClient(
            book,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()
        images = [
            o
            for c in book.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})
        ]
        assert images, f"{path.name} made no figure"
    assert (tmp_path / "work" / "best_checkpoint.txt").exists()
