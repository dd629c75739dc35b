"""What the live view shows of a run, read from its files: one ``RunPicture`` per refresh."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.storage import read_run
from engine.types import Image

LATEST_SPECTRA = 5
"""How many of the latest spectra the view draws."""


@dataclass(frozen=True)
class RunPicture:
    """A run as the live view draws it (rows committed or durable in the journal).

    Attributes:
        path: the run directory.
        status: ``open`` (a campaign writes it), ``interrupted`` or ``closed``.
        n: rows recorded.
        axis_names: the two position axes drawn, e.g. ``("x", "y")``.
        axis_units: their units, e.g. ``("nm", "nm")``.
        xy: positions of the measured rows on those axes ``(n, 2)``, in the order they were measured.
        candidates_xy: every candidate on those axes ``(m, 2)``.
        steps: the decision step of each row ``(n,)``.
        scalar: the property at each measured row ``(n,)`` (NaN where the scalariser has no value).
        property_label: the property's name and units.
        spectral_values: channel centres ``(c,)``; ``spectral_label`` their name and units.
        latest: the latest spectra ``(k, c)``, oldest first, with their steps ``latest_steps (k,)``.
        signal: what the spectra's values are (``counts``).
        image: the first structural image, if the run has one.
        rows: the decision table of the latest rows, newest first (step, policy, acquisition value,
            model version, seconds deciding, measuring and recording).
        actions: the operator actions recorded so far, newest first.
        stop_reason: why a closed run ended ("" while running).
        candidate_index: the candidate of each measured row ``(n,)``.
        discovery: with the instrument's ground truth (a digital twin's noise-free spectra), the
            fraction of its top 1 % of candidates by the property found after each measurement
            ``(n,)``; None without one. ``top_size`` is the size of that top set.

    Examples:
        >>> picture = read_picture(run_path)
        >>> picture.status, picture.latest.shape, len(picture.rows), picture.rows[0]["step"]
        ('closed', (5, 64), 20, 19)
        >>> bool(picture.best_so_far[-1] == picture.scalar.max())
        True
    """

    path: Path
    status: str
    n: int
    axis_names: tuple[str, str]
    axis_units: tuple[str, str]
    xy: NDArray[np.float64]
    candidates_xy: NDArray[np.float64]
    steps: NDArray[np.int64]
    scalar: NDArray[np.float64]
    property_label: str
    spectral_values: NDArray[np.float64]
    spectral_label: str
    latest: NDArray[np.float32]
    latest_steps: NDArray[np.int64]
    signal: str
    image: Image | None
    rows: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    stop_reason: str
    candidate_index: NDArray[np.int64]
    discovery: NDArray[np.float64] | None = None
    top_size: int = 0

    @property
    def best_so_far(self) -> NDArray[np.float64]:
        """The running maximum of the property ``(n,)`` (NaN until the first finite value)."""
        finite = np.where(np.isfinite(self.scalar), self.scalar, -np.inf)
        best = np.maximum.accumulate(finite) if finite.size else finite
        return np.where(np.isfinite(best), best, np.nan)


def read_picture(
    path: Path, band: str = "", table_rows: int = 20, truth: NDArray[np.floating] | None = None
) -> RunPicture:
    """Read what the live view draws of the run at ``path`` (safe while a campaign writes it).

    Args:
        path: the run directory.
        band: ``LOW:HIGH`` to show the integral over that window instead of the run's own property.
        table_rows: rows of the decision table (the latest ones).
        truth: the instrument's noise-free spectra at every candidate ``(m, c)`` (a digital twin's),
            for the discovery curve: valued by the same property as the measured ones.

    Returns:
        The picture; rows still in the journal are included, so it follows the campaign step by step.

    Raises:
        RunStorageError: not a run. RunCorrupt: a run that cannot be read. ConfigError: a malformed band.

    Examples:
        >>> picture = read_picture(run_path)
        >>> picture.n, picture.xy.shape, picture.axis_names, picture.property_label
        (20, (20, 2), ('x', 'y'), 'total counts (summed over all channels)')
    """
    from engine.report import recall_curve, run_property, top_set  # pulls in torch: on the first refresh

    run = read_run(path, journal=True)
    axes = run.description.axes
    names = [a.name for a in axes]
    pick = [names.index("x"), names.index("y")] if {"x", "y"} <= set(names) else list(range(min(2, len(axes))))
    units = [axes[i].units for i in pick]
    while len(pick) < 2:  # a one-axis instrument: the second coordinate is 0
        pick.append(-1)
        units.append("")
    xy = _columns(run.positions, pick)
    scalariser, label = run_property(run, band)
    values = np.asarray(scalariser(run.spectra, run.spectral_values), dtype=np.float64) if run.n else np.empty(0)
    cols = run.columns
    k = min(LATEST_SPECTRA, run.n)
    axis = run.spectral_axis
    policies = run.policy_names
    table = [_row(cols, policies, i) for i in range(run.n - 1, max(run.n - table_rows, 0) - 1, -1)]
    attrs = run.attrs
    chosen = np.asarray(cols["candidate_index"], np.int64)
    discovery, top_size = None, 0
    if truth is not None:
        top = top_set(np.asarray(scalariser(truth, run.spectral_values), dtype=np.float64), 0.01)
        discovery, top_size = recall_curve(chosen, top), int(top.size)
    return RunPicture(
        path=path,
        status=str(attrs.get("status", "")),
        n=run.n,
        axis_names=(names[pick[0]] if pick[0] >= 0 else "", names[pick[1]] if pick[1] >= 0 else ""),
        axis_units=(units[0], units[1]),
        xy=xy,
        candidates_xy=_columns(run.candidate_positions, pick),
        steps=np.asarray(cols["step"], np.int64),
        scalar=values,
        property_label=label,
        spectral_values=np.asarray(run.spectral_values, np.float64),
        spectral_label=f"{axis.name.replace('_', ' ')} ({axis.units})",
        latest=np.asarray(run.spectra[run.n - k :], np.float32),
        latest_steps=np.asarray(cols["step"][run.n - k :], np.int64),
        signal=run.signal,
        image=next(iter(run.images.values()), None),
        rows=table,
        actions=list(reversed(attrs.get("operator_actions", []))),
        stop_reason=str((attrs.get("outcome") or {}).get("stop_reason", "")),
        candidate_index=chosen,
        discovery=discovery,
        top_size=top_size,
    )


def _columns(points: NDArray[np.float64], pick: list[int]) -> NDArray[np.float64]:
    """``points (n, d)`` on the two picked axes ``(n, 2)``; an axis index of -1 gives zeros."""
    pts = np.asarray(points, np.float64).reshape(len(points), -1)
    return np.stack([pts[:, i] if i >= 0 else np.zeros(len(pts)) for i in pick], axis=1)


def _row(cols: dict[str, NDArray[Any]], policies: list[str], i: int) -> dict[str, Any]:
    """Row ``i`` of the decision table, milliseconds rounded for reading."""

    def ms(name: str) -> float:
        value = float(cols[name][i])
        return round(1e3 * value, 1) if math.isfinite(value) else math.nan

    code = int(cols["policy_code"][i])
    return {
        "step": int(cols["step"][i]),
        "policy": policies[code] if 0 <= code < len(policies) else str(code),
        "acquisition": float(cols["acquisition_value"][i]),
        "model": int(cols["model_version"][i]),
        "decide_ms": ms("time_decide_s"),
        "measure_ms": ms("time_measure_s"),
        "record_ms": ms("time_record_s"),
    }
