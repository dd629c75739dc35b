"""The control socket of a running campaign: ``dualscope ctl`` talks to it over the dualscope wire format.

Commands (a request's ``cmd``; ``body.who`` names the operator): ``status``, ``pause`` (after the
current measurement), ``resume``, ``stop``, ``inject`` (``body.position``: the point to measure
next, in the instrument axes' units); in approval mode ``approve``, ``veto`` or ``edit``
(``body.position``) the proposal awaiting approval; ``target`` (``body.scalariser``: the keys of
``[policy.scalariser]``) changes what a model-based policy maximises from its next decision.
Replies carry the campaign's status; malformed requests get a typed error and change nothing.

Without authentication the socket binds loopback only and the operator names themself (``body.who``).
With a ``ServerAuth`` it is a CURVE server (any address): only listed keys
connect, ``status`` needs the ``observer`` role or above and every other command ``operator``, and
the action is recorded under the key's name, whatever ``body.who`` says.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import zmq

from engine.campaign import OperatorControl
from engine.config import ScalariserSection, validate_model
from engine.decisions import PropertyMap
from engine.errors import (
    INSTRUMENT_ERRORS,
    BadRequest,
    ConfigError,
    DeviceFault,
    InstrumentError,
    InstrumentTimeout,
    Unauthorised,
)
from engine.types import InstrumentDescription
from instruments import messages
from instruments.auth import ClientAuth, ServerAuth, ZapHandler
from instruments.endpoints import check_endpoint, require_loopback
from instruments.local import new_request_id
from instruments.wire import Message, decode, encode, error_message

log = logging.getLogger(__name__)

COMMANDS = ("status", "pause", "resume", "stop", "inject", "approve", "veto", "edit", "target")
MODEL = "model"
"""The live view's read of the policy's map of the property (arrays ``mean`` and ``std``, ``(m,)``)."""
READ_ONLY = frozenset({"status", MODEL})
"""Control commands any authenticated role may send; the others need the ``operator`` role."""


class ControlServer:
    """Serves ``control`` on a loopback ROUTER socket from a thread, until ``close``.

    Args:
        control: the campaign's operator control.
        description: the instrument's axes (to check injected positions).
        context: injected ZeroMQ context.
        endpoint: where to bind; loopback only without ``auth``; a ``*`` port picks a free one.
        auth: CURVE keys and the authorised operators (one ZAP handler per context: this one).
    """

    def __init__(
        self,
        control: OperatorControl,
        description: InstrumentDescription,
        context: zmq.Context[Any],
        endpoint: str = "tcp://127.0.0.1:*",
        auth: ServerAuth | None = None,
    ):
        if auth is None:
            require_loopback(endpoint)
        else:
            check_endpoint(endpoint)
        self._control, self._description, self._auth = control, description, auth
        self._zap = ZapHandler(context, auth.clients) if auth is not None else None
        self.unauthorised: list[str] = []
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if auth is not None:
            auth.secure(self._socket)
        self._socket.bind(endpoint)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dualscope-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(50):
                continue
            received = self._socket.recv_multipart(copy=False)
            user = received[-1].get("User-Id") if self._auth is not None else None
            frames = [f.bytes for f in received]
            if len(frames) < 2:
                continue
            try:
                msg = decode(frames[1:], 1 << 16)
                answer = self._answer(msg, user)
            except InstrumentError as exc:
                answer = error_message(exc.request_id, "", exc.code, str(exc))
            except ValueError as exc:
                answer = error_message("", "", BadRequest.code, str(exc))
            self._socket.send_multipart([frames[0], *encode(answer)])

    def _answer(self, msg: Message, user: str | None) -> Message:
        """The reply: the campaign's status after the command, with the sender's role.

        The view shows buttons only to an operator; ``model`` answers the policy's map instead.
        """
        who = self._operator(msg, user) if self._auth is not None else msg.body.get("who")
        if not isinstance(who, str) or not who:
            raise BadRequest("a control request names its operator in body.who", msg.request_id)
        role = self._auth.clients.role_of(who) if self._auth is not None else "operator"
        if msg.command != MODEL:
            return messages.reply(msg, {**self._handle(msg, who), "role": role})
        found = self._control.property_map()
        if found is None:
            return messages.reply(msg, {"version": -1, "role": role})
        arrays = {"mean": found.mean.astype("<f8"), "std": found.std.astype("<f8")}
        return messages.reply(msg, {"version": found.version, "n_obs": found.n_obs, "role": role}, arrays)

    def _handle(self, msg: Message, who: str) -> dict[str, Any]:
        if msg.command == "pause":
            self._control.pause(who)
        elif msg.command == "resume":
            self._control.resume(who)
        elif msg.command == "stop":
            self._control.stop(who)
        elif msg.command == "inject":
            self._control.inject(self._position(msg), who)
        elif msg.command == "target":
            table = msg.body.get("scalariser")
            if not isinstance(table, dict):
                raise BadRequest("target needs body.scalariser: the keys of [policy.scalariser]", msg.request_id)
            try:
                section = validate_model(table, ScalariserSection, "target")
                section.check_axis(self._description.spectral_axis.values())
                self._control.retarget(table, who)
            except ConfigError as exc:
                raise BadRequest(str(exc), msg.request_id) from None
        elif msg.command in ("approve", "veto", "edit"):
            position = self._position(msg) if msg.command == "edit" else None
            try:
                self._control.decide(msg.command, who, position)
            except ValueError as exc:
                raise BadRequest(str(exc), msg.request_id) from None
        elif msg.command != "status":
            known = ", ".join((*COMMANDS, MODEL))
            raise BadRequest(f"unknown control command {msg.command!r}; use {known}", msg.request_id)
        if msg.command != "status":
            log.info("operator %s: %s", who, msg.command)
        return self._control.status()

    def _operator(self, msg: Message, user: str | None) -> str:
        """The key's name, if its role may send ``msg``'s command; else the refusal is logged and raised."""
        assert self._auth is not None
        role = self._auth.clients.role_of(user or "")
        if role is not None and (role == "operator" or msg.command in READ_ONLY):
            return str(user)
        reason = f"{user!r} (role {role}) may not send {msg.command!r} to this campaign; it needs the operator role"
        log.warning("refused control request: %s", reason)
        self.unauthorised.append(reason)
        raise Unauthorised(reason, msg.request_id)

    def _position(self, msg: Message) -> np.ndarray:
        raw = msg.body.get("position")
        axes = self._description.axes
        if not isinstance(raw, list) or len(raw) != len(axes):
            names = ", ".join(a.name for a in axes)
            raise BadRequest(f"{msg.command} needs a position: {len(axes)} numbers ({names})", msg.request_id)
        try:
            pos = np.array(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise BadRequest(f"{msg.command}: the position must be numbers", msg.request_id) from None
        self._description.check_positions(pos[None, :])  # out of the instrument's limits: typed error
        return pos

    def close(self) -> None:
        """Stop the thread and close the socket (linger 0)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close(linger=0)
        if self._zap is not None:
            self._zap.close()


def send_control(
    endpoint: str,
    command: str,
    who: str,
    context: zmq.Context[Any],
    *,
    position: list[float] | None = None,
    scalariser: dict[str, Any] | None = None,
    timeout_s: float = 5.0,
    auth: ClientAuth | None = None,
) -> dict[str, Any]:
    """Send one control ``command`` as operator ``who``; the campaign's status after it.

    ``position`` goes with ``inject`` and ``edit``; ``scalariser`` (the keys of ``[policy.scalariser]``)
    with ``target``.

    With ``auth`` (the operator's key pair and the campaign's public key) the campaign records the
    key's name instead of ``who``.

    Raises:
        InstrumentTimeout: no answer (the campaign has ended, is not taking commands, or does not
            know this key).
        BadRequest: the campaign refused the command (the message says why).
        Unauthorised: the key's role may not send it.
    """
    body: dict[str, Any] = {"who": who}
    if position is not None:
        body["position"] = position
    if scalariser is not None:
        body["scalariser"] = scalariser
    return dict(_exchange(endpoint, command, body, context, timeout_s, auth).body)


def fetch_property_map(
    endpoint: str, who: str, context: zmq.Context[Any], *, timeout_s: float = 5.0, auth: ClientAuth | None = None
) -> tuple[PropertyMap | None, str]:
    """The running campaign's map of the property at every candidate, and the sender's role.

    The campaign copies its policy's map after the decision that follows the first ask, so a viewer
    polling this sees the map as of the latest decision (None before the first model, or for a
    model-free policy). Any authenticated role may ask.

    Returns:
        ``(map, role)``: the map (``mean``, ``std`` ``(m,)`` in the scalariser's units) and the role the
        campaign gives this sender (``operator`` or ``observer``; ``operator`` on a keyless socket).

    Raises:
        InstrumentTimeout: no answer. Unauthorised: a key the campaign does not list.
    """
    reply = _exchange(endpoint, MODEL, {"who": who}, context, timeout_s, auth, max_array_bytes=1 << 28)
    role = str(reply.body.get("role", ""))
    version = int(reply.body.get("version", -1))
    if version < 0 or "mean" not in reply.arrays or "std" not in reply.arrays:
        return None, role
    n_obs = int(reply.body.get("n_obs", 0))
    mean, std = np.asarray(reply.arrays["mean"], np.float64), np.asarray(reply.arrays["std"], np.float64)
    return PropertyMap(version, n_obs, mean, std), role


def _exchange(
    endpoint: str,
    command: str,
    body: dict[str, Any],
    context: zmq.Context[Any],
    timeout_s: float,
    auth: ClientAuth | None,
    max_array_bytes: int = 1 << 16,
) -> Message:
    """One request and its reply on a fresh DEALER (linger 0); a typed error for an error reply."""
    rid = new_request_id()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    # a send with no peer blocks; bound it (seen once: a keyless client to a keyed campaign blocked for ever)
    sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
    silent = InstrumentTimeout(f"no answer from the campaign at {endpoint} in {timeout_s:g} s; has it ended?", rid)
    try:
        if auth is not None:
            auth.secure(sock)
        sock.connect(endpoint)
        try:
            sock.send_multipart(encode(messages.request(rid, command, body)))
        except zmq.Again:
            raise silent from None
        if not sock.poll(int(timeout_s * 1000)):
            raise silent
        reply = decode(sock.recv_multipart(), max_array_bytes)
    finally:
        sock.close(linger=0)
    if reply.type == "error":
        code, text = str(reply.body.get("code", "")), str(reply.body.get("message", ""))
        raise INSTRUMENT_ERRORS.get(code, DeviceFault)(text, rid)
    return reply
