"""Dielectric functions ε(E) of the particle materials. Energies in eV; ε is dimensionless.

* Au and Ag: the Lorentz–Drude fits of Rakić, Djurišić, Elazar & Majewski, "Optical properties of
  metallic films for vertical-cavity optoelectronic devices", Appl. Opt. 37, 5271 (1998), Table 1
  (valid 0.1–6 eV)::

      ε(ω) = 1 − f₀ ω_p² / (ω (ω + iΓ₀)) + Σ_j f_j ω_p² / (ω_j² − ω² − iωΓ_j)

* Doped oxides: a Drude term on a background, ``ε(ω) = ε∞ − ω_p² / (ω (ω + iγ))``, with
  ``ω_p² = n e² / (ε₀ m*)`` set by the free-carrier density ``n``. For Sn-doped In₂O₃ (ITO) the
  defaults ε∞ = 4.0, m* = 0.35 mₑ and ħγ = 0.1 eV follow the nanocrystal fits of Kanehara et al.,
  J. Am. Chem. Soc. 131, 17736 (2009) and Mendelsberg et al., J. Phys. D 44, 232003 (2011):
  more Sn → more carriers → a bluer mid-infrared plasmon.

The time convention is e^{−iωt}, so absorbing media have Im ε > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from engine.errors import ConfigError

HBAR_EV_S = 6.582119569e-16
ELECTRON_CHARGE_C = 1.602176634e-19
ELECTRON_MASS_KG = 9.1093837015e-31
EPSILON0_F_M = 8.8541878128e-12
IN2O3_INDIUM_PER_CM3 = 3.09e22
"""In atoms per cm³ in bixbyite In₂O₃ (32 In in a cubic cell of a = 1.0117 nm)."""


@dataclass(frozen=True)
class LorentzDrude:
    """A Lorentz–Drude dielectric function (see the module docstring).

    Attributes:
        plasma_ev: ħω_p.
        f0, gamma0_ev: Drude oscillator strength and damping ħΓ₀.
        oscillators: ``(f_j, ħω_j, ħΓ_j)`` of the interband Lorentz terms, energies in eV.
        eps_inf: background permittivity (1 for the Rakić fits).
    """

    plasma_ev: float
    f0: float
    gamma0_ev: float
    oscillators: tuple[tuple[float, float, float], ...] = ()
    eps_inf: float = 1.0

    def __call__(self, energy_ev: ArrayLike) -> NDArray[np.complex128]:
        """ε at each energy, shape as ``energy_ev``."""
        w = np.asarray(energy_ev, dtype=np.float64)
        wp2 = self.plasma_ev**2
        eps = self.eps_inf - self.f0 * wp2 / (w * (w + 1j * self.gamma0_ev))
        for f, wj, gj in self.oscillators:
            eps = eps + f * wp2 / (wj**2 - w**2 - 1j * w * gj)
        return np.asarray(eps, dtype=np.complex128)


GOLD = LorentzDrude(
    plasma_ev=9.03,
    f0=0.760,
    gamma0_ev=0.053,
    oscillators=(
        (0.024, 0.415, 0.241),
        (0.010, 0.830, 0.345),
        (0.071, 2.969, 0.870),
        (0.601, 4.304, 2.494),
        (4.384, 13.32, 2.214),
    ),
)
"""Au, Rakić et al. (1998) Lorentz–Drude fit."""

SILVER = LorentzDrude(
    plasma_ev=9.01,
    f0=0.845,
    gamma0_ev=0.048,
    oscillators=(
        (0.065, 0.816, 3.886),
        (0.124, 4.481, 0.452),
        (0.011, 8.185, 0.065),
        (0.840, 9.083, 0.916),
        (5.646, 20.29, 2.419),
    ),
)
"""Ag, Rakić et al. (1998) Lorentz–Drude fit."""


def drude(eps_inf: float, plasma_ev: float, gamma_ev: float) -> LorentzDrude:
    """A pure Drude metal ``ε∞ − ω_p² / (ω (ω + iγ))``."""
    return LorentzDrude(plasma_ev=plasma_ev, f0=1.0, gamma0_ev=gamma_ev, eps_inf=eps_inf)


def plasma_energy_ev(carrier_density_cm3: float, effective_mass: float) -> float:
    """ħω_p in eV for ``carrier_density_cm3`` free carriers of mass ``effective_mass`` mₑ."""
    n_m3 = carrier_density_cm3 * 1e6
    omega_p = np.sqrt(n_m3 * ELECTRON_CHARGE_C**2 / (EPSILON0_F_M * effective_mass * ELECTRON_MASS_KG))
    return float(HBAR_EV_S * omega_p)


def ito_carrier_density_cm3(sn_fraction: float, activation: float = 0.3) -> float:
    """Free electrons per cm³ when a fraction ``sn_fraction`` of In sites hold Sn, ``activation`` of them ionised."""
    if not 0 <= sn_fraction <= 0.3 or not 0 < activation <= 1:
        raise ConfigError("sn_fraction must be in [0, 0.3] and activation in (0, 1]")
    return sn_fraction * activation * IN2O3_INDIUM_PER_CM3


def doped_oxide(
    carrier_density_cm3: float, eps_inf: float = 4.0, effective_mass: float = 0.35, gamma_ev: float = 0.1
) -> LorentzDrude:
    """Drude permittivity of a degenerately doped oxide (ITO defaults) at ``carrier_density_cm3``."""
    return drude(eps_inf, plasma_energy_ev(carrier_density_cm3, effective_mass), gamma_ev)


def ito(sn_fraction: float, activation: float = 0.3) -> LorentzDrude:
    """Sn-doped In₂O₃ with ``sn_fraction`` of In replaced by Sn."""
    return doped_oxide(ito_carrier_density_cm3(sn_fraction, activation))


MATERIALS = {"Au": GOLD, "Ag": SILVER}
"""Noble metals by name; doped oxides are made with :func:`ito` or :func:`doped_oxide`."""
