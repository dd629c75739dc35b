"""The small protocols through which the engine meets the outside world.

Each is checked structurally (``typing.Protocol``), so a real microscope client,
an in-process adapter and a test fake all fit without inheriting anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.config import ScalariserSection
from engine.decisions import Decision, PropertyMap, Proposal, StepTimings
from engine.types import JSON, Image, InstrumentDescription, Measurement

PhaseProgress = Callable[[str, int, int], None]
"""Progress of a long phase outside the loop: ``(what, done, total)``, e.g.
``("pre-training the dual VAE on 961 patches", 40, 300)``. It may raise ``engine.errors.Stopped``
to abandon the phase (the operator stopped the run)."""


@runtime_checkable
class Clock(Protocol):
    """Wall and monotonic time, injected so that tests and simulators control it."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (for durations)."""
        ...


@runtime_checkable
class Instrument(Protocol):
    """What the engine needs from a microscope, a simulator or a replay.

    Implemented by ``instruments.client.ZmqInstrument`` (over the wire) and
    ``instruments.local.LocalInstrument`` (in process); both pass the same
    contract tests.
    """

    def describe(self) -> InstrumentDescription:
        """Axes, limits, spectral calibration and image channels."""
        ...

    def acquire_image(self, channel: str) -> Image:
        """Acquire one structural image frame of ``channel``."""
        ...

    def measure(self, positions: NDArray[np.float64], request_id: str | None = None) -> Measurement:
        """Measure spectra at ``positions`` ``(n, d)``; returns ``spectra (n, c)``.

        ``request_id`` is the idempotency key: measuring again with the same id
        returns the first result instead of acquiring twice.
        """
        ...

    def status(self) -> Mapping[str, JSON]:
        """Current state of the instrument (busy, last request, probe position, ...)."""
        ...

    def abort(self) -> None:
        """Abort the acquisition in progress, if any."""
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...


@runtime_checkable
class Recalls(Protocol):
    """An instrument that can say what it did with a request id, and hand back what it measured under it.

    A resumed campaign reconciles the commands in flight at a crash this way, and fetches the steps a
    power cut took from its run before they were durable.
    """

    def recall(self, request_id: str) -> Mapping[str, JSON]:
        """``{"state": "done" | "running" | "unknown", "instance": ID}`` for ``request_id``."""
        ...

    def fetch(self, request_id: str) -> Measurement | None:
        """The measurement made under ``request_id`` (waiting for a running one), or ``None`` if there is none."""
        ...


@runtime_checkable
class Policy(Protocol):
    """Chooses where to measure next. Pure decision code: no I/O."""

    name: str

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """Propose up to ``q`` candidate indices that are neither measured nor pending."""
        ...

    def tell(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Receive measured spectra ``(k, c)`` for candidate ``indices (k,)``."""
        ...


@runtime_checkable
class Resumable(Protocol):
    """A policy whose decisions can be continued after a crash (``dualscope resume``).

    ``state`` is taken right after each proposal and stored with the decision; ``restore`` is called
    on a freshly built policy (same configuration and seed) with the last stored state and every
    spectrum measured so far, and must leave the policy as it was when that state was taken (plus
    those spectra told), so that the next proposals are the ones an uninterrupted run makes.
    """

    def state(self) -> dict[str, JSON]:
        """JSON state: RNG state, counters (small: it is stored with every decision)."""
        ...

    def restore(self, state: Mapping[str, JSON], told: list[tuple[NDArray[np.int64], NDArray[np.float32]]]) -> None:
        """Restore ``state`` and the measurements ``told`` before it (per step: indices (k,), spectra (k, c))."""
        ...


@runtime_checkable
class Retargetable(Protocol):
    """A policy whose scalariser an operator can change during a run (``dualscope ctl RUN target``).

    ``retarget`` is called by the campaign between decisions, never during one; the next decision
    maximises the new scalariser, with every spectrum measured so far counted under it.
    """

    def retarget(self, section: ScalariserSection) -> None:
        """Maximise the scalariser ``section`` describes from the next decision; ``ConfigError`` if it cannot."""
        ...


@runtime_checkable
class QueuesCommands(Protocol):
    """An instrument that holds measurements sent while one runs and starts each the moment the last ends."""

    @property
    def queue_depth(self) -> int:
        """How many measurements may wait behind the running one (0: none; send the next when it is done)."""
        ...

    def submit(self, positions: NDArray[np.float64], request_id: str) -> None:
        """Send a measurement of ``positions (n, d)`` to be held behind the running one; returns at once."""
        ...

    def collect(self, request_id: str) -> Measurement:
        """Wait for the spectra of a submitted ``request_id`` (errors raised as ``measure`` raises them)."""
        ...


@runtime_checkable
class MapsProperty(Protocol):
    """A policy that can say what it believes of the property at every candidate (the live view's map)."""

    def property_map(self) -> PropertyMap | None:
        """Mean and standard deviation at every candidate on the current model; None before the first one."""
        ...


@runtime_checkable
class Recorder(Protocol):
    """Durable storage of a run's decisions and measurements."""

    def record_decision(self, decision: Decision) -> None:
        """Note a decision before its command is sent (so an in-flight command is known)."""
        ...

    def record_measurement(self, decision: Decision, measurement: Measurement, timings: StepTimings) -> int:
        """Make ``measurement`` durable; return the number of rows now recorded."""
        ...

    def record_missing(self, decision: Decision, reason: str, *, released: bool = False) -> None:
        """Note that ``decision``'s positions have no data, and why.

        ``released``: the candidates were released for another try (a fault), not given up.
        """
        ...

    def close(self) -> None:
        """Flush everything and mark the run closed."""
        ...


@runtime_checkable
class StopRule(Protocol):
    """Decides whether the campaign ends before the next step."""

    def should_stop(self, n_recorded: int, elapsed_s: float) -> str | None:
        """Return a human-readable reason to stop, or ``None`` to go on."""
        ...
