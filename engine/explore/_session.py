"""Run the chosen exploratory methods on a spectrum image and save arrays, figures and an HTML page."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from engine.errors import ConfigError
from engine.explore import _figures as explore_figures
from engine.explore import _methods as explore
from engine.report import render_html, save_sections
from engine.spectrum_image import SpectrumImage
from engine.surrogate import PairedData, extract_patches

METHODS = ("band", "pca", "nmf", "vae", "label", "separated")


@dataclass
class Exploration:
    """What the methods produced: page sections, arrays for the Zarr group, and metrics.

    Attributes:
        sections: page sections ``(heading, text, PNG or None)``.
        arrays: maps and components by name, for ``results.zarr``.
        metrics: numbers worth printing (explained variance, accuracies, R²).

    Examples:
        >>> result = explore_spectrum_image(si, ["pca"], components=2)
        >>> "pca_components" in result.arrays, [heading for heading, _, _ in result.sections]
        (True, ['PCA'])
    """

    sections: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    arrays: dict[str, NDArray[Any]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def read_labels(path: Path, si: SpectrumImage) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    r"""Labelled positions from a CSV with columns ``index,label`` or ``x,y,label`` (axes' units).

    Args:
        path: the CSV file (a header row, then one labelled position per row).
        si: the spectrum image the positions refer to (``x, y`` are matched to the nearest position).

    Returns:
        Position indices ``(k,)`` and their integer labels ``(k,)``.

    Raises:
        ConfigError: an unreadable file, no rows, unknown columns, or no ``label`` column.

    Examples:
        >>> csv = folder / "labels.csv"
        >>> _ = csv.write_text("index,label\n0,0\n1,1\n2,0\n3,1\n")
        >>> index, labels = read_labels(csv, si)
        >>> index.tolist(), labels.tolist()
        ([0, 1, 2, 3], [0, 1, 0, 1])
    """
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"cannot read labels {path}: {exc.strerror}") from exc
    if not rows:
        raise ConfigError(f"{path}: no labels")
    if "index" in rows[0]:
        idx = np.array([int(r["index"]) for r in rows])
    elif {"x", "y"} <= rows[0].keys():
        idx, _ = si.nearest(np.array([[float(r["x"]), float(r["y"])] for r in rows]))
    else:
        raise ConfigError(f"{path}: columns must be index,label or x,y,label; found {sorted(rows[0])}")
    if "label" not in rows[0]:
        raise ConfigError(f"{path}: a 'label' column is required")
    return idx.astype(np.int64), np.array([int(r["label"]) for r in rows], dtype=np.int64)


def patches_of(si: SpectrumImage) -> NDArray[np.float32]:
    """Patches of the structural image under every recorded position (8 px, or 16 px for large images).

    Args:
        si: a spectrum image with its structural image.

    Returns:
        Patches ``(m, p, p)``, one per recorded position.

    Examples:
        >>> patches_of(si).shape
        (20, 8, 8)
    """
    size = 16 if min(si.image.data.shape) >= 64 else 8
    return extract_patches(si.image.data, si.pixels(), size)


def explore_spectrum_image(
    si: SpectrumImage,
    methods: Sequence[str],
    *,
    band: tuple[float, float] | None = None,
    background: tuple[float, float] | None = None,
    components: int | None = None,
    nmf_components: int = 4,
    clusters: int = 4,
    labels: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
    steps: int = 600,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Exploration:
    """Run ``methods`` (see ``METHODS``) and collect their sections, arrays and metrics.

    Args:
        si: the spectrum image (positions ``(m, 2)``, spectra ``(m, c)``, structural image).
        methods: any of ``band``, ``pca``, ``nmf``, ``vae``, ``label``, ``separated``.
        band: the band map's window ``(low, high)`` in the spectral units (default: the middle third).
        background: a power-law background window before an edge ``(low, high)`` (None: no background).
        components: PCA components (None: as many as explain 95 % of the variance).
        nmf_components: NMF components.
        clusters: clusters of the spectral VAE's latent.
        labels: labelled positions ``(k,)`` and their labels ``(k,)`` (without them ``label`` is skipped, with a note).
        steps: training steps of the VAEs.
        seed: seeds decompositions, VAEs and splits.
        progress: called with the name of each method as it starts.

    Returns:
        The sections, arrays and metrics of the methods run.

    Raises:
        ConfigError: an unknown method, or a window that holds no channel of the axis.

    Examples:
        >>> result = explore_spectrum_image(si, ["band", "pca"], band=(0.0, 1.0))
        >>> [heading for heading, _, _ in result.sections]
        ['Band map', 'PCA']
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ConfigError(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    out = Exploration()
    axis = si.spectral_axis.values()
    units = si.spectral_axis.units
    say = progress or (lambda _: None)
    if "band" in methods:
        lo, hi = band or (float(np.percentile(axis, 33)), float(np.percentile(axis, 66)))
        say("band map")
        values = explore.band_map(si.spectra, axis, (lo, hi), background)
        text = f"Integral over {lo:g}–{hi:g} {units}" + (
            f", power-law background fitted over {background[0]:g}–{background[1]:g} {units}" if background else ""
        )
        out.sections.append(
            (
                "Band map",
                text + ".",
                explore_figures.band_figure(si, values, f"{si.signal} × {units}, {lo:g}–{hi:g} {units}"),
            )
        )
        out.arrays["band_map"] = values
    if "pca" in methods:
        say("PCA")
        d = explore.pca(si.spectra, components, seed=seed)
        out.sections.append(
            (
                "PCA",
                f"{d.components.shape[0]} components; relative reconstruction error {d.reconstruction_error:.3g}.",
                explore_figures.decomposition_figure(si, d),
            )
        )
        out.arrays.update(
            pca_components=d.components, pca_weights=d.weights, pca_explained_variance_ratio=d.explained_variance_ratio
        )
        out.metrics["pca_relative_error"] = d.reconstruction_error
    if "nmf" in methods:
        say("NMF")
        d = explore.nmf(si.spectra, nmf_components, seed=seed)
        out.sections.append(
            (
                "NMF",
                f"{nmf_components} components; relative reconstruction error {d.reconstruction_error:.3g}. "
                + " ".join(d.notes),
                explore_figures.decomposition_figure(si, d),
            )
        )
        out.arrays.update(nmf_components=d.components, nmf_weights=d.weights)
        out.metrics["nmf_relative_error"] = d.reconstruction_error
    if "vae" in methods:
        say("spectral VAE")
        res = explore.spectral_vae_labels(si.spectra, clusters, steps=steps, seed=seed)
        out.sections.append(
            (
                "Spectral VAE labels",
                f"A VAE on the spectra alone (2-D latent); {clusters} k-means clusters of its latent as labels.",
                explore_figures.vae_figure(si, res),
            )
        )
        out.arrays.update(vae_latent=res.latent, vae_labels=res.labels)
    if "label" in methods:
        if labels is None:
            out.sections.append(
                (
                    "Labelling",
                    "Skipped: give --labels FILE.csv (index,label or x,y,label) to train the classifier.",
                    None,
                )
            )
        else:
            say("labelling")
            lab = explore.label_map(patches_of(si), labels[0], labels[1], seed=seed)
            note = (
                f" {len(lab.ambiguous)} pairs of near-identical patches carry different labels: {lab.ambiguous[:5]}."
                if lab.ambiguous
                else ""
            )
            text = (
                f"Classifier (patch → label) trained on {lab.train_index.size} labelled positions; accuracy on "
                f"{lab.test_index.size} held-out labelled positions: {lab.held_out_accuracy:.3f}.{note}"
            )
            out.sections.append(("Labelling", text, explore_figures.labelling_figure(si, lab)))
            out.arrays.update(
                label_predicted=lab.predicted, label_train_index=lab.train_index, label_test_index=lab.test_index
            )
            out.metrics.update(label_held_out_accuracy=lab.held_out_accuracy, label_ambiguous_pairs=len(lab.ambiguous))
    if "separated" in methods:
        say("dual VAE vs separated VAEs")
        data = PairedData.paired(patches_of(si), si.spectra, positions=si.positions)  # a blocked split
        cmp = explore.dual_vs_separated(data, steps=steps, seed=seed)
        text = (
            f"Held-out im2spec R² on the same spatially blocked split (whole tiles of the field held out): "
            f"dual VAE {cmp.dual_r2:.3f}, "
            f"separated VAEs with a post-hoc linear map {cmp.separated_r2:.3f}. "
            "R² is 1 for perfect predictions and 0 for predicting the mean training spectrum everywhere; "
            "below 0 is worse than that mean."
        )
        out.sections.append(("Dual VAE vs separated VAEs", text, explore_figures.comparison_figure(cmp)))
        out.arrays.update(split_train_index=cmp.train_index, split_test_index=cmp.test_index)
        out.metrics.update(dual_r2=cmp.dual_r2, separated_r2=cmp.separated_r2)
    return out


METRIC_MEANINGS: dict[str, str] = {
    "pca_relative_error": "relative L2 error of the PCA reconstruction (0 is exact)",
    "nmf_relative_error": "relative L2 error of the NMF reconstruction (0 is exact)",
    "label_held_out_accuracy": "fraction of held-out labelled pairs classified right",
    "label_ambiguous_pairs": "labelled pairs whose patch or spectrum matches another label's",
    "dual_r2": "held-out im2spec R² of the dual VAE: 1 perfect, 0 = predicting the mean spectrum, < 0 worse",
    "separated_r2": "the same for separated VAEs tied after training: 1 perfect, 0 = the mean spectrum",
}
"""What each of ``Exploration.metrics`` means, for people reading them (``dualscope explore`` prints it)."""


def save_exploration(directory: Path, si: SpectrumImage, result: Exploration, title: str) -> Path:
    """Write ``results.zarr`` (arrays + metrics), one PNG per section and ``explore.html`` into ``directory``.

    Args:
        directory: created if needed.
        si: the spectrum image explored (its positions are saved too).
        result: what ``explore_spectrum_image`` returned.
        title: the page's title.

    Returns:
        The page, ``directory/explore.html``.

    Examples:
        >>> result = explore_spectrum_image(si, ["band"], band=(0.0, 1.0))
        >>> save_exploration(folder, si, result, "example").name
        'explore.html'
    """
    directory.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(directory / "results.zarr", mode="w")
    for name, arr in {"positions": si.positions, **result.arrays}.items():
        a = group.create_array(name, shape=arr.shape, dtype=arr.dtype)
        a[...] = arr
    group.attrs["dualscope_exploration"] = {"source": si.source, "metrics": result.metrics}
    save_sections(directory, result.sections)
    summary = [("source", si.source), ("spectra", str(si.positions.shape[0])), ("channels", str(si.spectral_axis.size))]
    summary += [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in result.metrics.items()]
    page = directory / "explore.html"
    page.write_text(render_html(title, summary, None, result.sections), encoding="utf-8")
    return page
