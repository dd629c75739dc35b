"""The built-in simple simulator: the phenomenological specimen of :mod:`simulators.specimen` on a STEM."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ConfigError
from engine.protocols import Clock
from engine.types import SpectralAxis
from simulators.drift import DriftOptions, SpecimenDrift
from simulators.specimen import LossModel, generate_specimen, haadf_image
from simulators.stem_driver import SimulatedStem


class SyntheticOptions(BaseModel):
    """Options of the synthetic microscope (the ``[instrument.options]`` table). Lengths nm, energies eV."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seed of the specimen and of the noise")
    field_of_view_nm: float = Field(200.0, gt=0)
    image_pixels: int = Field(128, ge=8, le=4096)
    n_channels: int = Field(256, ge=8, le=16384)
    energy_min_ev: float = Field(0.5, gt=0)
    energy_max_ev: float = Field(4.5, gt=0)
    acquisition_time_s: float = Field(0.01, ge=0, description="dwell per spectrum; the driver really waits this long")
    counts_per_s: float = Field(2.0e4, gt=0, description="beam current expressed as spectrum counts per second")
    beam_energy_kev: float = Field(100.0, gt=0)
    mean_radius_nm: float = Field(8.0, gt=0)
    radius_spread: float = Field(0.3, ge=0, description="sigma of ln(radius)")
    coverage: float = Field(0.18, gt=0, lt=0.5, description="projected area fraction covered by particles")
    cluster_probability: float = Field(0.5, ge=0, le=1)
    haadf_dose_counts: float = Field(200.0, gt=0, description="counts per pixel on a particle's full thickness")
    drift: DriftOptions = Field(
        default_factory=DriftOptions, description="specimen drift in the scan frame (off by default)"
    )


def synthetic_microscope(options: SyntheticOptions, clock: Clock) -> SimulatedStem:
    """Generate the specimen from ``options.seed`` and build the simulated STEM."""
    if options.energy_max_ev <= options.energy_min_ev:
        raise ConfigError("energy_max_ev must exceed energy_min_ev")
    rng = np.random.default_rng(options.seed)
    specimen = generate_specimen(
        rng,
        field_of_view_nm=options.field_of_view_nm,
        mean_radius_nm=options.mean_radius_nm,
        radius_spread=options.radius_spread,
        coverage=options.coverage,
        cluster_probability=options.cluster_probability,
    )
    scale = (options.energy_max_ev - options.energy_min_ev) / options.n_channels
    spectral = SpectralAxis("energy_loss", "eV", options.energy_min_ev + scale / 2, scale, options.n_channels)
    loss = LossModel(specimen, spectral.values(), options.beam_energy_kev)
    per_second = options.counts_per_s * abs(scale)
    return SimulatedStem(
        name="dualscope-synthetic-stem",
        field_of_view_nm=options.field_of_view_nm,
        image_channel="haadf",
        image_model=lambda g, d: haadf_image(
            specimen.shifted(d), options.image_pixels, g, dose_counts=options.haadf_dose_counts
        ),
        spectrum_model=lambda positions: loss(positions) * per_second,
        spectral_axis=spectral,
        dwell_s=options.acquisition_time_s,
        rng=rng,
        clock=clock,
        drift=SpecimenDrift(options.drift, clock) if options.drift.moving else None,
        extra={
            "simulator": "simulators.synthetic",
            "beam_energy_kev": options.beam_energy_kev,
            "particles": int(specimen.radii_nm.size),
        },
    )
