"""Geometry of a self-assembled nanocrystal monolayer (pure functions, lengths in nm).

A hexagonal island with an edge and vacancies, plus dimers and short chains on the bare substrate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Monolayer:
    """Particles in a square field of view.

    Attributes:
        centres_nm: ``(p, 2)`` centres ``(x, y)``.
        radii_nm: ``(p,)``.
        kind: ``(p,)`` labels: 0 island, 1 island edge, 2 dimer, 3 chain.
        field_of_view_nm: side of the field.
    """

    centres_nm: NDArray[np.float64]
    radii_nm: NDArray[np.float64]
    kind: NDArray[np.int64]
    field_of_view_nm: float


def _fits(c: NDArray[np.float64], r: float, centres: list, radii: list, fov: float, min_gap: float) -> bool:
    if np.any(c < r + 1.0) or np.any(c > fov - r - 1.0):
        return False
    if not centres:
        return True
    d = np.linalg.norm(np.asarray(centres) - c, axis=1) - np.asarray(radii) - r
    return bool(d.min() >= min_gap)


def generate_monolayer(
    rng: np.random.Generator,
    *,
    field_of_view_nm: float,
    mean_radius_nm: float,
    radius_spread: float,
    gap_nm: float,
    island_fraction: float,
    vacancy_fraction: float,
    n_dimers: int,
    n_chains: int,
    min_gap_nm: float = 0.5,
) -> Monolayer:
    """Generate a monolayer island with vacancies, dimers and chains.

    The hexagonal island covers the left ``island_fraction`` of the field (wavy edge); dimers and
    3–5-particle chains are placed at random on the free substrate.

    Args:
        rng: random generator (seeded by the caller).
        field_of_view_nm: side of the square field.
        mean_radius_nm: median radius; radii are log-normal with ``radius_spread`` (σ of ln R).
        gap_nm: surface-to-surface gap of the lattice and inside dimers and chains.
        island_fraction: share of the field's width the island covers.
        vacancy_fraction: share of lattice sites left empty.
        n_dimers, n_chains: clusters to place beside the island.
        min_gap_nm: smallest gap anywhere.
    """
    fov = field_of_view_nm
    pitch = 2 * mean_radius_nm + gap_nm
    centres: list[NDArray[np.float64]] = []
    radii: list[float] = []
    kind: list[int] = []
    phase, wave = rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.08) * fov
    rows = int(fov / (pitch * np.sqrt(3) / 2)) + 1
    for row in range(rows):
        y = mean_radius_nm + 1.0 + row * pitch * np.sqrt(3) / 2
        edge = island_fraction * fov + wave * np.sin(2 * np.pi * y / fov * 1.5 + phase)
        for col in range(int(fov / pitch) + 1):
            x = mean_radius_nm + 1.0 + col * pitch + (pitch / 2 if row % 2 else 0.0)
            if x > edge or rng.random() < vacancy_fraction:
                continue
            r = float(
                np.clip(
                    mean_radius_nm * np.exp(radius_spread * rng.standard_normal()),
                    0.6 * mean_radius_nm,
                    0.5 * pitch - min_gap_nm / 2,
                )
            )
            c = np.array([x, y])
            if _fits(c, r, centres, radii, fov, min_gap_nm):
                centres.append(c)
                radii.append(r)
                kind.append(1 if edge - x < pitch else 0)
    for label, count, sizes in ((2, n_dimers, (2, 2)), (3, n_chains, (3, 5))):
        placed, tries = 0, 0
        while placed < count and tries < 2000:
            tries += 1
            n = int(rng.integers(sizes[0], sizes[1] + 1))
            rs = [float(mean_radius_nm * np.exp(radius_spread * rng.standard_normal())) for _ in range(n)]
            angle = rng.uniform(0, np.pi)
            step = np.array([np.cos(angle), np.sin(angle)])
            start = rng.uniform(0, fov, size=2)
            members, ok = [start], True
            for k in range(1, n):
                members.append(members[-1] + step * (rs[k - 1] + rs[k] + gap_nm + rng.uniform(0, 1.0)))
            trial_c, trial_r = list(centres), list(radii)
            for c, r in zip(members, rs, strict=True):
                if not _fits(c, r, trial_c, trial_r, fov, 3 * gap_nm if c is members[0] else min_gap_nm):
                    ok = False
                    break
                trial_c.append(c)
                trial_r.append(r)
            if ok:
                centres, radii = trial_c, trial_r
                kind.extend([label] * n)
                placed += 1
    return Monolayer(np.asarray(centres), np.asarray(radii), np.asarray(kind, dtype=np.int64), fov)
