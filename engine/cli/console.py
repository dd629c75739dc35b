"""The command line's two consoles, its one way to fail on a user's mistake, and its progress bars."""

from __future__ import annotations

import threading
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from engine.campaign import StepReport
from engine.errors import Stopped
from engine.protocols import Clock

out = Console()
"""Results: what a command made and where it is."""
err = Console(stderr=True)
"""Errors, warnings and notes about what a command does."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (2: a user's mistake; 1: a failure found)."""
    err.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def bar_columns(*extra: ProgressColumn) -> tuple[ProgressColumn, ...]:
    """Progress-bar columns: description, bar, done/total, ``extra``, elapsed time."""
    return (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
            TimeElapsedColumn())  # fmt: skip


class PhaseBars:
    """One progress bar per long phase (``engine.protocols.PhaseProgress``), each timed.

    Args:
        progress: the rich progress display to add the bars to (its columns may use ``rate``).
        clock: times each phase.
        stop: when given and set, the next progress call raises ``Stopped`` (Ctrl-C reaches the phase).
    """

    def __init__(self, progress: Progress, clock: Clock, stop: threading.Event | None = None):
        self._progress, self._clock, self._stop = progress, clock, stop
        self._tasks: dict[str, tuple[TaskID, float]] = {}
        self.seconds: dict[str, float] = {}

    def phase(self, what: str, done: int, total: int) -> None:
        """Show ``done`` of ``total`` for phase ``what`` (a new bar the first time)."""
        if what not in self._tasks:
            self._tasks[what] = (self._progress.add_task(what, total=total, rate=""), self._clock.monotonic())
        task, began = self._tasks[what]
        self._progress.update(task, completed=done, total=total, rate=f"{done}/{total}")
        self.seconds[what] = self._clock.monotonic() - began
        if self._stop is not None and self._stop.is_set():
            raise Stopped(f"stopped by the operator while {what} (step {done}/{total}); nothing more was measured")


def campaign_columns() -> tuple[ProgressColumn, ...]:
    """The columns of a campaign's bars: description, bar, done/total, rate, time left, elapsed time."""
    return bar_columns(TextColumn("{task.fields[rate]}"), TimeRemainingColumn())


class CampaignBars(PhaseBars):
    """The progress bars of a campaign: one per start-up phase (timed), then the measurements.

    Args:
        progress: the rich display (``campaign_columns``).
        stop: when set, the next phase progress raises ``Stopped``.
        budget: spectra the campaign measures in all.
        start: spectra already recorded (a resumed run).
        clock: times the phases.
    """

    def __init__(self, progress: Progress, stop: threading.Event, budget: int, start: int, clock: Clock):
        super().__init__(progress, clock, stop)
        self._bars, self._budget, self._start = progress, budget, start
        self._measuring: TaskID | None = None

    def step(self, report: StepReport) -> None:
        """A measurement's progress (the first one starts the measuring bar)."""
        if self._measuring is None:
            self._measuring = self._bars.add_task("measuring", total=self._budget, completed=self._start, rate="")
        elapsed = self._bars.tasks[self._measuring].elapsed or 1e-9
        rate = f"{(report.n_recorded - self._start) / elapsed:.0f} spectra/s"
        self._bars.update(self._measuring, completed=report.n_recorded, rate=rate)
