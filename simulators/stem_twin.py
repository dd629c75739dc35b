"""The STEM-EELS digital twin: a doped-oxide nanocrystal monolayer whose spectra come from the CDA.

Every spectrum is computed on demand from the coupled-dipole model of the whole field
(:class:`simulators.cda.EelsModel`), then broadened by the spectrometer's energy resolution, put on
the zero-loss-peak tail and scaled to counts by beam current × dwell × channel width; the detector
(:class:`simulators.detector.Detector`) shifts each spectrum's energy axis by a random jitter,
scales it by a random gain, draws Poisson counts and zeroes its dead channels. Particles are
Sn-doped In₂O₃ (ITO) with a per-particle tin fraction, so size, doping and neighbours all shape the
mid-infrared plasmon, as in the autonomous STEM-EELS work of Roccapriore, Kalinin & Ziatdinov on
doped-oxide nanocrystal monolayers. The beam is kept ``clearance`` nm outside each sphere (the
dipole picture holds only for aloof trajectories).

By default the property is set by local structure: gaps between close neighbours (the coupled
modes red-shift and strengthen as the gap closes), particle size, the island's edge and vacancies,
dimers and chains; the tin fraction only scatters a little about its mean, a hidden variation the
image cannot show. ``StemTwinOptions.first_twin()`` is the twin of the first round, whose doping
rises across the field (so position alone predicts much of the property) and whose detector adds
shot noise only.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from engine.errors import ConfigError
from engine.protocols import Clock
from engine.types import SpectralAxis
from simulators.cda import Cluster, EelsModel
from simulators.detector import Detector
from simulators.dielectric import ito
from simulators.drift import DriftOptions, SpecimenDrift
from simulators.monolayer import Monolayer, generate_monolayer
from simulators.specimen import Specimen, haadf_image
from simulators.stem_driver import SimulatedStem

ELECTRONS_PER_PA_S = 6.241509074e6


class StemTwinOptions(BaseModel):
    """Options of the STEM-EELS twin. Lengths nm, energies eV."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seed of the specimen and of the noise")
    field_of_view_nm: float = Field(100.0, gt=10, description="side of the square field of view")
    image_pixels: int = Field(128, ge=8, le=4096)
    mean_radius_nm: float = Field(5.0, gt=0)
    radius_spread: float = Field(0.08, ge=0, description="sigma of ln(radius)")
    gap_nm: float = Field(1.5, gt=0, description="surface gap in the lattice, dimers and chains")
    island_fraction: float = Field(0.6, ge=0, le=1, description="share of the width covered by the monolayer")
    vacancy_fraction: float = Field(0.1, ge=0, lt=1)
    n_dimers: int = Field(3, ge=0)
    n_chains: int = Field(2, ge=0)
    sn_min: float = Field(0.03, ge=0, le=0.3, description="lowest Sn fraction of a particle")
    sn_max: float = Field(0.12, ge=0, le=0.3, description="highest Sn fraction of a particle")
    doping_gradient: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the Sn range that follows a linear trend across the field (0: none; 1: the "
        "whole range, as in the first twin); the rest is hidden per-particle spread the image cannot show",
    )
    sn_spread: float = Field(
        0.04, ge=0, le=1, description="sigma of each particle's hidden Sn deviation, as a share of the Sn range"
    )
    n_channels: int = Field(300, ge=8, le=4096)
    energy_min_ev: float = Field(0.15, gt=0)
    energy_max_ev: float = Field(1.35, gt=0)
    resolution_ev: float = Field(0.03, ge=0, description="spectrometer FWHM")
    beam_energy_kev: float = Field(100.0, gt=0)
    beam_current_pa: float = Field(200.0, gt=0)
    collection_efficiency: float = Field(0.5, gt=0, le=1)
    zlp_tail_per_ev: float = Field(
        2.0e-3, ge=0, description="zero-loss tail probability per eV at 0.3 eV (falls as E^-3)"
    )
    energy_jitter_ev: float = Field(
        0.01, ge=0, description="sigma of each spectrum's energy-axis shift (zero-loss peak drift)"
    )
    gain_noise: float = Field(0.03, ge=0, description="sigma of the log of each spectrum's gain")
    dead_channels: tuple[int, ...] = Field((), description="spectrometer channels that always read 0")
    acquisition_time_s: float = Field(0.01, ge=0, description="dwell per spectrum; the driver really waits this long")
    haadf_dose_counts: float = Field(200.0, gt=0)
    drift: DriftOptions = Field(
        default_factory=DriftOptions, description="specimen drift in the scan frame (off by default)"
    )
    clearance_nm: float = Field(0.5, ge=0)

    @classmethod
    def first_twin(cls, **options: object) -> StemTwinOptions:
        """The first round's twin: doping rising across the field, shot noise only (benchmark records before 22)."""
        first: dict[str, object] = {
            "doping_gradient": 1.0,
            "sn_spread": 0.15,
            "energy_jitter_ev": 0.0,
            "gain_noise": 0.0,
        }
        return cls.model_validate({**first, **options})


def twin_specimen(options: StemTwinOptions, rng: np.random.Generator) -> tuple[Monolayer, np.ndarray]:
    """The monolayer and each particle's Sn fraction ``(p,)``.

    Each particle's Sn fraction is ``sn_min + (sn_max − sn_min) · clip(g t + (1 − g) / 2 + s ε, 0, 1)``
    with ``t ∈ [0, 1]`` its place along a random direction across the field, ``g`` the
    ``doping_gradient``, ``s`` the ``sn_spread`` and ``ε`` a standard normal draw: by default
    (``g = 0``) no trend, only the hidden per-particle spread. The draws are the same for every
    ``g``, so one seed gives one geometry.
    """
    layer = generate_monolayer(
        rng,
        field_of_view_nm=options.field_of_view_nm,
        mean_radius_nm=options.mean_radius_nm,
        radius_spread=options.radius_spread,
        gap_nm=options.gap_nm,
        island_fraction=options.island_fraction,
        vacancy_fraction=options.vacancy_fraction,
        n_dimers=options.n_dimers,
        n_chains=options.n_chains,
    )
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    t = (layer.centres_nm @ direction) / options.field_of_view_nm
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    g = options.doping_gradient
    share = g * t + (1.0 - g) / 2 + options.sn_spread * rng.standard_normal(t.size)
    sn = options.sn_min + (options.sn_max - options.sn_min) * np.clip(share, 0, 1)
    return layer, sn


def stem_twin(options: StemTwinOptions, clock: Clock) -> SimulatedStem:
    """Build the twin: specimen from ``options.seed``, CDA solved once, spectra on demand."""
    if options.energy_max_ev <= options.energy_min_ev or options.sn_max < options.sn_min:
        raise ConfigError("need energy_min_ev < energy_max_ev and sn_min <= sn_max")
    bad = [c for c in options.dead_channels if not 0 <= c < options.n_channels]
    if bad:
        raise ConfigError(f"dead_channels {bad} are not channels of the {options.n_channels}-channel spectrometer")
    rng = np.random.default_rng(options.seed)
    layer, sn = twin_specimen(options, rng)
    scale = (options.energy_max_ev - options.energy_min_ev) / options.n_channels
    spectral = SpectralAxis("energy_loss", "eV", options.energy_min_ev + scale / 2, scale, options.n_channels)
    energy = spectral.values()
    specimen = Specimen(layer.centres_nm, layer.radii_nm, options.field_of_view_nm)
    positions = np.column_stack([layer.centres_nm, np.zeros(len(layer.radii_nm))])
    cluster = Cluster(positions, layer.radii_nm, [ito(float(s)) for s in sn])
    model = EelsModel(cluster, energy, options.beam_energy_kev, clearance_nm=options.clearance_nm)
    electrons_per_s = options.beam_current_pa * ELECTRONS_PER_PA_S * options.collection_efficiency
    tail = options.zlp_tail_per_ev * (energy / 0.3) ** -3
    sigma_channels = options.resolution_ev / 2.3548 / scale

    def counts_per_second(probe_nm: np.ndarray) -> np.ndarray:
        loss = model.loss(probe_nm) + tail[None, :]
        if sigma_channels > 0:
            loss = ndimage.gaussian_filter1d(loss, sigma_channels, axis=1, mode="nearest")
        return np.asarray(loss * scale * electrons_per_s, dtype=np.float64)

    return SimulatedStem(
        name="dualscope-stem-twin",
        field_of_view_nm=options.field_of_view_nm,
        image_channel="haadf",
        image_model=lambda g, d: haadf_image(
            specimen.shifted(d), options.image_pixels, g, dose_counts=options.haadf_dose_counts
        ),
        spectrum_model=counts_per_second,
        spectral_axis=spectral,
        dwell_s=options.acquisition_time_s,
        read_out=Detector(energy, options.energy_jitter_ev, options.gain_noise, options.dead_channels).read,
        rng=rng,
        clock=clock,
        drift=SpecimenDrift(options.drift, clock) if options.drift.moving else None,
        extra={
            "simulator": "simulators.stem_twin",
            "material": "Sn-doped In2O3",
            "sn_fraction_range": [float(sn.min()), float(sn.max())],
            "beam_energy_kev": options.beam_energy_kev,
            "particles": int(layer.radii_nm.size),
            "doping_gradient": options.doping_gradient,
            "dead_channels": list(options.dead_channels),
        },
    )
