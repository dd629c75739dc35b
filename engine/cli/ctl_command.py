"""``dualscope ctl RUN COMMAND``: the operator's commands to a running campaign, over its control socket."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
import zmq

from engine.cli.console import fail, out
from engine.config import parse_window, scalariser_table
from engine.errors import ConfigError, RunStorageError
from engine.storage import live_writer, read_run
from instruments.auth import ClientAuth, KeyPair
from instruments.control import COMMANDS, send_control


def ctl(
    run: Annotated[Path, typer.Argument(metavar="RUN.zarr", help="The run of a campaign that is running now.")],
    command: Annotated[
        str,
        typer.Argument(
            help="status; pause (after the current measurement); resume; stop; "
            "inject (measure POSITION next, e.g. `inject 12.5 40`); in approval mode: approve, veto, "
            "or edit POSITION (measure that instead of the proposal); target (maximise another "
            "property from the next decision: --band LOW:HIGH or --scalariser TABLE)"
        ),
    ],
    position: Annotated[
        list[float] | None,
        typer.Argument(help="inject / edit: the position, one number per axis (the axes' units)."),
    ] = None,
    band: Annotated[
        str,
        typer.Option(help='target: maximise the integral over LOW:HIGH (spectral axis units), e.g. "0.6:0.7".'),
    ] = "",
    scalariser: Annotated[
        str,
        typer.Option(
            help='target: any scalariser, as the keys of [policy.scalariser], e.g. \'kind = "peak", low = 0.4, '
            "high = 1.0'."
        ),
    ] = "",
    who: Annotated[
        str, typer.Option("--as", help="Your name, recorded with the action in the run (without keys).")
    ] = "",
    key: Annotated[
        Path | None,
        typer.Option(
            help="Your .key_secret, when the campaign's control socket requires keys (operator.authorised_keys); "
            "the action is then recorded under the key's name."
        ),
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for the campaign's answer.")] = 5.0,
) -> None:
    """Command a running campaign: status, pause, resume, stop, inject, approve, veto, edit, target.

    pause/resume/stop act after the current measurement; inject queues a point to measure next; in
    approval mode (operator.approval_timeout_s in the run config) each proposed point waits for approve,
    veto or edit. target changes what a model-based policy maximises from its next decision: every
    spectrum measured so far is valued again under the new target, none is wasted.

    Example: dualscope ctl runs/demo-20261130-101500.zarr target --band 0.6:0.7

    The campaign's control endpoint is read from the run; each action is recorded in the run
    (attribute `operator_actions`) with who did it. When the campaign's control socket requires keys
    (operator.authorised_keys and operator.key in its config), give yours with --key: status needs
    any listed role, every other command the operator role, and the key's name is what is recorded.
    """
    if command not in COMMANDS:
        fail(f"unknown command {command!r}; use {', '.join(COMMANDS)}")
    if (command in ("inject", "edit")) != bool(position):
        fail("inject and edit need a position (one number per axis); other commands take none")
    if (command == "target") != bool(band or scalariser):
        fail("target needs --band LOW:HIGH or --scalariser TABLE; other commands take neither")
    table = scalariser_table(parse_window(band, "--band"), scalariser) if command == "target" else None
    data = read_run(run)
    attrs = data.attrs
    if live_writer(run) is None:  # no campaign holds the run: say what state it is in, do not wait
        outcome = attrs.get("outcome") or {}
        said = f"{data.n} spectra recorded; status {attrs.get('status')!r}"
        if attrs.get("status") == "closed":
            said += f", stop reason: {outcome.get('stop_reason', '-')}"
        else:
            said += "; `dualscope resume` goes on with it"
        if command != "status":
            fail(f"no campaign is running on {run} ({said}); {command} needs a running campaign")
        out.print(f"status: no campaign running; {said}")
        return
    if position is not None:
        axes = data.description.axes
        if len(position) != len(axes):
            names = ", ".join(f"{a.name} in {a.units}" for a in axes)
            fail(f"{command} needs {len(axes)} numbers, one per axis ({names}); got {len(position)}")
    context: zmq.Context[Any] = zmq.Context()
    try:
        endpoint, public = attrs.get("control_endpoint"), attrs.get("control_public_key")
        if not endpoint:
            raise RunStorageError(f"{run} has no control endpoint: it was not started by `dualscope run`/`demo`")
        auth = _auth(key, public)
        name = auth.client.name if auth is not None else who or getpass.getuser()
        status = send_control(
            str(endpoint), command, name, context, position=position, scalariser=table, timeout_s=timeout_s, auth=auth
        )
    finally:
        context.destroy(linger=0)
    paused = "paused" if status.get("holding") else "pausing after the current measurement"
    state = "stopping" if status.get("stopping") else paused if status.get("paused") else "running"
    recorded, step = status.get("n_recorded", 0), status.get("step", 0)
    out.print(f"{command}: campaign {state}; {recorded} spectra recorded, step {step}")
    if status.get("awaiting_approval") is not None:
        out.print(f"        awaiting approval: {status['awaiting_approval']} (approve, veto or edit X Y)")
    if status.get("injected_queued"):
        out.print(f"        {status['injected_queued']} injected point(s) queued")


def _auth(key: Path | None, campaign_public: object) -> ClientAuth | None:
    """CURVE credentials when the campaign requires keys; errors say which side is missing."""
    if campaign_public and key is None:
        raise ConfigError("this campaign's control socket requires a key: add --key keys/NAME.key_secret")
    if key is not None and not campaign_public:
        raise ConfigError("this campaign's control socket takes no keys (loopback, names by --as); drop --key")
    return ClientAuth(KeyPair.load(key), str(campaign_public)) if key is not None else None
