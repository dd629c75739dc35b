"""Integrity: the cross-references of a run, a live writer, and damaged chunks (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.clock import SystemClock
from engine.decisions import Decision, Proposal, StepTimings
from engine.errors import RunCorrupt, RunInUse
from engine.storage import RunWriter, check_run, read_run, recover_run
from engine.types import Measurement
from tests.engine.storage.writer_child import abandon, expected_position, expected_spectrum, make_run


def _record(writer: RunWriter, row: int, step: int, policy: str) -> None:
    idx = np.array([row], dtype=np.int64)
    decision = Decision(step, f"r{step}", policy, Proposal(idx, np.array([np.nan])), 0.0)
    writer.record_decision(decision)
    m = Measurement(f"r{step}", expected_position(row)[None], expected_spectrum(row)[None], np.array([1e9 + row]), 0.0)
    writer.record_measurement(decision, m, StepTimings(0.0, 0.0))


def test_a_policy_first_seen_after_the_last_commit_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    writer = make_run(path, chunk_rows=2)
    _record(writer, 0, 0, "gp-position")
    _record(writer, 1, 1, "gp-position")
    _record(writer, 2, 2, "gp-position")  # commits rows 0-1: policies = ['gp-position'] on disk
    _record(writer, 3, 3, "operator:alice")  # an injected point, journaled only
    abandon(writer)
    recover_run(path, SystemClock())
    run, report = check_run(path)
    assert run.n == 4 and report.ok, report.problems
    names = [run.policy_names[c] for c in run.columns["policy_code"]]
    assert names == ["gp-position", "gp-position", "gp-position", "operator:alice"]


def _attrs(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]["dualscope"]


def _set_attrs(path: Path, **changes: object) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["dualscope"].update(changes)
    (path / "zarr.json").write_text(json.dumps(meta))


def _closed_run(path: Path, rows: int = 6) -> None:
    writer = make_run(path, chunk_rows=4)
    for i in range(rows):
        _record(writer, i, i, "random")
    writer.close()


def test_a_policy_code_that_indexes_nothing_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _closed_run(path)
    zarr.open_array(path / "policy_code", mode="r+")[3] = 1
    _, report = check_run(path)
    assert not report.ok and any("policy_code" in p and "row 3" in p for p in report.problems), report.problems


def test_steps_that_go_backwards_are_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _closed_run(path)
    zarr.open_array(path / "step", mode="r+")[4] = 1
    _, report = check_run(path)
    assert any("step" in p and "row 4" in p for p in report.problems), report.problems


def test_a_step_recorded_both_as_measured_and_as_missing_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _closed_run(path)
    _set_attrs(path, missing=[{"step": 2, "request_id": "r2", "candidates": [2], "reason": "x", "released": False}])
    _, report = check_run(path)
    assert any("step 2" in p and "missing" in p for p in report.problems), report.problems


def test_a_candidate_index_out_of_range_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _closed_run(path)
    zarr.open_array(path / "candidate_index", mode="r+")[5] = 10**6
    _, report = check_run(path)
    assert any("candidate_index" in p and "row 5" in p for p in report.problems), report.problems


def test_repair_refuses_a_run_that_is_being_written(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    writer = make_run(path, chunk_rows=4)
    _record(writer, 0, 0, "random")
    with pytest.raises(RunInUse, match=r"being written by process \d+"):
        recover_run(path, SystemClock())
    _, report = check_run(path)  # reading is fine, and says so
    assert any("being written" in n for n in report.notes), report.notes
    writer.close()
    recover_run(path, SystemClock())  # once the writer is gone, repair goes ahead
    assert _attrs(path)["status"] == "closed"


def test_a_live_run_shows_its_durable_journal_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    writer = make_run(path, chunk_rows=100)
    for i in range(5):
        _record(writer, i, i, "random")
    run = read_run(path, journal=True)
    assert run.n == 5 and run.committed == 0 and run.pending_rows == 5
    np.testing.assert_array_equal(run.spectra[4], expected_spectrum(4))
    assert read_run(path).n == 0  # the committed view is unchanged
    writer.close()


def _truncate_first_chunk(path: Path, name: str) -> None:
    chunk = next(p for p in sorted((path / name).rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def test_a_truncated_chunk_is_a_problem_that_names_the_array_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _closed_run(path, rows=10)
    _truncate_first_chunk(path, "spectra")
    run, report = check_run(path)
    assert not report.ok
    assert any("spectra" in p and "rows 0-3" in p for p in report.problems), report.problems
    assert run.damaged == {"spectra": [(0, 4)]}
    with pytest.raises(RunCorrupt, match=r"spectra.*rows 0-3"):
        read_run(path)
    report_r, _ = recover_run(path, SystemClock())
    assert report_r.unrecoverable == {"spectra": [(0, 4)]}
