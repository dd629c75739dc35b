"""The real clock; tests and simulators inject their own ``Clock``."""

from __future__ import annotations

import time


class SystemClock:
    """Wall time from ``time.time``, durations from ``time.monotonic``."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()
