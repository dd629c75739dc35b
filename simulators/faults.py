"""Fault injection for reliability tests: a driver wrapper and a ZeroMQ proxy, each fault switchable.

* :class:`FaultyDriver` wraps any driver: added latency, stalls, NaN spectra, wrongly shaped
  spectra, driver exceptions.
* :class:`FaultyProxy` sits between a client and a server on loopback and disturbs the transport:
  dropped replies, duplicated replies, garbage frames instead of replies, and disconnects (a
  period during which nothing passes).

Each fault has a probability (0 switches it off) that can be changed while running; the
generator is injected, so a seeded test sees the same faults every time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq
from numpy.typing import NDArray

from engine.types import JSON, Image, InstrumentDescription, SpectrumBatch


@dataclass
class DriverFaults:
    """Probabilities (per ``measure`` call) and durations of driver faults."""

    latency_s: float = 0.0
    stall_probability: float = 0.0
    stall_s: float = 5.0
    nan_probability: float = 0.0
    wrong_shape_probability: float = 0.0
    error_probability: float = 0.0


class FaultyDriver:
    """Wraps ``driver`` and injects :class:`DriverFaults` into ``measure``; counts what it injected."""

    def __init__(self, driver: Any, rng: np.random.Generator, faults: DriverFaults | None = None):
        self.inner, self._rng = driver, rng
        self.faults = faults if faults is not None else DriverFaults()
        self.injected: dict[str, int] = {"stall": 0, "nan": 0, "wrong_shape": 0, "error": 0}
        self._abort = threading.Event()

    def describe(self) -> InstrumentDescription:
        """The wrapped driver's description."""
        return self.inner.describe()  # type: ignore[no-any-return]

    def acquire_image(self, channel: str) -> Image:
        """The wrapped driver's image."""
        return self.inner.acquire_image(channel)  # type: ignore[no-any-return]

    def _roll(self, p: float, name: str) -> bool:
        hit = p > 0 and self._rng.random() < p
        if hit:
            self.injected[name] += 1
        return bool(hit)

    def measure(self, positions: NDArray[np.float64]) -> SpectrumBatch:
        """Measure through the wrapped driver, then maybe delay, stall, corrupt or fail."""
        f = self.faults
        self._abort.clear()
        wait = f.latency_s + (f.stall_s if self._roll(f.stall_probability, "stall") else 0.0)
        if wait > 0:
            self._abort.wait(wait)
        if self._roll(f.error_probability, "error"):
            raise RuntimeError("injected driver fault")
        batch = self.inner.measure(positions)
        spectra = batch.spectra
        if self._roll(f.nan_probability, "nan"):
            spectra = spectra.copy()
            spectra[int(self._rng.integers(spectra.shape[0])), int(self._rng.integers(spectra.shape[1]))] = np.nan
        if self._roll(f.wrong_shape_probability, "wrong_shape"):
            spectra = spectra[:, : max(1, spectra.shape[1] // 2)]
        return SpectrumBatch(spectra, batch.timestamps, batch.acquisition_time_s)

    def status(self) -> Mapping[str, JSON]:
        """The wrapped driver's status plus the faults injected so far."""
        return {**dict(self.inner.status()), "injected_faults": dict(self.injected)}

    def abort(self) -> None:
        """Abort a stall and the wrapped driver's acquisition."""
        self._abort.set()
        self.inner.abort()


@dataclass
class TransportFaults:
    """Probabilities (per reply) of transport faults, and the length of a disconnect."""

    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    garbage_probability: float = 0.0
    disconnect_probability: float = 0.0
    disconnect_s: float = 1.0
    max_disconnects: int | None = None
    """Stop disconnecting after this many (``None``: no limit), so a test can ask for exactly one outage."""
    counts: dict[str, int] = field(default_factory=lambda: {"drop": 0, "duplicate": 0, "garbage": 0, "disconnect": 0})


class FaultyProxy:
    """A loopback proxy ``client ⇄ proxy ⇄ server`` that disturbs replies (see :class:`TransportFaults`).

    Args:
        upstream: the server's endpoint.
        context: injected ZeroMQ context.
        rng: injected generator.
        faults: what to inject (mutable while running).
        clock: ``monotonic`` source for disconnect periods.
    """

    def __init__(
        self,
        upstream: str,
        context: zmq.Context[Any],
        rng: np.random.Generator,
        faults: TransportFaults | None = None,
        monotonic: Any = None,
    ):
        import time

        self._ctx, self._rng, self._upstream = context, rng, upstream
        self.faults = faults if faults is not None else TransportFaults()
        self._monotonic = monotonic or time.monotonic
        self._front = context.socket(zmq.ROUTER)
        self._front.setsockopt(zmq.LINGER, 0)
        port = self._front.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._backs: dict[bytes, zmq.Socket[Any]] = {}
        self._silent_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faulty-proxy", daemon=True)
        self._thread.start()

    def _roll(self, p: float, name: str) -> bool:
        hit = p > 0 and self._rng.random() < p
        if hit:
            self.faults.counts[name] += 1
        return bool(hit)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(20):
                    if sock is self._front:
                        ident, *frames = self._front.recv_multipart()
                        if self._monotonic() < self._silent_until:
                            continue  # link down: the request is lost
                        back = self._backs.get(ident)
                        if back is None:
                            back = self._ctx.socket(zmq.DEALER)
                            back.setsockopt(zmq.LINGER, 0)
                            back.connect(self._upstream)
                            self._backs[ident] = back
                            poller.register(back, zmq.POLLIN)
                        back.send_multipart(frames)
                    else:
                        frames = sock.recv_multipart()
                        ident = next(k for k, v in self._backs.items() if v is sock)
                        self._reply(ident, frames)
        finally:
            for back in self._backs.values():
                back.close(linger=0)
            self._front.close(linger=0)

    def _reply(self, ident: bytes, frames: list[bytes]) -> None:
        f = self.faults
        if self._monotonic() < self._silent_until:
            return
        spent = f.max_disconnects is not None and f.counts["disconnect"] >= f.max_disconnects
        if not spent and self._roll(f.disconnect_probability, "disconnect"):
            self._silent_until = self._monotonic() + f.disconnect_s
            return
        if self._roll(f.drop_probability, "drop"):
            return
        if self._roll(f.garbage_probability, "garbage"):
            self._front.send_multipart([ident, self._rng.bytes(32)])
            return
        self._front.send_multipart([ident, *frames])
        if self._roll(f.duplicate_probability, "duplicate"):
            self._front.send_multipart([ident, *frames])

    def close(self) -> None:
        """Stop the proxy thread and close its sockets (linger 0)."""
        self._stop.set()
        self._thread.join(timeout=5)
