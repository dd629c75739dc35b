"""The coupled dipole approximation (CDA) for clusters of spheres: optics and EELS.

Gaussian units with all fields in a homogeneous, lossless medium of permittivity ``ε_m``;
lengths in nm, energies in eV, polarisabilities in nm³, cross-sections in nm², loss
probabilities in eV⁻¹. Time convention e^{−iωt}.

Each sphere ``j`` is a point dipole ``p_j = α_j (E_ext(r_j) + Σ_{l≠j} G(r_j, r_l) p_l)`` with the
full retarded dipole field (Jackson eq. 9.18)::

    G(r) = e^{ikr} / r³ [ k²r² (I − n̂n̂) + (1 − ikr) (3 n̂n̂ − I) ],   k = √ε_m ω / c

so the 3N×3N system ``(diag(1/α) − G) p = E_ext`` is solved per energy, batched over energies.

Polarisabilities (``α_0 = R³ (ε − ε_m) / (ε + 2 ε_m)``, the quasi-static sphere):

* ``"mlwa"``: modified long-wavelength approximation, ``α = α_0 / (1 − k² α_0 / R − i ⅔ k³ α_0)``
  (Kelly, Coronado, Zhao & Schatz, J. Phys. Chem. B 107, 668 (2003)).
* ``"mie"`` (default): the exact electric-dipole response of the sphere, ``α = 3i a₁ / (2k³)`` with
  ``a₁`` the first Mie coefficient (Doyle, Phys. Rev. B 39, 9852 (1989)); it contains every size
  correction of the dipole (dynamic depolarisation, radiative damping) and neglects only the
  higher multipoles of each sphere.
* ``"static"``: ``α_0`` (no size correction; for the quasi-static limit).

Optical cross-sections follow Draine, Astrophys. J. 333, 848 (1988). The EELS loss probability
uses the field of an electron moving along +z at speed v through ``(x0, y0)`` (García de Abajo,
Rev. Mod. Phys. 82, 209 (2010), eq. 7)::

    E_ext(r, ω) = (2eω / v²γ) e^{iωz/v} [ (i/γ) K₀(ωR/vγ) ẑ − K₁(ωR/vγ) R̂ ]

and ``Γ(E) = Σ_j Im(E_ext,j* · p_j) / (π ħ² ... )`` reduced to eV⁻¹ (see :func:`eels_loss`), which for
one sphere is the closed form ``Γ = 4e²ω² / (π ħ v⁴ γ²) [K₁² + K₀²/γ²] Im α`` (ibid., eq. 46). The
dipole picture needs the beam outside every sphere; impact parameters are clamped to ``R + clearance``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import special

from engine.errors import ConfigError
from simulators.mie import mie_dipole_polarisability

HC_EV_NM = 1239.841984
HBAR_C_EV_NM = 197.3269804
FINE_STRUCTURE = 7.2973525693e-3
ELECTRON_REST_KEV = 510.99895

Dielectric = Callable[[NDArray[np.float64]], NDArray[np.complex128]]
PolarisabilityForm = Literal["mie", "mlwa", "static"]


@dataclass(frozen=True)
class Cluster:
    """Spheres in a homogeneous medium.

    Attributes:
        positions_nm: centres ``(N, 3)``.
        radii_nm: radii ``(N,)``.
        materials: one dielectric function per sphere (``ε(E)`` with E in eV).
        eps_medium: real permittivity of the medium (1 vacuum, 1.769 water).
    """

    positions_nm: NDArray[np.float64]
    radii_nm: NDArray[np.float64]
    materials: Sequence[Dielectric]
    eps_medium: float = 1.0

    def __post_init__(self) -> None:
        n = self.radii_nm.shape[0]
        if self.positions_nm.shape != (n, 3) or len(self.materials) != n:
            raise ConfigError(f"{n} radii need positions (N, 3) and N materials")
        if n > 1:
            d = np.linalg.norm(self.positions_nm[:, None] - self.positions_nm[None], axis=-1)
            gap = d - self.radii_nm[:, None] - self.radii_nm[None]
            np.fill_diagonal(gap, np.inf)
            if gap.min() < 0:
                raise ConfigError(f"spheres overlap (smallest gap {gap.min():.3g} nm)")

    @property
    def n(self) -> int:
        """Number of spheres."""
        return int(self.radii_nm.shape[0])


def wavenumber(energy_ev: NDArray[np.float64], eps_medium: float) -> NDArray[np.float64]:
    """Wavenumber in the medium, k = √ε_m ω / c, in nm⁻¹ at each energy."""
    return np.asarray(np.sqrt(eps_medium) * np.asarray(energy_ev) / HBAR_C_EV_NM, dtype=np.float64)


def polarisability(
    eps: NDArray[np.complex128],
    radius_nm: float,
    eps_medium: float,
    energy_ev: NDArray[np.float64],
    form: PolarisabilityForm = "mie",
) -> NDArray[np.complex128]:
    """Dipole polarisability ``(E,)`` in nm³ of a sphere of permittivity ``eps (E,)`` (see module docstring)."""
    k = wavenumber(energy_ev, eps_medium)
    a0 = radius_nm**3 * (eps - eps_medium) / (eps + 2 * eps_medium)
    if form == "static":
        return np.asarray(a0, dtype=np.complex128)
    if form == "mlwa":
        return np.asarray(a0 / (1 - k**2 * a0 / radius_nm - 2j / 3 * k**3 * a0), dtype=np.complex128)
    if form == "mie":
        return mie_dipole_polarisability(radius_nm, eps, energy_ev, float(np.sqrt(eps_medium)))
    raise ConfigError(f"unknown polarisability form {form!r}; choose mie, mlwa or static")


def cluster_polarisabilities(
    cluster: Cluster, energy_ev: NDArray[np.float64], form: PolarisabilityForm = "mie"
) -> NDArray[np.complex128]:
    """Polarisabilities ``(E, N)`` of every sphere."""
    cols = [
        polarisability(mat(energy_ev), float(r), cluster.eps_medium, energy_ev, form)
        for mat, r in zip(cluster.materials, cluster.radii_nm, strict=True)
    ]
    return np.stack(cols, axis=1)


def interaction_matrix(positions_nm: NDArray[np.float64], k: NDArray[np.float64]) -> NDArray[np.complex128]:
    """Retarded dipole–dipole coupling ``G`` of shape ``(E, 3N, 3N)``; zero 3×3 blocks on the diagonal."""
    n = positions_nm.shape[0]
    d = positions_nm[:, None, :] - positions_nm[None, :, :]  # (N, N, 3)
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, 1.0)  # self-terms are zeroed below
    nn = d[..., :, None] * d[..., None, :] / (r**2)[..., None, None]  # (N, N, 3, 3)
    eye = np.eye(3)
    kr = k[:, None, None] * r[None]  # (E, N, N)
    phase = np.exp(1j * kr) / r[None] ** 3
    far = (kr**2)[..., None, None] * (eye - nn)[None]
    near = (1 - 1j * kr)[..., None, None] * (3 * nn - eye)[None]
    g = phase[..., None, None] * (far + near)  # (E, N, N, 3, 3)
    g[:, np.arange(n), np.arange(n)] = 0.0
    return np.ascontiguousarray(g.transpose(0, 1, 3, 2, 4).reshape(k.size, 3 * n, 3 * n))


def system_matrix(alpha: NDArray[np.complex128], positions_nm: NDArray[np.float64], k: NDArray[np.float64]) -> NDArray:
    """``diag(1/α) − G``, shape ``(E, 3N, 3N)``, for polarisabilities ``alpha (E, N)``."""
    m = -interaction_matrix(positions_nm, k)
    inv = np.repeat(1.0 / alpha, 3, axis=1)  # (E, 3N)
    idx = np.arange(inv.shape[1])
    m[:, idx, idx] += inv
    return m


def solve_dipoles(matrix: NDArray[np.complex128], field: NDArray[np.complex128]) -> NDArray[np.complex128]:
    """Dipoles ``p (E, 3N)`` from the system ``(E, 3N, 3N)`` and the external field ``(E, 3N)``."""
    return np.asarray(np.linalg.solve(matrix, field[..., None])[..., 0], dtype=np.complex128)


def plane_wave(
    positions_nm: NDArray[np.float64], k: NDArray[np.float64], direction: NDArray[np.float64], polarisation: NDArray
) -> NDArray[np.complex128]:
    """Unit-amplitude plane wave ``E0 ê e^{i k d̂·r}`` at every sphere, shape ``(E, 3N)``."""
    phase = np.exp(1j * k[:, None] * (positions_nm @ direction)[None, :])  # (E, N)
    return np.asarray((phase[..., None] * polarisation[None, None, :]).reshape(k.size, -1), dtype=np.complex128)


@dataclass(frozen=True)
class CrossSections:
    """Optical cross-sections ``(E,)`` in nm²."""

    extinction: NDArray[np.float64]
    scattering: NDArray[np.float64]
    absorption: NDArray[np.float64]


def optical_cross_sections(
    cluster: Cluster,
    energy_ev: NDArray[np.float64],
    direction: Sequence[float] = (0.0, 0.0, 1.0),
    polarisation: Sequence[float] = (1.0, 0.0, 0.0),
    form: PolarisabilityForm = "mie",
) -> CrossSections:
    """Extinction, scattering and absorption of ``cluster`` for a plane wave (Draine 1988)."""
    d = np.asarray(direction, dtype=np.float64)
    e = np.asarray(polarisation, dtype=np.complex128)
    if abs(np.dot(d, e.real)) > 1e-9:
        raise ConfigError("polarisation must be perpendicular to the propagation direction")
    k = wavenumber(energy_ev, cluster.eps_medium)
    alpha = cluster_polarisabilities(cluster, energy_ev, form)
    field = plane_wave(cluster.positions_nm, k, d / np.linalg.norm(d), e / np.linalg.norm(e))
    p = solve_dipoles(system_matrix(alpha, cluster.positions_nm, k), field)
    ext = 4 * np.pi * k * np.sum(np.conj(field) * p, axis=1).imag
    inv_alpha = np.repeat(1.0 / alpha, 3, axis=1)
    absorbed = np.sum((p * np.conj(inv_alpha) * np.conj(p)).imag, axis=1) - 2.0 / 3.0 * k**3 * np.sum(
        np.abs(p) ** 2, axis=1
    )
    ab = 4 * np.pi * k * absorbed
    return CrossSections(ext, ext - ab, ab)


def dark_field_spectrum(cluster: Cluster, energy_ev: NDArray[np.float64], form: PolarisabilityForm = "mie") -> NDArray:
    """Unpolarised scattering cross-section ``(E,)`` nm² at normal incidence (mean of x and y polarisations)."""
    sx = optical_cross_sections(cluster, energy_ev, (0, 0, 1), (1, 0, 0), form).scattering
    sy = optical_cross_sections(cluster, energy_ev, (0, 0, 1), (0, 1, 0), form).scattering
    return 0.5 * (sx + sy)


# ----------------------------------------------------------------------------------------- EELS


def beam_velocity(beam_energy_kev: float) -> tuple[float, float]:
    """β = v/c and the Lorentz factor γ of an electron of kinetic energy ``beam_energy_kev``."""
    gamma = 1.0 + beam_energy_kev / ELECTRON_REST_KEV
    return float(np.sqrt(1.0 - 1.0 / gamma**2)), float(gamma)


def electron_field(
    positions_nm: NDArray[np.float64],
    radii_nm: NDArray[np.float64],
    beam_xy_nm: Sequence[float] | NDArray[np.float64],
    energy_ev: NDArray[np.float64],
    beam_energy_kev: float,
    clearance_nm: float = 0.5,
) -> NDArray[np.complex128]:
    """Reduced field of the electron at every sphere, ``(E, 3N)``: ``(2q/γ)[(i/γ)K₀ ẑ − K₁ R̂] e^{iqz}``, q = ω/v.

    The physical field is this times ``e/v``; :func:`eels_loss` carries the constants. The
    impact parameter to each centre is clamped to ``R + clearance_nm``. When every sphere has the
    same ``z``, the common phase ``e^{iqz}`` is left out (it cancels in every loss probability).
    """
    beta, gamma = beam_velocity(beam_energy_kev)
    q = np.asarray(energy_ev) / (HBAR_C_EV_NM * beta)  # ω/v in nm^-1, (E,)
    rel = positions_nm[:, :2] - np.asarray(beam_xy_nm, dtype=np.float64)[None, :]  # (N, 2) beam → sphere
    b = np.linalg.norm(rel, axis=1)
    b_eff = np.maximum(b, radii_nm + clearance_nm)
    rhat = np.where(b[:, None] > 0, rel / np.where(b > 0, b, 1.0)[:, None], np.array([1.0, 0.0]))
    arg = q[:, None] * b_eff[None, :] / gamma  # (E, N)
    k0, k1 = special.k0(arg), special.k1(arg)
    z = positions_nm[:, 2]
    if np.all(z == z[0]):
        # a common phase e^{iqz} drops out of every loss probability: leave it out
        pref = (2 * q / gamma)[:, None] * np.ones((1, z.size))
    else:
        pref = 2 * q[:, None] / gamma * np.exp(1j * q[:, None] * z[None, :])
    field = np.empty((q.size, positions_nm.shape[0], 3), dtype=np.complex128)
    field[..., 0] = -pref * k1 * rhat[None, :, 0]
    field[..., 1] = -pref * k1 * rhat[None, :, 1]
    field[..., 2] = pref * 1j / gamma * k0
    return field.reshape(q.size, -1)


def eels_prefactor(beam_energy_kev: float) -> float:
    """Constant turning ``Σ Im(E_red* · p)`` (nm⁻²·nm³) into a loss probability per eV: ``(α_fs/β) / (π ħv)``."""
    beta, _ = beam_velocity(beam_energy_kev)
    return FINE_STRUCTURE / beta / (np.pi * HBAR_C_EV_NM * beta)


def eels_loss(
    cluster: Cluster,
    beam_xy_nm: Sequence[float],
    energy_ev: NDArray[np.float64],
    beam_energy_kev: float = 100.0,
    form: PolarisabilityForm = "mie",
) -> NDArray[np.float64]:
    """Loss probability Γ(E) ``(E,)`` in eV⁻¹ for a beam at ``beam_xy_nm`` (solves the system once)."""
    model = EelsModel(cluster, energy_ev, beam_energy_kev, form, dtype=np.float64)
    return np.asarray(model.loss(np.asarray([beam_xy_nm], dtype=np.float64))[0], dtype=np.float64)


class EelsModel:
    """EELS of one cluster on a fixed energy axis, for many beam positions.

    The system matrix ``M = diag(1/α) − G`` does not depend on where the beam is, so it is
    inverted once per energy (``O(E N³)``, the physical floor of the CDA). ``M`` is complex
    symmetric (reciprocity: ``G_ij = G_ji`` and every 3×3 block is symmetric), so for the reduced
    field ``f = a + ib``, ``Im(f^H M⁻¹ f) = aᵀ S a + bᵀ S b`` with the *real symmetric* ``S = Im M⁻¹``.
    Only ``S`` is kept, and each beam position costs one real batched matrix product, ``O(E N²)``.

    When all spheres lie in one plane ``z = z₀`` the in-plane and out-of-plane dipoles decouple
    (``G_xz = G_yz = 0``) and the electron's in-plane field is real while its ``z`` field is
    imaginary, so ``Γ ∝ a_xyᵀ S_xy a_xy + b_zᵀ S_z b_z`` with two smaller blocks (2N×2N and N×N):
    a third of the work of the full 3N×3N form, exactly.

    Args:
        cluster: the spheres (in vacuum).
        energy_ev: loss energies ``(E,)``.
        beam_energy_kev: primary beam energy.
        form: polarisability model.
        clearance_nm: smallest distance kept between the beam and a sphere surface.
        dtype: storage of ``S``; ``float32`` (default) halves memory and time at a relative error
            of ~1e-7, far below shot noise; ``float64`` for reference calculations.
    """

    def __init__(
        self,
        cluster: Cluster,
        energy_ev: NDArray[np.float64],
        beam_energy_kev: float = 100.0,
        form: PolarisabilityForm = "mie",
        clearance_nm: float = 0.5,
        dtype: type[np.floating] = np.float32,
    ):
        if cluster.eps_medium != 1.0:
            raise ConfigError("EELS is modelled in vacuum (eps_medium = 1): the beam travels through the medium")
        self.cluster, self.energy_ev, self.beam_energy_kev = cluster, np.asarray(energy_ev, float), beam_energy_kev
        self.clearance_nm = clearance_nm
        z = cluster.positions_nm[:, 2]
        self.planar = bool(np.all(z == z[0]))
        n = cluster.n
        idx = np.arange(3 * n).reshape(n, 3)
        blocks = [idx[:, :2].ravel(), idx[:, 2]] if self.planar else [idx.ravel()]
        self._blocks = [np.empty((self.energy_ev.size, b.size, b.size), dtype=dtype) for b in blocks]
        alpha = cluster_polarisabilities(cluster, self.energy_ev, form)
        step = max(1, int(2e8 // ((3 * n) ** 2 * 16 * 6)))  # bound the temporaries to ~200 MB
        for start in range(0, self.energy_ev.size, step):
            sl = slice(start, start + step)
            m = system_matrix(alpha[sl], cluster.positions_nm, wavenumber(self.energy_ev[sl], 1.0))
            for out, b in zip(self._blocks, blocks, strict=True):
                out[sl] = np.linalg.inv(m[:, b[:, None], b[None, :]]).imag
        self._pref = eels_prefactor(beam_energy_kev)
        beta, self._gamma = beam_velocity(beam_energy_kev)
        self._q = self.energy_ev / (HBAR_C_EV_NM * beta)

    def _quadratic(self, s: NDArray[np.floating], v: NDArray[np.floating]) -> NDArray[np.float64]:
        sv = np.matmul(s, v[..., None])[..., 0]
        return np.asarray(np.einsum("ek,ek->e", v, sv, dtype=np.float64), dtype=np.float64)

    def _one(self, xy: NDArray[np.float64]) -> NDArray[np.float64]:
        c, dtype = self.cluster, self._blocks[0].dtype
        if not self.planar:
            f = electron_field(c.positions_nm, c.radii_nm, xy, self.energy_ev, self.beam_energy_kev, self.clearance_nm)
            s = self._blocks[0]
            return self._quadratic(s, f.real.astype(dtype)) + self._quadratic(s, f.imag.astype(dtype))
        # planar: in-plane field real, z field imaginary (see electron_field), blocks decoupled
        rel = c.positions_nm[:, :2] - xy[None, :]
        b = np.linalg.norm(rel, axis=1)
        rhat = rel / np.maximum(b, 1e-300)[:, None]
        arg = self._q[:, None] * (np.maximum(b, c.radii_nm + self.clearance_nm) / self._gamma)[None, :]
        pref = (2 * self._q / self._gamma)[:, None]
        k1 = pref * special.k1(arg)  # (E, N)
        a_xy = (-k1[:, :, None] * rhat[None, :, :]).reshape(arg.shape[0], -1).astype(dtype)
        b_z = (pref / self._gamma * special.k0(arg)).astype(dtype)
        return self._quadratic(self._blocks[0], a_xy) + self._quadratic(self._blocks[1], b_z)

    def loss(self, beams_xy_nm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Γ(E) for each beam position ``(B, 2)`` → ``(B, E)`` in eV⁻¹."""
        beams = np.asarray(beams_xy_nm, dtype=np.float64)
        return np.stack([self._pref * self._one(xy) for xy in beams])
