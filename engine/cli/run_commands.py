"""``dualscope inspect`` and ``report``: read a run, say what it holds, write its HTML report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TimeRemainingColumn
from rich.table import Table

from engine.cli.console import PhaseBars, bar_columns, err, out
from engine.clock import SystemClock


def inspect(
    run_paths: Annotated[
        list[Path], typer.Argument(metavar="RUN.zarr...", help="One or more run directories (a glob is fine).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of a table.")] = False,
    repair: Annotated[
        bool, typer.Option(help="Recover an interrupted run first: commit journaled rows, cut torn writes.")
    ] = False,
) -> None:
    """Summarise runs: counts, axes, policy, time span, timings, operator actions, resumes and integrity.

    Exits 1 if a run has integrity problems. Read-only unless --repair, which commits journaled rows
    of an interrupted run and drops a torn last write; it refuses a run that a campaign is still
    writing. A live run is shown with the rows already durable in its journal. With several runs,
    --json prints a list.

    Example: `dualscope inspect runs/demo-*.zarr --json`
    """
    summaries = [_inspect_one(path, as_json, repair) for path in run_paths]
    if as_json:
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
    if any(s["problems"] for s in summaries):
        raise typer.Exit(1)


def _inspect_one(run_path: Path, as_json: bool, repair: bool) -> dict[str, Any]:
    """Repair (when asked) and summarise one run; prints its table unless ``as_json``."""
    from engine.report import run_summary
    from engine.storage import check_run, describe_ranges, recover_run

    if repair:  # refuses (RunInUse, rc 2) while a campaign writes the run
        report, _ = recover_run(run_path, SystemClock())
        err.print(
            f"Recovered {run_path}: {report.replayed_rows} rows replayed from the journal, "
            f"{report.torn_bytes} torn bytes dropped, in flight: {report.in_flight or 'none'}"
        )
        for name, ranges in report.unrecoverable.items():
            err.print(f"[red]cannot recover[/] {name} {describe_ranges(ranges)}: the chunk file is damaged")
        if report.kept_in_journal:
            err.print(
                f"[yellow]kept[/] {report.kept_in_journal} journaled rows in the journal: they would join a "
                "damaged chunk (copy the run before any further repair)"
            )
    run_data, integrity = check_run(run_path)
    summary = run_summary(run_data, integrity)
    summary = {"run": str(run_path), **summary}
    if not as_json:
        table = Table(title=f"dualscope run {run_path}", show_header=False)
        for key, value in summary.items():
            if key in ("operator_actions", "resumes"):  # the table counts them; --json lists them
                table.add_row(key, f"{len(value)}" + (f" (last: {_said(value[-1])})" if value else ""))
            elif key not in ("problems", "notes", "run"):
                table.add_row(key, str(value))
        out.print(table)
        for p in integrity.problems:
            out.print(f"[red]problem:[/] {p}")
        for n in integrity.notes:
            out.print(f"[yellow]note:[/] {n}")
        if integrity.ok:
            out.print("[green]integrity: no problems[/]")
    return summary


def _said(entry: dict[str, Any]) -> str:
    """One operator action or resume in a few words."""
    if "action" in entry:
        return f"{entry['action']} by {entry.get('who', '?')}"
    return f"from step {entry.get('from_step', '?')}"


def report(
    run_path: Annotated[Path, typer.Argument(metavar="RUN.zarr", help="A run directory.")],
    output: Annotated[Path | None, typer.Option("--out", help="HTML file to write (default: RUN.html).")] = None,
    band: Annotated[
        str, typer.Option(help="Scalar property: band LOW:HIGH in the spectral units (default: all).")
    ] = "",
    surrogate: Annotated[
        Path | None, typer.Option(help="A checkpoint from `dualscope train` (default: train one).")
    ] = None,
    train_steps: Annotated[int, typer.Option(help="Steps for the report's own surrogate.", min=0)] = 300,
    follow: Annotated[bool, typer.Option(help="Regenerate while the run grows; the page reloads itself.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between regenerations with --follow.")] = 5.0,
) -> None:
    """Write a self-contained HTML report of a run (figures embedded as PNG).

    Sections: where the loop looked, the measured property next to the surrogate's predicted map, the
    discovery curve against random and raster replayed on the same recorded data (replayed runs),
    the two latent spaces, and the time of each stage per step. With --follow the page is rewritten
    every --interval seconds until the run is closed, and reloads itself in the browser.

    Example: `dualscope report runs/demo-20260101-120000.zarr --band 0.7:0.9`
    """
    from engine.report import write_report

    target = output or run_path.with_suffix(".html")
    while True:
        with Progress(*bar_columns(TimeRemainingColumn()), console=err, transient=follow) as progress:
            bars = PhaseBars(progress, SystemClock())
            status = write_report(
                run_path, target, band, surrogate, train_steps, interval if follow else None, bars.phase
            )
        out.print(f"Report: [bold]{target}[/] ({status})")
        if not follow or status == "closed":
            return
        time.sleep(interval)
