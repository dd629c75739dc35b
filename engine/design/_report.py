"""What an inverse-design run found: per-search summaries and the figure (convergence, best structures, spectra)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from numpy.typing import NDArray

from engine.design._loop import DesignHistory

Geometry = tuple[NDArray[np.float64], NDArray[np.float64]]
"""Sphere centres ``(n, 2 or 3)`` and radii ``(n,)``, nm."""


@dataclass(frozen=True)
class SearchSummary:
    """One search's result.

    Attributes:
        method: policy or optimiser name.
        evaluations: successful simulator evaluations.
        failures: failed evaluations (each re-submitted or given up, as recorded in the run).
        best_score: best objective value (``−relative L2`` for a target).
        best_design: the best design ``(d,)`` (a point of the design cube).
        best_spectrum: its spectrum ``(c,)``.
        best_index: its pool index (``-1``: outside the pool).
        best_curve: best score so far after each evaluation ``(evaluations,)``.
        calls_to_target: evaluations until the target was first reached within tolerance (None: not reached).

    Examples:
        >>> s = summarise(history, lambda spectra: spectra.max(axis=1), None)
        >>> s.method, s.evaluations, s.best_curve.shape
        ('random', 8, (8,))
    """

    method: str
    evaluations: int
    failures: int
    best_score: float
    best_design: NDArray[np.float64]
    best_spectrum: NDArray[np.float64]
    best_index: int
    best_curve: NDArray[np.float64]
    calls_to_target: int | None

    def to_json(self) -> dict[str, object]:
        """Plain JSON (stored in the run's outcome)."""
        return {
            "method": self.method,
            "evaluations": self.evaluations,
            "failures": self.failures,
            "best_score": self.best_score,
            "best_design": self.best_design.tolist(),
            "best_index": self.best_index,
            "calls_to_target": self.calls_to_target,
        }


def summarise(
    history: DesignHistory,
    score: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    reached: Callable[[NDArray[np.float64]], NDArray[np.bool_]] | None,
) -> SearchSummary:
    """Summarise a search from its history; ``score``/``reached`` map spectra ``(n, c)`` to ``(n,)``.

    Args:
        history: a search's history.
        score: spectra ``(n, c)`` → the objective ``(n,)`` (higher is better).
        reached: spectra ``(n, c)`` → whether each reaches the target ``(n,)`` (None: no target).

    Returns:
        The summary: evaluations, failures, best score, design and spectrum, best-so-far curve, calls to target.

    Examples:
        >>> peak = lambda spectra: -np.abs(energy[np.argmax(spectra, axis=1)] - 2.0)
        >>> s = summarise(history, peak, lambda spectra: peak(spectra) > -0.2)
        >>> s.best_score <= 0, s.calls_to_target is None or 1 <= s.calls_to_target <= 8
        (True, True)
    """
    if not history.spectra:
        empty = np.empty(0)
        return SearchSummary(history.method, 0, len(history.failures), float("-inf"), empty, empty, -1, empty, None)
    spectra = np.asarray(history.spectra)
    values = score(spectra)
    best = int(np.nanargmax(values))
    hit = None
    if reached is not None:
        ok = np.flatnonzero(reached(spectra))
        hit = int(ok[0]) + 1 if ok.size else None
    return SearchSummary(
        history.method,
        len(history.spectra),
        len(history.failures),
        float(values[best]),
        np.asarray(history.designs[best]),
        spectra[best],
        int(history.indices[best]),
        np.fmax.accumulate(values),
        hit,
    )


def design_figure(
    path: Path,
    summaries: Sequence[SearchSummary],
    geometries: Mapping[str, Geometry],
    labels: Mapping[str, str],
    energy_ev: NDArray[np.float64],
    target: NDArray[np.float64] | None,
    target_label: str,
    tolerance: float | None,
) -> Path:
    """Convergence (best score against evaluations), the best structure of each search, their spectra.

    Args:
        path: PNG to write.
        summaries: one per search (with its best spectrum).
        geometries: method → the best structure's spheres.
        labels: method → a one-line description of the best structure.
        energy_ev: photon energies ``(c,)``, eV.
        target: the target spectrum ``(c,)``, or None when maximising a scalariser.
        target_label: what the target is.
        tolerance: the relative-L2 tolerance (drawn on the convergence panel), or None.

    Returns:
        ``path``.

    Examples:
        >>> s = summarise(history, lambda spectra: spectra.max(axis=1), None)
        >>> geometry = (np.array([[0.0, 0.0]]), np.array([10.0]))
        >>> design_figure(folder / "design.png", [s], {"random": geometry}, {"random": "one sphere"},
        ...               energy, None, "", None).suffix
        '.png'
    """
    n = len(summaries)
    fig = Figure(figsize=(4.2 * (n + 2), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n + 2)
    conv, spec = axes[0], axes[-1]
    for s in summaries:
        if s.best_curve.size:
            y = -s.best_curve if target is not None else s.best_curve
            conv.plot(np.arange(1, y.size + 1), y, label=s.method)
    if target is not None:
        conv.set_yscale("log")
        conv.set_ylabel("best relative L2 distance to the target")
        if tolerance is not None:
            conv.axhline(tolerance, color="k", ls=":", lw=1, label=f"tolerance {tolerance:g}")
    else:
        conv.set_ylabel("best objective value")
    conv.set_xlabel("simulator evaluations")
    conv.set_title("convergence (the legend's distances are the table's)" if target is not None else "convergence")
    conv.legend(fontsize=8)
    for ax, s in zip(axes[1:-1], summaries, strict=True):
        _draw_structure(ax, geometries.get(s.method))
        ax.set_title(f"best of {s.method}\n{labels.get(s.method, '')}", fontsize=8)
    if target is not None:
        spec.plot(energy_ev, target / (np.max(np.abs(target)) or 1.0), "k--", lw=2, label=f"target: {target_label}")
    for s in summaries:
        if s.evaluations:
            b = s.best_spectrum
            said = f"distance {-s.best_score:.3g}" if target is not None else f"objective {s.best_score:.3g}"
            spec.plot(energy_ev, b / (np.max(np.abs(b)) or 1.0), label=f"{s.method} ({said})")
    spec.set_xlabel("photon energy (eV)")
    spec.set_ylabel("scattering cross-section (normalised to its maximum)")
    spec.set_title("best spectra")
    spec.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def _draw_structure(ax: Axes, geometry: Geometry | None) -> None:
    ax.set_aspect("equal")
    ax.set_xlabel("x (nm)")
    ax.set_ylabel("y (nm)")
    if geometry is None:
        ax.text(0.5, 0.5, "nothing evaluated", ha="center", transform=ax.transAxes)
        return
    centres, radii = geometry
    for (x, y), r in zip(np.asarray(centres)[:, :2], radii, strict=True):
        ax.add_patch(Circle((x, y), r, color="goldenrod", alpha=0.8))
    extent = float(np.max(np.abs(np.asarray(centres)[:, :2]) + np.asarray(radii)[:, None])) * 1.15
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
