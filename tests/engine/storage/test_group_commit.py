"""Group commit (a pipelined run): rows durable off the writer's thread, blocks committed on their own.

The power-cut test (test_power_cut.py) checks what survives; here: which thread does what, that a
failure on the syncer or committer thread is raised on the writer's thread with nothing lost, and
that readers and recovery see the segment being committed.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.clock import SystemClock
from engine.errors import RunStorageError
from engine.storage import read_run, recover_run
from engine.storage._group_sync import GroupSync
from engine.storage._journal import Journal, committing_path
from tests.engine.storage.test_storage import _record
from tests.engine.storage.writer_child import abandon, expected_spectrum, make_run


def _syncs_by_thread(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of the thread of every ``fdatasync`` (they still happen)."""
    names: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        names.append(threading.current_thread().name)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return names


def test_rows_are_made_durable_by_the_syncer_thread_not_the_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = make_run(tmp_path / "r.zarr", chunk_rows=64)
    writer.group_commit()
    names = _syncs_by_thread(monkeypatch)
    for step in range(20):
        assert _record(writer, step, 1, step) == step + 1  # told at once, whatever the disk
    writer._journal.wait_durable()
    assert writer.durable_rows == 20
    assert names and set(names) == {"journal-sync"}, names  # none on the writer's (this) thread
    writer.close()
    assert read_run(tmp_path / "r.zarr").n == 20


def test_blocks_are_committed_on_their_own_thread_behind_a_rotated_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.zarr"
    writer = make_run(path, chunk_rows=4)
    writer.group_commit()
    writer.commit_interval_s = 0.0  # every block on its own (a slow loop)
    committing: list[str] = []
    go_on = threading.Event()
    inner = writer._commit

    def commit(*args: object) -> None:
        committing.append(threading.current_thread().name)
        go_on.wait()  # held until the reader below has looked
        inner(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "_commit", commit)
    for step in range(8):  # the fifth row hands rows 0-3 to the committer
        _record(writer, step, 1, step)
    segment = committing_path(path / "journal" / "wal.bin")
    assert segment.exists() and committing == ["zarr-commit_0"]
    live = read_run(path, journal=True)  # nothing committed yet: the committing segment, then the current one
    assert live.n == 8
    np.testing.assert_array_equal(live.spectra[7], expected_spectrum(7))
    go_on.set()
    writer.close()
    assert read_run(path).n == 8 and not segment.exists()


def test_a_crash_while_a_block_is_committed_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committer fails (a full disk, say): the writer says so, and recovery commits the rows."""
    path = tmp_path / "r.zarr"
    writer = make_run(path, chunk_rows=4)
    writer.group_commit()
    writer.commit_interval_s = 0.0

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_commit", disk_full)
    for step in range(8):  # the fifth row hands the first block to the committer; three more fill the next
        _record(writer, step, 1, step)
    with pytest.raises(RunStorageError, match="safe in the journal"):
        _record(writer, 8, 1, 8)  # the next block is due: the failure is said
    assert committing_path(path / "journal" / "wal.bin").exists()
    written = writer.n_recorded
    abandon(writer)
    report, _ = recover_run(path, SystemClock())
    run = read_run(path)
    assert run.n == written == 8 and report.replayed_rows == written
    for r in range(run.n):
        np.testing.assert_array_equal(run.spectra[r], expected_spectrum(r))
    assert not committing_path(path / "journal" / "wal.bin").exists()


def test_a_failed_sync_is_raised_on_the_writers_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "wal.bin")
    journal.group_commit()

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    journal.append({"kind": "x"}, {}, sync=True)
    with pytest.raises(OSError, match="making the journal durable failed"):
        journal.wait_durable()
    with pytest.raises(OSError, match="making the journal durable failed"):
        journal.append({"kind": "x"}, {}, sync=True)  # nothing more is promised
    monkeypatch.undo()
    with pytest.raises(OSError, match="making the journal durable failed"):
        journal.close()


def test_the_syncer_gathers_appends_into_fewer_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = _syncs_by_thread(monkeypatch)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    syncer = GroupSync(fd, delay_s=0.05)
    for _ in range(200):
        os.write(fd, b"x")
        syncer.wrote()
    syncer.wait()
    assert syncer.synced == 200 and len(names) < 200
    syncer.close()
    os.close(fd)


class _Clock(SystemClock):
    """Monotonic time that moves only when told."""

    now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_blocks_filling_faster_than_the_commit_interval_are_committed_together(tmp_path: Path) -> None:
    clock = _Clock()
    writer = make_run(tmp_path / "r.zarr", chunk_rows=4)
    writer._clock = clock
    writer.group_commit()
    commits: list[int] = []
    inner = writer._commit
    writer._commit = lambda block, start, point: (commits.append(len(block["step"])), inner(block, start, point))[1]  # type: ignore[method-assign]
    for step in range(30):  # the first block goes at once; the next ones wait for the interval
        _record(writer, step, 1, step)
    assert commits == [4]
    clock.now = writer.commit_interval_s
    _record(writer, 30, 1, 30)
    writer.flush()
    assert commits == [4, 26, 1]  # one commit for the blocks gathered meanwhile
    for step in range(31, 31 + 4 * writer.MAX_BLOCKS_PER_COMMIT + 1):  # but never more than this many blocks
        _record(writer, step, 1, step)
    writer.flush()
    assert commits[3] == 4 * writer.MAX_BLOCKS_PER_COMMIT
    writer.close()
    assert read_run(tmp_path / "r.zarr").n == 31 + 4 * writer.MAX_BLOCKS_PER_COMMIT + 1
