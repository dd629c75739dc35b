"""The generic server survives bad input, answers while busy, and makes retries idempotent."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pytest
import zmq
from numpy.typing import NDArray

from engine.clock import SystemClock
from engine.errors import AcquisitionAborted, ConfigError, DeviceFault, InstrumentBusy, InstrumentTimeout
from instruments.client import ZmqInstrument
from instruments.endpoints import is_loopback
from instruments.server import InstrumentServer
from instruments.testing import positions_in
from instruments.wire import Message, decode, encode
from tests.conftest import CountingDriver, FakeClock, RunningServer


def _raw(context: zmq.Context[Any], endpoint: str, kind: int = zmq.DEALER) -> zmq.Socket[Any]:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 3000)
    sock.connect(endpoint)
    return sock


def _request(rid: str, cmd: str, **arrays: Any) -> list[Any]:
    return encode(Message("request", rid, cmd, {}, arrays))


@pytest.mark.parametrize(
    "frames",
    [
        [b"garbage"],
        [b"{}"],
        [b'{"v": 1, "id": "x", "type": "request", "cmd": "measure", "arrays": [{"name": "p"}]}'],
        [json.dumps({"v": 99, "id": "old", "type": "request", "cmd": "hello"}).encode()],
        [b"\x00" * 70000],
    ],
)
def test_malformed_input_gets_an_error_and_the_server_goes_on(
    frames: list[bytes], counting: CountingDriver, serve: Any, zmq_context: Any
) -> None:
    srv = serve(counting)
    sock = _raw(zmq_context, srv.endpoint)
    sock.send_multipart(frames)
    reply = decode(sock.recv_multipart())
    assert reply.type == "error"
    assert reply.body["code"] in ("bad_request", "version_mismatch")
    assert reply.body["message"]
    sock.close(linger=0)
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=3) as client:
        assert client.describe().name == "dualscope-synthetic-stem"


def test_version_mismatch_is_typed_at_the_client(counting: CountingDriver, serve: Any, zmq_context: Any) -> None:
    srv = serve(counting)
    sock = _raw(zmq_context, srv.endpoint)
    sock.send_multipart([json.dumps({"v": 2, "id": "abc", "type": "request", "cmd": "hello"}).encode()])
    reply = decode(sock.recv_multipart())
    assert reply.body["code"] == "version_mismatch" and reply.request_id == "abc"
    sock.close(linger=0)


def test_unknown_command(counting: CountingDriver, serve: Any, zmq_context: Any) -> None:
    srv = serve(counting)
    sock = _raw(zmq_context, srv.endpoint)
    sock.send_multipart(_request("u1", "fire_lasers"))
    reply = decode(sock.recv_multipart())
    assert reply.body["code"] == "bad_request" and "fire_lasers" in reply.body["message"]
    sock.close(linger=0)


def test_req_clients_are_served_too(counting: CountingDriver, serve: Any, zmq_context: Any) -> None:
    srv = serve(counting)
    sock = _raw(zmq_context, srv.endpoint, zmq.REQ)
    sock.send_multipart(_request("req-1", "describe"))
    reply = decode(sock.recv_multipart())
    assert reply.type == "reply" and reply.body["description"]["name"] == "dualscope-synthetic-stem"
    sock.close(linger=0)


def test_a_lost_reply_is_recovered_from_the_cache(counting: CountingDriver, serve: Any, zmq_context: Any) -> None:
    srv = serve(counting)
    pos = positions_in(counting.describe(), 3)
    sock = _raw(zmq_context, srv.endpoint)
    sock.send_multipart(_request("lost-1", "measure", positions=pos))
    first = decode(sock.recv_multipart())  # this client "crashes" and never uses the reply
    sock.close(linger=0)
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=3) as client:
        again = client.measure(pos, request_id="lost-1")
    assert counting.calls == 1
    np.testing.assert_array_equal(again.spectra, first.arrays["spectra"])


def test_fetch_hands_back_what_was_measured_under_an_id_and_never_measures(
    counting: CountingDriver, serve: Any, zmq_context: Any
) -> None:
    """What a resumed engine asks after a power cut: the reply kept under an id, or nothing; running: once done."""
    srv = serve(counting)
    pos = positions_in(counting.describe(), 2)
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=3) as client:
        made = client.measure(pos, request_id="run-000007")
        again = client.fetch("run-000007")
        assert again is not None and again.request_id == "run-000007"
        np.testing.assert_array_equal(again.spectra, made.spectra)
        np.testing.assert_array_equal(again.positions, made.positions)
        assert client.fetch("run-000008") is None  # never received: nothing, and nothing started
        assert counting.calls == 1
        counting.delay_s = 0.5
        client.submit(pos, "run-000009")
        _wait_for(lambda: client.status()["busy"])
        running = client.fetch("run-000009")  # answered once it ends
        assert running is not None and counting.calls == 2
        counting.delay_s = 0.0
        counting.fail_with = DeviceFault("detector saturated")
        with pytest.raises(DeviceFault, match="saturated"):
            client.measure(pos, request_id="run-000010")
        with pytest.raises(DeviceFault, match="saturated"):  # a failed one says how it failed
            client.fetch("run-000010")
        assert client.recall("run-000008")["state"] == "unknown"  # fetch left nothing behind under that id


def test_slow_acquisition_retries_see_progress_and_measure_once(
    counting: CountingDriver, serve: Any, zmq_context: Any
) -> None:
    counting.delay_s = 0.6
    srv = serve(counting)
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=0.1, retries=1) as client:
        m = client.measure(positions_in(counting.describe(), 1), request_id="slow-1")
    assert m.spectra.shape[0] == 1
    assert counting.calls == 1


def test_busy_while_acquiring_and_status_still_answers(counting: CountingDriver, serve: Any, zmq_context: Any) -> None:
    counting.delay_s = 2.0
    srv = serve(counting)
    pos = positions_in(counting.describe(), 1)
    a = _raw(zmq_context, srv.endpoint)
    a.send_multipart(_request("long-1", "measure", positions=pos))
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0) as other:
        _wait_for(lambda: counting.calls == 1)  # the acquisition has started (it takes 2 s unless aborted)
        status = other.status()  # answered while it runs: had status waited for it, busy would be False
        assert status["busy"] is True and status["in_flight"] == "long-1"
        assert other.heartbeat()["busy"] is True
        with pytest.raises(InstrumentBusy, match="long-1"):
            other.measure(pos)
        other.abort()
    reply = decode(a.recv_multipart())
    assert reply.body["code"] == AcquisitionAborted.code
    a.close(linger=0)


def test_no_server_times_out_with_a_clear_message(zmq_context: Any) -> None:
    probe = zmq_context.socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    with (
        ZmqInstrument(f"tcp://127.0.0.1:{port}", zmq_context, timeout_s=0.1, retries=2) as client,
        pytest.raises(InstrumentTimeout, match="after 3 attempts"),
    ):
        client.describe()


def _wait_for(condition: Any, timeout_s: float = 120.0) -> None:
    """Wait until ``condition()`` holds (the timeout is a hang guard, not a time budget)."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout_s, "timed out"
        time.sleep(0.01)


def test_late_replies_to_old_requests_are_dropped(counting: CountingDriver, serve: Any, zmq_context: Any) -> None:
    counting.delay_s = 0.4
    srv = serve(counting)
    pos = positions_in(counting.describe(), 1)
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=0.05, retries=0) as client:
        with pytest.raises(InstrumentTimeout):
            client._call("measure", arrays={"positions": pos}, request_id="first")  # progress never asked
        with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0) as other:
            _wait_for(lambda: not other.status()["busy"])  # "first" answered: its reply is queued on the socket
        counting.delay_s = 0
        client.timeout_s = 3
        m = client.measure(pos, request_id="second")
    assert m.request_id == "second"


def test_non_loopback_bind_is_refused(counting: CountingDriver, zmq_context: Any) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        InstrumentServer(counting, zmq_context, SystemClock(), endpoint="tcp://0.0.0.0:*")


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.3.2.1:1", True),
        ("tcp://localhost:5", True),
        ("tcp://[::1]:5", True),
        ("ipc:///tmp/x", True),
        ("tcp://0.0.0.0:5", False),
        ("tcp://192.168.1.2:5", False),
        ("tcp://*:5", False),
        ("udp://127.0.0.1:5", False),
    ],
)
def test_is_loopback(endpoint: str, ok: bool) -> None:
    assert is_loopback(endpoint) is ok


def test_server_close_is_idempotent_and_stops_serving(counting: CountingDriver, zmq_context: Any) -> None:
    srv = InstrumentServer(counting, zmq_context, SystemClock())
    stop = threading.Event()
    t = threading.Thread(target=srv.serve, args=(stop, 10))
    t.start()
    stop.set()
    t.join(timeout=5)
    srv.close()
    srv.close()
    assert not t.is_alive()


def test_a_client_over_the_rate_limit_is_told_to_slow_down(counting: CountingDriver, zmq_context: Any) -> None:
    clock = FakeClock()
    server = InstrumentServer(counting, zmq_context, clock, endpoint="tcp://127.0.0.1:*", rate_per_s=5)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 5), daemon=True)
    thread.start()
    try:
        with ZmqInstrument(server.endpoint, zmq_context, timeout_s=2) as client:
            answers: list[str] = []
            for _ in range(14):  # a burst of 10 (2 s worth) is allowed, then nothing until time passes
                try:
                    answers.append("ok" if client.heartbeat() else "empty")
                except InstrumentBusy as exc:
                    answers.append(str(exc))
            assert answers[:10] == ["ok"] * 10
            assert all("rate limit: at most 5 requests/s per client" in a for a in answers[10:])
            clock.mono += 1.0  # one second later: five more
            assert client.heartbeat()["requests"] == 15
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_an_acquisition_is_aborted_when_its_client_goes_silent(counting: CountingDriver, zmq_context: Any) -> None:
    counting.delay_s = 30.0
    server = InstrumentServer(counting, zmq_context, SystemClock(), client_silence_s=0.3)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 10), daemon=True)
    thread.start()
    try:
        gone = _raw(zmq_context, server.endpoint)
        t0 = time.monotonic()
        gone.send_multipart(_request("orphan-1", "measure", positions=positions_in(counting.describe(), 1)))
        while counting.calls == 0 and time.monotonic() - t0 < 5:  # linger 0 would drop an undelivered request
            time.sleep(0.01)
        gone.close(linger=0)  # the engine disappears mid-acquisition
        while not server.abandoned and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert server.abandoned == ["orphan-1"] and time.monotonic() - t0 < 5
        # the outcome is kept: asking again for the same request id gets "aborted", not a new acquisition
        with ZmqInstrument(server.endpoint, zmq_context, timeout_s=5) as back, pytest.raises(AcquisitionAborted):
            back.measure(positions_in(counting.describe(), 1), request_id="orphan-1")
        assert counting.calls == 1
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def _served_slowly(counting: CountingDriver, serve: Any, delay_s: float) -> tuple[Any, NDArray[np.float64]]:
    """The counting driver served with ``delay_s`` seconds per measurement, and one position ``(1, 2)`` inside it."""
    counting.delay_s = delay_s
    return serve(counting), positions_in(counting.describe(), 1)


def _outcome(sock: zmq.Socket[Any]) -> Message:
    """The reply or error to a queued request (nothing is sent before it: no acknowledgement)."""
    return decode(sock.recv_multipart())


def test_a_queued_measurement_starts_when_the_running_one_ends_and_abort_cancels_it(
    counting: CountingDriver, serve: Any, zmq_context: Any
) -> None:
    """`"queue": true` waits behind the running measurement (depth 1); a third is busy; abort cancels the queued."""
    srv, pos = _served_slowly(counting, serve, 0.3)
    a, b = _raw(zmq_context, srv.endpoint), _raw(zmq_context, srv.endpoint)
    queued = {"queue": True}
    try:
        a.send_multipart(encode(Message("request", "run-1", "measure", queued, {"positions": pos})))
        _wait_for(lambda: counting.calls == 1)
        b.send_multipart(encode(Message("request", "run-2", "measure", queued, {"positions": pos})))
        with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0, queue=True) as other:
            assert other.hello() and other.queue_depth == 1
            _wait_for(lambda: other.status()["queued"] == 1)
            with pytest.raises(InstrumentBusy, match="run-1"):  # one running, one queued: no room for a third
                other.measure(pos)
            assert _outcome(a).type == "reply"
            assert _outcome(b).type == "reply"  # started by the server itself, no new request
            assert counting.calls == 2
            plain = ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0)
            assert plain.hello() and plain.queue_depth == 0  # a client that does not ask to queue
            counting.delay_s = 5.0
            a.send_multipart(encode(Message("request", "run-3", "measure", queued, {"positions": pos})))
            _wait_for(lambda: counting.calls == 3)
            with pytest.raises(InstrumentBusy):  # without "queue" the old rule holds
                plain.measure(pos)
            b.send_multipart(encode(Message("request", "run-4", "measure", queued, {"positions": pos})))
            _wait_for(lambda: other.status()["queued"] == 1)
            other.abort()
            assert _outcome(a).body["code"] == AcquisitionAborted.code
            cancelled = _outcome(b)
            assert cancelled.body["code"] == AcquisitionAborted.code and "never started" in cancelled.body["message"]
            assert counting.calls == 3  # the queued one never reached the driver
            assert other.recall("run-4")["state"] == "done"  # its answer is cached like any other
            plain.close()
    finally:
        a.close(linger=0)
        b.close(linger=0)


def test_each_thread_gets_its_own_socket(counting: CountingDriver, serve: Any, zmq_context: Any) -> None:
    """Two threads of one queued client: both measurements are answered, each on its own thread's socket."""
    srv, pos = _served_slowly(counting, serve, 0.05)
    results: dict[str, Any] = {}
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0, queue=True) as client:
        client.hello()
        threads = [
            threading.Thread(target=lambda rid=rid: results.__setitem__(rid, client.measure(pos, request_id=rid)))
            for rid in ("t-1", "t-2")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert sorted(results) == ["t-1", "t-2"] and all(m.request_id == rid for rid, m in results.items())
    assert counting.calls == 2


def test_submitted_measurements_are_queued_in_order_and_collected_by_id(
    counting: CountingDriver, serve: Any, zmq_context: Any
) -> None:
    """submit returns at once; the server holds the second behind the first; collect takes each outcome by id."""
    srv, pos = _served_slowly(counting, serve, 0.05)
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0, queue=True) as client:
        client.hello()
        client.submit(pos, "s-1")
        client.submit(pos + 1.0, "s-2")
        _wait_for(lambda: client.status()["queued"] == 1)  # both sent before either was collected
        client.submit(pos + 2.0, "s-3")  # one running, one queued: no room for a third
        second = client.collect("s-2")  # collected out of order: the first's reply is kept for its turn
        first = client.collect("s-1")
        with pytest.raises(InstrumentBusy, match="s-1"):
            client.collect("s-3")
        with pytest.raises(ValueError, match="not submitted"):
            client.collect("s-1")
    assert first.request_id == "s-1" and second.request_id == "s-2"
    np.testing.assert_allclose(second.positions, first.positions + 1.0)
    assert counting.calls == 2


def test_a_pipelined_campaign_to_a_queuing_server_measures_in_the_order_it_decided(
    counting: CountingDriver, serve: Any, zmq_context: Any
) -> None:
    """Every command is submitted from the loop's thread on one socket, so the server receives them in order."""
    from engine.campaign import Budget, Campaign
    from engine.candidates import CandidateSet
    from engine.policy import RandomPolicy
    from tests.fakes import MemoryRecorder

    order: list[list[float]] = []
    inner = counting.measure

    def recording(positions: Any) -> Any:
        order.append(np.asarray(positions)[0].tolist())
        return inner(positions)

    class Counting(ZmqInstrument):
        """Counts what the campaign submits (the pipelined path) and what it measures the plain way."""

        submitted = 0
        measured = 0

        def submit(self, positions: Any, request_id: str) -> None:
            self.submitted += 1
            super().submit(positions, request_id)

        def measure(self, positions: Any, request_id: str | None = None) -> Any:
            self.measured += 1
            return super().measure(positions, request_id)

    counting.measure = recording  # type: ignore[method-assign]
    counting.delay_s = 0.002
    srv = serve(counting)
    with Counting(srv.endpoint, zmq_context, timeout_s=30, retries=0, queue=True) as client:
        desc = client.describe()
        cands = CandidateSet.from_image_grid(client.acquire_image("haadf"), desc, 4, margin_px=1)
        rec = MemoryRecorder()
        result = Campaign(
            instrument=client, policy=RandomPolicy(np.random.default_rng(3)), recorder=rec, candidates=cands,
            spectral_axis=desc.spectral_axis, stop_rules=[Budget(60)], clock=SystemClock(), request_prefix="q",
            pipeline=True,
        ).run()  # fmt: skip
    assert result.n_recorded == 60 and srv.server.internal_errors == 0
    assert client.submitted == 60 and client.measured == 0
    assert order == [row[1].positions[0].tolist() for row in rec.rows]  # the instrument's order is the decisions'


def test_a_short_acquisition_runs_on_the_serving_thread_and_a_long_one_hands_the_socket_over(
    counting: CountingDriver, zmq_context: Any
) -> None:
    """No hand-off to another thread for a short measurement; commands are still answered during a long one."""
    threads: list[str] = []

    def note_thread(spectra: NDArray[np.float32]) -> NDArray[np.float32]:
        threads.append(threading.current_thread().name)  # called inside measure, on its thread
        return spectra

    counting.spectra_override = note_thread
    srv = RunningServer(counting, zmq_context)
    pos = positions_in(counting.describe(), 1)
    try:
        with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0) as client:
            for i in range(5):
                client.measure(pos, request_id=f"short-{i}")
            assert threads == [srv.thread.name] * 5 and srv.server.takeovers == 0
            counting.delay_s = 60.0  # held until aborted
            long_one = _raw(zmq_context, srv.endpoint)
            long_one.send_multipart(_request("long", "measure", positions=pos))
            _wait_for(lambda: counting.calls == 6)
            with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0) as other:
                assert other.heartbeat()["in_flight"] == "long"  # answered by the standby, which took over
                other.abort()  # reaches the driver through the thread that now serves
            assert srv.server.takeovers == 1
            assert decode(long_one.recv_multipart()).body["code"] == AcquisitionAborted.code
            long_one.close(linger=0)
            counting.delay_s = 0.0
            client.measure(pos, request_id="short-after")  # nothing running: on the thread that serves now
            assert threads[-2:] == [srv.thread.name, "dualscope-standby"]
            assert srv.server.takeovers == 1
    finally:
        srv.close()  # serve() returns and the server closes with the roles swapped
    assert not srv.thread.is_alive()


def test_a_cached_reply_keeps_what_was_measured_when_the_driver_reuses_its_buffer(
    counting: CountingDriver, serve: Any, zmq_context: Any
) -> None:
    """A driver that returns one buffer, overwritten at each measurement (as a camera's ring buffer)."""
    buffer = np.zeros((1, counting.describe().spectral_axis.size), dtype=np.float32)

    def into_buffer(spectra: NDArray[np.float32]) -> NDArray[np.float32]:
        buffer[:] = counting.calls
        return buffer

    counting.spectra_override = into_buffer
    srv = serve(counting)
    pos = positions_in(counting.describe(), 1)
    with ZmqInstrument(srv.endpoint, zmq_context, timeout_s=30, retries=0) as client:
        assert client.measure(pos, request_id="first").spectra.max() == 1
        assert client.measure(pos, request_id="second").spectra.max() == 2
        assert client.measure(pos, request_id="first").spectra.max() == 1  # from the cache, as measured
