"""Integrity checks of a run on disk (read-only), for ``dualscope inspect``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine.errors import RunStorageError
from engine.storage._journal import read_journal
from engine.storage._layout import JOURNAL_PATH
from engine.storage._lock import live_writer
from engine.storage._reader import RunData, describe_ranges, read_run


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

    The run is read with its durable journal rows (``RunData.pending_rows``) and around damaged
    chunks (``RunData.damaged``, each a problem). Cross-references are checked: every
    ``policy_code`` names a policy, candidate indices are in range, each step's rows are together
    and (in a campaign; design evaluations finish in any order) steps increase with the rows, and
    no step is recorded both as measured and as missing.

    Args:
        path: the run directory.

    Returns:
        The run as read, and what is wrong with it.

    Examples:
        >>> run, report = check_run(run_path)
        >>> run.n, report.ok
        (20, True)
    """
    run = read_run(path, journal=True, damaged_ok=True)
    report = IntegrityReport()
    n = run.n
    for name, ranges in run.damaged.items():
        report.problems.append(
            f"{name}: {describe_ranges(ranges)} cannot be decoded (a truncated or overwritten chunk file); "
            "those rows are lost unless a copy of the run exists"
        )
    for name, rows in run.array_rows.items():
        if rows > run.committed:
            report.notes.append(
                f"array {name!r} has {rows - run.committed} uncommitted rows beyond the commit point (crash)"
            )
    for name in ("spectra", "positions", "timestamps"):
        bad = ~np.isfinite(run.columns[name].reshape(n, -1)).all(axis=1) if n else np.zeros(0, bool)
        if bad.any():
            report.problems.append(f"{name}: {int(bad.sum())} rows contain NaN or inf (first: {np.argmax(bad)})")
    ts = run.columns["timestamps"]
    if n > 1 and np.any(np.diff(ts) < 0):
        report.problems.append("timestamps go backwards")
    desc = run.description
    for j, axis in enumerate(desc.axes):
        p = run.positions[:, j] if n else np.zeros(0)
        outside = (p < axis.low) | (p > axis.high)
        if outside.any():
            report.problems.append(f"{int(outside.sum())} positions outside axis {axis.name} limits")
    report.problems.extend(_cross_reference_problems(run))
    cand = run.columns["candidate_index"]  # -1: a position outside the candidate set
    in_set = (cand >= 0) & (cand < run.candidate_positions.shape[0])
    _, counts = np.unique(
        np.column_stack([run.columns["policy_code"][in_set], cand[in_set]]), axis=0, return_counts=True
    )
    if np.any(counts > 1):
        report.notes.append(f"{int((counts > 1).sum())} candidates were measured more than once by one policy")
    if run.spectra.shape[1:] != (run.spectral_axis.size,):
        report.problems.append(f"spectra have {run.spectra.shape[1:]} channels, axis says {run.spectral_axis.size}")
    _, valid, total = read_journal(path.joinpath(*JOURNAL_PATH))
    pending = run.pending_rows
    report.journal_rows, report.torn_bytes = pending, total - valid
    writer = live_writer(path)
    if pending and writer is None:
        report.notes.append(
            f"{pending} durable rows wait in the journal (counted above); `dualscope inspect --repair` commits them"
        )
    elif pending:
        report.notes.append(f"{pending} of the rows are durable in the journal, not yet committed to Zarr (live run)")
    if total > valid:
        report.notes.append(f"journal ends in a torn entry of {total - valid} bytes (a write cut by a crash)")
    status = run.attrs.get("status")
    if writer is not None:
        report.notes.append(
            f"the run is being written by process {writer.get('pid', '?')} on {writer.get('host', '?')} "
            "(a live campaign): these figures are a snapshot"
        )
    elif status != "closed":
        report.notes.append(f"run status is {status!r}: it was not closed cleanly; `dualscope resume` goes on with it")
    partials = list(path.rglob("*.partial"))
    if partials:
        report.notes.append(f"{len(partials)} leftover temporary files of interrupted writes")
    return run, report


def _first(mask: NDArray[np.bool_]) -> str:
    rows = np.flatnonzero(mask)
    more = f" and {rows.size - 1} more" if rows.size > 1 else ""
    return f"row {int(rows[0])}{more}"


def _cross_reference_problems(run: RunData) -> list[str]:
    """What in the run points at something that does not exist or contradicts another record."""
    problems: list[str] = []
    n, cols = run.n, run.columns
    codes = cols["policy_code"]
    bad = (codes < 0) | (codes >= len(run.policy_names))
    if bad.any():
        problems.append(
            f"policy_code at {_first(bad)} indexes no policy (the run names {len(run.policy_names)}: "
            f"{run.policy_names})"
        )
    cand = cols["candidate_index"]
    bad = (cand < -1) | (cand >= run.candidate_positions.shape[0])
    if bad.any():
        problems.append(
            f"candidate_index at {_first(bad)} is outside the {run.candidate_positions.shape[0]} candidates"
        )
    steps = cols["step"]
    if n > 1:
        key = np.column_stack([codes, steps])  # a decision: its policy's step (design searches count their own)
        starts = np.concatenate([[True], (np.diff(key, axis=0) != 0).any(axis=1)])  # where a decision's rows begin
        _, first_rows = np.unique(key, axis=0, return_index=True)
        split = starts & ~np.isin(np.arange(n), first_rows)  # a decision whose rows start again later
        if split.any():
            problems.append(f"step {int(steps[np.argmax(split)])} recurs at {_first(split)} after other steps")
        back = np.concatenate([[False], np.diff(steps) < 0])
        if back.any() and "design" not in run.attrs:  # design evaluations finish in any order; campaigns do not
            problems.append(f"step goes backwards at {_first(back)} (steps must increase with the rows)")
    missing = {int(m["step"]) for m in run.attrs.get("missing", [])}  # a step is measured or missing, not both
    both = sorted(missing & {int(s) for s in np.unique(steps)})
    if both:
        problems.append(f"step {both[0]} is recorded both as measured and as missing ({len(both)} such steps)")
    return problems


__all__ = ["IntegrityReport", "RunStorageError", "check_run"]
