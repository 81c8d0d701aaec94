"""Every notebook in notebooks/ runs end to end, offline, and is committed without outputs."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the notebooks extra")
nbclient = pytest.importorskip("nbclient", reason="needs the notebooks extra")
pytest.importorskip("ipykernel", reason="needs the notebooks extra")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
#: Seconds per cell; the slowest cell (the concurrency sweep) takes about 5 s here.
CELL_TIMEOUT = 180
#: A notebook should teach in under a minute on a 2-core CI machine.
NOTEBOOK_BUDGET = 120.0


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernelspec for *this* interpreter in a temporary JUPYTER_PATH.

    Nothing is installed globally, and the kernel runs the venv's Python whatever the
    PATH says, so the notebooks import the package under test.
    """
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (chroma-sparse-ef tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        # Plots render with the inline backend into the notebook, never a window.
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        yield "python3"


def test_there_are_notebooks_to_run() -> None:
    """The notebooks folder is not empty (a moved folder must not pass silently)."""
    assert len(NOTEBOOKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_end_to_end_offline(
    path: Path, kernel_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every cell executes without error against the local server (no key, no network)."""
    # The kernel inherits this environment, which conftest has cleared of CHROMA_* keys.
    # The hashing dense leg: `auto` would try to download Chroma's default model.
    monkeypatch.setenv("CHROMA_SPARSE_EF_DENSE", "hashing")
    monkeypatch.chdir(tmp_path)  # notebooks that write files write them here
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    assert elapsed < NOTEBOOK_BUDGET
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert "local server" in text, "the notebook must say which path (local or hosted) ran"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    """Notebooks are committed stripped: no outputs, no execution counts."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name} cell {index} has outputs"
        assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"
