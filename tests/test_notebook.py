"""The quickstart notebook runs end to end: every code cell, in order, as a user's kernel would."""

import json
from pathlib import Path

import pytest
from conftest import DATA, REFERENCE, require

from facebatch.pipeline.rundir import SHEETS, RunDir
from facebatch.scoring.report import REPORT_HTML

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs_end_to_end(tmp_path, monkeypatch):
    require(REFERENCE / "nvlabs_sg2ada_64_weights.pt")
    require(DATA / "faces_aligned")
    monkeypatch.chdir(NOTEBOOK.parent)
    monkeypatch.setenv("FACEBATCH_WORK", str(tmp_path))
    monkeypatch.setenv("FACEBATCH_STEPS", "5")
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    for index, cell in enumerate(cells):
        source = "".join(cell["source"])
        # The last line of a cell is its displayed value in Jupyter; exec() ignores it, which is fine.
        exec(compile(source, f"{NOTEBOOK.name}[code cell {index}]", "exec"), namespace)

    assert (tmp_path / "report" / REPORT_HTML).stat().st_size > 10_000
    assert namespace["metrics"]["task"] == "fake" and namespace["metrics"]["scores"]
    assert len(namespace["real"]) == len(list((DATA / "faces_aligned").glob("*.jpg")))
    assert len(namespace["fake"]) == 64
    assert set(namespace["manifest"]["status"]) == {"ok"} and len(namespace["manifest"]) == 4 * 2
    assert "bright" in namespace["boundaries"]
    assert namespace["brighter"].shape[0] == 4
    assert len(namespace["morph"]) == 2 * 5 and set(namespace["morph"]["status"]) == {"ok"}
    assert not namespace["morph"]["projected"].any()  # the codes came from the project run
    assert set(namespace["inpainted"]["status"]) == {"ok"}
    assert (RunDir(tmp_path / "mix_inpaint").folder(SHEETS) / "inpaint.png").exists()
    source = NOTEBOOK.read_text()
    assert "subprocess" not in source and "shutil" not in source  # the API only: no shelling out, no copying parts
