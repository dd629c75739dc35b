"""Shared fixtures: a fake clock, drivers that count calls, servers on random loopback ports."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import zmq

# One OpenMP thread per process: the suite runs an engine, a spawned server and a trainer side by side
# on 2 cores, and OpenMP threads that spin-wait for each other on a loaded machine slow every one down.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from engine.clock import SystemClock
from engine.types import SpectrumBatch
from instruments.server import InstrumentServer
from simulators.stem_driver import SimulatedStem
from simulators.synthetic import SyntheticOptions, synthetic_microscope


@dataclass
class FakeClock:
    """A clock that advances only when told to (``tick`` per reading of ``monotonic``)."""

    now: float = 1_700_000_000.0
    mono: float = 0.0
    tick: float = 0.0

    def time(self) -> float:
        return self.now + self.mono

    def monotonic(self) -> float:
        self.mono += self.tick
        return self.mono


@dataclass
class CountingDriver:
    """Wraps a driver and counts measure calls (to prove a retry never measures twice)."""

    inner: Any
    delay_s: float = 0.0
    calls: int = 0
    fail_with: BaseException | None = None
    spectra_override: Any = None
    _gate: threading.Event = field(default_factory=threading.Event)

    def describe(self):  # type: ignore[no-untyped-def]
        return self.inner.describe()

    def acquire_image(self, channel):  # type: ignore[no-untyped-def]
        return self.inner.acquire_image(channel)

    def measure(self, positions):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        if self.delay_s and self._gate.wait(self.delay_s):
            from engine.errors import AcquisitionAborted

            raise AcquisitionAborted("aborted")
        batch = self.inner.measure(positions)
        if self.spectra_override is not None:
            return SpectrumBatch(self.spectra_override(batch.spectra), batch.timestamps, batch.acquisition_time_s)
        return batch

    def status(self):  # type: ignore[no-untyped-def]
        return {"calls": self.calls}

    def abort(self) -> None:
        self._gate.set()


SMALL = SyntheticOptions(image_pixels=32, n_channels=64, acquisition_time_s=0.0, field_of_view_nm=100.0)


@pytest.fixture
def synthetic() -> SimulatedStem:
    return synthetic_microscope(SMALL, SystemClock())


@pytest.fixture
def counting(synthetic: SimulatedStem) -> CountingDriver:
    return CountingDriver(synthetic)


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


class RunningServer:
    def __init__(self, driver: Any, context: zmq.Context[Any]):
        self.server = InstrumentServer(driver, context, SystemClock(), endpoint="tcp://127.0.0.1:*")
        self.endpoint = self.server.endpoint
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve, args=(self.stop, 10), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def serve(zmq_context: zmq.Context[Any]) -> Iterator[Any]:
    servers: list[RunningServer] = []

    def start(driver: Any) -> RunningServer:
        srv = RunningServer(driver, zmq_context)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()
