"""The ZeroMQ client: an ``engine.protocols.Instrument`` that talks to an ``InstrumentServer``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import zmq
from numpy.typing import NDArray

from engine.errors import (
    INSTRUMENT_ERRORS,
    DeviceFault,
    InstrumentConnectionError,
    InstrumentError,
    InstrumentTimeout,
)
from engine.types import JSON, Image, InstrumentDescription, Measurement
from instruments import messages
from instruments.auth import ClientAuth
from instruments.local import new_request_id
from instruments.wire import DEFAULT_MAX_ARRAY_BYTES, PROTOCOL_VERSION, Message, decode, encode


class ZmqInstrument:
    """Commands a remote driver over a DEALER socket.

    Every receive has a timeout. After a timeout the *same* request id is sent
    again (at most ``retries`` times); the server answers a repeated id from its
    reply cache, so a retry never measures twice and never loses a measurement.
    A ``progress`` answer (the request is still running) restarts the wait without re-sending, so a
    long acquisition costs one request per timeout, not a busy loop.
    Error replies are raised as the matching ``engine.errors`` type.

    Each thread that calls it gets its own socket (ZeroMQ sockets belong to one thread). With
    ``queue`` a pipelined campaign ``submit`` s its next ``measure`` while the last is measured,
    from its own thread and a socket of its own, and the server holds it behind the one running
    and starts it the moment that one ends (``queue_depth``); ``collect`` takes each outcome.

    Args:
        endpoint: e.g. ``tcp://127.0.0.1:5555``.
        context: the ZeroMQ context (injected; the caller owns it).
        timeout_s: seconds to wait for each reply attempt.
        retries: re-sends after a timeout.
        id_factory: makes request ids when the caller gives none.
        monotonic: clock for the timeouts.
        auth: this client's CURVE key pair and the server's public key (servers that require keys).
        queue: ask the server to queue a ``measure`` behind the running one (pipelined campaigns).
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context[Any],
        *,
        timeout_s: float = 5.0,
        retries: int = 2,
        id_factory: Callable[[], str] = new_request_id,
        monotonic: Callable[[], float] = time.monotonic,
        max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES,
        auth: ClientAuth | None = None,
        queue: bool = False,
    ):
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        self.endpoint, self.timeout_s, self.retries = endpoint, timeout_s, retries
        self._ids, self._monotonic, self._max_bytes = id_factory, monotonic, max_array_bytes
        self._context, self._auth, self.queue = context, auth, queue
        self._local = threading.local()
        self._sockets: list[zmq.Socket[Any]] = []
        self._sockets_lock = threading.Lock()
        self._sock = self._socket()  # the creating thread's socket; others get theirs on first use
        self._pipe: zmq.Socket[Any] | None = None  # submit / collect: the pipelined campaign's own socket
        self._submitted: dict[str, list[bytes | memoryview]] = {}  # sent, not yet collected (request id → frames)
        self._early: dict[str, Message] = {}  # replies that arrived while another was being collected
        self._description: InstrumentDescription | None = None
        self.server_info: dict[str, JSON] = {}
        self.unreadable_replies = 0

    # ------------------------------------------------------------ Instrument
    def hello(self) -> InstrumentDescription:
        """Greet the server, check the protocol version and fetch the description."""
        reply = self._call("hello", {"client": "dualscope", "protocol_version": PROTOCOL_VERSION})
        self.server_info = {k: v for k, v in reply.body.items() if k != "description"}
        self._description = messages.description_from(reply)
        return self._description

    def describe(self) -> InstrumentDescription:
        """The instrument's description (fetched once, then cached)."""
        return self._description if self._description is not None else self.hello()

    def acquire_image(self, channel: str) -> Image:
        """One frame of ``channel``."""
        return messages.image_from(self._call("acquire_image", {"channel": channel}))

    @property
    def queue_depth(self) -> int:
        """Measurements the server holds behind the running one for this client (0 without ``queue``)."""
        depth = self.server_info.get("queue_depth", 0) if self.queue else 0
        return int(depth) if isinstance(depth, int) else 0

    def submit(self, positions: NDArray[np.float64], request_id: str) -> None:
        """Send a ``measure`` of ``positions (n, d)`` to be queued behind the running one; returns at once.

        A pipelined campaign sends its next command this way while the last is measured, from the
        same thread and socket, so the server receives them in the order they were decided. Its
        outcome is taken with ``collect``, which re-sends the same request id after a timeout.
        """
        pos = np.ascontiguousarray(positions, dtype=np.float64)
        frames = encode(messages.request(request_id, "measure", {"queue": True}, {"positions": pos}), self._max_bytes)
        sock = self._pipe_socket()
        self._submitted[request_id] = frames
        try:  # no peer to take it within the timeout (Again): ``collect`` counts it as an attempt and re-sends
            with contextlib.suppress(zmq.Again):
                sock.send_multipart(frames, copy=False)
        except zmq.ZMQError as exc:
            del self._submitted[request_id]  # never sent: nothing to collect
            raise InstrumentConnectionError(f"ZeroMQ error talking to {self.endpoint}: {exc}", request_id) from exc

    def collect(self, request_id: str) -> Measurement:
        """The spectra of a ``submit`` ted request (waits for them; retries and errors as ``measure``)."""
        frames = self._submitted.get(request_id)
        if frames is None:
            raise ValueError(f"request {request_id} was not submitted (or was collected already)")
        try:
            reply = self._exchange(self._pipe_socket(), request_id, frames, "measure", sent=True)
        finally:
            del self._submitted[request_id]
        return messages.measurement_from(reply)

    def measure(self, positions: NDArray[np.float64], request_id: str | None = None) -> Measurement:
        """Spectra ``(n, c)`` at ``positions (n, d)``; idempotent per ``request_id``."""
        pos = np.ascontiguousarray(positions, dtype=np.float64)
        body: dict[str, JSON] | None = {"queue": True} if self.queue else None
        return messages.measurement_from(self._call("measure", body, {"positions": pos}, request_id=request_id))

    def status(self) -> Mapping[str, JSON]:
        """Server and driver state."""
        return dict(self._call("status").body)

    def recall(self, request_id: str) -> Mapping[str, JSON]:
        """What the server did with ``request_id``: ``{"state": "done" | "running" | "unknown", "instance": ID}``.

        ``instance`` identifies the server process: an ``unknown`` from another instance than the one
        the request was sent to says nothing (that server may have restarted and forgotten it).
        """
        return dict(self._call("recall", {"request_id": request_id}).body)

    def fetch(self, request_id: str) -> Measurement | None:
        """The spectra this server measured under ``request_id``, or ``None`` if it has no reply for it.

        Nothing new is measured: the request carries the id asked about, so the server answers it
        from its reply cache, or with the reply once a running one ends (``progress`` meanwhile);
        an id it never received (or a restarted server forgot) gets ``None``. A measurement that
        failed raises its error. ``dualscope resume`` fetches the steps a power cut took from the run.
        """
        reply = self._call("fetch", request_id=request_id)
        return None if reply.command == "fetch" else messages.measurement_from(reply)

    def set_limits(self, safety: Mapping[str, JSON]) -> Mapping[str, JSON]:
        """Replace the server's safety limits with a ``[safety]`` table (``{}``: none); needs the operator role.

        The dose already delivered counts against a new dose budget. Returns the limits now in force
        and the peak dose so far (e⁻/nm², or ``None`` without a budget).
        """
        return dict(self._call("set_limits", {"safety": dict(safety)}).body)

    def heartbeat(self) -> Mapping[str, JSON]:
        """A liveness check both ways: the server notes this client, the reply shows the server is alive."""
        return dict(self._call("heartbeat").body)

    def abort(self) -> None:
        """Ask the server to abort the acquisition in progress."""
        self._call("abort")

    def close(self) -> None:
        """Close every thread's socket (linger 0); idempotent. Call it when no other thread uses the client."""
        with self._sockets_lock:
            for sock in self._sockets:
                if not sock.closed:
                    sock.close(linger=0)

    def __enter__(self) -> ZmqInstrument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- transport
    def _connect(self) -> zmq.Socket[Any]:
        """A new DEALER connected to the server."""
        sock: zmq.Socket[Any] = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))  # a send with no peer must not block for ever
        try:
            if self._auth is not None:
                self._auth.secure(sock)
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise InstrumentConnectionError(f"cannot connect to {self.endpoint!r}: {exc}") from exc
        with self._sockets_lock:
            self._sockets.append(sock)
        return sock

    def _socket(self) -> zmq.Socket[Any]:
        """The calling thread's socket (made on its first call)."""
        sock: zmq.Socket[Any] | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._local.sock = self._connect()
        return sock

    def _pipe_socket(self) -> zmq.Socket[Any]:
        """The socket of ``submit`` and ``collect`` (made on first use; one thread uses it)."""
        if self._pipe is None:
            self._pipe = self._connect()
        return self._pipe

    def _call(
        self,
        command: str,
        body: dict[str, JSON] | None = None,
        arrays: dict[str, NDArray[Any]] | None = None,
        request_id: str | None = None,
    ) -> Message:
        rid = request_id or self._ids()
        frames = encode(messages.request(rid, command, body, arrays), self._max_bytes)
        return self._exchange(self._socket(), rid, frames, command, sent=False)

    def _exchange(
        self, sock: zmq.Socket[Any], rid: str, frames: list[bytes | memoryview], command: str, *, sent: bool
    ) -> Message:
        """Send ``frames`` (unless ``sent`` already) and wait for their reply, re-sending the same id on a timeout."""
        attempts, send = int(sent), not sent
        try:
            while True:
                if send:
                    if attempts > self.retries:
                        break
                    attempts += 1
                    try:
                        sock.send_multipart(frames, copy=False)
                    except zmq.Again:
                        continue  # no peer to take it within the timeout: an attempt without reply
                send = True
                reply = self._await(sock, rid)
                if reply is None:
                    continue  # timed out: re-send the same id
                if reply.type == "progress":
                    # still running: wait another timeout before asking again, without spending a retry
                    attempts, send = attempts - 1, False
                    continue
                if reply.type == "error":
                    raise self._error(reply)
                return reply
        except zmq.ZMQError as exc:
            raise InstrumentConnectionError(f"ZeroMQ error talking to {self.endpoint}: {exc}", rid) from exc
        garbage = f" ({self.unreadable_replies} unreadable replies so far)" if self.unreadable_replies else ""
        hint = "is the server running?"
        if self._auth is not None:
            hint = f"is the server running, and is the key {self._auth.client.name!r} in its authorised-keys file?"
        raise InstrumentTimeout(
            f"no reply from {self.endpoint} to {command!r} (request {rid}) after {self.retries + 1} attempts "
            f"of {self.timeout_s:g} s{garbage}; {hint}",
            rid,
        )

    def _await(self, sock: zmq.Socket[Any], rid: str) -> Message | None:
        if (early := self._early.pop(rid, None)) is not None:
            return early
        deadline = self._monotonic() + self.timeout_s
        while (remaining := deadline - self._monotonic()) > 0:
            if not sock.poll(max(1, int(remaining * 1000))):
                continue
            frames = sock.recv_multipart(copy=False)
            try:
                reply = decode([f.buffer for f in frames], self._max_bytes)
            except InstrumentError:
                self.unreadable_replies += 1  # garbage on the wire: keep waiting, the retry resends
                continue
            if reply.request_id == rid:
                return reply
            if reply.type != "progress" and reply.request_id in self._submitted and sock is self._pipe:
                self._early[reply.request_id] = reply  # a submitted one's outcome, before the one collected
            # else a late or duplicated reply to an earlier request: drop it
        return None

    @staticmethod
    def _error(reply: Message) -> InstrumentError:
        code, text = str(reply.body.get("code", "device_fault")), str(reply.body.get("message", ""))
        return INSTRUMENT_ERRORS.get(code, DeviceFault)(text, reply.request_id)
