"""The replay driver: serves a recorded spectrum image exactly like a microscope."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from engine.errors import AcquisitionAborted, BadRequest, ConfigError, NoRecordedData
from engine.protocols import Clock
from engine.spectrum_image import SpectrumImage
from engine.types import JSON, Image, InstrumentDescription, SpectrumBatch


class ReplayDriver:
    """A ``Driver`` over recorded data.

    ``measure`` returns the recorded spectrum at the nearest recorded position within ``tolerance``
    (default: half the recorded spacing for a complete grid; the exact positions for a recorded
    run); anything farther is an out-of-grid error (``no_data`` for a run's unmeasured candidates),
    never an invented spectrum.

    Args:
        data: the recorded spectrum image.
        clock: timestamps.
        rng: noise generator (only used with ``noise="poisson"``).
        tolerance: largest distance to a recorded position, in the axes' units.
        acquisition_time_s: dwell to wait per spectrum; ``None`` uses the recorded one (or none).
        noise: ``"none"`` or ``"poisson"`` (resample each spectrum's counts).
    """

    def __init__(
        self,
        data: SpectrumImage,
        clock: Clock,
        rng: np.random.Generator,
        *,
        tolerance: float | None = None,
        acquisition_time_s: float | None = None,
        noise: str = "none",
    ):
        if noise not in ("none", "poisson"):
            raise ConfigError(f"noise must be 'none' or 'poisson', got {noise!r}")
        self.data, self._clock, self._rng, self.noise = data, clock, rng, noise
        if tolerance is None:
            span = max(a.high - a.low for a in data.axes)
            # a grid: anything within half a step is that grid point; a recorded run: only its exact positions
            tolerance = 0.5 * data.spacing() + 1e-9 if data.complete else 1e-9 * span
        self.tolerance = tolerance
        self.dwell_s = acquisition_time_s if acquisition_time_s is not None else (data.acquisition_time_s or 0.0)
        self._abort = threading.Event()
        self._served = 0
        self._last: int | None = None

    def describe(self) -> InstrumentDescription:
        """Axes and spectral calibration of the recorded data; the one image channel."""
        return InstrumentDescription(
            name="dualscope-replay",
            axes=self.data.axes,
            spectral_axis=self.data.spectral_axis,
            image_channels=(self.data.image.channel,),
            max_batch=1024,
            extra={
                "source": self.data.source,
                "positions": int(self.data.positions.shape[0]),
                "notes": list(self.data.notes),
                "complete": self.data.complete,
                "signal": self.data.signal,
            },
        )

    def acquire_image(self, channel: str) -> Image:
        """The recorded structural image."""
        if channel != self.data.image.channel:
            raise BadRequest(f"unknown image channel {channel!r}; the recording has {self.data.image.channel!r}")
        return self.data.image

    def measure(self, positions: NDArray[np.float64]) -> SpectrumBatch:
        """Recorded spectra ``(n, c)`` at the nearest recorded positions; waits the dwell."""
        self._abort.clear()
        idx, dist = self.data.nearest(positions)
        far = dist > self.tolerance
        if far.any():
            i = int(np.argmax(far))
            if not self.data.complete:
                raise NoRecordedData(f"position {positions[i].tolist()} was never measured in the recorded run")
            raise NoRecordedData(  # inside the axes, off the recorded grid: missing there, not a fault
                f"position {positions[i].tolist()} is {dist[i]:.4g} {self.data.axes[0].units} "
                "from the nearest recorded "
                f"point (tolerance {self.tolerance:.4g}); the recording has no spectrum there"
            )
        if self.dwell_s > 0 and self._abort.wait(self.dwell_s * len(idx)):
            raise AcquisitionAborted("replay aborted by request")
        spectra = self.data.spectra[idx].astype(np.float32)
        if self.noise == "poisson":
            spectra = self._rng.poisson(np.clip(spectra, 0, None)).astype(np.float32)
        self._served += len(idx)
        self._last = int(idx[-1])
        now = self._clock.time()
        return SpectrumBatch(
            spectra, now - self.dwell_s * np.arange(len(idx) - 1, -1, -1, dtype=np.float64), self.dwell_s
        )

    def status(self) -> Mapping[str, JSON]:
        """Spectra served and the last recorded index used."""
        return {"served": self._served, "last_index": self._last}

    def abort(self) -> None:
        """Interrupt the dwell in progress."""
        self._abort.set()
