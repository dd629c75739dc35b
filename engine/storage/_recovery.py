"""Bring a run that was interrupted (crash, SIGKILL, power loss) back to a consistent state."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import RunCorrupt
from engine.protocols import Clock
from engine.storage._journal import JournalEntry, read_journal
from engine.storage._layout import JOURNAL_PATH
from engine.storage._reader import describe_ranges, read_run
from engine.storage._writer import RunWriter


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover_run`` found and did.

    Attributes:
        committed_before: commit point found on disk.
        committed_after: commit point after replaying the journal.
        replayed_rows: durable rows materialised from the journal.
        torn_bytes: bytes of a torn last journal entry that were discarded
            (a write the crash interrupted; never acknowledged as recorded).
        in_flight: request ids of decisions with no outcome recorded (commands that may or may not
            have run on the instrument), by step: what the run keeps in ``in_flight`` for a resume.
        removed_partials: leftover temporary files of interrupted atomic writes removed.
        unrecoverable: committed rows whose chunk files cannot be decoded, per array, as
            ``(start, stop)`` ranges: recovery cannot bring them back (their data is gone).
        kept_in_journal: journaled rows not replayed because the chunk they would join is damaged
            (they stay in the journal, so nothing more is lost).

    Examples:
        >>> report, _ = recover_run(run_path, SystemClock())  # a closed run: nothing to replay
        >>> report.replayed_rows, report.torn_bytes, report.in_flight
        (0, 0, [])
    """

    committed_before: int
    committed_after: int
    replayed_rows: int
    torn_bytes: int
    in_flight: list[str]
    removed_partials: int
    unrecoverable: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    kept_in_journal: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


def recover_run(path: Path, clock: Clock, *, keep_open: bool = False) -> tuple[RecoveryReport, RunWriter | None]:
    """Replay the journal of the run at ``path`` into Zarr and cut uncommitted tails.

    Idempotent: recovering a consistent run changes nothing but the ``recoveries`` log. Committed
    rows in damaged chunk files cannot be recovered: the report names them
    (``unrecoverable``), and journaled rows that would land in a damaged chunk stay in the journal.

    Returns:
        The report, and with ``keep_open`` a writer positioned after the last row
        (for resuming); otherwise ``None`` and the run is left ``interrupted``
        (or ``closed`` if it was).

    Raises:
        RunInUse: a live process is writing the run (a running campaign): nothing is touched.

    Args:
        path: the run directory.
        clock: stamps the recovery.
        keep_open: return a writer to go on with (``dualscope resume``).

    Examples:
        >>> report, writer = recover_run(run_path, SystemClock())
        >>> report.committed_after, writer is None
        (20, True)
    """
    writer = RunWriter.open_existing(path, clock)  # takes the writer lock first: refuses a live run
    damaged = read_run(path, damaged_ok=True).damaged
    if damaged and keep_open:
        writer.release(status=writer.status)
        where = "; ".join(f"{name} {describe_ranges(r)}" for name, r in damaged.items())
        raise RunCorrupt(
            f"{path} cannot be resumed: damaged chunk files ({where}); `dualscope inspect --repair {path}` "
            "says what can be recovered"
        )
    removed = 0
    for partial in sorted(path.rglob("*.partial")):
        if partial.is_dir():  # an interrupted checkpoint directory
            shutil.rmtree(partial)
        elif partial.exists():
            partial.unlink()
        removed += 1
    before = writer.committed_rows
    entries, valid, total = read_journal(path.joinpath(*JOURNAL_PATH))
    writer.truncate_journal(valid)
    if _tail_chunk_damaged(damaged, before, writer.chunk_rows):
        pending = sum(
            int(e.arrays["spectra"].shape[0])
            for e in entries
            if e.meta["kind"] == "measurement" and int(e.meta["first_row"]) >= before
        )
        report = RecoveryReport(before, before, 0, total - valid, [], removed, damaged, pending)
        writer.log_recovery({"at": clock.time(), **report.to_json()})
        writer.release(status=writer.status)  # the journal is kept: the rows are not lost
        return report, None
    expected, replayed = before, 0
    for entry in entries:
        if entry.meta["kind"] != "measurement":
            continue
        first, k = int(entry.meta["first_row"]), int(entry.arrays["spectra"].shape[0])
        if first + k <= before:
            continue  # committed before the crash, journal not yet cut
        if first != expected:
            break  # one writer never leaves a gap; stop rather than misplace rows
        writer.append_rows({name: np.array(arr) for name, arr in entry.arrays.items()}, journaled=True)
        if "step" in entry.meta:
            writer.note_resume_point(int(entry.meta["step"]), entry.meta.get("policy_state"))
        expected += k
        replayed += k
    writer.flush()
    _keep_in_flight(writer, entries)
    in_flight = [str(d["request_id"]) for d in writer.in_flight]
    writer.truncate_journal(0)
    report = RecoveryReport(before, writer.committed_rows, replayed, total - valid, in_flight, removed, damaged)
    writer.log_recovery({"at": clock.time(), **report.to_json()})
    if keep_open:
        return report, writer
    writer.release(status=writer.status)
    return report, None


def _tail_chunk_damaged(damaged: dict[str, list[tuple[int, int]]], committed: int, chunk_rows: int) -> bool:
    """Whether new rows would be written into a damaged chunk (the one holding the commit point)."""
    if committed % chunk_rows == 0:
        return False  # the next rows start a fresh chunk
    tail = committed - 1
    return any(a <= tail < b for ranges in damaged.values() for a, b in ranges)


def _keep_in_flight(writer: RunWriter, entries: list[JournalEntry]) -> None:
    """Store the decisions whose outcome is unknown (no row, no missing entry) in the run's attributes.

    A sequential campaign has at most one command in flight; a pipelined one (``[run] pipeline``)
    decides the next step while the last is measured, so two decisions may wait. Those kept by an
    earlier recovery stay until a resume settles them.
    """
    decisions = {
        str(e.meta["request_id"]): dict(e.meta) for e in entries if e.meta["kind"] == "decision" and "step" in e.meta
    }
    for kept in writer.in_flight:
        decisions.setdefault(str(kept["request_id"]), kept)
    settled = writer.settled_steps()
    writer.set_in_flight([d for d in decisions.values() if int(d["step"]) not in settled])
