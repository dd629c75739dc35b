"""The generic ZeroMQ instrument server: serves any ``Driver``.

A ROUTER socket receives requests from any number of DEALER (or REQ) clients.
An acquisition (``measure``, ``acquire_image``) that finds nothing running runs on the thread
that serves the socket; if it has not ended within ``takeover_s`` the server's second thread takes
the socket over (``instruments.baton``), so that ``status``, ``heartbeat`` and ``abort`` are
answered while it runs, and acquisitions queued behind it run on the thread that does not serve.
Every reply
to an acquisition is kept in a ``ReplyCache``: a
retried request id is answered from it and never acquires twice; a retry that
arrives while its request is still running gets a ``progress`` message, and the reply when it
completes (also when the retry comes from another client: an engine resumed after a crash).
A ``measure`` whose body says ``"queue": true`` may wait behind the one running (``QUEUE_DEPTH``
of them): it starts the moment that one ends, so a pipelined engine keeps the instrument busy
between its commands. The order of arrival is the order of acquisition (a client sends its
commands in order on one socket); any other acquisition that arrives while one runs is answered
``busy``, and ``abort`` also cancels the queued ones (each is answered ``aborted``).
The server never dies on a malformed message: it answers with an error.

With a ``ServerAuth`` the socket is a CURVE server: only clients in the
authorised-keys file connect, and each command is checked against the sender's role (a refusal is
answered with an ``unauthorised`` error and logged). Without one, it binds loopback only.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

import zmq
from pydantic import ValidationError

from engine import __version__
from engine.config import SafetySection
from engine.errors import (
    AcquisitionAborted,
    BadRequest,
    ConfigError,
    DeviceFault,
    DualscopeError,
    InstrumentBusy,
    InstrumentConnectionError,
    InstrumentError,
    Unauthorised,
)
from engine.protocols import Clock
from engine.safety import SafetyLimits
from instruments import messages
from instruments.auth import ServerAuth, ZapHandler, least_role_for, permitted
from instruments.baton import ServingBaton
from instruments.driver import Driver
from instruments.endpoints import check_endpoint, require_loopback
from instruments.guard import GuardedDriver
from instruments.reply_cache import ReplyCache
from instruments.wire import (
    DEFAULT_MAX_ARRAY_BYTES,
    PROTOCOL_VERSION,
    Message,
    decode,
    encode,
    error_message,
)

log = logging.getLogger(__name__)

ACQUISITIONS = frozenset({"measure", "acquire_image"})
IMMEDIATE = frozenset({"hello", "describe", "status", "abort", "heartbeat", "recall", "fetch", "set_limits"})
QUEUE_DEPTH = 1
"""Measurements that may wait behind the running one (``"queue": true`` in the request body)."""
_counter = itertools.count()

Frames = list[bytes | memoryview]
_Job = tuple[list[bytes], Message]
_WAKE = "wake"


class InstrumentServer:
    """Serves ``driver`` on ``endpoint`` until ``serve``'s stop event is set.

    Args:
        driver: the device driver.
        context: the ZeroMQ context (injected; the caller owns and terminates it).
        clock: time source for uptime and heartbeats.
        endpoint: where to bind; ``tcp://127.0.0.1:*`` picks a free loopback port.
        cache_size: acquisition replies kept for idempotent retries.
        max_array_bytes: largest request accepted.
        auth: require CURVE keys and roles (then any endpoint may be bound); ``None``: loopback only.
        rate_per_s: requests per second each client may send on average (a token bucket holding
            ``2 × rate_per_s``); beyond it requests are answered ``busy`` without being handled. The
            default (5,000/s) is above a pipelined single-spectrum loop on loopback (~2,700/s) and
            still stops a runaway client.
        safety: limits checked before the driver sees a position (the engine checks them too).
        client_silence_s: abort an acquisition when the client that asked for it has sent nothing
            for this long (the engine has gone: a client re-asks at least every two reply timeouts).
        takeover_s: an acquisition runs on the thread that serves the socket; once it has run this
            long the other thread serves instead (s): the most a command waits behind an
            acquisition, besides the thread switch.
    """

    def __init__(
        self,
        driver: Driver,
        context: zmq.Context[Any],
        clock: Clock,
        *,
        endpoint: str = "tcp://127.0.0.1:*",
        cache_size: int = 1024,
        max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES,
        auth: ServerAuth | None = None,
        rate_per_s: float = 5000.0,
        safety: SafetyLimits | None = None,
        client_silence_s: float = 300.0,
        instance: str | None = None,
        takeover_s: float = 0.005,
    ):
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        self._rate, self._silence_s = rate_per_s, client_silence_s
        self.abandoned: list[str] = []
        self._buckets: dict[bytes, tuple[float, float]] = {}  # client → (tokens, when)
        if auth is None:
            require_loopback(endpoint)
        else:
            check_endpoint(endpoint)
        self._auth = auth
        self.unauthorised: list[str] = []
        self._guard = GuardedDriver(driver, safety)
        self._ctx, self._clock = context, clock
        self._max_bytes = max_array_bytes
        self._cache: ReplyCache[Frames] = ReplyCache(cache_size)
        self.instance = instance or uuid.uuid4().hex
        self._started = clock.monotonic()
        self._zap = ZapHandler(context, auth.clients) if auth is not None else None
        self._router = context.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        try:
            if auth is not None:
                auth.secure(self._router)
            self._router.bind(endpoint)
        except (zmq.ZMQError, DualscopeError) as exc:
            self._router.close(linger=0)
            if self._zap is not None:
                self._zap.close()
            raise InstrumentConnectionError(f"cannot bind {endpoint!r}: {exc}") from exc
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._inproc = f"inproc://dualscope-worker-{next(_counter)}"
        self._done = context.socket(zmq.PULL)  # replies of acquisitions run by the thread that does not serve
        self._done.setsockopt(zmq.LINGER, 0)
        self._done.bind(self._inproc)
        self._jobs: queue.SimpleQueue[_Job | str | None] = queue.SimpleQueue()
        self._baton = ServingBaton(takeover_s)
        self._stop, self._poll_ms = threading.Event(), 50
        self._in_flight: dict[str, list[bytes]] = {}  # the running acquisition first, then the queued ones
        self._cancelled: set[str] = set()  # queued acquisitions an abort cancelled (the worker answers them)
        self._cancel_lock = threading.Lock()
        self._waiters: dict[str, list[list[bytes]]] = {}  # other routes asking for a running request
        self._last_seen: dict[bytes, float] = {}
        self._requests = 0
        self.internal_errors = 0
        self._standby = threading.Thread(target=self._stand_in, name="dualscope-standby", daemon=True)
        self._standby.start()

    # ----------------------------------------------------------------- serving
    def serve(self, stop: threading.Event, poll_ms: int = 50) -> None:
        """Answer requests until ``stop`` is set (checked every ``poll_ms``)."""
        self._stop, self._poll_ms = stop, poll_ms
        self._baton.claim()
        push = self._pusher()
        try:
            while not stop.is_set():
                if self._baton.serving():
                    self._serve_socket(push)
                elif self._stand_by(push, stop) == "closed":
                    self._jobs.put(None)  # close() was called while serving: it is the other thread's
                    break
        finally:
            self._baton.release()
            self._baton.wait_released(timeout_s=5 + poll_ms / 1000)  # the other thread sees ``stop`` too
            push.close(linger=0)

    @property
    def takeovers(self) -> int:
        """Acquisitions that outlasted ``takeover_s`` on the serving thread, so the other thread took over."""
        return self._baton.takeovers

    def _serve_socket(self, push: zmq.Socket[Any]) -> None:
        """Serve the ROUTER socket until ``stop`` is set or an acquisition of this thread lost it."""
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._done, zmq.POLLIN)
        while not self._stop.is_set():
            events = dict(poller.poll(self._poll_ms))
            if self._done in events:
                rid, *reply = self._done.recv_multipart(copy=True)
                self._finish(rid.decode(), list[bytes | memoryview](reply))
            self._abort_abandoned()
            if self._router in events:
                if self._auth is None:
                    raw, user = self._router.recv_multipart(), None
                else:  # the key a CURVE client authenticated with is a property of its frames
                    frames = self._router.recv_multipart(copy=False)
                    raw, user = [f.bytes for f in frames], frames[-1].get("User-Id")
                try:
                    self._receive(raw, push, user)
                except Exception:  # a bug in handling one message must not take the server down
                    log.exception("unexpected failure handling a message; answering it as a bad request")
                    self.internal_errors += 1
                    if len(raw) >= 2 and self._baton.serving():
                        text = "the server failed on this message; it was logged"
                        self._send([raw[0]], error_message("", "", BadRequest.code, text))
                if not self._baton.serving():
                    return  # an acquisition outlasted ``takeover_s``: the other thread serves now

    def close(self) -> None:
        """Stop the worker and close the sockets (linger 0); idempotent."""
        if self._router.closed:
            return
        self._guard.driver.abort()
        self._jobs.put(None)
        self._standby.join(timeout=5)
        self._router.close(linger=0)
        self._done.close(linger=0)
        if self._zap is not None:
            self._zap.close()

    @property
    def refused(self) -> list[str]:
        """Connections refused by authentication (unknown keys), as logged."""
        return list(self._zap.refused) if self._zap is not None else []

    # ---------------------------------------------------------------- handling
    def _receive(self, frames: list[bytes], push: zmq.Socket[Any], user: str | None = None) -> None:
        if len(frames) < 2:
            return  # not even an envelope: nothing to answer
        route, payload = [frames[0]], frames[1:]
        if payload and payload[0] == b"":  # a REQ client: keep its delimiter
            route, payload = [*route, b""], payload[1:]
        self._last_seen[frames[0]] = now = self._clock.monotonic()
        self._requests += 1
        limited = not self._take_token(frames[0], now)
        try:
            msg = decode(payload, self._max_bytes)
        except InstrumentError as exc:
            self._send(route, error_message(exc.request_id, "", exc.code, str(exc)))
            return
        if limited:
            text = f"rate limit: at most {self._rate:g} requests/s per client; slow down and retry"
            self._send(route, error_message(msg.request_id, msg.command, InstrumentBusy.code, text))
            return
        if msg.type != "request":
            self._send(route, error_message(msg.request_id, msg.command, BadRequest.code, "expected a request"))
            return
        if self._auth is not None and not self._authorised(route, msg, user):
            return
        if (cached := self._cache.get(msg.request_id)) is not None:
            self._router.send_multipart([*route, *cached])
            return
        if msg.request_id in self._in_flight:
            self._send(route, Message("progress", msg.request_id, msg.command, {"state": "running"}))
            if route != self._in_flight[msg.request_id]:  # another client (a resumed engine): tell it too
                self._waiters.setdefault(msg.request_id, []).append(route)
            return
        if msg.command in ACQUISITIONS:
            queued = msg.command == "measure" and msg.body.get("queue") is True
            if self._in_flight and not (queued and len(self._in_flight) <= QUEUE_DEPTH):
                busy = f"busy with request {next(iter(self._in_flight))}; retry when it completes or abort it"
                self._send(route, error_message(msg.request_id, msg.command, InstrumentBusy.code, busy))
                return
            self._in_flight[msg.request_id] = route
            if len(self._in_flight) == 1:
                self._run_here(msg, push)
            else:
                self._jobs.put((route, msg))
            return
        self._send(route, self._answer(msg, self._immediate))

    def _abort_abandoned(self) -> None:
        """Abort the acquisition whose client has been silent for ``client_silence_s`` (it cannot be told)."""
        now = self._clock.monotonic()
        for rid, route in self._in_flight.items():
            silent = now - self._last_seen.get(route[0], now)
            if silent > self._silence_s and rid not in self.abandoned:
                log.warning("client silent for %.1f s: aborting its acquisition %s", silent, rid)
                self.abandoned.append(rid)
                self._guard.driver.abort()

    def _take_token(self, client: bytes, now: float) -> bool:
        """Token bucket per client: ``rate_per_s`` tokens a second, at most ``2 × rate_per_s`` saved."""
        capacity = 2 * self._rate
        tokens, then = self._buckets.get(client, (capacity, now))
        tokens = min(capacity, tokens + (now - then) * self._rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1, now)
        return True

    def _authorised(self, route: list[bytes], msg: Message, user: str | None) -> bool:
        """Check ``msg``'s command against the role of the key that sent it; answer and log a refusal."""
        assert self._auth is not None
        role = self._auth.clients.role_of(user or "")
        if role is not None and permitted(role, msg.command):
            return True
        who = f"client {user!r} (role {role})" if role else f"an unidentified client {user!r}"
        reason = f"{who} may not send {msg.command!r}; it needs the role {least_role_for(msg.command)}"
        log.warning("refused request %s: %s", msg.request_id, reason)
        self.unauthorised.append(reason)
        self._send(route, error_message(msg.request_id, msg.command, Unauthorised.code, reason))
        return False

    def _immediate(self, msg: Message) -> Message:
        cmd = msg.command
        if cmd in ("hello", "describe"):
            extra = {"protocol_version": PROTOCOL_VERSION, "server": f"dualscope {__version__}",
                     "queue_depth": QUEUE_DEPTH}  # fmt: skip
            return messages.description_reply(msg, self._guard.description, extra)
        if cmd == "heartbeat":
            return messages.reply(msg, self._heartbeat())
        if cmd == "status":
            return messages.reply(msg, {**self._heartbeat(), "driver": dict(self._guard.driver.status())})
        if cmd == "recall":
            return messages.reply(msg, self._recall(msg.body.get("request_id")))
        if cmd == "fetch":  # its own id is the one asked about: a cached or running one was answered above
            return messages.reply(msg, {"request_id": msg.request_id, "state": "unknown", "instance": self.instance})
        if cmd == "set_limits":
            return messages.reply(msg, self._set_limits(msg.body.get("safety")))
        if cmd == "abort":
            aborted = bool(self._in_flight)
            with self._cancel_lock:  # the queued ones are never started
                self._cancelled.update(list(self._in_flight)[1:])
            self._guard.driver.abort()
            return messages.reply(msg, {"aborted": aborted})
        known = ", ".join(sorted(IMMEDIATE | ACQUISITIONS))
        raise BadRequest(f"unknown command {cmd!r}; this server knows {known}")

    def _set_limits(self, table: object) -> dict[str, Any]:
        """Replace the safety limits with a ``[safety]`` table (JSON object; ``{}`` removes them)."""
        if not isinstance(table, dict):
            raise BadRequest("set_limits needs body.safety: a [safety] table as a JSON object ({} removes the limits)")
        try:
            section = SafetySection.model_validate(table)
            limits = section.limits([a.name for a in self._guard.description.axes])
        except (ValidationError, ConfigError) as exc:
            raise BadRequest(f"set_limits: {exc}") from None
        self._guard.set_limits(limits)
        log.warning("safety limits replaced: %s", section.model_dump(exclude_defaults=True) or "none")
        peak = limits.dose.peak_dose() if limits is not None and limits.dose is not None else None
        return {"safety": section.model_dump(mode="json", exclude_defaults=True), "peak_dose_e_per_nm2": peak}

    def _recall(self, request_id: object) -> dict[str, Any]:
        """What this server did with ``request_id``: ``done`` (reply cached), ``running`` or ``unknown``."""
        if not isinstance(request_id, str) or not request_id:
            raise BadRequest("recall needs a non-empty string 'request_id'")
        state = "done" if self._cache.get(request_id) is not None else "unknown"
        if request_id in self._in_flight:
            state = "running"
        return {"request_id": request_id, "state": state, "instance": self.instance}

    def _heartbeat(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "uptime_s": self._clock.monotonic() - self._started,
            "busy": bool(self._in_flight),
            "in_flight": next(iter(self._in_flight), None),
            "queued": max(len(self._in_flight) - 1, 0),
            "requests": self._requests,
            "clients": len(self._last_seen),
        }

    def _acquire(self, msg: Message) -> Message:
        if msg.command == "acquire_image":
            channel = msg.body.get("channel")
            if not isinstance(channel, str):
                raise BadRequest("acquire_image needs a string 'channel'")
            return messages.image_reply(msg, self._guard.acquire_image(channel))
        if "positions" not in msg.arrays:
            raise BadRequest("measure needs an array 'positions' of shape (n, d)")
        positions, batch = self._guard.measure(msg.arrays["positions"])
        return messages.measurement_reply(msg, positions, batch)

    def _answer(self, msg: Message, handler: Callable[[Message], Message]) -> Message:
        try:
            return handler(msg)
        except InstrumentError as exc:
            return error_message(msg.request_id, msg.command, exc.code, str(exc))
        except Exception as exc:  # a driver bug must not take the server down
            log.exception("driver failed on %s", msg.command)
            return error_message(msg.request_id, msg.command, DeviceFault.code, f"{type(exc).__name__}: {exc}")

    def _run_here(self, msg: Message, push: zmq.Socket[Any]) -> None:
        """Run an acquisition on the serving thread; if it outlasted ``takeover_s``, hand its reply on."""
        if self._baton.begin():
            self._jobs.put(_WAKE)  # the standby dozes after an idle second: it must watch this one
        reply = self._acquired(msg)
        if self._baton.end():  # the cache keeps bytes: a driver may reuse the buffers it returned
            self._finish(msg.request_id, [bytes(f) for f in reply])
        else:  # the other thread serves the socket now: it sends the reply
            push.send_multipart([msg.request_id.encode(), *reply], copy=False)

    def _stand_in(self) -> None:
        """The second thread: stands by, acquires what is queued, and serves the socket when it takes it over."""
        push = self._pusher()
        try:
            while True:
                if self._baton.serving():
                    self._serve_socket(push)
                    if self._stop.is_set():
                        self._baton.release()
                elif self._stand_by(push, None) == "closed":
                    return
        finally:
            push.close(linger=0)

    def _stand_by(self, push: zmq.Socket[Any], stop: threading.Event | None) -> str:
        """Acquire queued jobs until the serving thread's own acquisition outlasts ``takeover_s``.

        Returns ``"serve"`` once this thread has taken the socket over, ``"closed"`` on ``close``, and
        ``"stopped"`` when ``stop`` (the thread that called ``serve``) is set.
        """
        while True:
            timeout = self._baton.standby_timeout()
            if stop is not None:
                timeout = self._poll_ms / 1000 if timeout is None else min(timeout, self._poll_ms / 1000)
            try:
                job = self._jobs.get() if timeout is None else self._jobs.get(timeout=timeout)
            except queue.Empty:
                if stop is not None and stop.is_set():
                    return "stopped"
                if self._baton.take_over():
                    return "serve"
                continue
            if job is None:
                return "closed"
            if isinstance(job, str):  # _WAKE: watch the acquisition the serving thread has begun
                continue
            _route, msg = job
            push.send_multipart([msg.request_id.encode(), *self._acquired(msg)], copy=False)

    def _acquired(self, msg: Message) -> Frames:
        """Run the acquisition ``msg`` asks for (unless an abort cancelled it) and encode its reply."""
        with self._cancel_lock:
            cancelled = msg.request_id in self._cancelled
            self._cancelled.discard(msg.request_id)
        if cancelled:
            text = "aborted while queued behind another measurement; it was never started"
            answer = error_message(msg.request_id, msg.command, AcquisitionAborted.code, text)
        else:
            answer = self._answer(msg, self._acquire)
        try:
            return encode(answer, self._max_bytes)
        except ValueError as exc:
            return encode(error_message(msg.request_id, msg.command, DeviceFault.code, str(exc)))

    def _pusher(self) -> zmq.Socket[Any]:
        """A socket of the calling thread, for handing replies to the thread that serves (one per thread)."""
        push: zmq.Socket[Any] = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self._inproc)
        return push

    def _finish(self, rid: str, reply: Frames) -> None:
        route = self._in_flight.pop(rid, None)
        self._cache.put(rid, reply)
        for waiting in [*([route] if route is not None else []), *self._waiters.pop(rid, [])]:
            self._router.send_multipart([*waiting, *reply])

    def _send(self, route: list[bytes], msg: Message) -> None:
        self._router.send_multipart([*route, *encode(msg, self._max_bytes)])
