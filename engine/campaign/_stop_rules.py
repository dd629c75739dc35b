"""Stop rules: budget, wall time and operator stop."""

from __future__ import annotations

import threading

from engine.errors import ConfigError


class Budget:
    """Stop after ``n`` measurements have been recorded.

    Args:
        n: measurements to record, >= 1.

    Examples:
        >>> rule = Budget(100)
        >>> rule.should_stop(99, 12.0) is None
        True
        >>> rule.should_stop(100, 12.0)
        'budget of 100 measurements reached'
    """

    def __init__(self, n: int):
        if n < 1:
            raise ConfigError("budget must be >= 1 measurement")
        self.n = n

    def should_stop(self, n_recorded: int, elapsed_s: float) -> str | None:
        """Reason to stop once ``n_recorded >= n``."""
        return f"budget of {self.n} measurements reached" if n_recorded >= self.n else None


class WallTime:
    """Stop once the campaign has run ``seconds`` (checked between steps).

    Args:
        seconds: longest run of the loop, s (> 0).

    Examples:
        >>> rule = WallTime(3600.0)
        >>> rule.should_stop(10, 60.0) is None
        True
        >>> rule.should_stop(10, 3600.0) is not None
        True
    """

    def __init__(self, seconds: float):
        if seconds <= 0:
            raise ConfigError("wall-time limit must be > 0 s")
        self.seconds = seconds

    def should_stop(self, n_recorded: int, elapsed_s: float) -> str | None:
        """Reason to stop once ``elapsed_s >= seconds``."""
        return f"wall-time limit of {self.seconds:g} s reached" if elapsed_s >= self.seconds else None


class OperatorStop:
    """Stop when the operator asks (Ctrl-C, a button); the current step completes first.

    Args:
        event: the event that ``request`` sets (a new one by default; share one with a Ctrl-C handler).

    Examples:
        >>> stop = OperatorStop()
        >>> stop.should_stop(5, 1.0) is None
        True
        >>> stop.request()  # e.g. from a Ctrl-C handler
        >>> stop.should_stop(5, 1.0) is not None
        True
    """

    def __init__(self, event: threading.Event | None = None):
        self.event = event if event is not None else threading.Event()

    def request(self) -> None:
        """Ask the campaign to stop after the current measurement."""
        self.event.set()

    def should_stop(self, n_recorded: int, elapsed_s: float) -> str | None:
        """Reason to stop once ``request`` was called."""
        return "stopped by the operator" if self.event.is_set() else None
