"""The README's and docs' benchmark tables are what the committed records say."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks import tables
from benchmarks.common import Record


def test_the_tables_in_the_readme_and_docs_match_the_committed_records() -> None:
    assert tables.main(["--check"]) == 0, "run `python -m benchmarks.tables` (or `make bench`) and commit"


def test_an_edited_figure_is_caught() -> None:
    files = tables.latest()
    readme = (tables.ROOT / "README.md").read_text()
    table = tables.render(files, goals_only=True)
    assert tables.replace_between_markers(readme, table, tables.ROOT / "README.md") == readme
    first_row = next(line for line in table.splitlines() if line.startswith("| ") and "/" in line.split("|")[-2])
    value = first_row.split("|")[3]
    edited = readme.replace(first_row, first_row.replace(value, " 1 us "))
    assert tables.replace_between_markers(edited, table, tables.ROOT / "README.md") != edited


def test_the_newest_record_of_each_benchmark_is_used_and_data_files_are_skipped(tmp_path: Path) -> None:
    def record(value: float, goal: str = "value >= 10") -> dict[str, object]:
        return {"benchmark": "b", "metric": "m", "value": value, "unit": "s", "baseline": "ref",
                "baseline_value": 1.0, "ratio": value, "goal": goal, "machine": "here"}  # fmt: skip

    for day, value in (("2026-01-01", 5.0), ("2026-02-01", 20.0)):
        (tmp_path / day).mkdir()
        (tmp_path / day / "b.json").write_text(json.dumps([record(value)]))
    (tmp_path / "2026-02-01" / "b_curves.json").write_text(json.dumps({"curve": [1, 2]}))
    (tmp_path / "2026-03-01").mkdir()
    (tmp_path / "2026-03-01" / "c.json").write_text(json.dumps([record(math.nan) | {"value": None}]))
    files = tables.latest(tmp_path)
    assert set(files) == {"b", "c"} and files["b"].source == "2026-02-01/b.json"
    text = tables.render(files, goals_only=True)
    assert "| 20.0 s |" in text and "| yes |" in text
    assert "**no** (not reached)" in text  # a figure that was never reached is a failed goal, not a blank


def test_a_goal_not_met_is_shown_as_such() -> None:
    r = Record("b", "m", 30.0, "us", "ref", 10.0, 3.0, "ratio <= 2", "here")
    text = tables.render({"b": tables.RecordFile("2026-01-01/b.json", (r,))}, goals_only=False)
    assert "| **no** |" in text
