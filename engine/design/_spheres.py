"""Sphere geometries as fixed-length vectors, the form designs of the latent space travel in (pure functions).

A geometry vector ``(3k,)`` holds ``x, y, r`` (nm) of up to ``k`` spheres in the z = 0 plane; unused
rows are NaN.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def geometry_vector(centres_nm: NDArray[np.float64], radii_nm: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """The first ``k`` spheres (centres ``(n, 2 or 3)``, radii ``(n,)``, nm) as a ``(3k,)`` vector, NaN-padded.

    Args:
        centres_nm: sphere centres ``(n, 2)`` or ``(n, 3)``, nm (z is dropped).
        radii_nm: sphere radii ``(n,)``, nm.
        k: spheres the vector holds.

    Returns:
        ``x, y, r`` per sphere ``(3k,)``, NaN-padded.

    Examples:
        >>> geometry_vector(np.array([[0.0, 0.0], [30.0, 0.0]]), np.array([10.0, 12.0]), 3).tolist()
        [0.0, 0.0, 10.0, 30.0, 0.0, 12.0, nan, nan, nan]
    """
    n = min(int(radii_nm.size), k)
    out = np.full((k, 3), np.nan)
    out[:n, :2] = np.asarray(centres_nm, dtype=np.float64)[:n, :2]
    out[:n, 2] = radii_nm[:n]
    return out.ravel()


def spheres_of(geometry: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Centres ``(n, 2)`` and radii ``(n,)`` from a geometry vector ``(3k,)`` (NaN rows dropped).

    Args:
        geometry: a geometry vector ``(3k,)`` (see ``geometry_vector``).

    Returns:
        Centres ``(n, 2)`` nm and radii ``(n,)`` nm.

    Examples:
        >>> centres, radii = spheres_of(geometry_vector(np.array([[0.0, 0.0]]), np.array([10.0]), 3))
        >>> centres.tolist(), radii.tolist()
        ([[0.0, 0.0]], [10.0])
    """
    rows = np.asarray(geometry, dtype=np.float64).reshape(-1, 3)
    rows = rows[np.isfinite(rows).all(axis=1)]
    return rows[:, :2], rows[:, 2]
