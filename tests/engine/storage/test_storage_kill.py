"""SIGKILL the writer at random moments: nothing acknowledged is lost and no reader sees an unwritten row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from engine.clock import SystemClock
from engine.storage import check_run, read_run, recover_run
from tests.engine.storage.writer_child import expected_position, expected_spectrum

KILLS = 16


def _check_rows(spectra: np.ndarray, positions: np.ndarray | None, start: int = 0) -> None:
    for r in range(spectra.shape[0]):
        np.testing.assert_array_equal(spectra[r], expected_spectrum(start + r), err_msg=f"row {start + r}")
        if positions is not None:
            np.testing.assert_array_equal(positions[r], expected_position(start + r))


@pytest.mark.parametrize("trial", range(KILLS))
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, trial: int) -> None:
    rng = np.random.default_rng(1000 + trial)
    path = tmp_path / "run.zarr"
    chunk_rows = int(rng.choice([1, 4, 16, 64]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.storage.writer_child", str(path), str(trial), str(chunk_rows)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "START"
    time.sleep(float(rng.uniform(0.0, 0.5)))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.wait()
    acked = max([0, *[int(x) for x in rest.split() if x.isdigit()]])

    # 1. Before recovery: the commit point holds only correct rows, and so does every array
    #    as plain zarr sees it (data is written before the shape that covers it).
    before = read_run(path)
    assert before.n <= acked + 3
    _check_rows(before.spectra, before.positions)
    group = zarr.open_group(path, mode="r")
    raw = np.asarray(group["spectra"][:])
    _check_rows(raw, None)

    # 2. Recovery replays the journal: every acknowledged row is there, and all rows are right.
    report, _ = recover_run(path, SystemClock())
    after = read_run(path)
    assert after.n >= acked, f"acknowledged {acked} rows, recovered {after.n} ({report})"
    _check_rows(after.spectra, after.positions)
    assert np.all(after.columns["time_record_s"][: before.n] >= 0) or before.n == 0
    _, integrity = check_run(path)
    assert integrity.ok, integrity.problems
    assert integrity.journal_rows == 0

    # 3. Recovery is idempotent.
    again, _ = recover_run(path, SystemClock())
    assert again.replayed_rows == 0 and read_run(path).n == after.n
