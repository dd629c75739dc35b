"""Which of the instrument server's two threads serves its socket, and when the other takes it over.

The thread that serves the ROUTER socket runs an acquisition itself when nothing else is running:
on a small machine, waking another thread for it and being woken again for its reply costs about
as much as a short acquisition (on the 2-core benchmark VM, 200 against 390 µs a measurement). So
that ``abort``, ``status`` and ``heartbeat`` are still answered while an acquisition runs, the other
thread stands by: if the acquisition has not ended within ``takeover_s``, it takes the socket over
and serves it, and the thread that was acquiring hands it its reply and then acquires what is
queued. The roles stay swapped until the next acquisition that finds nothing running.

A ZeroMQ socket may move between threads when a full memory barrier separates their uses: every
change of owner happens under this object's lock, and the thread that gives the socket up touches
it no more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ServingBaton:
    """The owner of the server's socket, and the clock of the acquisition the owner runs itself.

    Args:
        takeover_s: seconds an acquisition may run on the serving thread before the standby
            thread takes the socket over (so commands wait at most about this long, s).
        idle_s: seconds without an acquisition after which the standby stops checking every
            ``takeover_s`` and dozes until it is woken (s).
        monotonic: time source (s), injected for tests.

    Examples:
        >>> baton = ServingBaton(takeover_s=0.005)
        >>> baton.claim()
        >>> baton.serving()
        True
        >>> baton.begin()  # the serving thread starts an acquisition of its own
        False
        >>> baton.end()  # it ended in time: this thread still serves the socket
        True
    """

    def __init__(self, takeover_s: float, idle_s: float = 1.0, monotonic: Callable[[], float] = time.monotonic):
        if takeover_s <= 0:
            raise ValueError("takeover_s must be > 0")
        self.takeover_s, self.idle_s = takeover_s, idle_s
        self._now = monotonic
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._since: float | None = None  # when the owner's own acquisition began
        self._last = -float("inf")  # when the last one began
        self._dozing = False
        self.takeovers = 0
        """Acquisitions that outlasted ``takeover_s``, so that the standby took the socket over."""

    def claim(self) -> None:
        """Make the calling thread the one that serves (``serve`` starts; nobody serves yet)."""
        with self._cond:
            if self._owner is not None and self._owner != threading.get_ident():
                raise RuntimeError("the server is already being served by another thread")
            self._owner = threading.get_ident()

    def serving(self) -> bool:
        """Whether the calling thread serves the socket now."""
        with self._cond:
            return self._owner == threading.get_ident()

    def release(self) -> None:
        """Give the socket up (``serve`` is stopping); wakes ``wait_released``."""
        with self._cond:
            if self._owner == threading.get_ident():
                self._owner = None
                self._cond.notify_all()

    def wait_released(self, timeout_s: float) -> bool:
        """Block until no thread serves the socket (or ``timeout_s`` passes, s); return whether none does."""
        with self._cond:
            return self._cond.wait_for(lambda: self._owner is None, timeout_s)

    def begin(self) -> bool:
        """The serving thread starts an acquisition itself; returns whether the standby dozes (wake it)."""
        with self._cond:
            self._since = self._last = self._now()
            dozing, self._dozing = self._dozing, False
            return dozing

    def end(self) -> bool:
        """The serving thread's acquisition ended; returns whether this thread still serves the socket."""
        with self._cond:
            self._since = None
            return self._owner == threading.get_ident()

    def standby_timeout(self) -> float | None:
        """How long the standby may wait for a job before checking again (s); ``None``: doze until woken."""
        with self._cond:
            if self._since is None and self._now() - self._last > self.idle_s:
                self._dozing = True
                return None
            return self.takeover_s

    def take_over(self) -> bool:
        """The standby takes the socket if the owner's acquisition has run ``takeover_s``; returns whether it did."""
        with self._cond:
            self._dozing = False
            if self._since is None or self._owner is None or self._now() - self._since < self.takeover_s:
                return False
            self._owner, self._since = threading.get_ident(), None
            self.takeovers += 1
            return True
