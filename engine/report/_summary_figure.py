"""The run summary figure: where the loop looked, in what order, and what it saw."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from engine.storage import RunData


def summary_figure(
    run: RunData,
    out: Path,
    n_spectra: int = 5,
    channel: str | None = None,
    discovery: Mapping[str, NDArray[np.float64]] | None = None,
    top_size: int = 0,
) -> Path:
    """Write a PNG: the structural image with measured positions coloured by order, and a few spectra.

    Args:
        run: a run read with ``engine.storage.read_run``.
        out: PNG path to write.
        n_spectra: how many spectra to show, evenly spaced in acquisition order.
        channel: image channel (default: the first).
        discovery: label → recall curve ``(n,)`` of the top locations of a known ground truth;
            adds a third panel with the curves.
        top_size: how many locations the top set holds (for the panel's title).

    Returns:
        ``out``.

    Examples:
        >>> summary_figure(read_run(run_path), folder / "run.png").suffix
        '.png'
    """
    fig = Figure(figsize=(17 if discovery else 12, 5), layout="constrained")
    FigureCanvasAgg(fig)
    if discovery:
        ax_img, ax_spec, ax_disc = fig.subplots(1, 3, width_ratios=[1, 1.2, 1])
        _discovery_panel(ax_disc, discovery, top_size)
    else:
        ax_img, ax_spec = fig.subplots(1, 2, width_ratios=[1, 1.3])
    name = channel or next(iter(run.images), None)
    axes = {a.name: i for i, a in enumerate(run.description.axes)}
    if name is not None:
        img = run.images[name]
        y, x = img.coords()
        dy, dx = img.y_axis.scale / 2, img.x_axis.scale / 2
        ax_img.imshow(img.data, cmap="gray", origin="upper", extent=(x[0] - dx, x[-1] + dx, y[-1] + dy, y[0] - dy))
        ax_img.set_xlabel(f"x ({img.x_axis.units})")
        ax_img.set_ylabel(f"y ({img.y_axis.units})")
    n = run.n
    if n and {"x", "y"} <= axes.keys():
        px, py = run.positions[:, axes["x"]], run.positions[:, axes["y"]]
        ax_img.plot(px, py, "-", color="white", lw=0.5, alpha=0.5)
        sc = ax_img.scatter(px, py, c=np.arange(n), cmap="plasma", s=14, edgecolors="none")
        bar = fig.colorbar(sc, ax=ax_img, label="acquisition order (measurement number)", shrink=0.8)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    missing = [c for m in run.attrs.get("missing", []) for c in m["candidates"]]
    if missing and {"x", "y"} <= axes.keys():
        gone = run.candidate_positions[missing]
        ax_img.plot(gone[:, axes["x"]], gone[:, axes["y"]], "x", color="grey", ms=5, label="chosen, never measured")
        ax_img.legend(loc="lower right", fontsize=7)
    policy = ", ".join(run.policy_names) or "-"
    ax_img.set_title(f"{name or 'no image'}: {n} measured positions ({policy})")
    spec = run.spectral_axis
    energies = run.spectral_values
    picks = np.unique(np.linspace(0, n - 1, min(n_spectra, n)).astype(int)) if n else np.array([], int)
    cmap = colormaps["plasma"]
    for k in picks:
        colour = cmap(k / max(n - 1, 1))
        where = ", ".join(f"{v:.1f}" for v in run.positions[k])
        ax_spec.plot(energies, run.spectra[k], color=colour, lw=1, label=f"#{k} at ({where})")
    ax_spec.set_xlabel(f"{spec.name.replace('_', ' ')} ({spec.units})")
    ax_spec.set_ylabel(run.signal)
    ax_spec.set_title("measured spectra (colour = acquisition order)")
    if picks.size:
        ax_spec.legend(fontsize=8)
    fig.suptitle(f"dualscope run {run.path.name}")
    fig.savefig(out, dpi=110)
    return out


def _discovery_panel(ax: Axes, curves: Mapping[str, NDArray[np.float64]], top_size: int) -> None:
    for label, curve in curves.items():
        ax.plot(np.arange(1, curve.size + 1), curve, lw=1.5, label=label)
    ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("measurements")
    ax.set_ylabel("fraction of the top locations found")
    ax.set_title(f"discovery of the top {top_size} locations (ground truth)")
    ax.legend(fontsize=8, loc="upper left")
