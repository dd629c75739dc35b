"""Coupled-dipole physics against closed forms and the Mie reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special

from simulators.cda import (
    FINE_STRUCTURE,
    HBAR_C_EV_NM,
    Cluster,
    EelsModel,
    beam_velocity,
    cluster_polarisabilities,
    dark_field_spectrum,
    eels_loss,
    eels_prefactor,
    electron_field,
    optical_cross_sections,
    polarisability,
    system_matrix,
    wavenumber,
)
from simulators.dielectric import GOLD, SILVER, drude, ito, ito_carrier_density_cm3, plasma_energy_ev
from simulators.mie import HC_EV_NM, mie_cross_sections

WATER = 1.33**2
LAMBDA = np.linspace(450.0, 650.0, 2001)
ENERGY = HC_EV_NM / LAMBDA


def _sphere(radius: float, material=GOLD, eps_medium: float = WATER, at=(0.0, 0.0, 0.0)) -> Cluster:
    return Cluster(np.array([at], dtype=float), np.array([radius]), [material], eps_medium)


def test_mie_matches_bohren_and_huffmans_test_sphere() -> None:
    """Bohren & Huffman, Appendix A (BHMIE): m = 1.55, r = 0.525 µm, λ = 0.6328 µm (x = 5.213): Q_ext = 3.10543."""
    radius, wavelength = 525.0, 632.8
    energy = np.array([HC_EV_NM / wavelength])
    ext, sca, absorption = mie_cross_sections(radius, np.array([1.55**2 + 0j]), energy, 1.0)
    area = np.pi * radius**2
    assert ext[0] / area == pytest.approx(3.10543, abs=5e-6)  # their printed digits
    assert sca[0] / area == pytest.approx(3.10543, abs=5e-6) and abs(absorption[0]) < 1e-9 * area  # lossless


def test_gold_sphere_in_water_matches_mie() -> None:
    """Rakić Au, R = 20 nm, n = 1.33: the CDA with the Mie dipole α against full Mie (all multipoles).

    Achieved here: peaks 0.2 nm apart, extinction at the peak 0.7 % below Mie (the missing quadrupole).
    """
    mie_ext, _, _ = mie_cross_sections(20.0, GOLD(ENERGY), ENERGY, 1.33)
    cda = optical_cross_sections(_sphere(20.0), ENERGY)
    i, j = np.argmax(mie_ext), np.argmax(cda.extinction)
    assert abs(LAMBDA[j] - LAMBDA[i]) <= 0.5
    assert cda.extinction[j] == pytest.approx(mie_ext[i], rel=0.01)
    assert np.all(cda.absorption > 0) and np.all(cda.scattering > 0)
    # MLWA, the textbook alternative, lands 2.5 nm red of Mie with 7 % more extinction here
    mlwa = optical_cross_sections(_sphere(20.0), ENERGY, form="mlwa").extinction
    assert abs(LAMBDA[np.argmax(mlwa)] - LAMBDA[i]) < 3.0


def test_mie_small_sphere_limit() -> None:
    """For R ≪ λ, Mie absorption → 4πk R³ Im[(ε − ε_m)/(ε + 2ε_m)]."""
    r = 2.0
    eps = GOLD(ENERGY)
    _, _, absorption = mie_cross_sections(r, eps, ENERGY, 1.33)
    k = wavenumber(ENERGY, WATER)
    quasi = 4 * np.pi * k * r**3 * ((eps - WATER) / (eps + 2 * WATER)).imag
    np.testing.assert_allclose(absorption, quasi, rtol=0.02)


@pytest.mark.parametrize("eps_medium", [1.0, 2.1])
def test_drude_sphere_quasi_static_resonance(eps_medium: float) -> None:
    energy = np.linspace(0.3, 1.5, 24001)
    cluster = _sphere(1.0, drude(4.0, 1.9, 0.1), eps_medium)
    absorption = optical_cross_sections(cluster, energy, form="static").absorption
    expected = 1.9 / np.sqrt(4.0 + 2 * eps_medium)
    assert energy[np.argmax(absorption)] == pytest.approx(expected, rel=1e-4)  # achieved: 3e-5 (grid 5e-5 eV)


def _dimer(gap: float, radius: float = 20.0) -> Cluster:
    x = radius + gap / 2
    return Cluster(np.array([[-x, 0, 0], [x, 0, 0]], dtype=float), np.full(2, radius), [GOLD, GOLD], WATER)


def test_dimer_modes_match_the_quasi_static_dipole_dipole_closed_form() -> None:
    """Two Drude spheres (R = 1 nm, gap 0.6 nm, vacuum, static α = R³(ε−1)/(ε+2)): the coupled dipoles resonate
    where 1 − 2α/d³ = 0 (along the axis) and 1 + α/d³ = 0 (across it), d the centre distance; solved here
    independently of the code. Achieved: 5e-7 and 5e-6 relative (retardation at k·d ≈ 0.01 and the damping)."""
    material = drude(4.0, 1.9, 0.005)
    radius, gap = 1.0, 0.6
    d = 2 * radius + gap
    energy = np.linspace(0.5, 1.0, 50001)
    dimer = Cluster(np.array([[-d / 2, 0, 0], [d / 2, 0, 0]]), np.full(2, radius), [material, material], 1.0)

    def peak(polarisation: tuple[int, int, int]) -> float:
        spectrum = optical_cross_sections(dimer, energy, form="static", polarisation=polarisation, direction=(0, 0, 1))
        return float(energy[np.argmax(spectrum.absorption)])

    def alpha(e: float) -> float:  # the lossless Drude sphere
        eps = 4.0 - 1.9**2 / e**2
        return radius**3 * (eps - 1) / (eps + 2)

    single = 1.9 / np.sqrt(6.0)
    longitudinal = optimize.brentq(lambda e: 1 - 2 * alpha(e) / d**3, 0.5, single - 1e-6)
    transverse = optimize.brentq(lambda e: 1 + alpha(e) / d**3, single + 1e-6, 0.99)
    assert peak((1, 0, 0)) == pytest.approx(longitudinal, rel=1e-4)
    assert peak((0, 1, 0)) == pytest.approx(transverse, rel=1e-4)


def test_dimer_longitudinal_red_shifts_and_transverse_barely_moves() -> None:
    """Retarded, Au in water: a trend, not a closed form (the closed form is the quasi-static test above)."""
    gaps = [20.0, 15.0, 10.0, 7.0, 5.0, 3.0, 2.0]
    longitudinal = [
        LAMBDA[np.argmax(optical_cross_sections(_dimer(g), ENERGY, polarisation=(1, 0, 0)).extinction)] for g in gaps
    ]
    transverse = [
        LAMBDA[np.argmax(optical_cross_sections(_dimer(g), ENERGY, polarisation=(0, 1, 0)).extinction)] for g in gaps
    ]
    assert np.all(np.diff(longitudinal) > 0), longitudinal
    long_shift = longitudinal[-1] - longitudinal[0]
    trans_shift = abs(transverse[-1] - transverse[0])
    assert long_shift > 20.0
    assert trans_shift < 0.3 * long_shift and trans_shift < 8.0


def test_far_apart_dimer_is_two_independent_spheres() -> None:
    far = Cluster(np.array([[-5000.0, 0, 0], [5000.0, 0, 0]]), np.full(2, 20.0), [GOLD, GOLD], WATER)
    single = optical_cross_sections(_sphere(20.0), ENERGY).extinction
    pair = optical_cross_sections(far, ENERGY, direction=(0, 1, 0), polarisation=(0, 0, 1)).extinction
    np.testing.assert_allclose(pair, 2 * single, rtol=0.02)


def test_eels_single_sphere_matches_closed_form() -> None:
    energy = np.linspace(1.5, 4.0, 500)
    for beam_kev, b in ((100.0, 30.0), (200.0, 45.0), (60.0, 22.0)):
        loss = eels_loss(Cluster(np.zeros((1, 3)), np.array([20.0]), [SILVER]), (b, 0.0), energy, beam_kev)
        beta, gamma = beam_velocity(beam_kev)
        q = energy / (HBAR_C_EV_NM * beta)  # ω/v
        alpha = polarisability(SILVER(energy), 20.0, 1.0, energy, "mie")
        # García de Abajo, Rev. Mod. Phys. 82, 209 (2010), eq. 46, per unit energy
        closed = (
            4
            * FINE_STRUCTURE
            / beta
            / (np.pi * gamma**2 * HBAR_C_EV_NM * beta)
            * q**2
            * (special.k1(q * b / gamma) ** 2 + special.k0(q * b / gamma) ** 2 / gamma**2)
            * alpha.imag
        )
        np.testing.assert_allclose(loss, closed, rtol=1e-12)  # achieved: 2e-15


def test_eels_mirror_symmetry() -> None:
    """A cluster symmetric under x → −x and y → −y gives the same spectrum at mirror-image beams."""
    pos = np.array([[-25.0, 0, 0], [25.0, 0, 0], [0.0, 30.0, 0], [0.0, -30.0, 0]])
    cluster = Cluster(pos, np.array([15.0, 15.0, 10.0, 10.0]), [GOLD, GOLD, SILVER, SILVER])
    energy = np.linspace(1.5, 4.0, 120)
    model = EelsModel(cluster, energy, dtype=np.float64)
    beams = np.array([[40.0, 12.0], [-40.0, 12.0], [40.0, -12.0], [-40.0, -12.0], [12.0, 40.0]])
    spectra = model.loss(beams)
    for k in (1, 2, 3):
        np.testing.assert_allclose(spectra[k], spectra[0], rtol=1e-9)
    assert not np.allclose(spectra[4], spectra[0], rtol=1e-3)


def test_eels_symmetric_shortcut_equals_the_full_complex_solve() -> None:
    rng = np.random.default_rng(2)
    pos = np.column_stack([rng.uniform(0, 120, 6), rng.uniform(0, 120, 6), rng.uniform(-5, 5, 6)])
    pos[:, 0] += np.arange(6) * 40  # keep them apart
    cluster = Cluster(pos, np.full(6, 8.0), [GOLD, SILVER] * 3)
    energy = np.linspace(1.0, 4.0, 60)
    beam = (pos[2, 0] + 15.0, pos[2, 1])
    k = wavenumber(energy, 1.0)
    m = system_matrix(cluster_polarisabilities(cluster, energy), cluster.positions_nm, k)
    np.testing.assert_allclose(m, m.transpose(0, 2, 1), atol=1e-12)  # reciprocity
    f = electron_field(cluster.positions_nm, cluster.radii_nm, beam, energy, 100.0)
    p = np.linalg.solve(m, f[..., None])[..., 0]
    direct = eels_prefactor(100.0) * np.sum(np.conj(f) * p, axis=1).imag
    np.testing.assert_allclose(
        EelsModel(cluster, energy, dtype=np.float64).loss(np.array([beam]))[0], direct, rtol=1e-9
    )
    np.testing.assert_allclose(EelsModel(cluster, energy).loss(np.array([beam]))[0], direct, rtol=1e-4)


def test_eels_decays_with_impact_parameter() -> None:
    energy = np.linspace(2.0, 3.5, 200)
    model = EelsModel(Cluster(np.zeros((1, 3)), np.array([20.0]), [GOLD]), energy)
    peaks = model.loss(np.array([[b, 0.0] for b in (22.0, 30.0, 50.0, 90.0)])).max(axis=1)
    assert np.all(np.diff(peaks) < 0)


def test_more_tin_gives_a_bluer_ito_plasmon() -> None:
    energy = np.linspace(0.2, 1.5, 2601)
    peaks = []
    for sn in (0.02, 0.05, 0.10, 0.15):
        absorption = optical_cross_sections(_sphere(10.0, ito(sn), 1.0), energy).absorption
        peaks.append(energy[np.argmax(absorption)])
    assert np.all(np.diff(peaks) > 0), peaks
    wavelengths_um = HC_EV_NM / np.array(peaks) / 1000
    assert 1.2 < wavelengths_um[-1] < wavelengths_um[0] < 5.0, wavelengths_um  # near/mid infrared
    # 10 % Sn, 30 % activated: n = 9.27e20 cm^-3; hbar*sqrt(n e^2 / (eps0 0.35 m_e)) = 1.911 eV
    assert ito_carrier_density_cm3(0.1) == pytest.approx(9.27e20, rel=1e-3)
    assert plasma_energy_ev(9.27e20, 0.35) == pytest.approx(1.911, abs=0.002)


def test_dark_field_spectrum_is_polarisation_averaged() -> None:
    dimer = _dimer(3.0)
    df = dark_field_spectrum(dimer, ENERGY)
    sx = optical_cross_sections(dimer, ENERGY, polarisation=(1, 0, 0)).scattering
    sy = optical_cross_sections(dimer, ENERGY, polarisation=(0, 1, 0)).scattering
    np.testing.assert_allclose(df, (sx + sy) / 2)


def test_overlapping_spheres_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Cluster(np.array([[0.0, 0, 0], [10.0, 0, 0]]), np.array([6.0, 6.0]), [GOLD, GOLD])
    with pytest.raises(ValueError, match="vacuum"):
        EelsModel(_sphere(5.0), ENERGY)


def test_planar_fast_path_equals_the_direct_solve() -> None:
    pos = np.array([[0.0, 0, 0], [12.0, 0, 0], [6.0, 10.5, 0], [30.0, 5.0, 0]])
    cluster = Cluster(pos, np.array([5.0, 5.5, 4.5, 5.0]), [ito(0.05), ito(0.1), ito(0.08), GOLD])
    energy = np.linspace(0.3, 3.0, 90)
    beam = (20.0, -6.0)
    m = system_matrix(cluster_polarisabilities(cluster, energy), cluster.positions_nm, wavenumber(energy, 1.0))
    f = electron_field(cluster.positions_nm, cluster.radii_nm, beam, energy, 100.0)
    direct = eels_prefactor(100.0) * np.sum(np.conj(f) * np.linalg.solve(m, f[..., None])[..., 0], axis=1).imag
    fast = EelsModel(cluster, energy, dtype=np.float64).loss(np.array([beam]))[0]
    np.testing.assert_allclose(fast, direct, rtol=1e-9)
