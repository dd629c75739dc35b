"""A recorded spectrum image: a structural image and spectra at known probe positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError
from engine.types import Axis, Image, SpectralAxis


@dataclass(frozen=True)
class SpectrumImage:
    """Recorded data that a replay serves like a microscope.

    Attributes:
        image: the structural image with its calibration (``derived`` notes say if it was
            computed from the spectra because the file had none).
        positions: ``(m, 2)`` probe positions ``(x, y)`` in the axes' units.
        spectra: ``(m, c)`` float32.
        spectral_axis: calibration of the spectra.
        axes: ``(x, y)`` scan axes whose limits cover every position.
        source: the file it came from.
        acquisition_time_s: recorded dwell per spectrum, if known.
        notes: what the importer had to assume or derive.
        signal: what the spectra's values are, with units, for axis labels (``counts``,
            ``Piezoresponse (a.u.)``, ``LIX 1 omega (A)``).
        complete: whether the positions cover the whole scan (a grid); a recorded run's measured
            positions do not, and positions it never measured are "no data", not "off the grid".
        frame_rotation_deg: the scan frame's rotation (counterclockwise in ``(x, y)``, degrees) about
            the image's centre: the image is in the frame, the positions on the specimen (a rotated
            Nanonis grid); 0 for an axis-aligned scan.
    """

    image: Image
    positions: NDArray[np.float64]
    spectra: NDArray[np.float32]
    spectral_axis: SpectralAxis
    axes: tuple[Axis, Axis]
    source: str
    acquisition_time_s: float | None = None
    notes: tuple[str, ...] = ()
    complete: bool = True
    signal: str = "counts"
    frame_rotation_deg: float = 0.0

    def __post_init__(self) -> None:
        m = self.positions.shape[0]
        if self.positions.shape != (m, 2) or self.spectra.shape != (m, self.spectral_axis.size):
            raise ConfigError(
                f"{self.source}: positions {self.positions.shape} and spectra {self.spectra.shape} "
                f"do not match {self.spectral_axis.size} channels"
            )
        if m == 0:
            raise ConfigError(f"{self.source}: no spectra")

    def spacing(self) -> float:
        """Typical distance between neighbouring recorded positions (median nearest-neighbour distance)."""
        if self.positions.shape[0] < 2:
            return 1.0
        sample = self.positions[:: max(1, self.positions.shape[0] // 500)]
        d = np.linalg.norm(sample[:, None, :] - self.positions[None, :, :], axis=-1)
        d[d == 0] = np.inf
        return float(np.median(d.min(axis=1)))

    def nearest(self, positions: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Index ``(n,)`` of the nearest recorded position to each of ``positions (n, 2)``, and the distance."""
        d = np.linalg.norm(positions[:, None, :] - self.positions[None, :, :], axis=-1)
        idx = np.argmin(d, axis=1)
        return idx.astype(np.int64), d[np.arange(len(idx)), idx]

    def pixels(self) -> NDArray[np.int64]:
        """Image pixel ``(row, col)`` under each recorded position ``(m, 2)`` (through the frame's rotation)."""
        y, x = self.image.coords()
        frame = self.positions
        if self.frame_rotation_deg:
            centre = np.array([(x[0] + x[-1]) / 2, (y[0] + y[-1]) / 2])
            frame = rotate(self.positions - centre, -self.frame_rotation_deg) + centre
        cols = np.abs(frame[:, 0:1] - x[None, :]).argmin(axis=1)
        rows = np.abs(frame[:, 1:2] - y[None, :]).argmin(axis=1)
        return np.stack([rows, cols], axis=1).astype(np.int64)


def rotate(points: NDArray[np.float64], degrees: float) -> NDArray[np.float64]:
    """``points (n, 2)`` rotated counterclockwise by ``degrees`` about the origin.

    Args:
        points: ``(x, y)`` rows.
        degrees: the angle; negative turns clockwise.

    Returns:
        The rotated points ``(n, 2)``.

    Examples:
        >>> rotate(np.array([[1.0, 0.0]]), 90.0).round(12).tolist()
        [[0.0, 1.0]]
    """
    t = np.deg2rad(degrees)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.asarray(np.asarray(points, np.float64) @ r.T, np.float64)
