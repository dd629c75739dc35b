"""Figures of ``engine.explore`` results, as PNG bytes (embedded in the HTML pages)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from engine.explore._methods import Decomposition, DualVsSeparated, Labelling, LatentLabels
from engine.report import categorical_colours
from engine.spectrum_image import SpectrumImage


def _figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _map(
    ax: Axes, si: SpectrumImage, values: NDArray, title: str, bar: str, cmap: str = "viridis", categories: bool = False
) -> None:
    """Values at the recorded positions, drawn as square markers on the scan plane; ``bar`` labels the colour bar.

    With ``categories`` (cluster or class labels) each integer gets its own colour and tick.
    """
    norm, ticks = None, None
    if categories:
        cmap, norm, ticks = categorical_colours(values)  # type: ignore[assignment]
    sc = ax.scatter(
        si.positions[:, 0], si.positions[:, 1], c=values, s=max(4, 9000 / len(values)), marker="s", cmap=cmap,
        norm=norm,
    )  # fmt: skip
    ax.set(title=title, aspect="equal", xlabel=f"x ({si.axes[0].units})", ylabel=f"y ({si.axes[1].units})")
    ax.invert_yaxis()
    colour_bar = ax.figure.colorbar(sc, ax=ax, shrink=0.8, label=bar)
    if ticks is not None:
        colour_bar.set_ticks(ticks.tolist())


def _image(ax: Axes, si: SpectrumImage) -> None:
    y, x = si.image.coords()
    ax.imshow(si.image.data, cmap="gray", extent=(x[0], x[-1], y[-1], y[0]))
    ax.set(
        title=f"structural image ({si.image.channel})",
        xlabel=f"x ({si.image.x_axis.units})",
        ylabel=f"y ({si.image.y_axis.units})",
    )


def band_figure(si: SpectrumImage, values: NDArray, label: str) -> bytes:
    """The structural image beside the band map.

    Args:
        si: the spectrum image.
        values: the band map ``(m,)``.
        label: what the values are, with units (the colour bar's label).

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> band_figure(si, si.spectra.sum(axis=1), "total counts")[1:4]
        b'PNG'
    """
    fig = _figure((10, 4.2))
    a, b = fig.subplots(1, 2)
    _image(a, si)
    _map(b, si, values, "band map", label, "magma")
    return _png(fig)


def decomposition_figure(si: SpectrumImage, d: Decomposition, shown: int = 4) -> bytes:
    """Scree plot (PCA), component spectra and weight maps.

    Args:
        si: the spectrum image.
        d: a PCA or NMF decomposition.
        shown: components shown.

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> decomposition_figure(si, pca(si.spectra, n_components=2))[1:4]
        b'PNG'
    """
    k = min(shown, d.components.shape[0])
    fig = _figure((3.2 * (k + 1), 6.2))
    axes = fig.subplots(2, k + 1, squeeze=False)
    axis = si.spectral_axis.values()
    if d.explained_variance_ratio.size:
        axes[0, 0].semilogy(np.arange(1, d.explained_variance_ratio.size + 1), d.explained_variance_ratio, ".-")
        axes[0, 0].set(title="scree", xlabel="component", ylabel="explained variance ratio")
    else:
        axes[0, 0].text(
            0.5, 0.5, f"{d.method.upper()}\nrelative error\n{d.reconstruction_error:.3g}", ha="center", va="center"
        )
        axes[0, 0].set_axis_off()
    _image(axes[1, 0], si)
    for j in range(k):
        axes[0, j + 1].plot(axis, d.components[j])
        axes[0, j + 1].set(
            title=f"{d.method.upper()} component {j + 1}",
            xlabel=f"{si.spectral_axis.name.replace('_', ' ')} ({si.spectral_axis.units})",
            ylabel=f"{si.signal} (component)",
        )
        _map(axes[1, j + 1], si, d.weights[:, j], f"weight {j + 1}", "weight (dimensionless)")
    return _png(fig)


def vae_figure(si: SpectrumImage, result: LatentLabels) -> bytes:
    """Latent plane coloured by cluster, the label map, and the first two latent coordinates as maps.

    Args:
        si: the spectrum image.
        result: the spectral VAE's latent and labels.

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> vae_figure(si, spectral_vae_labels(si.spectra, n_clusters=2, steps=10))[1:4]
        b'PNG'
    """
    fig = _figure((16, 4.2))
    a, b, c, d = fig.subplots(1, 4)
    cmap, norm, ticks = categorical_colours(result.labels)
    points = a.scatter(result.latent[:, 0], result.latent[:, 1], c=result.labels, s=6, cmap=cmap, norm=norm)
    a.figure.colorbar(points, ax=a, shrink=0.8, label="cluster", ticks=ticks)
    a.set(title="spectral VAE latent (k-means clusters)", xlabel="z1", ylabel="z2")
    _map(b, si, result.labels, "label map (clusters of the latent)", "cluster", categories=True)
    _map(c, si, result.latent[:, 0], "latent z1", "z1 (dimensionless)")
    z2 = result.latent[:, 1] if result.latent.shape[1] > 1 else result.latent[:, 0]
    _map(d, si, z2, "latent z2", "z2 (dimensionless)")
    return _png(fig)


def labelling_figure(si: SpectrumImage, result: Labelling) -> bytes:
    """Predicted label map with the training (o) and held-out (x) labelled positions.

    Args:
        si: the spectrum image.
        result: the labelling classifier's predictions and split.

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> labelled = np.arange(0, 20, 2)
        >>> result = label_map(patches_of(si), labelled, (labelled % 4 == 0).astype(np.int64))
        >>> labelling_figure(si, result)[1:4]
        b'PNG'
    """
    fig = _figure((6.5, 5))
    ax = fig.subplots()
    title = f"predicted labels (held-out accuracy {result.held_out_accuracy:.2f})"
    _map(ax, si, result.predicted, title, "label", categories=True)
    for idx, marker, name in (
        (result.train_index, "o", "labelled (train)"),
        (result.test_index, "x", "labelled (held out)"),
    ):
        x, y = si.positions[idx, 0], si.positions[idx, 1]
        if marker == "o":
            ax.scatter(x, y, marker=marker, s=30, label=name, facecolors="none", edgecolors="k")
        else:  # an "x" has no edge to colour
            ax.scatter(x, y, marker=marker, s=30, label=name, c="k")
    ax.legend(fontsize=7)
    return _png(fig)


def comparison_figure(result: DualVsSeparated) -> bytes:
    """Held-out im2spec R² of the dual VAE and of the separated VAEs, on the same split.

    Args:
        result: the comparison.

    Returns:
        The figure as PNG bytes.

    Examples:
        >>> comparison_figure(DualVsSeparated(np.arange(24), np.arange(24, 30), 0.8, 0.6))[1:4]
        b'PNG'
    """
    fig = _figure((5, 3.5))
    ax = fig.subplots()
    ax.bar(["dual VAE", "separated VAEs"], [result.dual_r2, result.separated_r2], color=["tab:red", "tab:grey"])
    ax.set(
        ylabel="held-out im2spec R²",
        title=f"same split: {result.train_index.size} train / {result.test_index.size} held out",
    )
    ax.axhline(0, color="k", lw=0.5)
    return _png(fig)
