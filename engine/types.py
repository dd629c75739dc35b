"""Immutable domain types shared by the engine, the instruments and the simulators.

Lengths are in the units each ``Axis`` declares (the built-in simulator
uses nm); spectral axes carry their own units (eV for EELS). Arrays follow the
shape conventions written next to each field: ``n`` measurements, ``d`` scan
axes, ``c`` spectral channels, ``h × w`` image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import BadRequest, ConfigError, InvalidSpectrum, OutOfLimits

JSON = Any
"""A value that survives ``json.dumps``/``json.loads`` unchanged."""


@dataclass(frozen=True)
class Axis:
    """A scan axis of the probe.

    Attributes:
        name: axis name, e.g. ``"x"``.
        units: length units of positions on this axis, e.g. ``"nm"``.
        low: smallest allowed position (inclusive), in ``units``.
        high: largest allowed position (inclusive), in ``units``.
    """

    name: str
    units: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ConfigError(f"axis {self.name!r}: need finite low < high, got {self.low}, {self.high}")

    def to_json(self) -> dict[str, JSON]:
        """Plain JSON form of this axis."""
        return {"name": self.name, "units": self.units, "low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> Axis:
        """Inverse of ``to_json``."""
        return cls(str(data["name"]), str(data["units"]), float(data["low"]), float(data["high"]))


@dataclass(frozen=True)
class SpectralAxis:
    """A spectral axis: channel ``k`` sits at ``offset + k * scale``, or at ``points[k]`` when given.

    Most spectrometers are linearly calibrated; a non-linear axis (e.g. the triangular voltage
    sweep of a hysteresis loop) lists its ``points`` explicitly.

    Attributes:
        name: quantity, e.g. ``"energy_loss"``.
        units: e.g. ``"eV"``.
        offset: value of channel 0, in ``units``.
        scale: channel width, in ``units`` per channel (non-zero).
        size: number of channels ``c``.
        points: explicit channel values ``(c,)``, or empty for a linear axis.
    """

    name: str
    units: str
    offset: float
    scale: float
    size: int
    points: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 1 or self.scale == 0 or not math.isfinite(self.scale):
            raise ConfigError(f"spectral axis {self.name!r}: need size >= 1 and finite scale != 0")
        if self.points and len(self.points) != self.size:
            raise ConfigError(f"spectral axis {self.name!r}: {len(self.points)} points for {self.size} channels")

    def values(self) -> NDArray[np.float64]:
        """Channel values, shape ``(c,)``, in ``units``."""
        if self.points:
            return np.asarray(self.points, dtype=np.float64)
        return self.offset + self.scale * np.arange(self.size, dtype=np.float64)

    def to_json(self) -> dict[str, JSON]:
        """Plain JSON form of this axis."""
        out: dict[str, JSON] = {
            "name": self.name,
            "units": self.units,
            "offset": self.offset,
            "scale": self.scale,
            "size": self.size,
        }
        if self.points:
            out["points"] = list(self.points)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> SpectralAxis:
        """Inverse of ``to_json``."""
        return cls(
            str(data["name"]),
            str(data["units"]),
            float(data["offset"]),
            float(data["scale"]),
            int(data["size"]),
            tuple(float(v) for v in data.get("points", ())),
        )


@dataclass(frozen=True)
class InstrumentDescription:
    """What an instrument says about itself in answer to ``describe``.

    Attributes:
        name: instrument name, e.g. ``"synthetic-stem"``.
        axes: the scan axes, in the order positions are given (``d`` of them).
        spectral_axis: calibration of the spectra it measures.
        image_channels: names of the structural image channels, e.g. ``("haadf",)``.
        max_batch: the most positions one ``measure`` call accepts.
        extra: free-form JSON metadata (driver version, detector, ...).
    """

    name: str
    axes: tuple[Axis, ...]
    spectral_axis: SpectralAxis
    image_channels: tuple[str, ...]
    max_batch: int = 1024
    extra: Mapping[str, JSON] = field(default_factory=dict)

    def to_json(self) -> dict[str, JSON]:
        """Plain JSON form of this description."""
        return {
            "name": self.name,
            "axes": [a.to_json() for a in self.axes],
            "spectral_axis": self.spectral_axis.to_json(),
            "image_channels": list(self.image_channels),
            "max_batch": self.max_batch,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> InstrumentDescription:
        """Inverse of ``to_json``."""
        return cls(
            name=str(data["name"]),
            axes=tuple(Axis.from_json(a) for a in data["axes"]),
            spectral_axis=SpectralAxis.from_json(data["spectral_axis"]),
            image_channels=tuple(str(c) for c in data["image_channels"]),
            max_batch=int(data.get("max_batch", 1024)),
            extra=dict(data.get("extra", {})),
        )

    def check_positions(self, positions: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """Validate probe positions against the axes.

        Args:
            positions: shape ``(n, d)``, in each axis' units.

        Returns:
            The positions as a C-contiguous float64 array ``(n, d)``.

        Raises:
            BadRequest: wrong shape, empty, too many, or non-finite values.
            OutOfLimits: a position lies outside an axis' ``[low, high]``.
        """
        pos = np.ascontiguousarray(positions, dtype=np.float64)
        d = len(self.axes)
        if pos.ndim != 2 or pos.shape[1] != d or pos.shape[0] == 0:
            raise BadRequest(f"positions must have shape (n, {d}) with n >= 1, got {pos.shape}")
        if pos.shape[0] > self.max_batch:
            raise BadRequest(f"{pos.shape[0]} positions in one batch; this instrument takes at most {self.max_batch}")
        if not np.isfinite(pos).all():
            raise BadRequest("positions contain NaN or infinite values")
        lows = np.array([a.low for a in self.axes])
        highs = np.array([a.high for a in self.axes])
        outside = (pos < lows) | (pos > highs)
        if outside.any():
            i, j = (int(k) for k in np.argwhere(outside)[0])
            axis = self.axes[j]
            raise OutOfLimits(
                f"position {i} has {axis.name} = {pos[i, j]:g} {axis.units}, "
                f"outside [{axis.low:g}, {axis.high:g}] {axis.units}"
            )
        return pos


@dataclass(frozen=True)
class ImageAxis:
    """Calibration of one image dimension: pixel ``k`` is centred at ``offset + k * scale``."""

    name: str
    units: str
    offset: float
    scale: float

    def to_json(self) -> dict[str, JSON]:
        """Plain JSON form of this axis."""
        return {"name": self.name, "units": self.units, "offset": self.offset, "scale": self.scale}

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> ImageAxis:
        """Inverse of ``to_json``."""
        return cls(str(data["name"]), str(data["units"]), float(data["offset"]), float(data["scale"]))


@dataclass(frozen=True)
class Image:
    """A structural image (HAADF, SEM, dark-field).

    Attributes:
        channel: detector channel name, e.g. ``"haadf"``.
        data: shape ``(h, w)``; row index runs along ``y_axis``, column index along ``x_axis``.
        y_axis: calibration of rows.
        x_axis: calibration of columns.
        units: intensity units, e.g. ``"counts"``.
    """

    channel: str
    data: NDArray[Any]
    y_axis: ImageAxis
    x_axis: ImageAxis
    units: str = "counts"

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ConfigError(f"image data must be 2-D (h, w), got shape {self.data.shape}")

    def coords(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Pixel-centre coordinates ``(y (h,), x (w,))`` in the axes' units."""
        h, w = self.data.shape
        y = self.y_axis.offset + self.y_axis.scale * np.arange(h, dtype=np.float64)
        x = self.x_axis.offset + self.x_axis.scale * np.arange(w, dtype=np.float64)
        return y, x


@dataclass(frozen=True)
class SpectrumBatch:
    """What a driver returns from ``measure``.

    Attributes:
        spectra: shape ``(n, c)``, counts per channel.
        timestamps: shape ``(n,)``, seconds since the Unix epoch at the end of each acquisition.
        acquisition_time_s: dwell per spectrum, seconds.
    """

    spectra: NDArray[np.float32]
    timestamps: NDArray[np.float64]
    acquisition_time_s: float


@dataclass(frozen=True)
class Measurement:
    """Spectra measured at a batch of probe positions.

    Attributes:
        request_id: the id of the request that produced it (idempotency key).
        positions: shape ``(n, d)``, in the axes' units.
        spectra: shape ``(n, c)``, float32 counts per channel.
        timestamps: shape ``(n,)``, seconds since the Unix epoch at the end of each acquisition.
        acquisition_time_s: dwell per spectrum, seconds.
    """

    request_id: str
    positions: NDArray[np.float64]
    spectra: NDArray[np.float32]
    timestamps: NDArray[np.float64]
    acquisition_time_s: float

    def check(self, spectral_axis: SpectralAxis) -> None:
        """Raise ``InvalidSpectrum`` unless spectra are ``(n, c)`` finite and match positions."""
        n = self.positions.shape[0]
        if self.spectra.shape != (n, spectral_axis.size):
            raise InvalidSpectrum(
                f"request {self.request_id}: spectra have shape {self.spectra.shape}, "
                f"expected ({n}, {spectral_axis.size})"
            )
        if self.timestamps.shape != (n,):
            raise InvalidSpectrum(f"request {self.request_id}: timestamps shape {self.timestamps.shape} != ({n},)")
        finite = np.isfinite(self.spectra).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite).tolist()
            raise InvalidSpectrum(f"request {self.request_id}: spectra {bad} contain NaN or infinite values")


def as_positions(rows: Sequence[Sequence[float]] | NDArray[Any]) -> NDArray[np.float64]:
    """Convert a list of positions to an ``(n, d)`` float64 array."""
    arr = np.asarray(rows, dtype=np.float64)
    return arr.reshape(1, -1) if arr.ndim == 1 else arr
