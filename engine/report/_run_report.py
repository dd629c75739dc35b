"""The HTML report of a run: write it once, or again and again while the run grows."""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.config import ScalariserSection, parse_config, parse_window, validate_model
from engine.errors import DualscopeError, RunCorrupt
from engine.io import import_file, load_surrogate
from engine.policy import build_scalariser
from engine.protocols import PhaseProgress
from engine.report._html import Band, load_sections, render_html, run_sections
from engine.report._run_summary import run_summary
from engine.storage import RunData, array_node, check_run, describe_ranges, open_run_group
from engine.surrogate import PairedData, Surrogate, SurrogateConfig, extract_patches

_PATCH_PX = 16
"""Patch side of the report's own surrogate, in image pixels."""


def write_report(
    run_path: Path,
    target: Path,
    band_text: str = "",
    checkpoint: Path | None = None,
    steps: int = 300,
    refresh_s: float | None = None,
    progress: PhaseProgress | None = None,
) -> str:
    """Write the self-contained HTML report of ``run_path`` to ``target``; return the run's status.

    Args:
        run_path: a run directory (``RUN.zarr``), closed or still growing.
        target: the HTML file, replaced atomically (a browser reloading mid-write never sees half a page).
        band_text: map the signal summed over ``LOW:HIGH`` in the spectral units instead of the run's own
            scalariser (``run_property``).
        checkpoint: a ``dualscope train`` checkpoint for the predicted map; without one a surrogate is
            trained for ``steps`` steps on the run itself (when it holds at least 20 spectra).
        steps: training steps of the report's own surrogate (0: none).
        refresh_s: seconds after which the page reloads itself while the run is open (None: never).
        progress: told how each long phase goes (``engine.protocols.PhaseProgress``): the report's own
            surrogate training, then the sections.

    Returns:
        The run's status (``closed``, ``running``, ``interrupted``...).

    Raises:
        ConfigError: a malformed band. RunStorageError: not a run, or one that cannot be read.
        RunCorrupt: damaged chunk files (named).

    Examples:
        >>> page = folder / "run.html"
        >>> write_report(run_path, page, band_text="0:1", steps=0)  # steps=0: no surrogate of its own
        'closed'
        >>> page.read_text().startswith("<!DOCTYPE html>")
        True
    """
    import torch

    run, integrity = check_run(run_path)
    if run.damaged:
        where = "; ".join(f"{name} {describe_ranges(r)}" for name, r in run.damaged.items())
        raise RunCorrupt(
            f"{run_path}: damaged chunk files ({where}); the figures would be wrong. "
            f"`dualscope inspect {run_path}` lists every problem"
        )
    if run.attrs.get("status") == "closed":
        refresh_s = None  # nothing more will come: the page need not reload
    scalar, what = run_property(run, band_text)
    image = next(iter(run.images.values()), None)
    pixels = np.asarray(array_node(open_run_group(run_path), "candidate_pixels")[:]) if image is not None else None
    model = None
    patches = None
    if image is not None and pixels is not None:
        patches = extract_patches(image.data, pixels, _PATCH_PX)
        if checkpoint is not None:
            model = load_surrogate(checkpoint, torch.device("cpu"))
            patches = extract_patches(image.data, pixels, model.patch)
        elif run.n >= 20 and steps > 0:
            rows = run.columns["candidate_index"]
            has = np.zeros(len(pixels), bool)
            has[rows] = True
            spectra = np.zeros((len(pixels), run.spectra.shape[1]), np.float32)
            spectra[rows] = run.spectra
            model = Surrogate(SurrogateConfig(batch_size=64), _PATCH_PX, spectra.shape[1], device=torch.device("cpu"))
            phase = f"training the report's surrogate on {run.n} spectra"
            on_step = None if progress is None else (lambda k, _loss: progress(phase, k, steps))
            model.fit(PairedData(patches, spectra, has), steps, on_step)
    truth = None
    source = run.description.extra.get("source") if run.description.name == "dualscope-replay" else None
    if source and "only measured positions" not in " ".join(run.description.extra.get("notes", [])):
        try:
            truth = import_file(Path(str(source)))
        except DualscopeError:
            truth = None
    with tempfile.TemporaryDirectory() as tmp:
        sections = run_sections(run, integrity, scalar, what, model, patches, truth, Path(tmp), progress)
    explored = run_path.with_suffix(".explore")
    if (explored / "sections.json").exists():
        sections += [(f"Exploration: {h}", t, png) for h, t, png in load_sections(explored)]
    summary = [(k, str(v)) for k, v in run_summary(run, integrity).items() if k not in ("problems", "notes")]
    page = render_html(
        f"dualscope run {run_path.name}", summary, integrity.problems, sections, int(refresh_s) if refresh_s else None
    )
    partial = target.with_suffix(".html.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return str(run.attrs.get("status"))


def run_property(run: RunData, band_text: str = "") -> tuple[Callable[[NDArray, NDArray], NDArray], str]:
    """The property a report maps: the campaign's own scalariser, unless a band is asked for.

    Args:
        run: the run (its stored configuration names the scalariser).
        band_text: ``LOW:HIGH`` in the spectral units: the signal summed over that band instead.

    Returns:
        The property of each spectrum (spectra ``(n, c)``, axis ``(c,)`` → ``(n,)``) and its name with
        units. A run whose configuration names no ``[policy.scalariser]`` (a random or raster
        campaign, a replay, an imported run) gets its total signal over the whole axis. When an
        operator changed the target during the run (``dualscope ctl RUN target``), the last target
        the campaign took is mapped, and the name says so.

    Raises:
        ConfigError: a malformed band.

    Examples:
        >>> _, what = run_property(read_run(run_path))
        >>> what
        'total counts (summed over all channels)'
        >>> run_property(read_run(run_path), "0:1")[1]
        'counts summed over 0–1 eV'
    """
    axis = run.spectral_axis
    window = parse_window(band_text, "--band", axis.units)
    if window is not None:
        return Band(*window), f"{run.signal} summed over {window[0]:g}–{window[1]:g} {axis.units}"
    text = str(run.attrs.get("config_toml", ""))
    try:
        named = "scalariser" in tomllib.loads(text).get("policy", {})
        section = parse_config(text, "the run's configuration").policy.scalariser if named else None
    except (tomllib.TOMLDecodeError, DualscopeError):
        section = None
    operator = _operator_target(run.attrs.get("operator_actions", []))
    if operator is not None:
        section = validate_model(operator["scalariser"], ScalariserSection, "the operator's target")
    if section is None:
        whole = axis.values()
        return Band(float(whole.min()), float(whole.max())), f"total {run.signal} (summed over all channels)"
    scalariser = build_scalariser(section, axis)
    window_text = f" over {section.low:g}–{section.high:g} {axis.units}" if section.kind in ("band", "peak") else ""
    units = scalariser.units(axis.units)
    if run.signal != "counts":  # the scalarisers speak of counts; a recording says what its values are
        units = units.replace("counts", f"{run.signal} ×")
    by = f", the target {operator['who']} set during the run" if operator is not None else ""
    return scalariser, f"{scalariser.name.replace('_', ' ')}{window_text}" + (f" ({units}{by})" if units or by else "")


def _operator_target(actions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last ``target`` operator action the campaign took (one it refused does not count), if any."""
    current: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    for action in actions:
        if action.get("action") == "target":
            before, current = current, action
        elif action.get("action") == "target-refused":
            current = before
    return current
