"""``dualscope view RUN.zarr``: the live view of a run in the browser, served on loopback."""

from __future__ import annotations

import getpass
import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import zmq
from numpy.typing import NDArray

from engine.cli.console import out
from engine.clock import SystemClock
from engine.decisions import PropertyMap
from engine.errors import DualscopeError, RunStorageError
from engine.storage import live_writer, open_run_group
from instruments.auth import ClientAuth, KeyPair
from instruments.control import fetch_property_map, send_control

_TIMEOUT_S = 1.0
"""Seconds the view waits for the campaign per request: a refresh never hangs on a campaign that has ended."""


class ControlLink:
    """The view's line to the campaign writing ``path``, through its control socket (same roles and keys as ``ctl``).

    The endpoint and the campaign's public key are read from the run at every call, so a resumed
    campaign is found again. Without a key on a keyed campaign the view only reads the run's files.

    Args:
        path: the run directory.
        context: injected ZeroMQ context.
        who: the name recorded with each action on a keyless campaign.
        key: the operator's or observer's key pair, for a campaign that requires keys.
    """

    def __init__(self, path: Path, context: zmq.Context[Any], who: str, key: KeyPair | None = None):
        self.path, self.context, self.who, self.key = path, context, who, key
        self.note = ""  # why the campaign cannot be asked, shown by the CLI once

    def _target(self) -> tuple[str, ClientAuth | None] | None:
        """The endpoint and credentials, or None when no campaign runs or this view cannot talk to it."""
        if live_writer(self.path) is None:
            return None
        try:
            attrs = dict(open_run_group(self.path).attrs["dualscope"])  # type: ignore[arg-type]
        except DualscopeError:
            return None
        endpoint, public = attrs.get("control_endpoint"), attrs.get("control_public_key")
        if not endpoint:
            return None
        if public and self.key is None:
            self.note = "the campaign's control socket requires keys: give --key for its status, map and buttons"
            return None
        if self.key is not None and not public:
            return str(endpoint), None  # a keyless campaign on loopback: the key is not needed
        return str(endpoint), ClientAuth(self.key, str(public)) if self.key is not None else None

    def status(self) -> dict[str, Any] | None:
        """The campaign's status with this viewer's ``role``; None when it does not run or answer."""
        target = self._target()
        if target is None:
            return None
        try:
            return send_control(target[0], "status", self.who, self.context, timeout_s=_TIMEOUT_S, auth=target[1])
        except DualscopeError as exc:
            self.note = str(exc)
            return None

    def property_map(self) -> PropertyMap | None:
        """The policy's map over the candidates, as of its latest decision."""
        target = self._target()
        if target is None:
            return None
        try:
            found, _ = fetch_property_map(target[0], self.who, self.context, timeout_s=_TIMEOUT_S, auth=target[1])
        except DualscopeError:
            return None
        return found

    def send(self, command: str) -> dict[str, Any]:
        """One of the view's buttons; the campaign records it under the key's name (or ``who``)."""
        target = self._target()
        if target is None:
            raise RunStorageError(f"no campaign is running on {self.path.name} now")
        return send_control(target[0], command, self.who, self.context, timeout_s=5.0, auth=target[1])


def run_truth(path: Path) -> NDArray[np.float32] | None:
    """A twin's noise-free spectra at the run's candidates, when the run measured a twin this process can rebuild."""
    from engine.cli.demo_truth import twin_truth  # the simulator and the surrogates: only when a view starts
    from engine.storage import read_candidates

    text = str(dict(open_run_group(path).attrs["dualscope"]).get("config_toml", ""))  # type: ignore[arg-type]
    if "stem-twin" not in text:
        return None
    out.print("discovery: computing the twin's noise-free spectra at every candidate…", highlight=False)
    return twin_truth(text, read_candidates(path).positions, SystemClock())


def view(
    run: Annotated[Path, typer.Argument(metavar="RUN.zarr", help="The run to follow (running now, or finished).")],
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0: any free one; the URL is printed).")] = 5006,
    key: Annotated[
        Path | None,
        typer.Option(
            help="Your .key_secret when the campaign's control socket requires keys: an operator key gets the "
            "buttons, an observer key sees the campaign without them."
        ),
    ] = None,
    who: Annotated[
        str, typer.Option("--as", help="Your name, recorded with each button press (campaigns without keys).")
    ] = "",
    band: Annotated[
        str, typer.Option(help='Show the integral over LOW:HIGH instead of the run\'s own property, e.g. "0.6:0.7".')
    ] = "",
    refresh_s: Annotated[float, typer.Option(help="Seconds between refreshes of the page.")] = 1.0,
) -> None:
    """Follow a run in the browser: image and measured points, the model's map, spectra, decisions, actions.

    Serves a page on 127.0.0.1 (never on the network) that refreshes as the campaign writes the
    run: the structural image with the measured points in order, the model's mean and standard
    deviation over the candidates (from the policy's latest decision), the latest spectra, the
    property and the best so far per measurement, the decision table (policy, acquisition value,
    model version, timings) and the operator actions. While a campaign runs, the operator gets
    pause / resume / stop / approve / veto buttons, sent through the campaign's control socket
    with the same roles and keys as `dualscope ctl`; an observer key gets no buttons. The page's
    scripts come from the installed Bokeh package: no internet needed. Ctrl-C stops serving.

    Example: dualscope view runs/demo-20261130-101500.zarr --port 5006   (then open http://127.0.0.1:5006/)

    Over SSH from another machine: ssh -L 5006:127.0.0.1:5006 microscope-pc, then open the same URL.
    """
    from engine.view import ViewServer  # Bokeh: loaded only by this command

    open_run_group(run)  # not a run: a clear error before anything is served
    context: zmq.Context[Any] = zmq.Context()
    try:
        pair = KeyPair.load(key) if key is not None else None
        link = ControlLink(run, context, pair.name if pair is not None else who or getpass.getuser(), pair)
        truth = run_truth(run)
        server = ViewServer(run, link, port=port, band=band, refresh_s=refresh_s, truth=truth)
        out.print(f"live view of {run} at {server.url}  (Ctrl-C to stop)", highlight=False, soft_wrap=True)
        if link.status() is None and link.note:
            out.print(f"note: {link.note}", highlight=False)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            out.print("view stopped")
        finally:
            server.close()
    finally:
        context.destroy(linger=0)
