"""Safety limits checked before a command reaches the instrument (pure; the engine and the server share it).

``SafetyLimits`` holds, in the instrument axes' units (nm for the built-in instruments):

* soft limits per axis, inside the instrument's own range;
* the largest step from the previous probe position;
* forbidden regions: polygons in the ``(x, y)`` plane (a crack, a contact pad, a region kept for later);
* a dose budget per area: every measurement deposits ``electrons_per_measurement`` spread over a
  probe disk of ``probe_radius_nm``; the accumulated dose (e⁻/nm², on cells of ``cell_nm``) may
  nowhere exceed ``budget_e_per_nm2`` (beam-sensitive specimens).

``SafetyLimits.check`` names the first limit a batch of positions breaks (``None``: allowed);
``SafetyLimits.commit`` books the dose of positions that were measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError


@dataclass(frozen=True)
class Polygon:
    """A closed polygon ``(k, 2)`` of ``(x, y)`` vertices (k ≥ 3), in the axes' units."""

    vertices: NDArray[np.float64]

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 2 or v.shape[0] < 3 or not np.isfinite(v).all():
            raise ConfigError(f"a forbidden region needs at least 3 finite (x, y) vertices, got shape {v.shape}")
        object.__setattr__(self, "vertices", v)

    def contains(self, points: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether each point ``(n, 2)`` lies inside (even-odd rule; points on an edge may go either way)."""
        x, y = points[:, 0][:, None], points[:, 1][:, None]
        x0, y0 = self.vertices[:, 0], self.vertices[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        return np.asarray(np.count_nonzero(crosses & (x < x_at), axis=1) % 2 == 1)


@dataclass
class DoseBudget:
    """Electron dose accumulated per area on a grid of ``cell_nm`` cells (``e⁻/nm²``).

    Attributes:
        budget_e_per_nm2: the most any cell may receive.
        electrons_per_measurement: electrons of one dwell (beam current × dwell time / e).
        probe_radius_nm: the dose of one dwell is spread evenly over this disk.
        cell_nm: grid pitch of the bookkeeping.
    """

    budget_e_per_nm2: float
    electrons_per_measurement: float
    probe_radius_nm: float = 1.0
    cell_nm: float = 1.0
    _dose: dict[tuple[int, int], float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if min(self.budget_e_per_nm2, self.electrons_per_measurement, self.probe_radius_nm, self.cell_nm) <= 0:
            raise ConfigError("dose budget, electrons per measurement, probe radius and cell size must all be > 0")

    @property
    def per_dwell_e_per_nm2(self) -> float:
        """Dose density of one dwell inside the probe disk."""
        return self.electrons_per_measurement / (math.pi * self.probe_radius_nm**2)

    def _cells(self, x: float, y: float) -> list[tuple[int, int]]:
        """Cells whose centre lies within the probe disk at ``(x, y)``, and always the cell holding it."""
        r, c = self.probe_radius_nm, self.cell_nm
        i0, j0 = math.floor(x / c), math.floor(y / c)
        cells = {(i0, j0)}
        span = math.ceil(r / c) + 1
        for i in range(i0 - span, i0 + span + 1):
            for j in range(j0 - span, j0 + span + 1):
                if math.hypot((i + 0.5) * c - x, (j + 0.5) * c - y) <= r:
                    cells.add((i, j))
        return sorted(cells)

    def excess(self, points: NDArray[np.float64]) -> tuple[float, float, float] | None:
        """``(x, y, dose)`` of the first point ``(n, 2)`` whose dwell would push a cell over the budget, else None."""
        pending: dict[tuple[int, int], float] = {}
        add = self.per_dwell_e_per_nm2
        for x, y in points:
            for cell in self._cells(float(x), float(y)):
                total = self._dose.get(cell, 0.0) + pending.get(cell, 0.0) + add
                if total > self.budget_e_per_nm2 * (1 + 1e-9):
                    return float(x), float(y), total
                pending[cell] = pending.get(cell, 0.0) + add
        return None

    def commit(self, points: NDArray[np.float64]) -> None:
        """Book the dose of dwells at ``points (n, 2)``."""
        for x, y in points:
            for cell in self._cells(float(x), float(y)):
                self._dose[cell] = self._dose.get(cell, 0.0) + self.per_dwell_e_per_nm2

    def peak_dose(self) -> float:
        """The largest accumulated dose of any cell, e⁻/nm²."""
        return max(self._dose.values(), default=0.0)


@dataclass
class SafetyLimits:
    """Limits on probe positions beyond the instrument's own (see the module docstring).

    Attributes:
        axes: the instrument axes' names, in the order of a position's coordinates ``(d,)``.
        soft_limits: ``{axis: (low, high)}`` for any of ``axes``.
        max_step: largest Euclidean distance between consecutive positions (None: any).
        forbidden: polygons in the ``(x, y)`` plane no position may fall in.
        dose: the dose budget (None: unlimited).
    """

    axes: Sequence[str]
    soft_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    max_step: float | None = None
    forbidden: Sequence[Polygon] = ()
    dose: DoseBudget | None = None
    _last: NDArray[np.float64] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.soft_limits) - set(self.axes))
        if unknown:
            raise ConfigError(f"soft limits for unknown axes {unknown}; this instrument has {list(self.axes)}")
        for axis, (low, high) in self.soft_limits.items():
            if not low < high:
                raise ConfigError(f"soft limits of {axis!r}: low {low} must be below high {high}")
        if self.max_step is not None and self.max_step <= 0:
            raise ConfigError("max_step must be > 0")
        if (self.forbidden or self.dose is not None) and not {"x", "y"} <= set(self.axes):
            raise ConfigError("forbidden regions and dose budgets need axes named 'x' and 'y'")

    def _xy(self, positions: NDArray[np.float64]) -> NDArray[np.float64]:
        return positions[:, [list(self.axes).index("x"), list(self.axes).index("y")]]

    def check(self, positions: NDArray[np.float64]) -> str | None:
        """The first limit the batch ``(n, d)`` breaks, in words; ``None`` if every position is allowed."""
        pos = np.atleast_2d(np.asarray(positions, dtype=np.float64))
        for axis, (low, high) in self.soft_limits.items():
            values = pos[:, list(self.axes).index(axis)]
            bad = np.flatnonzero((values < low) | (values > high))
            if bad.size:
                return f"{axis} = {values[bad[0]]:g} lies outside the soft limits [{low:g}, {high:g}]"
        if self.max_step is not None:
            previous = pos[:-1] if self._last is None else np.vstack([self._last, pos[:-1]])
            steps = np.linalg.norm(pos[-len(previous) :] - previous, axis=1) if len(previous) else np.empty(0)
            if steps.size and steps.max() > self.max_step:
                return f"a step of {steps.max():g} exceeds the largest allowed step {self.max_step:g}"
        if self.forbidden:
            xy = self._xy(pos)
            for k, polygon in enumerate(self.forbidden):
                inside = np.flatnonzero(polygon.contains(xy))
                if inside.size:
                    x, y = xy[inside[0]]
                    return f"({x:g}, {y:g}) lies in forbidden region {k + 1}"
        if self.dose is not None and (over := self.dose.excess(self._xy(pos))) is not None:
            x, y, total = over
            return (
                f"a dwell at ({x:g}, {y:g}) would bring the dose there to {total:.3g} e/nm², "
                f"over the budget of {self.dose.budget_e_per_nm2:g} e/nm²"
            )
        return None

    def commit(self, positions: NDArray[np.float64]) -> None:
        """Book positions ``(n, d)`` that were measured (the last one is where the probe now is)."""
        pos = np.atleast_2d(np.asarray(positions, dtype=np.float64))
        if self.dose is not None:
            self.dose.commit(self._xy(pos))
        self._last = pos[-1].copy()
