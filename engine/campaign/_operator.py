"""The operator's hold on a running campaign: pause, resume, stop, and points to measure next (thread-safe, no I/O).

A control socket (``instruments.control``) calls these methods from its own thread; the campaign
calls ``OperatorControl.wait_while_paused`` and ``OperatorControl.take_injected`` between
measurements, and uses ``OperatorControl.stop_rule`` as one of its stop rules. Every action is
handed to ``on_action`` with who did it, so the composition root can record it in the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.campaign._stop_rules import OperatorStop
from engine.config import ScalariserSection, validate_model
from engine.decisions import PropertyMap
from engine.errors import ConfigError
from engine.protocols import Clock


@dataclass(frozen=True)
class OperatorAction:
    """One operator action: what, who (a key's or a user's name), when (epoch s) and its details.

    Attributes:
        action: ``pause``, ``resume``, ``stop``, ``inject``, ``approve``, ``veto``, ``edit``, ``target``
            (a new scalariser) or ``target-refused`` (the policy could not take it).
        who: the key's name, or the name given with ``--as``.
        time: when, seconds since the Unix epoch.
        details: what else the action carries (a position, in the axes' units).

    Examples:
        >>> action = OperatorAction("pause", "alice", 1.7e9, {})
        >>> action.to_json()
        {'action': 'pause', 'who': 'alice', 'time': 1700000000.0}
    """

    action: str
    who: str
    time: float
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored in the run's ``operator_actions``)."""
        return {"action": self.action, "who": self.who, "time": self.time, **self.details}


APPROVAL_FALLBACKS = ("veto", "approve", "stop")
"""What happens to a proposal nobody approved in time."""


@dataclass(frozen=True)
class Verdict:
    """The operator's answer to a proposal: ``approve``, ``veto`` or ``edit`` (then ``position``), by whom.

    Attributes:
        action: ``approve``, ``veto`` or ``edit``.
        who: who answered (``timeout`` when nobody did).
        position: with ``edit``, the position ``(d,)`` to measure instead, in the axes' units.

    Examples:
        >>> Verdict("edit", "alice", np.array([10.0, 20.0])).position.tolist()
        [10.0, 20.0]
    """

    action: str
    who: str
    position: NDArray[np.float64] | None = None


class OperatorControl:
    """Pause / resume / stop / inject for one campaign.

    Args:
        clock: stamps each action.
        on_action: called with each ``OperatorAction``, in the caller's thread (e.g. record it in the run).
        stop: the stop rule to trigger (e.g. the one Ctrl-C triggers too); a new one by default.
        approval_timeout_s: approval mode: each proposed point waits this long for approve / veto /
            edit (None: no approval mode).
        on_timeout: what an unanswered proposal becomes: ``veto`` (skip it), ``approve`` or ``stop``.
        retargetable: whether the campaign's policy can change its scalariser (model-based ones).

    Examples:
        >>> actions = []
        >>> control = OperatorControl(SystemClock(), on_action=actions.append)
        >>> _ = control.pause("alice")
        >>> control.paused
        True
        >>> _ = control.inject(np.array([12.5, 40.0]), "alice")
        >>> position, who = control.take_injected()
        >>> position.tolist(), who
        ([12.5, 40.0], 'alice')
        >>> [a.action for a in actions]
        ['pause', 'inject']
    """

    def __init__(
        self,
        clock: Clock,
        on_action: Callable[[OperatorAction], None] | None = None,
        stop: OperatorStop | None = None,
        approval_timeout_s: float | None = None,
        on_timeout: str = "veto",
        retargetable: bool = False,
    ):
        if on_timeout not in APPROVAL_FALLBACKS:
            raise ConfigError(f"on_timeout must be one of {', '.join(APPROVAL_FALLBACKS)}, got {on_timeout!r}")
        if approval_timeout_s is not None and approval_timeout_s <= 0:
            raise ConfigError("approval_timeout_s must be > 0")
        self.approval_timeout_s, self.on_timeout = approval_timeout_s, on_timeout
        self._verdict_ready = threading.Condition()
        self._awaiting: NDArray[np.float64] | None = None
        self._verdict: Verdict | None = None
        self._clock, self._on_action = clock, on_action
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._holding = threading.Event()  # the campaign waits in wait_while_paused: nothing in flight
        self.stop_rule = stop if stop is not None else OperatorStop()
        self._injected: list[tuple[NDArray[np.float64], str]] = []
        self.retargetable = retargetable
        self._target: tuple[ScalariserSection, str] | None = None
        self.progress: dict[str, Any] = {"n_recorded": 0, "step": 0}
        self._map: PropertyMap | None = None
        self._map_wanted = False

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
            raise ConfigError(f"an injected position is a finite vector (d,), got {pos.tolist()}")
        with self._lock:
            self._injected.append((pos, who))
        return self._act("inject", who, position=pos.tolist())

    def retarget(self, table: Mapping[str, Any], who: str) -> OperatorAction:
        """Maximise another scalariser from the next decision (``table``: the keys of ``[policy.scalariser]``).

        Raises:
            ConfigError: the policy uses no scalariser, or ``table`` is not a valid scalariser table.
        """
        if not self.retargetable:
            raise ConfigError("this campaign's policy uses no scalariser (random, raster): it has no target to change")
        section = validate_model(dict(table), ScalariserSection, "target")
        with self._lock:
            self._target = (section, who)  # the latest wins: an earlier one not yet taken is replaced
        return self._act("target", who, scalariser=section.model_dump(exclude_defaults=True))

    def property_map(self) -> PropertyMap | None:
        """The policy's map of the property as last published (a viewer's read, from any thread).

        Asking for it makes the campaign publish a fresh one after its next decision: the map is
        copied only while someone looks at it.
        """
        with self._lock:
            self._map_wanted = True
            return self._map

    @property
    def map_wanted(self) -> bool:
        """Whether a viewer has asked for the map since it was last published."""
        return self._map_wanted

    def publish_map(self, snapshot: PropertyMap | None) -> None:
        """Keep the policy's map as of this decision for the viewers (called by the campaign's thread)."""
        with self._lock:
            self._map, self._map_wanted = snapshot, False

    def take_target(self) -> tuple[ScalariserSection, str] | None:
        """The scalariser an operator asked for since the last call, and who, if any."""
        with self._lock:
            target, self._target = self._target, None
        return target

    def refused(self, action: str, who: str, reason: str) -> OperatorAction:
        """Record that ``who``'s ``action`` could not be carried out, and why."""
        return self._act(f"{action}-refused", who, reason=reason)

    def decide(self, action: str, who: str, position: NDArray[np.float64] | None = None) -> OperatorAction:
        """Answer the proposal awaiting approval: ``approve``, ``veto`` or ``edit`` (to ``position (d,)``)."""
        if action not in ("approve", "veto", "edit") or (action == "edit") != (position is not None):
            raise ConfigError("answer a proposal with approve, veto, or edit with a position")
        with self._verdict_ready:
            if self._awaiting is None:
                raise ConfigError("no proposal is awaiting approval")
            pos = None if position is None else np.asarray(position, dtype=np.float64)
            self._verdict = Verdict(action, who, pos)
            self._verdict_ready.notify_all()
        return self._act(action, who, **({} if pos is None else {"position": pos.tolist()}))

    def await_verdict(self, positions: NDArray[np.float64]) -> Verdict:
        """Approval mode: hold ``positions (n, d)`` until the operator answers or the timeout's fallback applies."""
        assert self.approval_timeout_s is not None
        with self._verdict_ready:
            self._awaiting, self._verdict = np.asarray(positions, dtype=np.float64), None
            self._verdict_ready.wait_for(
                lambda: self._verdict is not None or self.stop_rule.event.is_set(), self.approval_timeout_s
            )
            verdict, self._awaiting = self._verdict, None
        if verdict is not None:
            return verdict
        if self.stop_rule.event.is_set():
            return Verdict("veto", "stop")
        if self.on_timeout == "stop":
            self.stop_rule.request()
        self._act(f"timeout-{self.on_timeout}", "approval timeout", timeout_s=self.approval_timeout_s)
        return Verdict("approve" if self.on_timeout == "approve" else "veto", f"timeout ({self.on_timeout})")

    @property
    def paused(self) -> bool:
        """Whether the campaign is held."""
        return not self._running.is_set()

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        """Block the campaign while paused (returns at once otherwise, or when stopped, Ctrl-C included).

        While it blocks, ``status()["holding"]`` is true: the pause has taken effect, nothing is in flight.
        """
        try:
            while not self.stop_rule.event.is_set():
                if self._running.is_set():
                    return
                self._holding.set()
                if self._running.wait(poll_s):
                    return
        finally:
            self._holding.clear()

    def take_injected(self) -> tuple[NDArray[np.float64], str] | None:
        """The oldest injected position and who asked for it, if any."""
        with self._lock:
            return self._injected.pop(0) if self._injected else None

    def status(self) -> dict[str, Any]:
        """Paused (and ``holding``: the pause has taken effect) / stopping / queued injections and the progress."""
        with self._lock:
            queued = len(self._injected)
        awaiting = self._awaiting
        return {"paused": self.paused, "holding": self._holding.is_set(), "stopping": self.stop_rule.event.is_set(),
                "injected_queued": queued, "awaiting_approval": None if awaiting is None else awaiting.tolist(),
                **self.progress}  # fmt: skip
