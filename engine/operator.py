"""The operator's hold on a running campaign: pause, resume, stop, and points to measure next (thread-safe, no I/O).

A control socket (:mod:`instruments.control`) calls these methods from its own thread; the campaign
calls :meth:`OperatorControl.wait_while_paused` and :meth:`OperatorControl.take_injected` between
measurements, and uses :attr:`OperatorControl.stop_rule` as one of its stop rules. Every action is
handed to ``on_action`` with who did it, so the composition root can record it in the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.protocols import Clock
from engine.stop_rules import OperatorStop


@dataclass(frozen=True)
class OperatorAction:
    """One operator action: what, who (a key's or a user's name), when (epoch s) and its details."""

    action: str
    who: str
    time: float
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in the run's ``operator_actions``)."""
        return {"action": self.action, "who": self.who, "time": self.time, **self.details}


class OperatorControl:
    """Pause / resume / stop / inject for one campaign.

    Args:
        clock: stamps each action.
        on_action: called with each :class:`OperatorAction`, in the caller's thread (e.g. record it in the run).
        stop: the stop rule to trigger (e.g. the one Ctrl-C triggers too); a new one by default.
    """

    def __init__(
        self,
        clock: Clock,
        on_action: Callable[[OperatorAction], None] | None = None,
        stop: OperatorStop | None = None,
    ):
        self._clock, self._on_action = clock, on_action
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self.stop_rule = stop if stop is not None else OperatorStop()
        self._injected: list[tuple[NDArray[np.float64], str]] = []
        self.progress: dict[str, Any] = {"n_recorded": 0, "step": 0}

    def _act(self, action: str, who: str, **details: Any) -> OperatorAction:
        done = OperatorAction(action, who, self._clock.time(), details)
        if self._on_action is not None:
            self._on_action(done)
        return done

    def pause(self, who: str) -> OperatorAction:
        """Hold the campaign after the current measurement."""
        self._running.clear()
        return self._act("pause", who)

    def resume(self, who: str) -> OperatorAction:
        """Let a paused campaign go on."""
        self._running.set()
        return self._act("resume", who)

    def stop(self, who: str) -> OperatorAction:
        """End the campaign after the current measurement (a paused one ends at once)."""
        self.stop_rule.request()
        self._running.set()
        return self._act("stop", who)

    def inject(self, position: NDArray[np.float64], who: str) -> OperatorAction:
        """Measure ``position (d,)`` next (the nearest unmeasured candidate), before the policy's proposals."""
        pos = np.asarray(position, dtype=np.float64)
        if pos.ndim != 1 or not np.isfinite(pos).all():
            raise ValueError(f"an injected position is a finite vector (d,), got {pos.tolist()}")
        with self._lock:
            self._injected.append((pos, who))
        return self._act("inject", who, position=pos.tolist())

    @property
    def paused(self) -> bool:
        """Whether the campaign is held."""
        return not self._running.is_set()

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        """Block the campaign while paused (returns at once otherwise, or when stopped, Ctrl-C included)."""
        while not self._running.wait(poll_s) and not self.stop_rule.event.is_set():
            pass

    def take_injected(self) -> tuple[NDArray[np.float64], str] | None:
        """The oldest injected position and who asked for it, if any."""
        with self._lock:
            return self._injected.pop(0) if self._injected else None

    def status(self) -> dict[str, Any]:
        """Paused / stopping / queued injections and the campaign's progress."""
        with self._lock:
            queued = len(self._injected)
        return {"paused": self.paused, "stopping": self.stop_rule.event.is_set(), "injected_queued": queued,
                **self.progress}  # fmt: skip
