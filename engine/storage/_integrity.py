"""Integrity checks of a run on disk (read-only), for ``dualscope inspect``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import RunStorageError
from engine.storage._journal import read_journal
from engine.storage._layout import JOURNAL_PATH
from engine.storage._reader import RunData, read_run


@dataclass
class IntegrityReport:
    """Problems make a run unreliable; notes are states that recovery or resume resolve.

    Attributes:
        problems: what makes the run unreliable (``ok`` is False when there are any).
        notes: states that recovery or resume resolve (an interrupted run, pending journal rows).
        journal_rows: rows in the journal not yet committed.
        torn_bytes: bytes of a torn last journal write.

    Examples:
        >>> _, report = check_run(run_path)
        >>> report.ok, report.problems
        (True, [])
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    journal_rows: int = 0
    torn_bytes: int = 0

    @property
    def ok(self) -> bool:
        """No problems found."""
        return not self.problems


def check_run(path: Path) -> tuple[RunData, IntegrityReport]:
    """Read the run at ``path`` and check it; raises ``RunStorageError`` if it cannot be read at all.

    Args:
        path: the run directory.

    Returns:
        The run as read, and what is wrong with it.

    Examples:
        >>> run, report = check_run(run_path)
        >>> run.n, report.ok
        (20, True)
    """
    run = read_run(path)
    report = IntegrityReport()
    n = run.n
    for name, rows in run.array_rows.items():
        if rows > n:
            report.notes.append(f"array {name!r} has {rows - n} uncommitted rows beyond the commit point (crash)")
    for name in ("spectra", "positions", "timestamps"):
        bad = ~np.isfinite(run.columns[name].reshape(n, -1)).all(axis=1) if n else np.zeros(0, bool)
        if bad.any():
            report.problems.append(
                f"{name}: {int(bad.sum())} committed rows contain NaN or inf (first: {np.argmax(bad)})"
            )
    ts = run.columns["timestamps"]
    if n > 1 and np.any(np.diff(ts) < 0):
        report.problems.append("timestamps go backwards")
    desc = run.description
    for j, axis in enumerate(desc.axes):
        p = run.positions[:, j] if n else np.zeros(0)
        outside = (p < axis.low) | (p > axis.high)
        if outside.any():
            report.problems.append(f"{int(outside.sum())} positions outside axis {axis.name} limits")
    cand = run.columns["candidate_index"]  # -1: a position outside the candidate set
    if n and (cand.min() < -1 or cand.max() >= run.candidate_positions.shape[0]):
        report.problems.append("candidate_index out of range of candidate_positions")
    in_set = cand >= 0
    _, counts = np.unique(
        np.column_stack([run.columns["policy_code"][in_set], cand[in_set]]), axis=0, return_counts=True
    )
    if np.any(counts > 1):
        report.notes.append(f"{int((counts > 1).sum())} candidates were measured more than once by one policy")
    if run.spectra.shape[1:] != (run.spectral_axis.size,):
        report.problems.append(f"spectra have {run.spectra.shape[1:]} channels, axis says {run.spectral_axis.size}")
    entries, valid, total = read_journal(path.joinpath(*JOURNAL_PATH))
    pending = sum(
        int(e.arrays["spectra"].shape[0])
        for e in entries
        if e.meta["kind"] == "measurement" and int(e.meta["first_row"]) >= n
    )
    report.journal_rows, report.torn_bytes = pending, total - valid
    if pending:
        report.notes.append(f"{pending} durable rows wait in the journal; `dualscope inspect --repair` commits them")
    if total > valid:
        report.notes.append(f"journal ends in a torn entry of {total - valid} bytes (a write cut by a crash)")
    status = run.attrs.get("status")
    if status != "closed":
        report.notes.append(f"run status is {status!r}: it was not closed cleanly (or is still being written)")
    partials = list(path.rglob("*.partial"))
    if partials:
        report.notes.append(f"{len(partials)} leftover temporary files of interrupted writes")
    return run, report


__all__ = ["IntegrityReport", "RunStorageError", "check_run"]
