"""Specimen drift: where the specimen has moved in the scan frame since a run began.

Thermal and stage drift on a STEM are typically 0.1–2 nm/min: partly a steady rate that decays
slowly (modelled as constant here), partly a random walk. A drifted specimen shows each of its
points ``s`` at scan position ``s + d(t)``, and a probe sent to scan position ``p`` lands on the
specimen at ``p − d(t)``. Simulators keep their ground truth in specimen coordinates and apply
``d(t)`` to what they image and where their probe lands.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from engine.protocols import Clock


class DriftOptions(BaseModel):
    """How a simulated specimen drifts. Lengths nm, times min.

    Examples:
        >>> DriftOptions().moving  # off by default
        False
        >>> DriftOptions(rate_nm_per_min=1.0).moving
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_nm_per_min: float = Field(0.0, ge=0, le=100, description="steady drift speed")
    direction_deg: float = Field(30.0, description="direction of the steady drift, from +x towards +y")
    walk_nm_per_sqrt_min: float = Field(
        0.0, ge=0, le=100, description="random-walk strength: the walk's rms displacement after one minute"
    )
    seed: int = Field(0, description="seed of the random walk")

    @property
    def moving(self) -> bool:
        """Whether the specimen moves at all."""
        return self.rate_nm_per_min > 0 or self.walk_nm_per_sqrt_min > 0


class SpecimenDrift:
    """The specimen's displacement ``d(t)`` ``(2,)`` nm in the scan frame ``(x, y)``; ``d = 0`` when created.

    ``d(t) = v (t − t₀) + W(t)`` with ``v`` the steady velocity and ``W`` a Brownian walk of strength
    ``walk_nm_per_sqrt_min``, drawn at the times it is asked for (which must not go backwards; an
    earlier time returns the latest value). Time comes from the injected clock, so a simulated
    clock drives a 30-minute drift in a second.

    Args:
        options: rate, direction, walk, seed.
        clock: the simulator's clock (``time()``, s).

    Examples:
        >>> class Clock:
        ...     now = 0.0
        ...     def time(self): return self.now
        ...     def monotonic(self): return self.now
        >>> clock = Clock()
        >>> drift = SpecimenDrift(DriftOptions(rate_nm_per_min=1.0, direction_deg=0.0), clock)
        >>> clock.now = 120.0  # two minutes later
        >>> drift.offset().round(6).tolist()
        [2.0, 0.0]
    """

    def __init__(self, options: DriftOptions, clock: Clock):
        self.options, self._clock = options, clock
        angle = math.radians(options.direction_deg)
        self._velocity = options.rate_nm_per_min / 60.0 * np.array([math.cos(angle), math.sin(angle)])
        self._rng = np.random.default_rng(options.seed)
        self._t0 = clock.time()
        self._last_t = self._t0
        self._walk = np.zeros(2)

    def offset(self) -> NDArray[np.float64]:
        """``d(t)`` ``(2,)`` nm at the clock's present time."""
        t = self._clock.time()
        if t > self._last_t and self.options.walk_nm_per_sqrt_min > 0:
            sigma = self.options.walk_nm_per_sqrt_min * math.sqrt((t - self._last_t) / 60.0 / 2.0)
            self._walk = self._walk + self._rng.normal(0.0, sigma, size=2)  # per axis: half the 2-D variance
        self._last_t = max(self._last_t, t)
        return np.asarray(self._velocity * (self._last_t - self._t0) + self._walk, dtype=np.float64)
