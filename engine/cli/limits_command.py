"""``dualscope limits ENDPOINT FILE``: an operator replaces a running server's safety limits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import zmq
from rich.markup import escape

from engine.cli.console import fail, out
from engine.config import SafetyFile, load_model
from instruments.auth import ClientAuth
from instruments.client import ZmqInstrument


def limits(
    endpoint: Annotated[str, typer.Argument(help="The server's endpoint, as `serve` printed it (tcp://HOST:PORT).")],
    file: Annotated[
        Path | None,
        typer.Argument(help="A TOML file (a run config, say) whose safety table becomes the server's limits."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the server's safety limits instead.")] = False,
    client_key: Annotated[
        Path | None, typer.Option(help="Your .key_secret (a server with keys: operator role).")
    ] = None,
    server_key: Annotated[Path | None, typer.Option(help="The server's public .key (with --client-key).")] = None,
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for the server's answer.")] = 10.0,
) -> None:
    """Replace the safety limits of a running `dualscope serve`, without restarting it.

    The limits: soft limits per axis, largest step, forbidden regions, dose budget. The dose already
    delivered counts against a new budget. A server with keys takes this only from a key with the
    operator role; the change is logged by the server.
    """
    if (file is None) == (not clear):
        fail("give a FILE with a safety table, or --clear (not both)")
    context: zmq.Context[Any] = zmq.Context()
    try:
        table = {} if file is None else load_model(file, SafetyFile)[0].safety.model_dump(mode="json")
        auth = ClientAuth.from_files(client_key, server_key, "--client-key and --server-key")
        with ZmqInstrument(endpoint, context, timeout_s=timeout_s, retries=0, auth=auth) as server:
            answer = server.set_limits(table)
    finally:
        context.destroy(linger=0)
    now = answer.get("safety") or "none"
    out.print(f"Limits now in force on {endpoint}: {escape(str(now))}")
    if answer.get("peak_dose_e_per_nm2") is not None:
        out.print(f"Peak dose so far: {float(answer['peak_dose_e_per_nm2']):.3g} e/nm²")
