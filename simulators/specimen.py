"""A synthetic nanoparticle specimen: geometry, HAADF image formation and low-loss EELS.

This is dualscope's *simple* simulator, honest about being phenomenological.
Its job is to make the autonomous loop meaningful: the local structure (particle
size and the gap to the nearest neighbour) determines the spectrum, so that
structure predicts property. The physics-based coupled-dipole simulators live in
their own modules.

Model, per particle ``i`` of radius ``R_i`` with surface gap ``g_i`` to its nearest neighbour:

* Dipolar surface-plasmon energy ``E_i = E_0 − κ (R_i / 10 nm)² − ΔE_i`` (retardation
  red-shifts bigger particles), with the near-field coupling red shift of the
  "plasmon ruler" (Jain, Huang & El-Sayed, Nano Lett. 7, 2080 (2007)):
  ``ΔE_i / E_0 = 0.18 exp(−(g_i / 2R_i) / 0.23)``.
* Line width ``Γ_i = Γ_0 + Γ_rad (R_i / 10 nm)³`` (radiative damping grows with volume).
* Loss probability for a beam at impact parameter ``b`` from the particle centre,
  for a small sphere (García de Abajo, Rev. Mod. Phys. 82, 209 (2010), eq. 46):
  ``Γ(E) ∝ E² [K_1²(E b / ħvγ) + K_0²(E b / ħvγ) / γ²] R_i³ L_i(E)``, with ``L_i`` a
  Lorentzian at ``E_i`` and ``b`` clamped to ``R_i + 0.5 nm`` for penetrating beams; the
  Bessel factor is evaluated at ``E_i`` (the lines are narrow).
* Penetrating beams add the bulk plasmon (3.8 eV, 0.6 eV wide) in proportion to the
  projected thickness ``2 √(R_i² − b²)``; every spectrum sits on the zero-loss tail ``∝ E⁻³``.
* HAADF intensity is proportional to projected thickness, on a thin support film,
  blurred by the probe and with Poisson noise.

Lengths are in nm, energies in eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, special

from engine.errors import ConfigError

HBAR_EV_S = 6.582119569e-16
C_M_S = 299_792_458.0
ELECTRON_REST_KEV = 510.99895

E0_EV = 3.2
KAPPA_EV = 0.12
GAMMA0_EV = 0.12
GAMMA_RAD_EV = 0.05
BULK_EV, BULK_WIDTH_EV = 3.8, 0.6


@dataclass(frozen=True)
class Specimen:
    """Spherical particles on a thin film.

    Attributes:
        centres_nm: shape ``(p, 2)``, particle centres ``(x, y)`` in nm.
        radii_nm: shape ``(p,)``.
        field_of_view_nm: side of the square field of view.
    """

    centres_nm: NDArray[np.float64]
    radii_nm: NDArray[np.float64]
    field_of_view_nm: float

    def shifted(self, offset_nm: NDArray[np.float64]) -> Specimen:
        """The same particles displaced by ``offset_nm`` ``(2,)`` ``(x, y)`` (a drifted specimen in the scan frame)."""
        if not np.any(offset_nm):
            return self
        return Specimen(self.centres_nm + np.asarray(offset_nm)[None, :], self.radii_nm, self.field_of_view_nm)


def generate_specimen(
    rng: np.random.Generator,
    *,
    field_of_view_nm: float,
    mean_radius_nm: float,
    radius_spread: float,
    coverage: float,
    cluster_probability: float,
    min_gap_nm: float = 0.5,
    max_tries: int = 20_000,
) -> Specimen:
    """Place non-overlapping spheres by random sequential addition.

    With probability ``cluster_probability`` a new particle is placed next to an
    existing one with an exponentially distributed gap (mean 2 nm), which makes
    dimers and short chains whose coupled modes red-shift.

    Args:
        rng: the random generator (seeded by the caller).
        field_of_view_nm: side of the square field.
        mean_radius_nm: median radius; radii are log-normal with ``radius_spread`` (σ of ln R).
        coverage: target projected area fraction, ``0 < coverage < 0.5``.
        cluster_probability: chance that a particle is placed against a neighbour.
        min_gap_nm: smallest surface-to-surface gap.
        max_tries: placement attempts before giving up on the coverage.
    """
    if not 0 < coverage < 0.5:
        raise ConfigError("coverage must be in (0, 0.5)")
    centres: list[NDArray[np.float64]] = []
    radii: list[float] = []
    area, target = 0.0, coverage * field_of_view_nm**2
    for _ in range(max_tries):
        if area >= target:
            break
        r = float(mean_radius_nm * np.exp(radius_spread * rng.standard_normal()))
        r = min(max(r, 0.3 * mean_radius_nm), 3 * mean_radius_nm)
        if centres and rng.random() < cluster_probability:
            j = int(rng.integers(len(centres)))
            gap = min_gap_nm + rng.exponential(2.0)
            angle = rng.uniform(0, 2 * np.pi)
            c = centres[j] + (radii[j] + r + gap) * np.array([np.cos(angle), np.sin(angle)])
        else:
            c = rng.uniform(0, field_of_view_nm, size=2)
        if np.any(c < r) or np.any(c > field_of_view_nm - r):
            continue
        if centres:
            dist = np.linalg.norm(np.asarray(centres) - c, axis=1) - np.asarray(radii) - r
            if dist.min() < min_gap_nm:
                continue
        centres.append(c)
        radii.append(r)
        area += np.pi * r * r
    if not centres:
        raise ConfigError("could not place any particle; check the field of view and radii")
    return Specimen(np.asarray(centres), np.asarray(radii), field_of_view_nm)


def nearest_gaps_nm(specimen: Specimen) -> NDArray[np.float64]:
    """Surface-to-surface gap of each particle to its nearest neighbour ``(p,)`` (inf if alone)."""
    c, r = specimen.centres_nm, specimen.radii_nm
    d = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=-1) - r[:, None] - r[None, :]
    np.fill_diagonal(d, np.inf)
    return np.asarray(d.min(axis=1), dtype=np.float64)


def mode_energies_ev(radii_nm: NDArray[np.float64], gaps_nm: NDArray[np.float64]) -> NDArray[np.float64]:
    """Dipolar plasmon energy ``(p,)`` from radius and nearest gap (see module docstring)."""
    coupling = 0.18 * np.exp(-(gaps_nm / (2 * radii_nm)) / 0.23)
    return E0_EV - KAPPA_EV * (radii_nm / 10.0) ** 2 - E0_EV * coupling


def mode_widths_ev(radii_nm: NDArray[np.float64]) -> NDArray[np.float64]:
    """Line width (FWHM) ``(p,)`` from radius."""
    return GAMMA0_EV + GAMMA_RAD_EV * (radii_nm / 10.0) ** 3


def beam_velocity(beam_energy_kev: float) -> tuple[float, float]:
    """Relativistic electron speed (m/s) and Lorentz factor γ for a beam of ``beam_energy_kev``."""
    gamma = 1.0 + beam_energy_kev / ELECTRON_REST_KEV
    return C_M_S * np.sqrt(1.0 - 1.0 / gamma**2), gamma


def lorentzian(energy_ev: NDArray[np.float64], centre: NDArray[np.float64], fwhm: NDArray[np.float64]) -> NDArray:
    """Area-normalised Lorentzians, shape ``(p, c)`` for centres ``(p,)`` over ``energy_ev (c,)``."""
    half = fwhm[:, None] / 2
    return (half / np.pi) / ((energy_ev[None, :] - centre[:, None]) ** 2 + half**2)


class LossModel:
    """Noise-free relative loss probability of a specimen on a fixed energy axis.

    Everything that does not depend on the beam position (mode energies, widths,
    line shapes) is computed once here, so each spectrum costs one ``(n, p) @ (p, c)``
    product.

    Args:
        specimen: the particles.
        energy_ev: channel centres ``(c,)`` in eV (positive losses).
        beam_energy_kev: primary beam energy.
    """

    def __init__(self, specimen: Specimen, energy_ev: NDArray[np.float64], beam_energy_kev: float):
        self.specimen = specimen
        r = specimen.radii_nm
        self.mode_ev = mode_energies_ev(r, nearest_gaps_nm(specimen))
        v, gamma = beam_velocity(beam_energy_kev)
        self.gamma = gamma
        self._q_per_nm = self.mode_ev * 1e-9 / (HBAR_EV_S * v * gamma)  # (p,) x = q b
        self._strength = self.mode_ev**2 * (r / 10.0) ** 3  # (p,)
        self._lines = lorentzian(energy_ev, self.mode_ev, mode_widths_ev(r))  # (p, c)
        self._bulk = lorentzian(energy_ev, np.array([BULK_EV]), np.array([BULK_WIDTH_EV]))[0] / 20.0  # (c,)
        self._tail = 0.05 * np.clip(energy_ev, 0.2, None) ** -3  # (c,)

    def __call__(self, positions_nm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Spectra ``(n, c)`` for beam positions ``(n, 2)`` given as ``(x, y)`` in nm."""
        r = self.specimen.radii_nm
        b = np.linalg.norm(positions_nm[:, None, :] - self.specimen.centres_nm[None, :, :], axis=-1)  # (n, p)
        x = self._q_per_nm[None, :] * np.maximum(b, r[None, :] + 0.5)
        weight = self._strength[None, :] * (special.k1(x) ** 2 + special.k0(x) ** 2 / self.gamma**2)
        thickness = 2 * np.sqrt(np.clip(r[None, :] ** 2 - b**2, 0, None)).sum(axis=1)  # (n,) nm
        out = weight @ self._lines + thickness[:, None] * self._bulk[None, :] + self._tail[None, :]
        return np.asarray(out, dtype=np.float64)


def loss_spectra(
    specimen: Specimen, positions_nm: NDArray[np.float64], energy_ev: NDArray[np.float64], beam_energy_kev: float
) -> NDArray[np.float64]:
    """Noise-free relative loss probability per channel, shape ``(n, c)`` (see :class:`LossModel`).

    Args:
        specimen: the particles.
        positions_nm: beam positions ``(n, 2)`` as ``(x, y)`` in nm.
        energy_ev: channel centres ``(c,)`` in eV (positive losses).
        beam_energy_kev: primary beam energy.
    """
    return LossModel(specimen, energy_ev, beam_energy_kev)(positions_nm)


def projected_thickness_nm(specimen: Specimen, pixels: int) -> NDArray[np.float64]:
    """Projected particle thickness on a ``pixels × pixels`` grid over the field, shape ``(h, w)``."""
    step = specimen.field_of_view_nm / pixels
    coords = (np.arange(pixels) + 0.5) * step
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    t = np.zeros((pixels, pixels))
    for (cx, cy), r in zip(specimen.centres_nm, specimen.radii_nm, strict=True):
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        t += 2 * np.sqrt(np.clip(r * r - d2, 0, None))
    return t


def haadf_image(
    specimen: Specimen, pixels: int, rng: np.random.Generator, *, dose_counts: float, probe_sigma_nm: float = 0.8
) -> NDArray[np.float32]:
    """A noisy HAADF image ``(h, w)`` in detector counts.

    Intensity is ``dose_counts × (0.05 + t / 2R_max)`` with ``t`` the projected
    thickness, blurred by a Gaussian probe and drawn from a Poisson distribution.
    """
    t = projected_thickness_nm(specimen, pixels)
    signal = 0.05 + t / (2 * specimen.radii_nm.max())
    sigma_px = probe_sigma_nm * pixels / specimen.field_of_view_nm
    expected = dose_counts * ndimage.gaussian_filter(signal, sigma_px)
    return np.asarray(rng.poisson(expected), dtype=np.float32)
