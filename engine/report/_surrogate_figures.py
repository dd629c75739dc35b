"""Figures of a trained surrogate: the dual latent space, decoded latent grids, held-out predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from engine.report._colours import categorical_colours
from engine.surrogate import PairedData, Surrogate


def _pca2(x: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """Mean ``(d,)``, the two leading directions ``(2, d)`` and the projected points ``(n, 2)``."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:2] if vt.shape[0] >= 2 else np.vstack([vt, np.zeros_like(vt)])
    return mean, axes, (x - mean) @ axes.T


def _colour_values(data: PairedData, colour: tuple[NDArray, str] | None) -> tuple[NDArray, str]:
    if colour is not None:
        return np.asarray(colour[0], np.float64), colour[1]
    if data.labels is not None:
        return data.labels.astype(float), "label (number of particles)"
    return data.spectra.sum(axis=1), "integrated signal (sum over channels)"


def dual_latent_figure(
    model: Surrogate, data: PairedData, energy: NDArray, out: Path, colour: tuple[NDArray, str] | None = None
) -> Path:
    """The two latent spaces side by side, coloured by a property (the given one, the labels, or the total signal).

    Args:
        model: a trained surrogate.
        data: pairs to place: patches ``(n, p, p)``, spectra ``(n, c)``, labels if any.
        energy: the spectral axis values ``(c,)``.
        out: the PNG to write.
        colour: the property of each measured pair ``(n,)`` and its name with units (the run's scalariser).

    Returns:
        ``out``.

    Examples:
        >>> dual_latent_figure(model, held_out, energy, folder / "latent.png").name
        'latent.png'
    """
    rows = data.subset(np.flatnonzero(data.has_spectrum))
    values, what = _colour_values(rows, colour)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    latents = []
    if model.config.kind in ("dualvae", "im2spec"):
        latents.append(("image latent z_i (patches)", model.image_latent(rows.patches)))
    if model.config.kind in ("dualvae", "spec2im"):
        latents.append(("spectrum latent W z_s (spectra)", model.spectrum_latent(rows.spectra)))
    basis = _pca2(latents[0][1])
    categories = colour is None and rows.labels is not None
    cmap, norm, ticks = categorical_colours(values) if categories else ("viridis", None, None)
    for ax, (title, z) in zip(axes, latents, strict=False):
        pts = (z - basis[0]) @ basis[1].T
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=values, s=6, cmap=cmap, norm=norm)
        ax.set(title=title, xlabel="latent PC 1 (dimensionless)", ylabel="latent PC 2 (dimensionless)")
    bar = fig.colorbar(sc, ax=axes, label=what, shrink=0.85)
    if ticks is not None:
        bar.set_ticks(ticks.tolist())
    fig.suptitle("dual latent space (both projected on the image latent's principal plane)")
    fig.savefig(out, dpi=100)
    return out


def latent_grid_figure(
    model: Surrogate, data: PairedData, energy: NDArray, out: Path, n: int = 6, units: str = ""
) -> Path:
    """Patches and spectra decoded on an ``n × n`` grid over the latent's principal plane.

    Args:
        model: a trained surrogate.
        data: pairs whose latents define the principal plane.
        energy: the spectral axis values ``(c,)``.
        out: the PNG to write.
        n: grid points per side.
        units: the spectral axis' units (axis label).

    Returns:
        ``out``.

    Examples:
        >>> latent_grid_figure(model, held_out, energy, folder / "grid.png", n=3).name
        'grid.png'
    """
    z = model.image_latent(data.patches) if model.config.kind != "spec2im" else model.spectrum_latent(data.spectra)
    mean, axes, pts = _pca2(z)
    lo, hi = np.percentile(pts, 5, axis=0), np.percentile(pts, 95, axis=0)
    a, b = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(hi[1], lo[1], n))
    grid = mean + a.reshape(-1, 1) * axes[0] + b.reshape(-1, 1) * axes[1]
    patches, spectra = model.decode_latent(grid)
    fig = Figure(figsize=(13, 6.2), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = np.asarray(fig.subfigures(1, 2)).ravel()
    p = patches.shape[1]
    mosaic = patches.reshape(n, n, p, p).transpose(0, 2, 1, 3).reshape(n * p, n * p)
    ax = left.subplots()
    ax.imshow(mosaic, cmap="gray")
    ax.set(
        title="decoded patches over the latent plane",
        xlabel="latent PC 1 (left to right, 5th to 95th percentile)",
        ylabel="latent PC 2 (bottom to top)",
        xticks=[],
        yticks=[],
    )
    spec_axes = right.subplots(n, n, sharex=True, sharey=True)
    cmap = colormaps["viridis"]
    for k, sp in enumerate(spectra):
        ax_k = spec_axes.flat[k]
        ax_k.plot(energy, sp, color=cmap(k / (n * n)), lw=0.8)
        ax_k.tick_params(labelsize=5)
    right.suptitle("decoded spectra at the same latent points")
    right.supxlabel(f"spectral axis ({units})" if units else "spectral axis")
    right.supylabel("decoded signal (as recorded)")
    fig.savefig(out, dpi=100)
    return out


def prediction_figure(
    model: Surrogate, held_out: PairedData, energy: NDArray, units: str, out: Path, k: int = 6
) -> Path:
    """im2spec on held-out patches: true spectrum, predicted mean and the 90 % band.

    Args:
        model: a trained surrogate that predicts spectra.
        held_out: pairs it was not trained on.
        energy: the spectral axis values ``(c,)``.
        units: the spectral axis' units.
        out: the PNG to write.
        k: pairs shown.

    Returns:
        ``out``.

    Examples:
        >>> prediction_figure(model, held_out, energy, units, folder / "pred.png", k=2).name
        'pred.png'
    """
    rows = np.flatnonzero(held_out.has_spectrum)[:k]
    mean, std = model.predict_spectra(held_out.patches[rows])
    fig = Figure(figsize=(13, 6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, k)
    for j, r in enumerate(rows):
        axes[0, j].imshow(held_out.patches[r], cmap="gray")
        axes[0, j].set(xticks=[], yticks=[], title=f"held-out #{r}")
        axes[1, j].plot(energy, held_out.spectra[r], color="black", lw=0.7, label="measured")
        axes[1, j].plot(energy, mean[j], color="tab:red", lw=1.2, label="im2spec mean")
        axes[1, j].fill_between(
            energy, mean[j] - 1.645 * std[j], mean[j] + 1.645 * std[j], color="tab:red", alpha=0.25, label="90 %"
        )
        axes[1, j].set_xlabel(f"spectral axis ({units})")
    axes[1, 0].set_ylabel("signal (as recorded)")
    axes[1, 0].legend(fontsize=7)
    fig.suptitle("predicted vs measured spectra for held-out patches")
    fig.savefig(out, dpi=100)
    return out
