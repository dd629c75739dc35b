"""Fuzzing the wire format and the server with hypothesis: every bad message gets a typed error, nothing crashes.

``make test`` runs a bounded number of cases; ``make fuzz`` runs many more
(``DUALSCOPE_FUZZ_EXAMPLES``). A case is malformed frames (random bytes, truncated multiparts,
missing or extra buffers), headers of the right shape with fields of the wrong types, huge or
negative shapes, disallowed dtypes, or well-formed requests with random commands and arguments.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.clock import SystemClock
from engine.errors import INSTRUMENT_ERRORS, InstrumentError
from instruments.server import InstrumentServer
from instruments.wire import ALLOWED_DTYPES, PROTOCOL_VERSION, Message, decode
from simulators.synthetic import synthetic_microscope
from tests.conftest import SMALL

EXAMPLES = int(os.environ.get("DUALSCOPE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
shapes = st.one_of(
    st.lists(st.integers(0, 6), max_size=3),
    st.lists(st.integers(-(2**64), 2**64), max_size=10),  # negative, huge, too many dimensions
    json_values,
)
specs = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["positions", "spectra", "image"]), json_values),
        "dtype": st.one_of(st.sampled_from([*sorted(ALLOWED_DTYPES), "|O", "<c16", "<U4"]), json_values),
        "shape": shapes,
    },
    optional={"units": st.one_of(st.text(max_size=4), json_values)},
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "v": st.one_of(st.just(PROTOCOL_VERSION), json_values),
        "id": st.one_of(st.text(min_size=1, max_size=12), st.text(min_size=129, max_size=140), json_values),
        "type": st.one_of(st.sampled_from(["request", "reply", "error", "progress"]), json_values),
        "cmd": st.one_of(
            st.sampled_from(
                ["hello", "describe", "status", "heartbeat", "recall", "measure", "acquire_image", "abort"]
            ),
            json_values,
        ),
        "body": st.one_of(st.dictionaries(st.sampled_from(["channel", "positions", "x"]), json_values), json_values),
        "arrays": st.one_of(st.lists(specs, max_size=3), json_values),
    },
)


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    """Frames of one (mostly malformed) message."""
    kind = draw(st.sampled_from(["raw", "header", "header"]))
    if kind == "raw":
        return draw(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
    header = draw(headers)
    head = json.dumps(header).encode()
    if draw(st.booleans()):  # truncated or corrupted header
        head = head[: draw(st.integers(0, len(head)))]
    buffers = draw(st.lists(st.binary(max_size=48), max_size=4))
    return [head, *buffers]


@given(frames=messages())
@FUZZ
def test_decode_raises_only_typed_errors(frames: list[bytes]) -> None:
    try:
        decode(frames)
    except InstrumentError as exc:
        error: InstrumentError | None = exc
    else:
        error = None
    assert error is None or (error.code in INSTRUMENT_ERRORS and str(error))


@pytest.fixture(scope="module")
def fuzzed_server() -> Iterator[tuple[InstrumentServer, zmq.Socket[Any]]]:
    context: zmq.Context[Any] = zmq.Context()
    # no rate limit here (it has its own test): a fast fuzz run sends many requests a second
    clock = SystemClock()
    server = InstrumentServer(synthetic_microscope(SMALL, clock), context, clock, rate_per_s=1e9)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 5), daemon=True)
    thread.start()
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.setsockopt(zmq.RCVTIMEO, 5000)
    client.connect(server.endpoint)
    yield server, client
    client.close(linger=0)
    stop.set()
    thread.join(timeout=5)
    server.close()
    context.destroy(linger=0)


def _receive(client: zmq.Socket[Any]) -> Message:
    """The next reply; a leading empty frame (the server took the case for a REQ envelope) is dropped."""
    frames = client.recv_multipart()
    return decode(frames[1:] if frames[0] == b"" else frames)


@given(frames=messages())
@FUZZ
def test_the_server_answers_every_message_and_stays_up(
    fuzzed_server: tuple[InstrumentServer, zmq.Socket[Any]], frames: list[bytes]
) -> None:
    server, client = fuzzed_server
    client.send_multipart(frames)
    reply = _receive(client)  # a timeout here (zmq.Again) is a failure
    assert reply.type in ("error", "reply", "progress")
    if reply.type == "error":
        assert reply.body["code"] in INSTRUMENT_ERRORS and reply.body["message"]
    # the server is still up and serving
    client.send_multipart([json.dumps({"v": 1, "id": "ping", "type": "request", "cmd": "heartbeat"}).encode()])
    pong = _receive(client)
    if pong.request_id != "ping":  # a late answer to an acquisition the case started came first
        pong = _receive(client)
    assert pong.request_id == "ping" and pong.type == "reply"
    assert server.internal_errors == 0  # every case was answered by design, not by the server's catch-all
