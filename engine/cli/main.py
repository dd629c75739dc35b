"""``dualscope``: run autonomous microscopy campaigns, serve instruments, inspect runs.

This module only registers the commands (one module per command group) and turns a
``DualscopeError``, a user's mistake, into ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from engine import __version__
from engine.cli.campaign_commands import demo, replay, resume, run
from engine.cli.console import err, out
from engine.cli.ctl_command import ctl
from engine.cli.data_commands import explore, export, import_, train
from engine.cli.design_command import design
from engine.cli.keys_command import keys_app
from engine.cli.limits_command import limits
from engine.cli.run_commands import inspect, report
from engine.cli.serve_command import serve
from engine.cli.simulate_commands import simulate_app
from engine.cli.view_command import view
from engine.errors import DualscopeError

app = typer.Typer(
    name="dualscope",
    help=(
        "Autonomous structure→property experiments on microscopes. A campaign takes a cheap "
        "structural image, then spends each expensive spectrum where a policy decides, streaming "
        "every spectrum and decision into a crash-safe Zarr run.\n\n"
        "Start with `dualscope demo`; see `dualscope COMMAND --help` for each command."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        out.print(f"dualscope {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Dualscope command line."""


# campaigns
app.command()(demo)
app.command()(run)
app.command()(resume)
app.command()(replay)
app.command()(ctl)
app.command()(view)
# instruments
app.command()(serve)
app.command()(limits)
app.add_typer(keys_app, name="keys")
# data, analyses, surrogates
app.add_typer(simulate_app, name="simulate")
app.command("import")(import_)
app.command()(export)
app.command()(explore)
app.command()(train)
# runs
app.command()(inspect)
app.command()(report)
# inverse design
app.command()(design)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``argv``: the arguments, default ``sys.argv[1:]``).

    A ``DualscopeError`` (a bad configuration, option, file or run) is printed as
    ``error: ...`` and exits with status 2, without a traceback.
    """
    try:
        app(args=argv)
    except DualscopeError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
