"""Parametric design space of nanoparticle clusters for inverse design (pure functions).

A design is a point of the unit cube ``[0, 1]^6``; :meth:`ClusterSpace.decode` maps it to a
:class:`ClusterDesign` (arrangement, number of particles, radius, surface gap, material, doping)
within the space's bounds, and :meth:`ClusterDesign.cluster` builds the coupled-dipole
:class:`~simulators.cda.Cluster`. Categorical variables take ``floor(u · K)``; integers round.
Particles never overlap: the regular arrangements place neighbours ``2r + gap`` apart (gap > 0 by
the bounds), the random one grows a planar cluster, seeded by the design itself, in which every
surface gap is at least ``gap``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError
from simulators.cda import Cluster, Dielectric, dark_field_spectrum
from simulators.dielectric import MATERIALS, ito

ARRANGEMENTS = ("chain", "triangle", "square", "random")
"""Arrangements: a straight chain, a triangular or square patch of a close-packed / square lattice, random growth."""


@dataclass(frozen=True)
class ClusterDesign:
    """One candidate structure (lengths in nm).

    Attributes:
        arrangement: one of :data:`ARRANGEMENTS`.
        n: number of spheres.
        radius_nm: sphere radius.
        gap_nm: surface-to-surface gap between neighbours (the least gap for ``random``).
        material: ``ITO`` (Sn-doped In₂O₃, Drude) or a noble metal of :data:`simulators.dielectric.MATERIALS`.
        sn_fraction: Sn fraction of ITO (carrier density; ignored for metals).
    """

    arrangement: str
    n: int
    radius_nm: float
    gap_nm: float
    material: str
    sn_fraction: float

    def __post_init__(self) -> None:
        if self.arrangement not in ARRANGEMENTS:
            raise ConfigError(f"unknown arrangement {self.arrangement!r}; choose {', '.join(ARRANGEMENTS)}")
        if self.n < 1 or self.radius_nm <= 0 or self.gap_nm <= 0:
            raise ConfigError(f"need n >= 1, radius > 0 and gap > 0, got {self.n}, {self.radius_nm}, {self.gap_nm}")

    def centres_nm(self) -> NDArray[np.float64]:
        """Sphere centres ``(n, 3)`` in the z = 0 plane, centred on the origin."""
        pitch = 2 * self.radius_nm + self.gap_nm
        if self.arrangement == "chain":
            xy = np.column_stack([np.arange(self.n) * pitch, np.zeros(self.n)])
        elif self.arrangement == "triangle":
            xy = _lattice_patch(self.n, pitch, hexagonal=True)
        elif self.arrangement == "square":
            xy = _lattice_patch(self.n, pitch, hexagonal=False)
        else:
            xy = _random_growth(self.n, self.radius_nm, self.gap_nm, self._seed())
        xy = xy - xy.mean(axis=0)
        return np.column_stack([xy, np.zeros(self.n)])

    def _seed(self) -> int:
        """A seed that is a function of the design, so the same design always has the same geometry."""
        key = (self.n, round(self.radius_nm, 6), round(self.gap_nm, 6))
        return zlib.crc32(repr(key).encode())

    def dielectric(self) -> Dielectric:
        """The permittivity ``ε(E)`` of the spheres."""
        if self.material == "ITO":
            return ito(self.sn_fraction)
        return MATERIALS[self.material]

    def cluster(self, eps_medium: float = 1.0) -> Cluster:
        """The coupled-dipole cluster (raises if spheres overlapped, which the construction prevents)."""
        return Cluster(self.centres_nm(), np.full(self.n, self.radius_nm), [self.dielectric()] * self.n, eps_medium)

    def spectrum(self, energy_ev: NDArray[np.float64], eps_medium: float = 1.0) -> NDArray[np.float64]:
        """Dark-field scattering cross-section ``(E,)`` in nm² at ``energy_ev (E,)``."""
        return np.asarray(dark_field_spectrum(self.cluster(eps_medium), energy_ev), dtype=np.float64)


def _lattice_patch(n: int, pitch: float, hexagonal: bool) -> NDArray[np.float64]:
    """The ``n`` sites of a triangular (or square) lattice nearest to the centre of its unit triangle (square).

    Three sites of the triangular lattice are a triangle and four of the square one a square; more
    sites grow the patch ring by ring. The order is deterministic.
    """
    k = math.ceil(math.sqrt(n)) + 2
    grid_i, grid_j = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1), indexing="ij")
    i, j = grid_i.ravel().astype(np.float64), grid_j.ravel().astype(np.float64)
    x = i + 0.5 * j if hexagonal else i
    y = j * math.sqrt(3) / 2 if hexagonal else j
    xy = np.column_stack([x, y]) * pitch
    centre = np.array([0.5, math.sqrt(3) / 6 if hexagonal else 0.5]) * pitch
    order = np.lexsort((xy[:, 0], xy[:, 1], np.round(np.hypot(*(xy - centre).T), 9)))
    return np.asarray(xy[order[:n]], dtype=np.float64)


def _random_growth(n: int, radius: float, gap: float, seed: int) -> NDArray[np.float64]:
    """Each sphere touches (at ``gap``, plus a little) a random earlier one and keeps ``gap`` from all."""
    rng = np.random.default_rng(seed)
    centres = [np.zeros(2)]
    while len(centres) < n:
        j = int(rng.integers(len(centres)))
        angle = rng.uniform(0, 2 * np.pi)
        c = centres[j] + (2 * radius + gap * (1 + 0.5 * rng.random())) * np.array([np.cos(angle), np.sin(angle)])
        if np.min(np.linalg.norm(np.asarray(centres) - c, axis=1)) >= 2 * radius + gap - 1e-9:
            centres.append(c)
    return np.asarray(centres, dtype=np.float64)


@dataclass(frozen=True)
class ClusterSpace:
    """Bounds of the parametric cluster space; designs are points of ``[0, 1]^6``.

    Coordinates, in order: arrangement (categorical), number of spheres, radius (nm), gap (nm),
    material (categorical), Sn fraction.
    """

    n_range: tuple[int, int] = (1, 6)
    radius_range_nm: tuple[float, float] = (5.0, 40.0)
    gap_range_nm: tuple[float, float] = (1.0, 20.0)
    sn_range: tuple[float, float] = (0.02, 0.15)
    arrangements: tuple[str, ...] = ARRANGEMENTS
    materials: tuple[str, ...] = ("Au", "Ag", "ITO")

    NAMES: ClassVar[tuple[str, ...]] = ("arrangement", "n", "radius_nm", "gap_nm", "material", "sn_fraction")

    @property
    def dim(self) -> int:
        """Dimension of the unit cube (6)."""
        return len(self.NAMES)

    def decode(self, u: NDArray[np.float64]) -> ClusterDesign:
        """The design at ``u (6,)`` in ``[0, 1]``; values outside are clipped."""
        v = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        if v.shape != (self.dim,):
            raise ConfigError(f"a design is a point of [0, 1]^{self.dim}, got shape {v.shape}")
        return ClusterDesign(
            arrangement=self.arrangements[min(int(v[0] * len(self.arrangements)), len(self.arrangements) - 1)],
            n=round(self.n_range[0] + v[1] * (self.n_range[1] - self.n_range[0])),
            radius_nm=_lerp(self.radius_range_nm, v[2]),
            gap_nm=_lerp(self.gap_range_nm, v[3]),
            material=self.materials[min(int(v[4] * len(self.materials)), len(self.materials) - 1)],
            sn_fraction=_lerp(self.sn_range, v[5]),
        )

    def encode(self, design: ClusterDesign) -> NDArray[np.float64]:
        """The centre of ``design``'s cell in ``[0, 1]^6`` (``decode(encode(d)) == d``)."""
        n_span = max(self.n_range[1] - self.n_range[0], 1)
        return np.array(
            [
                (self.arrangements.index(design.arrangement) + 0.5) / len(self.arrangements),
                (design.n - self.n_range[0]) / n_span,
                _unlerp(self.radius_range_nm, design.radius_nm),
                _unlerp(self.gap_range_nm, design.gap_nm),
                (self.materials.index(design.material) + 0.5) / len(self.materials),
                _unlerp(self.sn_range, design.sn_fraction),
            ]
        )

    def features(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Model coordinates ``(m, 6)`` of designs ``u (m, 6)``, in which equal structures coincide.

        Columns: arrangement index, n, ln radius (nm), ln gap (nm), material index, Sn fraction. The
        cube's cells are replaced by what they decode to, so every design of one cell (one
        arrangement, n and material) shares its categorical coordinates, and structures that are the
        same are one point: a single sphere has no arrangement or gap (arrangement index 0, and the
        geometric middle of the gap range), a regular dimer is one structure whatever its
        arrangement (index 0), and a metal has no Sn fraction (the range's lower bound). Radius and
        gap are logarithmic, as the optics scale with ratios of lengths.
        """
        rows = np.empty((len(u), self.dim), dtype=np.float64)
        no_gap = math.log(math.sqrt(self.gap_range_nm[0] * self.gap_range_nm[1]))
        for k, point in enumerate(np.asarray(u, dtype=np.float64)):
            d = self.decode(point)
            regular_dimer_or_single = d.n == 1 or (d.n == 2 and d.arrangement != "random")
            arrangement = 0 if regular_dimer_or_single else self.arrangements.index(d.arrangement)
            rows[k] = (
                arrangement,
                d.n,
                math.log(d.radius_nm),
                math.log(d.gap_nm) if d.n > 1 else no_gap,
                self.materials.index(d.material),
                d.sn_fraction if d.material == "ITO" else self.sn_range[0],
            )
        return rows

    def sample(self, rng: np.random.Generator, k: int) -> NDArray[np.float64]:
        """``k`` designs ``(k, 6)`` drawn uniformly from the unit cube."""
        return rng.random((k, self.dim))


def _lerp(bounds: tuple[float, float], t: float) -> float:
    return float(bounds[0] + t * (bounds[1] - bounds[0]))


def _unlerp(bounds: tuple[float, float], value: float) -> float:
    span = bounds[1] - bounds[0]
    return float((value - bounds[0]) / span) if span else 0.0
