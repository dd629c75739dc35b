"""Mie theory for one sphere: the slow, obviously correct reference for the coupled-dipole code.

Bohren & Huffman, *Absorption and Scattering of Light by Small Particles* (1983), §4.4, with
Riccati–Bessel functions ψ_n(z) = z j_n(z) and ξ_n(z) = z h_n^{(1)}(z), and Wiscombe's
``n_max = x + 4 x^{1/3} + 2``. Lengths in nm, energies in eV, cross-sections in nm².
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import special

HC_EV_NM = 1239.841984


def mie_coefficients(
    radius_nm: float,
    eps_particle: NDArray[np.complex128],
    energy_ev: NDArray[np.float64],
    n_medium: float,
    n_max: int | None = None,
) -> tuple[NDArray[np.complex128], NDArray[np.complex128], NDArray[np.float64]]:
    """Mie coefficients ``a_n, b_n`` of shape ``(n_max, E)`` and the wavenumber ``k (E,)`` in nm⁻¹.

    Args:
        radius_nm: sphere radius.
        eps_particle: particle permittivity at each energy ``(E,)``.
        energy_ev: photon energies ``(E,)``.
        n_medium: real refractive index of the surrounding medium.
        n_max: number of multipoles (default: Wiscombe's criterion).
    """
    k = 2 * np.pi * n_medium * np.asarray(energy_ev, dtype=np.float64) / HC_EV_NM  # nm^-1 in the medium
    x = k * radius_nm
    m = np.sqrt(np.asarray(eps_particle, dtype=np.complex128)) / n_medium
    if n_max is None:
        n_max = int(np.max(x + 4 * np.cbrt(x) + 2))
    n = np.arange(1, n_max + 1)[:, None]  # (n, E)
    mx = m[None, :] * x[None, :]
    xx = np.broadcast_to(x, (n.shape[0], x.size))
    jx, djx = special.spherical_jn(n, xx), special.spherical_jn(n, xx, derivative=True)
    yx, dyx = special.spherical_yn(n, xx), special.spherical_yn(n, xx, derivative=True)
    jm, djm = special.spherical_jn(n, mx), special.spherical_jn(n, mx, derivative=True)
    psi_x, dpsi_x = xx * jx, jx + xx * djx
    xi_x, dxi_x = xx * (jx + 1j * yx), (jx + 1j * yx) + xx * (djx + 1j * dyx)
    psi_m, dpsi_m = mx * jm, jm + mx * djm
    mm = m[None, :]
    a = (mm * psi_m * dpsi_x - psi_x * dpsi_m) / (mm * psi_m * dxi_x - xi_x * dpsi_m)
    b = (psi_m * dpsi_x - mm * psi_x * dpsi_m) / (psi_m * dxi_x - mm * xi_x * dpsi_m)
    return a, b, k


def mie_cross_sections(
    radius_nm: float, eps_particle: NDArray[np.complex128], energy_ev: NDArray[np.float64], n_medium: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Extinction, scattering and absorption cross-sections ``(E,)`` each, in nm², all multipoles.

    Args:
        radius_nm: sphere radius.
        eps_particle: particle permittivity at each energy ``(E,)``.
        energy_ev: photon energies ``(E,)``.
        n_medium: real refractive index of the surrounding medium.
    """
    a, b, k = mie_coefficients(radius_nm, eps_particle, energy_ev, n_medium)
    weight = 2 * np.arange(1, a.shape[0] + 1)[:, None] + 1
    ext = 2 * np.pi / k**2 * np.sum(weight * (a + b).real, axis=0)
    sca = 2 * np.pi / k**2 * np.sum(weight * (np.abs(a) ** 2 + np.abs(b) ** 2), axis=0)
    return ext, sca, ext - sca


def mie_dipole_polarisability(
    radius_nm: float, eps_particle: NDArray[np.complex128], energy_ev: NDArray[np.float64], n_medium: float
) -> NDArray[np.complex128]:
    """The exact electric-dipole polarisability of a sphere, ``α = 3i a₁ / (2k³)`` (Gaussian, nm³, ``(E,)``)."""
    a, _, k = mie_coefficients(radius_nm, eps_particle, energy_ev, n_medium, n_max=1)
    return np.asarray(3j * a[0] / (2 * k**3), dtype=np.complex128)
