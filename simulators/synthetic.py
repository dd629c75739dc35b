"""The built-in simulated STEM: a :class:`~instruments.driver.Driver` over :mod:`simulators.specimen`."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import AcquisitionAborted, BadRequest
from engine.protocols import Clock
from engine.types import JSON, Axis, Image, ImageAxis, InstrumentDescription, SpectralAxis, SpectrumBatch
from simulators.specimen import LossModel, Specimen, generate_specimen, haadf_image


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


class SyntheticMicroscope:
    """A seeded simulated STEM: HAADF image and low-loss EELS of a nanoparticle field.

    Args:
        specimen: the particles.
        options: calibration, noise and timing.
        rng: noise generator.
        clock: timestamps come from here.
    """

    def __init__(self, specimen: Specimen, options: SyntheticOptions, rng: np.random.Generator, clock: Clock):
        if options.energy_max_ev <= options.energy_min_ev:
            raise ValueError("energy_max_ev must exceed energy_min_ev")
        self.specimen, self.options, self._rng, self._clock = specimen, options, rng, clock
        scale = (options.energy_max_ev - options.energy_min_ev) / options.n_channels
        self._spectral = SpectralAxis("energy_loss", "eV", options.energy_min_ev + scale / 2, scale, options.n_channels)
        self._loss = LossModel(specimen, self._spectral.values(), options.beam_energy_kev)
        self._counts_per_unit = options.counts_per_s * options.acquisition_time_s * abs(scale)
        self._abort = threading.Event()
        self._busy = threading.Event()
        self._last_position: list[float] | None = None
        self._n_spectra = 0

    @classmethod
    def from_options(cls, options: SyntheticOptions, clock: Clock) -> SyntheticMicroscope:
        """Generate the specimen from ``options.seed`` and build the microscope."""
        rng = np.random.default_rng(options.seed)
        specimen = generate_specimen(
            rng,
            field_of_view_nm=options.field_of_view_nm,
            mean_radius_nm=options.mean_radius_nm,
            radius_spread=options.radius_spread,
            coverage=options.coverage,
            cluster_probability=options.cluster_probability,
        )
        return cls(specimen, options, rng, clock)

    def describe(self) -> InstrumentDescription:
        """Axes ``x``, ``y`` over the field of view (nm), the EELS energy axis (eV), channel ``haadf``."""
        fov = self.options.field_of_view_nm
        return InstrumentDescription(
            name="dualscope-synthetic-stem",
            axes=(Axis("x", "nm", 0.0, fov), Axis("y", "nm", 0.0, fov)),
            spectral_axis=self._spectral,
            image_channels=("haadf",),
            max_batch=1024,
            extra={
                "simulator": "simulators.synthetic",
                "beam_energy_kev": self.options.beam_energy_kev,
                "particles": int(self.specimen.radii_nm.size),
            },
        )

    def acquire_image(self, channel: str) -> Image:
        """A noisy HAADF frame ``(h, w)``; only channel ``haadf`` exists."""
        if channel != "haadf":
            raise BadRequest(f"unknown image channel {channel!r}; this microscope has 'haadf'")
        px = self.options.image_pixels
        step = self.options.field_of_view_nm / px
        data = haadf_image(self.specimen, px, self._rng, dose_counts=self.options.haadf_dose_counts)
        return Image("haadf", data, ImageAxis("y", "nm", step / 2, step), ImageAxis("x", "nm", step / 2, step))

    def measure(self, positions: NDArray[np.float64]) -> SpectrumBatch:
        """Spectra ``(n, c)`` at ``positions (n, 2)`` nm, with shot noise; waits the dwell per spectrum."""
        self._abort.clear()
        self._busy.set()
        try:
            opts = self.options
            expected = self._loss(positions) * self._counts_per_unit
            if opts.acquisition_time_s > 0 and self._abort.wait(opts.acquisition_time_s * positions.shape[0]):
                raise AcquisitionAborted("acquisition aborted by request")
            spectra = self._rng.poisson(expected).astype(np.float32)
            now = self._clock.time()
            times = now - opts.acquisition_time_s * np.arange(positions.shape[0] - 1, -1, -1, dtype=np.float64)
            self._last_position = positions[-1].tolist()
            self._n_spectra += positions.shape[0]
            return SpectrumBatch(spectra, times, opts.acquisition_time_s)
        finally:
            self._busy.clear()

    def status(self) -> Mapping[str, JSON]:
        """Probe position, spectra so far, whether acquiring."""
        return {"busy": self._busy.is_set(), "probe_position": self._last_position, "spectra_measured": self._n_spectra}

    def abort(self) -> None:
        """Interrupt the dwell in progress (thread-safe)."""
        self._abort.set()
