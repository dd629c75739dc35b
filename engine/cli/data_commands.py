"""``dualscope import``, ``explore`` and ``train``: recorded data in, analyses and surrogates out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import Progress, TextColumn, TimeRemainingColumn

from engine.cli.console import bar_columns, err, out
from engine.config import parse_window


def import_(
    source: Annotated[
        Path, typer.Argument(metavar="FILE", help="A .h5 (pyNSID), .npz/.npy, .emd, .dm3/.dm4 file or a run.")
    ],
    output: Annotated[Path, typer.Option("--out", help="New Zarr dataset to write.")],
    channel: Annotated[
        str | None,
        typer.Option(
            help="A Nanonis .3ds grid's channel to take the spectra from, e.g. 'Current (A)', 'LIX 1 omega (A)', "
            "'LIY 1 omega (A)' (default: the first; a name the file lacks is refused with the file's channels)."
        ),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            help="The structural image recorded with the spectrum image, from another file (.dm3/.dm4, .emd, "
            ".npz with image, image_x, image_y, length_units): resampled onto the scan's field by both "
            "calibrations; refused when its field does not contain the scan."
        ),
    ] = None,
) -> None:
    """Import a recorded spectrum image (structural image, spectra, axes, units) into a Zarr dataset.

    The axes it chose (which is the spectrum, which are x and y, with sizes and units) are printed
    every time: the spectral axis is read from the file's axis names and units, not assumed.
    Velox .emd and Gatan .dm3/.dm4 need the optional rosettasciio reader: pip install -e '.[formats]'.

    Example: `dualscope import ../shared/data/fei_emd_si.emd --out eds.zarr`
    (a separate HAADF: `dualscope import SI.dm3 --image HAADF.dm3 --out si.zarr`)
    """
    from engine.io import import_file, pair_image, read_structural_image
    from engine.storage import write_spectrum_image

    si = import_file(source, channel)
    if image is not None:
        si = pair_image(si, read_structural_image(image), str(image))
    write_spectrum_image(si, output)
    spec = si.spectral_axis
    out.print(
        f"Imported {si.positions.shape[0]} spectra × {spec.size} channels ({spec.name}, {spec.units}); "
        f"image {si.image.data.shape}"
    )
    ny, nx = (int(np.unique(si.positions[:, k]).size) for k in (1, 0))
    x_axis, y_axis = si.axes
    out.print(
        f"Axes:   y {ny} positions ({y_axis.units or 'no units'}), x {nx} positions ({x_axis.units or 'no units'}), "
        f"spectrum {spec.name!r} {spec.size} channels ({spec.units or 'no units'}); values: {si.signal}"
    )
    for note in si.notes:
        out.print(f"[yellow]note:[/] {note}")
    out.print(f"Dataset: [bold]{output}[/]")


def export(
    source: Annotated[
        Path, typer.Argument(metavar="RUN_OR_DATASET", help="A run (dualscope run) or a dataset (dualscope import).")
    ],
    to: Annotated[str, typer.Option("--to", help="hspy (HyperSpy, via rosettasciio), nxs (NeXus/HDF5) or csv.")],
    output: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: next to the source, e.g. RUN.hspy).")
    ] = None,
) -> None:
    """Export a run or an imported spectrum image for HyperSpy, NeXus readers or a spreadsheet.

    A run's spectra become a (measurement | energy) signal with calibrated axes and every probe
    position with its units; an imported spectrum image keeps its (y, x | channel) shape. The
    structural image goes along with its axes (HyperSpy: OUT_<channel>.hspy; NeXus: /entry/image_<channel>).
    In Python, `engine.io.run_dataset(RUN)` gives the same as an xarray Dataset.

    Example: `dualscope export runs/demo-*.zarr --to hspy` then, in Python,
    `hs.load("runs/demo-....hspy")`
    """
    from engine.io import EXPORT_FORMATS
    from engine.io import export as export_to

    if to not in EXPORT_FORMATS:
        raise typer.BadParameter(f"{to!r}; choose from {', '.join(EXPORT_FORMATS)}", param_hint="--to")
    target = output or source.with_suffix(f".{to}")
    for path in export_to(source, to, target):
        out.print(f"Wrote [bold]{path}[/]")


def explore(
    source: Annotated[Path, typer.Argument(metavar="DATASET_OR_RUN", help="Any importable file, dataset or run.")],
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="band, pca, nmf, vae, label, separated (repeatable; default all)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: RUN.explore next to a run, else `explore/<name>`)."),
    ] = None,
    band: Annotated[
        str, typer.Option(help="Band map window LOW:HIGH in the spectral units (default: middle third).")
    ] = "",
    background: Annotated[str, typer.Option(help="Power-law background fit window LOW:HIGH before an edge.")] = "",
    components: Annotated[int | None, typer.Option(help="PCA components (default: 95 % of the variance).")] = None,
    nmf_components: Annotated[int, typer.Option(help="NMF components.", min=1)] = 4,
    clusters: Annotated[int, typer.Option(help="Clusters of the spectral-VAE latent.", min=2)] = 4,
    labels: Annotated[Path | None, typer.Option(help="CSV of labelled positions: index,label or x,y,label.")] = None,
    steps: Annotated[int, typer.Option(help="Training steps of the VAEs.", min=1)] = 600,
    seed: Annotated[int, typer.Option(help="Seed of the decompositions, VAEs and splits.")] = 0,
) -> None:
    """Look at a spectrum image the usual ways before trusting an autonomous loop.

    Band maps, PCA, NMF, spectral-VAE labels, a labelling classifier, and the separated-VAE baseline
    beside the dual VAE. Writes results.zarr (every map and component), one PNG per method and
    explore.html; for a run, the folder RUN.explore is picked up by `dualscope report RUN.zarr`.

    Example: `dualscope explore twin.zarr -m band -m pca --band 0.7:0.9`
    """
    from engine.explore import METHODS, METRIC_MEANINGS, explore_spectrum_image, read_labels, save_exploration
    from engine.io import import_file

    si = import_file(source)
    chosen = method or list(METHODS)
    labelled = read_labels(labels, si) if labels is not None else None
    result = explore_spectrum_image(
        si,
        chosen,
        band=parse_window(band, "--band"),
        background=parse_window(background, "--background"),
        components=components,
        nmf_components=nmf_components,
        clusters=clusters,
        labels=labelled,
        steps=steps,
        seed=seed,
        progress=lambda what: out.print(f"  {what}…"),
    )
    is_run = (source / "zarr.json").exists() and not si.complete
    target = output or (source.with_suffix(".explore") if is_run else Path("explore") / source.stem)
    page = save_exploration(target, si, result, f"exploration of {source.name}")
    for key, value in result.metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        meaning = METRIC_MEANINGS.get(key)
        out.print(f"{key:>24}: {shown}" + (f"  ({meaning})" if meaning else ""))
    out.print(f"Results: [bold]{target / 'results.zarr'}[/]")
    out.print(f"Page:    [bold]{page}[/]")


def train(
    dataset: Annotated[
        Path, typer.Argument(metavar="DATASET", help="A `dualscope simulate` dataset or a run (.zarr).")
    ],
    model: Annotated[str, typer.Option(help="dualvae, im2spec or spec2im.")] = "dualvae",
    output: Annotated[
        Path | None, typer.Option("--out", help="Checkpoint directory (default: `DATASET-<model>/`).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.", min=1)] = 1500,
    latent: Annotated[int, typer.Option(help="Latent dimension.", min=1)] = 8,
    beta: Annotated[float, typer.Option(help="KL weight.")] = 0.01,
    gamma: Annotated[float, typer.Option(help="Weight of the L1 tie between the two latents (dualvae).")] = 1.0,
    invariant: Annotated[bool, typer.Option(help="Rotation/translation-invariant image VAE.")] = False,
    patch: Annotated[int, typer.Option(help="Patch side in pixels (multiple of 8).")] = 32,
    holdout: Annotated[float, typer.Option(help="Fraction held out for evaluation and calibration.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of weights, batches, split.")] = 0,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda:0 (never chosen for you).")] = "cpu",
) -> None:
    """Train a surrogate (im2spec, spec2im or the dual VAE) and write its checkpoint and figures.

    Prints held-out im2spec R² and the 90 % interval coverage before and after calibration (the scale is
    fitted on half of the held-out pairs and the coverage measured on the other half), and writes
    latent.png (the dual latent space), latent_grid.png (decoded patches and spectra over the latent
    plane), predictions.png (held-out predictions with their 90 % band) and metrics.json.

    Example: `dualscope train pairs.zarr --model dualvae --steps 800 --out pairs-dualvae`
    """
    from engine.report import train_surrogate
    from engine.surrogate import SurrogateConfig

    config = SurrogateConfig(kind=model, latent=latent, beta=beta, gamma=gamma, invariant=invariant)
    target = output or dataset.with_name(f"{dataset.stem}-{model}")
    with Progress(*bar_columns(TextColumn("{task.fields[loss]}"), TimeRemainingColumn()), console=out) as progress:
        task = progress.add_task("training", total=steps, loss="")
        outcome = train_surrogate(
            dataset, target, config, patch=patch, steps=steps, holdout=holdout, seed=seed, device=device,
            progress=lambda k, loss: progress.update(task, completed=k, loss=f"loss {loss:.4g}"),
        )  # fmt: skip
    if outcome.report.rolled_back:
        err.print(f"[red]training failed and was rolled back:[/] {outcome.report.reason}")
        raise typer.Exit(1)
    for key, value in outcome.metrics.items():
        out.print(f"{key:>20}: {value:.4g}" if isinstance(value, float) else f"{key:>20}: {value}")
    out.print(f"Checkpoint: [bold]{outcome.directory}[/]")
    for f in outcome.figures:
        out.print(f"Figure:     {f}")
