"""The synthetic specimen: physical trends, a slow reference for the vectorised spectra, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from engine.clock import SystemClock
from simulators.specimen import (
    HBAR_EV_S,
    Specimen,
    beam_velocity,
    generate_specimen,
    haadf_image,
    loss_spectra,
    mode_energies_ev,
    mode_widths_ev,
    nearest_gaps_nm,
)
from simulators.synthetic import SyntheticOptions, synthetic_microscope


def test_beam_velocity_100kev() -> None:
    v, gamma = beam_velocity(100.0)
    assert v / 299_792_458.0 == pytest.approx(0.5482, abs=1e-4)
    assert gamma == pytest.approx(1.1957, abs=1e-4)


def test_coupling_red_shift_grows_monotonically_as_the_gap_closes() -> None:
    gaps = np.linspace(20, 0.5, 40)
    energies = mode_energies_ev(np.full_like(gaps, 10.0), gaps)
    assert np.all(np.diff(energies) < 0)
    # plasmon ruler: at gap = 2R the shift is 0.18 e^{-1/0.23} of E0, negligible
    assert energies[0] == pytest.approx(mode_energies_ev(np.array([10.0]), np.array([np.inf]))[0], abs=0.01)


def test_bigger_particles_are_redder_and_broader() -> None:
    r = np.array([4.0, 8.0, 16.0])
    assert np.all(np.diff(mode_energies_ev(r, np.full(3, np.inf))) < 0)
    assert np.all(np.diff(mode_widths_ev(r)) > 0)


def _single(radius: float = 10.0) -> Specimen:
    return Specimen(np.array([[50.0, 50.0]]), np.array([radius]), 100.0)


def test_loss_peaks_at_the_mode_and_decays_with_impact_parameter() -> None:
    spec = _single()
    energy = np.linspace(1.0, 4.5, 701)
    b = np.array([12.0, 20.0, 40.0, 80.0])
    pos = np.stack([50.0 + b, np.full_like(b, 50.0)], axis=1)
    spectra = loss_spectra(spec, pos, energy, 100.0)
    e_mode = mode_energies_ev(spec.radii_nm, nearest_gaps_nm(spec))[0]
    assert energy[np.argmax(spectra[0])] == pytest.approx(e_mode, abs=0.01)
    peaks = spectra.max(axis=1)
    assert np.all(np.diff(peaks) < 0)


def test_far_field_decay_follows_the_bessel_asymptote() -> None:
    """For ωb/vγ ≫ 1, K_ν(x) ~ sqrt(π/2x) e^{-x}: the loss ratio between two distant beams is known."""
    spec = _single()
    e_mode = mode_energies_ev(spec.radii_nm, nearest_gaps_nm(spec))
    energy = e_mode.copy()
    v, gamma = beam_velocity(100.0)
    b1, b2 = 150.0, 200.0
    pos = np.array([[50.0 + b1, 50.0], [50.0 + b2, 50.0]])
    s = loss_spectra(spec, pos, energy, 100.0)[:, 0] - 0.05 * energy[0] ** -3
    x1, x2 = (e_mode[0] * b * 1e-9 / (HBAR_EV_S * v * gamma) for b in (b1, b2))
    asymptote = (x2 / x1) * np.exp(2 * (x2 - x1))  # [K(x1)/K(x2)]^2 for large x
    exact = (special.k1(x1) ** 2 + special.k0(x1) ** 2 / gamma**2) / (
        special.k1(x2) ** 2 + special.k0(x2) ** 2 / gamma**2
    )
    assert s[0] / s[1] == pytest.approx(exact, rel=1e-9)
    assert exact == pytest.approx(asymptote, rel=0.25)


def test_vectorised_spectra_match_a_slow_loop() -> None:
    rng = np.random.default_rng(3)
    spec = generate_specimen(
        rng, field_of_view_nm=120, mean_radius_nm=8, radius_spread=0.3, coverage=0.15, cluster_probability=0.5
    )
    energy = np.linspace(0.5, 4.5, 64)
    pos = rng.uniform(0, 120, size=(6, 2))
    fast = loss_spectra(spec, pos, energy, 100.0)
    gaps = nearest_gaps_nm(spec)
    v, gamma = beam_velocity(100.0)
    for n, p in enumerate(pos):
        slow = 0.05 * energy**-3
        for c, r, g in zip(spec.centres_nm, spec.radii_nm, gaps, strict=True):
            e = mode_energies_ev(np.array([r]), np.array([g]))[0]
            w = mode_widths_ev(np.array([r]))[0]
            b = float(np.hypot(*(p - c)))
            x = e * max(b, r + 0.5) * 1e-9 / (HBAR_EV_S * v * gamma)
            weight = e**2 * (r / 10) ** 3 * (special.k1(x) ** 2 + special.k0(x) ** 2 / gamma**2)
            slow = slow + weight * (w / 2 / np.pi) / ((energy - e) ** 2 + (w / 2) ** 2)
            if b < r:
                t = 2 * np.sqrt(r * r - b * b)
                slow = slow + t / 20 * (0.3 / np.pi) / ((energy - 3.8) ** 2 + 0.09)
        np.testing.assert_allclose(fast[n], slow, rtol=1e-10)


def test_specimen_has_no_overlaps_and_stays_in_the_field() -> None:
    spec = generate_specimen(
        np.random.default_rng(0),
        field_of_view_nm=200,
        mean_radius_nm=8,
        radius_spread=0.3,
        coverage=0.2,
        cluster_probability=0.6,
    )
    assert nearest_gaps_nm(spec).min() >= 0.5 - 1e-9
    assert np.all(spec.centres_nm - spec.radii_nm[:, None] >= 0)
    assert np.all(spec.centres_nm + spec.radii_nm[:, None] <= 200)
    covered = np.pi * (spec.radii_nm**2).sum() / 200**2
    assert covered == pytest.approx(0.2, abs=0.03)


def test_haadf_is_brighter_on_particles() -> None:
    spec = _single(20.0)
    img = haadf_image(spec, 100, np.random.default_rng(0), dose_counts=500)
    assert img[50, 50] > 5 * img[5, 5]


def test_seeded_microscope_is_deterministic() -> None:
    opts = SyntheticOptions(seed=7, image_pixels=32, n_channels=32, acquisition_time_s=0.0001)
    a = synthetic_microscope(opts, SystemClock())
    b = synthetic_microscope(opts, SystemClock())
    np.testing.assert_array_equal(a.acquire_image("haadf").data, b.acquire_image("haadf").data)
    pos = np.array([[20.0, 30.0], [100.0, 100.0]])
    np.testing.assert_array_equal(a.measure(pos).spectra, b.measure(pos).spectra)


def test_counts_scale_with_dose_and_noise_is_poisson() -> None:
    pos = np.full((200, 2), 60.0)
    stats = []
    for rate in (2.0e5, 8.0e5):
        opts = SyntheticOptions(n_channels=32, acquisition_time_s=0.0005, counts_per_s=rate)
        s = synthetic_microscope(opts, SystemClock()).measure(pos).spectra
        stats.append((s.mean(axis=0), s.var(axis=0)))
    (m1, v1), (m4, _) = stats
    bright = m1 > 30
    assert bright.sum() >= 5
    np.testing.assert_allclose(m4[bright] / m1[bright], 4, rtol=0.1)  # mean ∝ dose
    np.testing.assert_allclose(v1[bright] / m1[bright], 1, rtol=0.35)  # Poisson: variance = mean
