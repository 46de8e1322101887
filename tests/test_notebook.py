"""docs/examples/quickstart.ipynb runs end to end (small settings) and is committed without outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "examples" / "quickstart.ipynb"
SHARED = ROOT.parent / "shared"


def test_the_notebook_is_committed_without_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


def test_the_quickstart_notebook_runs(tmp_path, monkeypatch):
    for needed in (SHARED / "data" / "cifar10" / "test", SHARED / "models" / "akamaster-resnet20"):
        if not needed.is_dir():
            pytest.skip(f"{needed} is absent (the shared data lies beside the project in ../shared)")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("LAYERCRIT_ROOT", str(ROOT))
    monkeypatch.setenv("LAYERCRIT_QUICKSTART_SAMPLES", "64")
    monkeypatch.setenv("LAYERCRIT_QUICKSTART_TRIALS", "1")
    # Jupyter's own backend, which shows a returned Figure as a PNG (the test process may have set Agg)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 4  # layers, stages, difference, the backbone's layers
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "criticality" in text  # the tables were shown
    assert "NaN" in text  # the headless measurement leaves the class metrics empty
