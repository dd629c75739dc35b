"""The command line's two consoles and its one way to fail on a user's mistake."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeElapsedColumn

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
