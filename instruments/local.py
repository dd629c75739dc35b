"""An in-process ``engine.protocols.Instrument`` around a driver (tests, notebooks)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from engine.types import JSON, Image, InstrumentDescription, Measurement
from instruments.driver import Driver
from instruments.guard import GuardedDriver
from instruments.reply_cache import ReplyCache


def new_request_id() -> str:
    """A random 32-hex-digit request id."""
    return uuid.uuid4().hex


class LocalInstrument:
    """Calls a driver directly, with the same validation and idempotency as the server.

    Args:
        driver: the device driver.
        id_factory: makes request ids when the caller gives none.
        cache_size: replies kept for idempotent retries.
    """

    def __init__(self, driver: Driver, *, id_factory: Callable[[], str] = new_request_id, cache_size: int = 1024):
        self._guard = GuardedDriver(driver)
        self._ids = id_factory
        self._cache: ReplyCache[Measurement] = ReplyCache(cache_size)
        self.instance = uuid.uuid4().hex  # this object: a new one (after a restart) remembers nothing

    def describe(self) -> InstrumentDescription:
        """The driver's description."""
        return self._guard.description

    def acquire_image(self, channel: str) -> Image:
        """One frame of ``channel``."""
        return self._guard.acquire_image(channel)

    def measure(self, positions: NDArray[np.float64], request_id: str | None = None) -> Measurement:
        """Spectra ``(n, c)`` at ``positions (n, d)``; a repeated ``request_id`` returns the cached result."""
        rid = request_id or self._ids()
        if (cached := self._cache.get(rid)) is not None:
            return cached
        pos, batch = self._guard.measure(positions)
        result = Measurement(rid, pos, batch.spectra.astype(np.float32), batch.timestamps, batch.acquisition_time_s)
        self._cache.put(rid, result)
        return result

    def status(self) -> Mapping[str, JSON]:
        """The driver's status."""
        return {"instance": self.instance, "driver": dict(self._guard.driver.status())}

    def recall(self, request_id: str) -> Mapping[str, JSON]:
        """What this instrument did with ``request_id`` (see ``instruments.client.ZmqInstrument.recall``)."""
        state = "done" if self._cache.get(request_id) is not None else "unknown"
        return {"request_id": request_id, "state": state, "instance": self.instance}

    def fetch(self, request_id: str) -> Measurement | None:
        """What this instrument measured under ``request_id``, or ``None`` (see ``ZmqInstrument.fetch``)."""
        return self._cache.get(request_id)

    def abort(self) -> None:
        """Abort the driver's acquisition."""
        self._guard.driver.abort()

    def close(self) -> None:
        """Nothing to release."""
