"""Bring a run that was interrupted (crash, SIGKILL, power loss) back to a consistent state."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.protocols import Clock
from engine.storage._journal import JournalEntry, read_journal
from engine.storage._layout import JOURNAL_PATH
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
        in_flight: request ids of decisions whose measurement never arrived
            (commands that may or may not have run on the instrument).
        removed_partials: leftover temporary files of interrupted atomic writes removed.

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

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


def recover_run(path: Path, clock: Clock, *, keep_open: bool = False) -> tuple[RecoveryReport, RunWriter | None]:
    """Replay the journal of the run at ``path`` into Zarr and cut uncommitted tails.

    Idempotent: recovering a consistent run changes nothing but the ``recoveries`` log.

    Returns:
        The report, and with ``keep_open`` a writer positioned after the last row
        (for resuming); otherwise ``None`` and the run is left ``interrupted``
        (or ``closed`` if it was).

    Args:
        path: the run directory.
        clock: stamps the recovery.
        keep_open: return a writer to go on with (``dualscope resume``).

    Examples:
        >>> report, writer = recover_run(run_path, SystemClock())
        >>> report.committed_after, writer is None
        (20, True)
    """
    removed = 0
    for partial in sorted(path.rglob("*.partial")):
        if partial.is_dir():  # an interrupted checkpoint directory
            shutil.rmtree(partial)
        elif partial.exists():
            partial.unlink()
        removed += 1
    writer = RunWriter.open_existing(path, clock)
    before = writer.committed_rows
    entries, valid, total = read_journal(path.joinpath(*JOURNAL_PATH))
    writer.truncate_journal(valid)
    measured_ids: set[str] = set()
    expected, replayed = before, 0
    for entry in entries:
        if entry.meta["kind"] != "measurement":
            continue
        measured_ids.add(str(entry.meta["request_id"]))
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
    settled = measured_ids | writer.missing_request_ids
    in_flight = [
        str(e.meta["request_id"])
        for e in entries
        if e.meta["kind"] == "decision" and str(e.meta["request_id"]) not in settled
    ]
    writer.flush()
    _keep_in_flight(writer, entries)
    writer.truncate_journal(0)
    report = RecoveryReport(before, writer.committed_rows, replayed, total - valid, in_flight, removed)
    writer.log_recovery({"at": clock.time(), **report.to_json()})
    if keep_open:
        return report, writer
    writer.release(status=writer.status)
    return report, None


def _keep_in_flight(writer: RunWriter, entries: list[JournalEntry]) -> None:
    """Store the decision whose outcome is unknown (later than every settled step) in the run's attributes.

    Only the latest decision can be in flight (the campaign sends one command at a time); one kept
    by an earlier recovery stays until a resume settles it.
    """
    decisions = [dict(e.meta) for e in entries if e.meta["kind"] == "decision" and "step" in e.meta]
    if (kept := writer.in_flight) is not None:
        decisions.append(kept)
    settled = writer.last_settled_step()
    pending = [d for d in decisions if int(d["step"]) > settled]
    writer.set_in_flight(max(pending, key=lambda d: int(d["step"])) if pending else None)
