"""``dualscope simulate stem|darkfield``: write simulated datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TimeRemainingColumn

from engine.cli.console import bar_columns, out
from engine.cli.drivers import driver_options
from engine.cli.serve_command import parse_options
from engine.clock import SystemClock
from engine.errors import ConfigError

simulate_app = typer.Typer(
    help="Generate simulated datasets (`dualscope simulate stem --out twin.zarr`).", no_args_is_help=True
)


@simulate_app.command("stem")
def simulate_stem(
    output: Annotated[Path, typer.Option("--out", help="New Zarr spectrum-image dataset to write.")],
    stride: Annotated[int, typer.Option(help="One probe position every STRIDE image pixels.", min=1)] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the specimen and the noise.")] = 0,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Twin option KEY=VALUE.")] = None,
) -> None:
    """Write a STEM-EELS twin spectrum image: the HAADF image and a CDA spectrum on a grid of probe positions.

    Example: `dualscope simulate stem --out twin.zarr --stride 8 --seed 1`
    """
    from engine.storage import write_spectrum_image
    from simulators.stem_dataset import stem_spectrum_image
    from simulators.stem_twin import StemTwinOptions

    options = driver_options("stem-twin", {**parse_options(option or []), "seed": seed})
    assert isinstance(options, StemTwinOptions)
    si = stem_spectrum_image(options, stride, SystemClock())
    write_spectrum_image(si, output)
    out.print(f"Dataset: [bold]{output}[/] ({si.positions.shape[0]} spectra)")


@simulate_app.command("darkfield")
def simulate_darkfield(
    output: Annotated[Path, typer.Option("--out", help="New Zarr dataset to write.")],
    n: Annotated[int, typer.Option(help="Number of (SEM patch, dark-field spectrum) pairs.", min=1)] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed; the dataset does not depend on --workers.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 2,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Twin option KEY=VALUE (see serve darkfield-twin --list-options)."),
    ] = None,
) -> None:
    """Write N pairs of SEM image patches and dark-field scattering spectra of 1, 2, 3, 4+ sphere clusters.

    The lecture's dual-VAE dataset: labels are the number of particles (4 = 4 or more). Spectra come from
    the coupled-dipole model with Poisson noise; images are SEM-like patches of the same clusters.

    Example: `dualscope simulate darkfield --out pairs.zarr -n 2000 --workers 2`
    """
    from simulators.darkfield import DarkFieldOptions
    from simulators.darkfield_dataset import write_darkfield_dataset

    options = driver_options("darkfield-twin", {**parse_options(option or []), "seed": seed})
    assert isinstance(options, DarkFieldOptions)
    with Progress(*bar_columns(TimeRemainingColumn()), console=out) as progress:
        task = progress.add_task("simulating", total=n)
        try:
            path = write_darkfield_dataset(
                output, n, options, workers=workers, progress=lambda k: progress.update(task, completed=k)
            )
        except FileExistsError as exc:
            raise ConfigError(str(exc)) from None
    out.print(f"Dataset: [bold]{path}[/] ({n} pairs)")
