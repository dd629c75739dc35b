"""What a newcomer hit (issue 25): each mistake or damage gets a message and the right exit code."""

from __future__ import annotations

import json
from pathlib import Path

from engine.storage import read_run
from tests.engine.cli.test_cli import _cli
from tests.engine.storage.test_integrity import _closed_run, _record, _truncate_first_chunk
from tests.engine.storage.writer_child import make_run


def test_repair_refuses_a_live_run_and_inspect_shows_its_journal_rows(tmp_path: Path) -> None:
    path = tmp_path / "live.zarr"
    writer = make_run(path, chunk_rows=100)
    for i in range(7):
        _record(writer, i, i, "random")
    try:
        repair = _cli("inspect", str(path), "--repair")
        assert repair.returncode == 2, repair.stdout + repair.stderr
        assert "being written by process" in repair.stderr and "ctl" in repair.stderr
        assert "Traceback" not in repair.stderr
        assert read_run(path).attrs["status"] == "open"  # untouched
        shown = _cli("inspect", str(path), "--json")
        summary = json.loads(shown.stdout)
        assert summary["spectra"] == 7 and summary["spectra_committed"] == 0
        assert any("live run" in n for n in summary["notes"]), summary["notes"]
    finally:
        writer.close()


def test_a_truncated_chunk_is_reported_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _closed_run(path, rows=10)
    _truncate_first_chunk(path, "spectra")
    shown = _cli("inspect", str(path))
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "spectra: rows 0-3 cannot be decoded" in shown.stdout.replace("\n", " ")
    repair = _cli("inspect", str(path), "--repair")
    assert repair.returncode == 1 and "cannot recover spectra rows 0-3" in repair.stderr
    report = _cli("report", str(path), "--train-steps", "0")
    assert report.returncode == 2 and "spectra" in report.stderr and "rows 0-3" in report.stderr
    assert "Traceback" not in report.stderr + repair.stderr + shown.stderr
