"""Drivers that ``dualscope serve`` and ``mode = "local"`` can build, by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.config import validate_model
from engine.errors import ConfigError
from engine.io import import_file
from engine.protocols import Clock
from instruments.driver import Driver
from instruments.drivers.nion_options import NionOptions
from instruments.replay import ReplayDriver
from simulators.darkfield import DarkFieldOptions, darkfield_twin
from simulators.design_sim import ClusterSimOptions, design_cda_driver
from simulators.stem_twin import StemTwinOptions, stem_twin
from simulators.synthetic import SyntheticOptions, synthetic_microscope


@dataclass(frozen=True)
class DriverEntry:
    """A driver's options model, its builder and a one-line summary for ``--help``."""

    options: type[BaseModel]
    build: Callable[[Any, Clock], Driver]
    summary: str


class ReplayOptions(BaseModel):
    """Options of the replay driver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(description="recorded file or dataset to serve (.h5, .npz, .emd, .dm3/.dm4, .zarr)")
    tolerance: float | None = Field(
        None, gt=0, description="largest distance to a recorded point (default: half the spacing)"
    )
    acquisition_time_s: float | None = Field(
        None, ge=0, description="dwell per spectrum (default: the recorded one, or none)"
    )
    noise: Literal["none", "poisson"] = Field("none", description="resample counts with Poisson noise")
    seed: int = Field(0, description="seed of the added noise")
    channel: str | None = Field(None, description="a Nanonis grid's channel to serve (default: its first)")


def replay_driver(options: ReplayOptions, clock: Clock) -> Driver:
    """Import the dataset and serve it."""
    return ReplayDriver(
        import_file(Path(options.dataset), options.channel),
        clock,
        np.random.default_rng(options.seed),
        tolerance=options.tolerance,
        acquisition_time_s=options.acquisition_time_s,
        noise=options.noise,
    )


def nion_driver(options: NionOptions, clock: Clock) -> Driver:
    """Start Nion's instrumentation stack (with its simulated STEM when ``usim``) and drive it."""
    from instruments.drivers.nion_usim import open_nion  # needs the 'nion' extra

    return open_nion(options, clock)


DRIVERS: dict[str, DriverEntry] = {
    "synthetic": DriverEntry(
        SyntheticOptions,
        synthetic_microscope,
        "simple phenomenological STEM: nanoparticle HAADF image and low-loss EELS (simulators.synthetic)",
    ),
    "stem-twin": DriverEntry(
        StemTwinOptions,
        stem_twin,
        "STEM-EELS twin: ITO nanocrystal monolayer, spectra from the coupled-dipole model (simulators.stem_twin)",
    ),
    "replay": DriverEntry(
        ReplayOptions,
        replay_driver,
        "recorded data served like a microscope: nearest recorded spectrum within a tolerance (instruments.replay)",
    ),
    "darkfield-twin": DriverEntry(
        DarkFieldOptions,
        darkfield_twin,
        "dark-field twin: grid of 1-6 sphere Au clusters, SEM image, CDA scattering spectra (simulators.darkfield)",
    ),
    "design-cda": DriverEntry(
        ClusterSimOptions,
        design_cda_driver,
        "inverse-design simulator: a design in [0, 1]^6 (cluster arrangement, size, gap, material) -> CDA "
        "dark-field spectrum; `dualscope design` runs a pool of these (simulators.design_sim)",
    ),
    "nion": DriverEntry(
        NionOptions,
        nion_driver,
        "a Nion STEM through the Nion Swift instrumentation API, or Nion's simulated STEM with usim = true "
        "(instruments.drivers.nion; extra 'nion')",
    ),
}


def driver_options(name: str, options: Mapping[str, Any]) -> BaseModel:
    """Validate ``options`` with driver ``name``'s model; errors name the key and what is allowed."""
    entry = DRIVERS.get(name)
    if entry is None:
        raise ConfigError(f"unknown driver {name!r}; available: {', '.join(sorted(DRIVERS))}")
    return validate_model(dict(options), entry.options, f"options of driver {name!r}")


_IMAGE_CHANNELS: dict[str, tuple[str, ...]] = {
    "synthetic": ("haadf",),
    "stem-twin": ("haadf",),
    "darkfield-twin": ("sem",),
    "design-cda": (),
}
"""Structural image channels of the simulators, known without starting them (a replay's and a
Nion's depend on the recording and the options; ``execute_run`` checks those once described)."""


def check_image_channel(name: str, options: Mapping[str, Any], channel: str) -> None:
    """Refuse an ``image_channel`` the driver cannot acquire, before anything is started.

    Raises:
        ConfigError: the driver is unknown, its options are invalid, or it has no such channel.
    """
    validated = driver_options(name, options)
    known = _IMAGE_CHANNELS.get(name)
    if isinstance(validated, NionOptions):
        known = (validated.image_channel.lower(),)
    if known is not None and channel not in known:
        has = ", ".join(map(repr, known)) or "no structural image"
        raise ConfigError(f"instrument.image_channel = {channel!r}, but driver {name!r} acquires {has}")


def build_driver(name: str, options: Mapping[str, Any], clock: Clock) -> Driver:
    """Build driver ``name`` from validated ``options``."""
    validated = driver_options(name, options)  # names an unknown driver and what is available
    return DRIVERS[name].build(validated, clock)
