"""A pool of simulator servers over ZeroMQ as an executor of the inverse-design loop.

Each server (``dualscope serve design-cda``, or any driver whose axes are the design coordinates)
gets one thread with its own client socket; designs wait in one queue and go to whichever server
is free. A server that stops answering (timeouts after the client's retries, a lost connection)
fails the design it held, which the design loop re-submits and records; the server is then
checked with ``hello`` and retired if it still does not answer. When no server is left, every
queued design fails at once with a message saying so, so the loop ends instead of waiting.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq
from numpy.typing import NDArray

from engine.design import Outcome
from engine.errors import InstrumentConnectionError, InstrumentError, InstrumentTimeout
from instruments.client import ZmqInstrument

_STOP = -1
_NONE_LEFT = "no simulator server is left in the pool (all retired)"


class ServerPoolExecutor:
    """Evaluates designs on the servers at ``endpoints``, one design per server at a time.

    Args:
        endpoints: loopback (or authenticated) endpoints of running servers.
        context: the ZeroMQ context (injected; the caller owns it).
        timeout_s: seconds to wait for each reply attempt.
        retries: re-sends of the same request id after a timeout (never evaluated twice).
    """

    def __init__(
        self, endpoints: Sequence[str], context: zmq.Context[Any], *, timeout_s: float = 30.0, retries: int = 1
    ):
        if not endpoints:
            raise ValueError("a server pool needs at least one endpoint")
        self._jobs: queue.Queue[tuple[int, NDArray[np.float64]]] = queue.Queue()
        self._done: queue.Queue[Outcome] = queue.Queue()
        self._lock = threading.Lock()
        self._alive = len(endpoints)
        self.retired: list[str] = []
        self._threads = [
            threading.Thread(
                target=self._serve, args=(e, context, timeout_s, retries), name=f"dualscope-pool-{k}", daemon=True
            )
            for k, e in enumerate(endpoints)
        ]
        for t in self._threads:
            t.start()

    def submit(self, index: int, design: NDArray[np.float64]) -> None:
        """Queue ``design (d,)``; the next free server evaluates it."""
        with self._lock:  # the same lock as retiring the last server: no design is queued for nobody
            if self._alive == 0:
                self._done.put(Outcome(index, None, _NONE_LEFT))
            else:
                self._jobs.put((index, np.asarray(design, dtype=np.float64)))

    def next_outcome(self) -> Outcome:
        """Whichever evaluation finishes first (or fails)."""
        return self._done.get()

    def close(self) -> None:
        """Stop the server threads after their current evaluation (the servers keep running)."""
        for _ in self._threads:
            self._jobs.put((_STOP, np.empty(0)))
        for t in self._threads:
            t.join(timeout=60)

    def _serve(self, endpoint: str, context: zmq.Context[Any], timeout_s: float, retries: int) -> None:
        client = ZmqInstrument(endpoint, context, timeout_s=timeout_s, retries=retries)
        try:
            while True:
                index, design = self._jobs.get()
                if index == _STOP:
                    return
                try:
                    m = client.measure(design[None, :])
                    self._done.put(Outcome(index, np.asarray(m.spectra[0], dtype=np.float64)))
                except (InstrumentTimeout, InstrumentConnectionError) as exc:
                    self._done.put(Outcome(index, None, f"server {endpoint} did not answer: {exc}"))
                    if not _answers(endpoint, context, timeout_s):
                        self._retire(endpoint)
                        return
                except InstrumentError as exc:
                    self._done.put(Outcome(index, None, f"{type(exc).__name__} from {endpoint}: {exc}"))
        finally:
            client.close()

    def _retire(self, endpoint: str) -> None:
        with self._lock:
            self._alive -= 1
            self.retired.append(endpoint)
            while self._alive == 0:  # nobody is left to take the queued designs: fail them now
                try:
                    index, _ = self._jobs.get_nowait()
                except queue.Empty:
                    return
                if index != _STOP:
                    self._done.put(Outcome(index, None, _NONE_LEFT))


def _answers(endpoint: str, context: zmq.Context[Any], timeout_s: float) -> bool:
    """Whether the server at ``endpoint`` answers ``hello`` (on a fresh socket) within ``timeout_s``."""
    with ZmqInstrument(endpoint, context, timeout_s=min(timeout_s, 5.0), retries=0) as probe:
        try:
            probe.hello()
        except InstrumentError:
            return False
    return True
