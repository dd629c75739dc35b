"""A simulated scanning microscope: any image model and noise-free spectrum model behind ``Driver``.

The driver adds what every simulated instrument needs and nothing physical: calibration, Poisson
shot noise, a real (abortable) dwell per spectrum and timestamps from an injected clock. The physics
lives in the image and spectrum models it is given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from engine.errors import AcquisitionAborted, BadRequest
from engine.protocols import Clock
from engine.types import JSON, Axis, Image, ImageAxis, InstrumentDescription, SpectralAxis, SpectrumBatch
from simulators.drift import SpecimenDrift

SpectrumModel = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""Expected counts ``(n, c)`` for probe positions ``(n, 2)`` in nm, per second of dwell."""

ImageModel = Callable[[np.random.Generator, NDArray[np.float64]], NDArray[np.float32]]
"""A noisy structural image ``(h, w)`` of the whole field of view, drawn with the given generator, with the
specimen displaced by the given offset ``(2,)`` nm ``(x, y)`` in the scan frame (its drift; zeros without)."""

ReadOut = Callable[[NDArray[np.float64], np.random.Generator], NDArray[np.float32]]
"""Counts ``(n, c)`` read from expected counts ``(n, c)`` (e.g. ``simulators.detector.Detector.read``)."""


def poisson_read_out(expected: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float32]:
    """Shot noise alone: Poisson draws of the expected counts ``(n, c)``."""
    return rng.poisson(np.clip(expected, 0, None)).astype(np.float32)


class SimulatedStem:
    """An instrument with one imaging detector and a spectrometer, over a square field of view.

    Args:
        name: instrument name reported by ``describe``.
        field_of_view_nm: side of the square field; the axes run over ``[0, field_of_view_nm]``.
        image_channel: name of the imaging detector (``haadf``, ``sem``).
        image_model: draws a frame of the whole field.
        spectrum_model: expected counts per second of dwell at each position.
        spectral_axis: calibration of the spectra.
        dwell_s: acquisition time per spectrum; the driver really waits this long (abortable).
        rng: noise generator.
        clock: timestamps.
        extra: JSON metadata added to ``describe``.
        read_out: turns expected counts into recorded ones (default: Poisson shot noise alone).
        drift: the specimen's displacement in the scan frame (``None``: it stays put). A probe sent
            to ``p`` lands on the specimen at ``p − d(t)``, and images show the displaced specimen;
            ``landings`` keeps where each spectrum really came from, in specimen coordinates.
    """

    def __init__(
        self,
        *,
        name: str,
        field_of_view_nm: float,
        image_channel: str,
        image_model: ImageModel,
        spectrum_model: SpectrumModel,
        spectral_axis: SpectralAxis,
        dwell_s: float,
        rng: np.random.Generator,
        clock: Clock,
        extra: Mapping[str, JSON] | None = None,
        read_out: ReadOut = poisson_read_out,
        drift: SpecimenDrift | None = None,
    ):
        self.name, self.field_of_view_nm, self._model = name, field_of_view_nm, spectrum_model
        self._channel, self._image_model = image_channel, image_model
        self._spectral, self.dwell_s = spectral_axis, dwell_s
        self._rng, self._clock = rng, clock
        self._extra = dict(extra or {})
        self._read_out = read_out
        self._drift = drift
        self._landings: list[NDArray[np.float64]] = []
        self._abort = threading.Event()
        self._busy = threading.Event()
        self._last_position: list[float] | None = None
        self._n_spectra = 0

    def describe(self) -> InstrumentDescription:
        """Axes ``x``, ``y`` over the field of view (nm), the spectral axis, the image channel."""
        fov = self.field_of_view_nm
        return InstrumentDescription(
            name=self.name,
            axes=(Axis("x", "nm", 0.0, fov), Axis("y", "nm", 0.0, fov)),
            spectral_axis=self._spectral,
            image_channels=(self._channel,),
            max_batch=1024,
            extra={**self._extra, "dwell_s": self.dwell_s},
        )

    def acquire_image(self, channel: str) -> Image:
        """A noisy frame ``(h, w)`` of the whole field; pixel centres span the field of view."""
        if channel != self._channel:
            raise BadRequest(f"unknown image channel {channel!r}; this instrument has {self._channel!r}")
        data = np.asarray(self._image_model(self._rng, self._offset()), dtype=np.float32)
        step_y, step_x = self.field_of_view_nm / data.shape[0], self.field_of_view_nm / data.shape[1]
        y_axis, x_axis = ImageAxis("y", "nm", step_y / 2, step_y), ImageAxis("x", "nm", step_x / 2, step_x)
        return Image(channel, data, y_axis, x_axis)

    def expected_counts(self, positions: NDArray[np.float64]) -> NDArray[np.float64]:
        """Noise-free expected counts ``(n, c)`` in one dwell at ``positions (n, 2)`` nm (ground truth)."""
        return np.asarray(self._model(positions) * self.dwell_s, dtype=np.float64)

    def measure(self, positions: NDArray[np.float64]) -> SpectrumBatch:
        """Spectra ``(n, c)`` at ``positions (n, 2)`` nm, as the read-out records them; waits the dwell per spectrum."""
        self._abort.clear()
        self._busy.set()
        try:
            landed = positions - self._offset()
            expected = self._model(landed) * self.dwell_s
            if self.dwell_s > 0 and self._abort.wait(self.dwell_s * positions.shape[0]):
                raise AcquisitionAborted("acquisition aborted by request")
            spectra = self._read_out(expected, self._rng)
            now = self._clock.time()
            times = now - self.dwell_s * np.arange(positions.shape[0] - 1, -1, -1, dtype=np.float64)
            self._last_position = positions[-1].tolist()
            self._landings.append(np.array(landed, dtype=np.float64))
            self._n_spectra += positions.shape[0]
            return SpectrumBatch(spectra, times, self.dwell_s)
        finally:
            self._busy.clear()

    def _offset(self) -> NDArray[np.float64]:
        return np.zeros(2) if self._drift is None else self._drift.offset()

    @property
    def landings(self) -> NDArray[np.float64]:
        """Where every spectrum measured so far landed on the specimen ``(n, 2)`` nm (ground truth, in order)."""
        return np.concatenate(self._landings) if self._landings else np.zeros((0, 2))

    def status(self) -> Mapping[str, JSON]:
        """Probe position, spectra so far, whether acquiring."""
        return {"busy": self._busy.is_set(), "probe_position": self._last_position, "spectra_measured": self._n_spectra}

    def abort(self) -> None:
        """Interrupt the dwell in progress (thread-safe)."""
        self._abort.set()
