"""The real clock; tests and simulators inject their own :class:`~engine.protocols.Clock`."""

from __future__ import annotations

import time


class SystemClock:
    """Wall time from :func:`time.time`, durations from :func:`time.monotonic`."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()
