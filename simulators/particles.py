"""Particle detection: spheres (centres and radii, nm) from a structure image patch (pure functions).

Used to turn a structure the image VAE *decodes* (a patch it may never have seen) into a geometry
the coupled-dipole simulator can evaluate: threshold (Otsu) → fill holes → distance transform →
one sphere per local maximum of the distance (radius = that distance), strongest first, skipping
maxima inside a sphere already taken; overlapping spheres are then shrunk to keep a gap.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


def otsu_threshold(image: NDArray[np.floating], bins: int = 128) -> float:
    """Otsu's threshold of ``image`` (the level that maximises the between-class variance)."""
    values = np.asarray(image, dtype=np.float64).ravel()
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


def detect_spheres(
    patch: NDArray[np.floating],
    pixel_nm: float,
    *,
    max_spheres: int = 8,
    min_radius_nm: float = 4.0,
    min_gap_nm: float = 0.5,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Spheres in a bright-particle patch ``(p, p)``: centres ``(n, 2)`` (nm, centred on their mean) and radii ``(n,)``.

    Args:
        patch: the structure image; particles brighter than the background.
        pixel_nm: pixel size, nm.
        max_spheres: keep at most this many (largest first).
        min_radius_nm: ignore blobs thinner than this.
        min_gap_nm: overlapping or touching spheres are shrunk to leave this gap.

    Returns ``(0, 2)`` and ``(0,)`` when nothing stands out from the background.
    """
    img = ndimage.gaussian_filter(np.asarray(patch, dtype=np.float64), 1.0)
    if float(img.max() - img.min()) <= 1e-9 * (abs(float(img.max())) + 1.0):
        return np.empty((0, 2)), np.empty(0)
    mask = ndimage.binary_fill_holes(img > otsu_threshold(img))
    dist = ndimage.distance_transform_edt(mask) * pixel_nm
    peaks = (dist == ndimage.maximum_filter(dist, size=3)) & (dist >= min_radius_nm)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-dist[ys, xs], kind="stable")
    centres: list[NDArray[np.float64]] = []
    radii: list[float] = []
    for k in order:
        c = (np.array([xs[k], ys[k]], dtype=np.float64) + 0.5) * pixel_nm
        r = float(dist[ys[k], xs[k]])
        if any(np.linalg.norm(c - c2) < max(r, r2) for c2, r2 in zip(centres, radii, strict=True)):
            continue
        centres.append(c)
        radii.append(r)
        if len(radii) == max_spheres:
            break
    if not radii:
        return np.empty((0, 2)), np.empty(0)
    xy, rad = np.asarray(centres), np.asarray(radii)
    return xy - xy.mean(axis=0), separate(xy, rad, min_gap_nm)


def separate(centres: NDArray[np.float64], radii: NDArray[np.float64], min_gap_nm: float) -> NDArray[np.float64]:
    """Radii ``(n,)`` shrunk (each pair in proportion) until every surface gap is at least ``min_gap_nm``."""
    r = np.asarray(radii, dtype=np.float64).copy()
    for _ in range(100):
        d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
        np.fill_diagonal(d, np.inf)
        excess = r[:, None] + r[None, :] + min_gap_nm - d
        if excess.max() <= 1e-9:
            break
        i, j = np.unravel_index(int(np.argmax(excess)), excess.shape)
        shrink = excess[i, j] / (r[i] + r[j])
        r[i] *= 1 - shrink
        r[j] *= 1 - shrink
    return r
