"""The notebooks in notebooks/: stored without outputs, and executed top to bottom without an error.

Execution uses nbclient with a ``python3`` kernel spec written for the interpreter running the tests (so the
kernel imports this checkout's ``pipeline``, whatever other kernels the machine has). The notebook writes only
under ``WHOSAW_OUT`` (set here to a temp folder) and the what-if folder next to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from pipeline.safecsv import read_safe_csv

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell; the whole sample run takes ~10 s
# Cell metadata a stripped notebook keeps (nbstripout's defaults drop the rest: execution timing, scroll state).
KEPT_CELL_METADATA = {"tags", "editable", "deletable", "jupyter"}
# How notebooks are stored: the output of this command (README "Notebooks").
NBSTRIPOUT = ["nbstripout", "--extra-keys", "metadata.language_info"]


def test_there_is_a_notebook() -> None:
    assert ROOT / "notebooks" / "investigate_sample_incident.ipynb" in NOTEBOOK_FILES


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "widgets" not in nb.metadata
    for index, cell in enumerate(nb.cells):
        assert set(cell.get("metadata", {})) <= KEPT_CELL_METADATA, f"cell {index} keeps run metadata"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} of {path.name} is stored with outputs (run nbstripout)"
            assert cell.execution_count is None, f"cell {index} of {path.name} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_is_as_nbstripout_leaves_it(path: Path) -> None:
    pytest.importorskip("nbstripout", reason="nbstripout is in the 'notebook' extra")
    command = [sys.executable, "-m", *NBSTRIPOUT, "--verify", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"run: {' '.join(NBSTRIPOUT)} {path.relative_to(ROOT)}\n{done.stdout}{done.stderr}"


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts}


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_runs_without_error(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jupyter = tmp_path / "jupyter"
    write_kernel_spec(jupyter / "kernels" / "python3", overrides={"display_name": "Python 3 (whosaw tests)"})
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    out = tmp_path / "work" / "sample"
    monkeypatch.setenv("WHOSAW_OUT", str(out))
    before = {folder: _files(folder) for folder in (NOTEBOOKS, ROOT / "sample_logs")}

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT, startup_timeout=120, allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that fails

    errors = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert errors == []
    assert all(cell.execution_count for cell in nb.cells if cell.cell_type == "code" and cell.source.strip())
    # it wrote under WHOSAW_OUT (and the what-if folder beside it) only
    assert {folder: _files(folder) for folder in before} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["sample", "sample-auto-window"]
    if path.name == "investigate_sample_incident.ipynb":
        exported = read_safe_csv(out / "exports" / "payment_info_owners.csv")
        assert len(exported) == 4 and exported["owner_id"].str.match(r"^u\d{6}$").all()
        # the analyst's list counts as the notification list does (anonymous viewers by session, too)
        listed = read_safe_csv(out / "notify" / "payment_info.csv")
        mine = exported[["owner_id", "exposures", "viewers"]].astype(str).sort_values("owner_id")
        theirs = listed[["owner_id", "exposure_count", "viewer_count"]].astype(str).sort_values("owner_id")
        assert mine.values.tolist() == theirs.values.tolist()
        images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
                  if "image/png" in o.get("data", {})]
        assert len(images) == 2


# ---------------------------------------------------------------------------------------------- other incidents

INVESTIGATION = NOTEBOOKS / "investigate_sample_incident.ipynb"


def _execute(path: Path, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run the notebook with ``WHOSAW_OUT=out``; fails on the first cell error."""
    jupyter = tmp_path / "jupyter"
    write_kernel_spec(jupyter / "kernels" / "python3", overrides={"display_name": "Python 3 (whosaw tests)"})
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("WHOSAW_OUT", str(out))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT, startup_timeout=120, allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_notebook_on_another_incidents_ingest_analyses_it_and_never_adds_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WHOSAW_OUT holding only an ingest of another incident: the notebook analyses that lake (with the config
    its ingest recorded) instead of running the pipeline on sample_logs/ into it, which added the sample's logs
    to the incident's lake; and its payment list takes contact details from that incident's directory, not from
    the sample's users.csv (the ids overlap: u000000...)."""
    import pipeline

    logs, out = tmp_path / "logs", tmp_path / "work" / "incident"
    pipeline.simulate(logs, users=200, requests=3000, cancel_rate=0.06, seed=7, messy=True)
    pipeline.ingest([logs], out, config=logs / "incident.toml", progress=False)
    files_before = sorted(entry["path"] for entry in json.loads((out / "manifest.json").read_text())["files"])

    _execute(INVESTIGATION, out, tmp_path, monkeypatch)

    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(entry["path"] for entry in manifest["files"]) == files_before
    assert not any(str(ROOT / "sample_logs") in path for path in files_before)
    assert manifest["config"]["path"] == str(logs / "incident.toml")
    exported = read_safe_csv(out / "exports" / "payment_info_owners.csv")
    listed = read_safe_csv(out / "notify" / "payment_info.csv")
    assert len(exported) >= 1
    mine = exported[["owner_id", "email", "name", "country"]].sort_values("owner_id").fillna("")
    theirs = listed[["owner_id", "email", "name", "country"]].sort_values("owner_id").fillna("")
    assert mine.values.tolist() == theirs.values.tolist()


def test_notebook_on_an_incident_without_exposures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No crossed reply, no exposure, no auto window: the notebook still runs top to bottom and says so."""
    import pipeline

    logs, out = tmp_path / "logs", tmp_path / "work" / "incident"
    pipeline.simulate(logs, users=60, requests=1500, cancel_rate=0.0, seed=5)
    summary = pipeline.run([logs], out, config=logs / "incident.toml", progress=False).summary
    assert summary["exposures"] == 0

    nb = _execute(INVESTIGATION, out, tmp_path, monkeypatch)

    assert "no exposures in the window" in _text(nb)
    assert len(read_safe_csv(out / "exports" / "payment_info_owners.csv")) == 0
