"""The example notebook runs end to end on a finished study, and is committed without outputs.

`examples/study_results.ipynb` is executed with nbclient (a real Jupyter kernel) on the
shared tiny tuned study (`tiny_study.py`), in a folder of its own; its three figures
must exist and be PNG images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tiny_study

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "study_results.ipynb"
FIGURES = ("headline.png", "gradient_norms.png", "learning_curves.png")
PNG = b"\x89PNG\r\n\x1a\n"
KERNEL_TIMEOUT = 600  # seconds per cell: the first imports TensorFlow-free pandas, scipy and MLflow


def test_the_notebook_is_committed_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_on_a_finished_study_and_draws_its_figures(tmp_path_factory, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    study = tiny_study.finished_study(tmp_path_factory)
    monkeypatch.setenv("REUSE_NETS_STUDY", os.fspath(tiny_study.STUDY_FILE))
    monkeypatch.setenv("REUSE_NETS_TRACKING_URI", study.tracking_uri)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=KERNEL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": os.fspath(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    for name in FIGURES:
        assert (tmp_path / name).read_bytes().startswith(PNG), name
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    # The table of final runs names every cell of the study.
    shown = "".join(out.get("data", {}).get("text/plain", "") for out in outputs)
    for cell in study.spec.cells():
        assert cell.key in shown, cell.key
