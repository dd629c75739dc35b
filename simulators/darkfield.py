"""The dark-field cluster twin: clusters of 1, 2, 3, 4+ gold spheres, SEM patches, CDA spectra.

Each cluster has an SEM-like image patch and a dark-field scattering spectrum (the lecture's
dual-VAE experiment: SEM images ↔ far-field spectra, label = number of particles).

The scattering spectrum is the unpolarised, normal-incidence scattering cross-section
(:func:`simulators.cda.dark_field_spectrum`) of the cluster in a homogeneous medium, with relative
Poisson noise; the SEM patch shows projected thickness with edge (secondary-electron) contrast,
probe blur and Poisson noise. Lengths nm, energies eV, cross-sections nm².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from engine.protocols import Clock
from engine.types import SpectralAxis
from simulators.cda import Cluster, dark_field_spectrum
from simulators.dielectric import MATERIALS
from simulators.stem_driver import SimulatedStem


class DarkFieldOptions(BaseModel):
    """Options of the dark-field twin and of its dataset generator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seed of the clusters and of the noise")
    material: str = Field("Au", pattern="^(Au|Ag)$")
    n_medium: float = Field(1.25, gt=0, description="refractive index of the surrounding medium")
    mean_radius_nm: float = Field(35.0, gt=0)
    radius_spread: float = Field(0.1, ge=0, description="sigma of ln(radius)")
    mean_gap_nm: float = Field(3.0, gt=0, description="mean surface gap between touching neighbours")
    max_particles: int = Field(6, ge=1, le=12, description="clusters hold 1..max_particles spheres; label 4 = 4+")
    patch_nm: float = Field(400.0, gt=0, description="side of one cluster's image patch")
    patch_pixels: int = Field(64, ge=8, le=512)
    n_channels: int = Field(200, ge=8, le=4096)
    energy_min_ev: float = Field(1.5, gt=0)
    energy_max_ev: float = Field(2.75, gt=0)
    counts_per_s: float = Field(2.0e5, gt=0, description="detector counts per second at 1e5 nm² of scattering")
    sem_dose_counts: float = Field(100.0, gt=0)
    grid: int = Field(6, ge=1, le=64, description="clusters per side of the driver's field of view")
    acquisition_time_s: float = Field(0.01, ge=0, description="exposure per spectrum (the driver really waits)")


@dataclass(frozen=True)
class ClusterSample:
    """One cluster: geometry ``(n, 3)`` and radii ``(n,)`` in nm, centred on the origin."""

    centres_nm: NDArray[np.float64]
    radii_nm: NDArray[np.float64]

    @property
    def label(self) -> int:
        """Number of particles, with 4 standing for 4 or more."""
        return min(int(self.radii_nm.size), 4)


def random_cluster(rng: np.random.Generator, n: int, options: DarkFieldOptions) -> ClusterSample:
    """Grow a planar cluster of ``n`` spheres, each touching (with a small gap) a random earlier one."""
    for _ in range(200):
        radii = options.mean_radius_nm * np.exp(options.radius_spread * rng.standard_normal(n))
        centres = [np.zeros(2)]
        for k in range(1, n):
            for _attempt in range(50):
                j = int(rng.integers(k))
                gap = 0.5 + rng.exponential(options.mean_gap_nm)
                angle = rng.uniform(0, 2 * np.pi)
                c = centres[j] + (radii[j] + radii[k] + gap) * np.array([np.cos(angle), np.sin(angle)])
                d = np.linalg.norm(np.asarray(centres) - c, axis=1) - radii[:k] - radii[k]
                if d.min() >= 0.5:
                    centres.append(c)
                    break
            else:
                break
        if len(centres) == n:
            xy = np.asarray(centres) - np.mean(centres, axis=0)
            return ClusterSample(np.column_stack([xy, np.zeros(n)]), radii)
    raise RuntimeError(f"could not grow a cluster of {n} spheres")


def cluster_spectrum(sample: ClusterSample, energy_ev: NDArray[np.float64], options: DarkFieldOptions) -> NDArray:
    """Noise-free dark-field scattering cross-section ``(E,)`` in nm²."""
    material = MATERIALS[options.material]
    cluster = Cluster(sample.centres_nm, sample.radii_nm, [material] * sample.radii_nm.size, options.n_medium**2)
    return dark_field_spectrum(cluster, energy_ev)


def sem_patch(sample: ClusterSample, options: DarkFieldOptions, rng: np.random.Generator) -> NDArray:
    """An SEM-like patch ``(p, p)`` centred on the cluster: thickness + edge contrast, blur, Poisson noise."""
    px, size = options.patch_pixels, options.patch_nm
    coords = (np.arange(px) + 0.5) * size / px - size / 2
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    t = np.zeros((px, px))
    for (cx, cy, _), r in zip(sample.centres_nm, sample.radii_nm, strict=True):
        t += np.sqrt(np.clip(r * r - (xx - cx) ** 2 - (yy - cy) ** 2, 0, None))
    t /= 2 * options.mean_radius_nm
    edges = np.hypot(*np.gradient(t))
    signal = 0.1 + 0.6 * t + 4.0 * edges
    blurred = ndimage.gaussian_filter(signal, 0.8)
    return np.asarray(rng.poisson(options.sem_dose_counts * blurred), dtype=np.float32)


def spectral_axis(options: DarkFieldOptions) -> SpectralAxis:
    """Photon-energy axis of the spectra."""
    scale = (options.energy_max_ev - options.energy_min_ev) / options.n_channels
    return SpectralAxis("photon_energy", "eV", options.energy_min_ev + scale / 2, scale, options.n_channels)


def noisy(spectrum: NDArray, options: DarkFieldOptions, rng: np.random.Generator) -> NDArray:
    """Counts in one exposure: ``counts_per_s × acquisition_time_s`` per 1e5 nm², with Poisson noise."""
    expected = np.clip(spectrum, 0, None) * options.counts_per_s / 1e5 * options.acquisition_time_s
    return np.asarray(rng.poisson(expected), dtype=np.float32)


def darkfield_twin(options: DarkFieldOptions, clock: Clock) -> SimulatedStem:
    """A field of ``grid × grid`` clusters; ``measure`` returns the spectrum of the cluster under the spot."""
    rng = np.random.default_rng(options.seed)
    axis = spectral_axis(options)
    energy = axis.values()
    g = options.grid
    samples = [random_cluster(rng, int(rng.integers(1, options.max_particles + 1)), options) for _ in range(g * g)]
    spectra = np.stack([cluster_spectrum(s, energy, options) for s in samples])
    fov = g * options.patch_nm
    centres = (np.arange(g) + 0.5) * options.patch_nm
    spot_nm = 0.3 * options.patch_nm

    def image(gen: np.random.Generator, offset_nm: NDArray[np.float64]) -> NDArray:
        rows = [np.hstack([sem_patch(samples[i * g + j], options, gen) for j in range(g)]) for i in range(g)]
        frame = np.vstack(rows)
        if not np.any(offset_nm):
            return frame
        px = frame.shape[1] / fov  # pixels per nm; shift (rows, cols) = (y, x)
        return np.asarray(ndimage.shift(frame, (offset_nm[1] * px, offset_nm[0] * px), order=1, mode="nearest"))

    def counts_per_second(positions: NDArray[np.float64]) -> NDArray[np.float64]:
        col = np.clip((positions[:, 0] // options.patch_nm).astype(int), 0, g - 1)
        row = np.clip((positions[:, 1] // options.patch_nm).astype(int), 0, g - 1)
        off = np.hypot(positions[:, 0] - centres[col], positions[:, 1] - centres[row])
        weight = np.exp(-0.5 * (off / spot_nm) ** 2)  # Gaussian illumination spot
        out = spectra[row * g + col] * weight[:, None] * options.counts_per_s / 1e5
        return np.asarray(out, dtype=np.float64)

    return SimulatedStem(
        name="dualscope-darkfield-twin",
        field_of_view_nm=fov,
        image_channel="sem",
        image_model=image,
        spectrum_model=counts_per_second,
        spectral_axis=axis,
        dwell_s=options.acquisition_time_s,
        rng=rng,
        clock=clock,
        extra={
            "simulator": "simulators.darkfield",
            "material": options.material,
            "labels": [s.label for s in samples],
            "cluster_grid": g,
        },
    )


@dataclass(frozen=True)
class DarkFieldBatch:
    """A batch of ``n`` (image, spectrum) pairs.

    Images ``(n, p, p)``, noisy spectra ``(n, c)``, clean cross-sections ``(n, c)``, labels ``(n,)``,
    particle counts ``(n,)``, centres ``(n, k, 3)`` and radii ``(n, k)`` NaN-padded.
    """

    images: NDArray[np.float32]
    spectra: NDArray[np.float32]
    cross_sections: NDArray[np.float32]
    labels: NDArray[np.int64]
    n_particles: NDArray[np.int64]
    centres_nm: NDArray[np.float64]
    radii_nm: NDArray[np.float64]


def darkfield_batch(n: int, options: DarkFieldOptions, rng: np.random.Generator) -> DarkFieldBatch:
    """Generate ``n`` (image, spectrum) pairs with particle counts uniform in 1..max_particles."""
    energy = spectral_axis(options).values()
    k = options.max_particles
    images = np.empty((n, options.patch_pixels, options.patch_pixels), np.float32)
    clean = np.empty((n, energy.size), np.float32)
    counts = np.empty(n, np.int64)
    centres = np.full((n, k, 3), np.nan)
    radii = np.full((n, k), np.nan)
    for i in range(n):
        sample = random_cluster(rng, int(rng.integers(1, k + 1)), options)
        m = sample.radii_nm.size
        counts[i], centres[i, :m], radii[i, :m] = m, sample.centres_nm, sample.radii_nm
        clean[i] = cluster_spectrum(sample, energy, options)
        images[i] = sem_patch(sample, options, rng)
    spectra = noisy(clean, options, rng)
    return DarkFieldBatch(images, spectra, clean, np.minimum(counts, 4), counts, centres, radii)
