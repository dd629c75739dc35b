"""``dualscope serve DRIVER``: serve a driver over ZeroMQ until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from engine.cli.console import err, out
from engine.cli.drivers import DRIVERS, build_driver
from engine.clock import SystemClock
from engine.config import SafetyFile, load_model
from engine.errors import ConfigError


def parse_options(pairs: list[str], options_json: str = "") -> dict[str, Any]:
    """Driver options from ``KEY=VALUE`` pairs (values parsed as JSON when they are) over a JSON object."""
    try:
        options: dict[str, Any] = json.loads(options_json) if options_json else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options-json is not a JSON object: {exc}") from None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--option wants KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _print_driver_options(driver: str) -> None:
    entry = DRIVERS.get(driver)
    if entry is None:
        raise ConfigError(f"unknown driver {driver!r}; available: {', '.join(sorted(DRIVERS))}")
    table = Table(title=f"options of driver {driver!r}: {entry.summary}")
    for col in ("option", "default", "meaning"):
        table.add_column(col)
    for name, field in entry.options.model_fields.items():
        table.add_row(name, repr(field.default), field.description or "")
    out.print(table)


def _watch_parent(stop: threading.Event) -> None:
    parent = os.getppid()
    while not stop.wait(0.5):
        if os.getppid() != parent:
            stop.set()


def serve(
    driver: Annotated[str, typer.Argument(help=f"Driver to serve: {', '.join(sorted(DRIVERS))}.")],
    endpoint: Annotated[
        str, typer.Option(help="Loopback endpoint to bind; a '*' port picks a free one.")
    ] = "tcp://127.0.0.1:*",
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE (repeatable).")
    ] = None,
    options_json: Annotated[str, typer.Option(help="Driver options as one JSON object.")] = "",
    seed: Annotated[int | None, typer.Option(help="Seed of the simulated specimen and noise (simulators).")] = None,
    exit_with_parent: Annotated[bool, typer.Option(help="Stop when the parent process exits.")] = False,
    list_options: Annotated[bool, typer.Option(help="List the driver's options and exit.")] = False,
    usim: Annotated[
        bool, typer.Option(help="nion only: start Nion's simulated STEM in this process (same as -o usim=true).")
    ] = False,
    authorised_keys: Annotated[
        Path | None,
        typer.Option(help="Require CURVE keys: admit only the clients in this file (`dualscope keys new`)."),
    ] = None,
    server_key: Annotated[
        Path | None, typer.Option(help="This server's .key_secret file (with --authorised-keys).")
    ] = None,
    safety: Annotated[
        Path | None,
        typer.Option(help="A TOML file (a run config, say) whose safety table the server enforces too."),
    ] = None,
) -> None:
    """Serve a driver over ZeroMQ until Ctrl-C or SIGTERM.

    Binds loopback only, unless --authorised-keys and --server-key are given: then every client must
    present a listed CURVE key and may send only what its role allows (refusals are logged).
    Prints `READY <endpoint>` on stdout once bound, so scripts can connect.
    Driver options come from --option KEY=VALUE or --options-json; --list-options shows them.

    Example: `dualscope serve stem-twin --seed 3 -o acquisition_time_s=0.01`
    """
    if list_options:
        _print_driver_options(driver)
        return
    import zmq

    from instruments.auth import ServerAuth
    from instruments.server import InstrumentServer

    clock = SystemClock()
    options = parse_options(option or [], options_json)
    if seed is not None:
        options["seed"] = seed
    if usim:
        if driver != "nion":
            raise ConfigError(f"--usim is an option of the nion driver, not of {driver!r}")
        options["usim"] = True
    auth = ServerAuth.from_files(authorised_keys, server_key, "--authorised-keys and --server-key")
    drv = build_driver(driver, options, clock)
    limits = None
    if safety is not None:
        section = load_model(safety, SafetyFile)[0].safety
        limits = section.limits([a.name for a in drv.describe().axes])
    context: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = InstrumentServer(drv, context, clock, endpoint=endpoint, auth=auth, safety=limits)
    except BaseException:
        context.term()
        raise
    if exit_with_parent:
        threading.Thread(target=_watch_parent, args=(stop,), daemon=True).start()
    print(f"READY {server.endpoint}", flush=True)
    err.print(f"Serving driver [bold]{driver}[/] on {server.endpoint} (protocol v1). Ctrl-C to stop.")
    try:
        server.serve(stop)
    finally:
        server.close()
        context.term()
        close = getattr(drv, "close", None)  # drivers that hold hardware (nion) release it
        if callable(close):
            close()
