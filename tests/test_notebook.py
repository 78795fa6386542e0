"""The quickstart notebook runs from top to bottom in a real Jupyter kernel, and what it
shows is the package's own numbers (it asserts a round trip through disk)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "median emergence step per direction" in text and "slope" in text
    # the small study: T vs d with censored points kept and named, T_p vs p by beta
    assert "emergence_time_vs_d" in text and "censored, kept in the fit: d = " in text
    assert 'not pooled; use analyze(result, by="beta")' in text
    assert "beta = 1.0: slope" in text and "beta = 2.0: slope" in text and "theory 2.00" in text
    # the figures were displayed inline (the package did not switch the backend away)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
