"""The example notebooks run from top to bottom (nbclient, a real Jupyter kernel) and are committed without outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.timeout(600)


def test_there_are_the_four_notebooks() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert names == {"live_twin_campaign", "replay_recorded_file", "inverse_design", "exploratory_analysis"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), f"strip the outputs of {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path: Path, tmp_path: Path) -> None:
    """Executed where it lies in a checkout (its relative paths), writing its runs into a scratch copy of the folder."""
    work = tmp_path / "main" / "examples" / "notebooks"
    work.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "design.toml", work.parent / "design.toml")
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")  # the data lie beside the checkout
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=540, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any(o.output_type in ("display_data", "execute_result") for c in book.cells for o in c.get("outputs", []))
