"""``dualscope report``: a self-contained HTML page about a run, with its figures embedded.

Sections: summary and integrity; the structural image with the measured positions in order; the
scalar property (a band integral of each spectrum) measured at each position next to the map the
surrogate predicts over every candidate; the discovery curve (best value found vs spectra spent)
against random and raster orders replayed on the same data when a ground truth exists (runs that
replayed a complete recorded grid); the two latent spaces; the time of each stage per step.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from engine.errors import ConfigError
from engine.protocols import PhaseProgress
from engine.report._discovery import discovery_curves
from engine.report._summary_figure import summary_figure
from engine.spectrum_image import SpectrumImage
from engine.storage import IntegrityReport, RunData
from engine.surrogate import PairedData, Surrogate


@dataclass(frozen=True)
class Band:
    """Integrate spectra over ``[low, high]`` in the spectral axis' units (the report's scalar).

    Attributes:
        low: the band's start, the spectral axis' units.
        high: its end.

    Examples:
        >>> Band(1.0, 2.0)(np.ones((2, 4)), np.array([0.5, 1.0, 1.5, 2.5])).tolist()  # sum over the band's channels
        [2.0, 2.0]
    """

    low: float
    high: float

    def __call__(self, spectra: NDArray, axis_values: NDArray) -> NDArray[np.float64]:
        """Band integral ``(n,)`` of ``spectra (n, c)``."""
        sel = (axis_values >= min(self.low, self.high)) & (axis_values <= max(self.low, self.high))
        if not sel.any():
            raise ConfigError(f"band [{self.low}, {self.high}] holds no channel")
        return np.asarray(np.asarray(spectra, np.float64)[:, sel].sum(axis=1))


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _new_figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def timing_figure(run: RunData) -> bytes:
    """Seconds in decide / measure / record per step (log scale).

    Args:
        run: the run.

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> timing_figure(read_run(run_path))[1:4]  # PNG bytes
        b'PNG'
    """
    fig = _new_figure((9, 3.6))
    ax = fig.subplots()
    stages = (
        ("time_decide_s", "decide"),
        ("time_condition_s", "of which: condition the model"),
        ("time_acquire_s", "of which: score candidates"),
        ("time_measure_s", "measure"),
        ("time_record_s", "record"),
    )
    for col, label in stages:
        if np.isfinite(run.columns[col]).any():
            ax.plot(run.columns["step"], run.columns[col], ".", ms=3, label=label)
    refits = [r for r in run.attrs.get("refits", []) if np.isfinite(float(r.get("fit_s", np.nan)))]
    if refits:
        steps = [int(r["used_from_step"]) for r in refits]
        ax.plot(steps, [float(r["fit_s"]) for r in refits], "x", ms=4, label="model refit (at the step it was used)")
    ax.set(yscale="log", xlabel="step", ylabel="time (s)", title="time of each stage per step")
    ax.legend()
    return _png(fig)


def drift_figure(run: RunData) -> bytes | None:
    """The drift track: estimated specimen shift per axis over time, refused frames marked; ``None`` without one.

    Args:
        run: the run (its ``drift_track`` attribute).

    Returns:
        PNG bytes: the accepted shift ``(axes' units)`` against minutes since the run began, and the
        registration error of each frame below it; ``None`` when the run tracked no drift.

    Examples:
        >>> drift_figure(read_run(run_path)) is None  # this run did not track drift
        True
    """
    track = run.attrs.get("drift_track", [])
    if not track:
        return None
    start = float(run.attrs.get("created_at", track[0]["time"]))
    minutes = np.array([(float(e["time"]) - start) / 60.0 for e in track])
    accepted = np.array([bool(e["accepted"]) for e in track])
    shift = np.array([[np.nan if v is None else float(v) for v in e["shift"]] for e in track])
    error = np.array([np.nan if e["error"] is None else float(e["error"]) for e in track])
    fig = _new_figure((9, 4.2))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    units = run.description.axes[0].units
    for k, axis in enumerate(run.description.axes):
        top.plot(minutes, shift[:, k], ".-", ms=3, label=f"{axis.name}")
    if (~accepted).any():
        top.plot(minutes[~accepted], shift[~accepted, 0], "rx", ms=6, label="refused frame (probe not moved)")
    top.set(ylabel=f"estimated drift ({units})", title="specimen drift since the reference image")
    top.legend()
    bottom.plot(minutes, error, ".", ms=3)
    bottom.set(xlabel="time since the run began (min)", ylabel="registration error")
    return _png(fig)


def property_figure(
    run: RunData, measured: NDArray, candidates: NDArray, predicted: NDArray | None, what: str
) -> bytes:
    """Measured scalar at the measured positions, next to the surrogate's map over all candidates.

    Args:
        run: the run (its image and candidate positions).
        measured: the property at the measured positions ``(n,)``.
        candidates: candidate positions ``(m, d)``.
        predicted: the surrogate's property at every candidate ``(m,)`` (None: the measured panel only).
        what: the property's name and units.

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> run = read_run(run_path)
        >>> measured = run.spectra.sum(axis=1)
        >>> property_figure(run, measured, run.candidate_positions, None, "total counts")[1:4]
        b'PNG'
    """
    fig = _new_figure((11, 4.4))
    axes = fig.subplots(1, 2)
    names = [a.name for a in run.description.axes]
    ix, iy = names.index("x"), names.index("y")
    units = {a.name: a.units for a in run.description.axes}
    labels = {"xlabel": f"x ({units['x']})", "ylabel": f"y ({units['y']})", "aspect": "equal"}
    sc = axes[0].scatter(run.positions[:, ix], run.positions[:, iy], c=measured, s=14, cmap="magma")
    axes[0].set(title="measured", **labels)
    axes[0].invert_yaxis()
    fig.colorbar(sc, ax=axes[0], label=what)
    if predicted is not None:
        sc2 = axes[1].scatter(candidates[:, ix], candidates[:, iy], c=predicted, s=10, cmap="magma", marker="s")
        axes[1].set(title="predicted by the surrogate (im2spec mean)", **labels)
        axes[1].invert_yaxis()
        fig.colorbar(sc2, ax=axes[1], label=what)
    else:
        axes[1].text(0.5, 0.5, "no surrogate", ha="center", va="center")
        axes[1].set_axis_off()
    return _png(fig)


def discovery_figure(curves: dict[str, NDArray], best: float, what: str) -> bytes:
    """Discovery curves against the best value in the data.

    Args:
        curves: label → best value so far ``(n,)``.
        best: the best value in the data.
        what: the property's name and units.

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> curves = discovery_curves(np.array([1, 0]), np.array([0.1, 0.9, 0.5]))
        >>> discovery_figure(curves, 0.9, "band intensity")[1:4]
        b'PNG'
    """
    fig = _new_figure((8, 3.8))
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot(np.arange(1, curve.size + 1), curve, label=name, lw=2 if name == "this run" else 1)
    ax.axhline(best, color="grey", ls=":", label="best in the data")
    ax.set(
        xlabel="spectra measured",
        ylabel=f"best {what} so far",
        title="discovery curve (ground truth from the recording)",
    )
    ax.legend()
    return _png(fig)


def latent_figure(
    model: Surrogate,
    data: PairedData,
    energy: NDArray,
    work_dir: Path,
    colour: tuple[NDArray, str] | None = None,
) -> bytes:
    """The dual latent space figure of ``engine.surrogate_figures``, as PNG bytes.

    Args:
        model: a trained surrogate.
        data: the pairs to place in the latent spaces.
        energy: the spectral axis values ``(c,)``.
        work_dir: a folder for the intermediate PNG.
        colour: the property of each pair ``(n,)`` and its name with units (default: labels, or
            the integrated signal).

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> latent_figure(model, held_out, energy, folder)[1:4]
        b'PNG'
    """
    from engine.report._surrogate_figures import dual_latent_figure

    return dual_latent_figure(model, data, energy, work_dir / "latent.png", colour).read_bytes()


def render_html(
    title: str,
    summary: Sequence[tuple[str, str]],
    problems: Sequence[str] | None,
    sections: Sequence[tuple[str, str, bytes | None]],
    refresh_s: int | None = None,
) -> str:
    """A self-contained page: ``sections`` are ``(heading, text, png or None)``; ``problems=None`` hides integrity.

    Args:
        title: the page's title.
        summary: ``(name, value)`` rows of the summary table.
        problems: integrity problems to show (None: no integrity line).
        sections: ``(heading, text, PNG or None)`` each.
        refresh_s: the page reloads itself after this many seconds (None: never).

    Returns:
        The HTML page, figures embedded as base64 PNG.

    Examples:
        >>> page = render_html("a page", [("spectra", "20")], None, [("Notes", "No figure here.", None)])
        >>> "<h2>Notes</h2>" in page
        True
    """
    esc = html.escape
    head = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary)
    if problems is None:
        probs = ""
    else:
        probs = "".join(f'<li class="problem">{esc(p)}</li>' for p in problems) or "<li>integrity: no problems</li>"
    body = []
    for heading, text, png in sections:
        img = f'<img alt="{esc(heading)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
        body.append(f"<section><h2>{esc(heading)}</h2><p>{esc(text)}</p>{img}</section>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "img{max-width:100%}th{text-align:left;padding-right:1em}.problem{color:#b00}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{head}<title>{esc(title)}</title>'
        f"<style>{style}</style></head><body><h1>{esc(title)}</h1><table>{rows}</table><ul>{probs}</ul>"
        + "".join(body)
        + "</body></html>\n"
    )


def run_sections(
    run: RunData,
    integrity: IntegrityReport,
    scalar: Callable[[NDArray, NDArray], NDArray],
    what: str,
    surrogate: Surrogate | None,
    candidate_patches: NDArray | None,
    truth: SpectrumImage | None,
    work_dir: Path,
    progress: PhaseProgress | None = None,
) -> list[tuple[str, str, bytes | None]]:
    """Build every section's text and figure for ``render_html``.

    Args:
        run: the run.
        integrity: its integrity check.
        scalar: the property of each spectrum: spectra ``(n, c)`` and axis ``(c,)`` → ``(n,)`` (the run's
            scalariser, or a ``Band``).
        what: the property in words, with units (axis labels, captions).
        surrogate: a trained surrogate for the predicted map and latents (None: none).
        candidate_patches: the candidates' patches ``(m, p, p)`` for the surrogate (None: none).
        truth: the recording a replayed run came from, for its discovery curve (None: none).
        work_dir: a folder for intermediate figures.
        progress: told after each section (``engine.protocols.PhaseProgress``).

    Returns:
        The sections.

    Examples:
        >>> run, integrity = check_run(run_path)
        >>> sections = run_sections(run, integrity, Band(0.0, 1.0), "counts in 0-1 eV", None, None, None, folder)
        >>> all(len(s) == 3 for s in sections)  # (heading, text, PNG or None)
        True
    """
    values = run.spectral_values
    sections: list[tuple[str, str, bytes | None]] = []
    latents = surrogate is not None and surrogate.config.kind == "dualvae" and candidate_patches is not None
    planned = 3 + (truth is not None) + latents + bool(run.attrs.get("drift_track"))  # + discovery, latents, drift

    def add(section: tuple[str, str, bytes | None] | None) -> None:
        if section is not None:
            sections.append(section)
        if progress is not None:
            progress("drawing the report's sections", len(sections), max(planned, len(sections)))

    add(None)  # the bar shows before the first figure
    summary_png = summary_figure(run, work_dir / "summary.png") if run.n else None
    add(
        (
            "Where the loop looked",
            "Structural image with the measured positions in acquisition order, and a few spectra.",
            summary_png.read_bytes() if summary_png else None,
        )
    )
    measured = scalar(run.spectra, values) if run.n else np.zeros(0)
    predicted = None
    if surrogate is not None and candidate_patches is not None and run.n:
        mean, _ = surrogate.predict_spectra(candidate_patches)
        predicted = scalar(mean, values)
    add(
        (
            "Property map",
            f"The property mapped is the {what} of each spectrum.",
            property_figure(run, measured, run.candidate_positions, predicted, what) if run.n else None,
        )
    )
    if truth is not None and run.n:
        truth_values = scalar(truth.spectra, values)
        idx, _ = truth.nearest(run.positions)
        width = int(np.unique(truth.positions[:, 1], return_counts=True)[1][0])  # positions in the first row
        curves = discovery_curves(idx, truth_values, grid_width=width)
        add(
            (
                "Discovery",
                "Best value found so far for this run, for random orders (the mean of 20) and for the "
                "serpentine raster the raster policy scans, on the same recorded data.",
                discovery_figure(curves, float(truth_values.max()), what),
            )
        )
    if surrogate is not None and surrogate.config.kind == "dualvae" and candidate_patches is not None and run.n:
        rows = run.columns["candidate_index"]
        data = PairedData.paired(candidate_patches[rows], run.spectra)
        png = latent_figure(surrogate, data, values, work_dir, (measured, what))
        add(("Latent spaces", "Image and spectrum latents of the measured positions.", png))
    if run.n:
        add(("Timing", "Seconds spent deciding, measuring and recording in each step.", timing_figure(run)))
    if (drift_png := drift_figure(run)) is not None:
        track = run.attrs["drift_track"]
        refused = sum(not e["accepted"] for e in track)
        last = ", ".join(f"{v:.3g}" for v in track[-1]["shift"] if v is not None)
        add(
            (
                "Drift",
                f"{len(track)} tracking frames registered against the reference image ({refused} refused by the "
                f"quality checks: the probe kept the last estimate); last estimated drift ({last}) "
                f"{run.description.axes[0].units}. Positions in this run are points of the reference image; "
                "each probe was sent there plus the estimate in force.",
                drift_png,
            )
        )
    return sections


Section = tuple[str, str, bytes | None]
"""A page section: heading, text, PNG (or None)."""


def save_sections(directory: Path, sections: Sequence[Section]) -> None:
    """Write ``sections`` into ``directory``: one PNG per figure and ``sections.json`` (headings, texts).

    Args:
        directory: an existing folder.
        sections: ``(heading, text, PNG or None)`` each.

    Examples:
        >>> directory = folder
        >>> save_sections(directory, [("Notes", "text", None)])
        >>> load_sections(directory)
        [('Notes', 'text', None)]
    """
    for k, (heading, _, png) in enumerate(sections):
        if png:
            (directory / f"{k:02d}-{heading.lower().replace(' ', '-')}.png").write_bytes(png)
    (directory / "sections.json").write_text(json.dumps([[h, t] for h, t, _ in sections], indent=1))


def load_sections(directory: Path) -> list[Section]:
    """Sections written by ``save_sections`` (an exploration's, for the run report).

    Args:
        directory: written by ``save_sections``.

    Returns:
        The sections, with their PNGs read back.

    Examples:
        >>> directory = folder
        >>> save_sections(directory, [("A figure", "caption", b"not really a PNG")])
        >>> load_sections(directory)[0][2]
        b'not really a PNG'
    """
    texts = json.loads((directory / "sections.json").read_text())
    pngs = {p.name.split("-", 1)[0]: p for p in directory.glob("*.png")}
    return [(h, t, pngs[f"{k:02d}"].read_bytes() if f"{k:02d}" in pngs else None) for k, (h, t) in enumerate(texts)]
