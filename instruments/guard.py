"""Validation and error translation around a driver, shared by the server and the in-process adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from engine.errors import BadRequest, DeviceFault, InstrumentError, OutOfLimits
from engine.safety import SafetyLimits
from engine.types import Image, InstrumentDescription, SpectrumBatch
from instruments.driver import Driver

T = TypeVar("T")


class GuardedDriver:
    """Checks requests against the driver's description and translates its failures.

    Args:
        driver: the device driver.
        safety: limits checked again here, after the engine's own check, before the driver sees a
            position (a refusal is an ``out_of_limits`` error naming the limit).
    """

    def __init__(self, driver: Driver, safety: SafetyLimits | None = None):
        self.driver, self.safety = driver, safety
        try:
            self.description: InstrumentDescription = driver.describe()
        except InstrumentError:
            raise
        except Exception as exc:
            raise DeviceFault(f"driver failed to describe itself: {type(exc).__name__}: {exc}") from exc
        # every position measured, in order (limits set later book their dose): one array grown by
        # doubling, 16 bytes a 2-d position, not an array object per batch for the server's lifetime
        self._measured = np.empty((256, len(self.description.axes)))
        self._n_measured = 0

    def acquire_image(self, channel: str) -> Image:
        """Acquire ``channel`` after checking that the instrument has it."""
        if channel not in self.description.image_channels:
            raise BadRequest(
                f"unknown image channel {channel!r}; available: {', '.join(self.description.image_channels)}"
            )
        image = self._call(lambda: self.driver.acquire_image(channel), "acquire_image")
        if image.data.ndim != 2:
            raise DeviceFault(f"driver returned an image of shape {image.data.shape}, expected (h, w)")
        return image

    def measure(self, positions: NDArray[np.floating]) -> tuple[NDArray[np.float64], SpectrumBatch]:
        """Validate ``positions (n, d)``, measure, and check the driver's answer is ``(n, c)``."""
        pos = self.description.check_positions(positions)
        if self.safety is not None and (why := self.safety.check(pos)) is not None:
            raise OutOfLimits(f"refused by the server's safety limits: {why}")
        batch = self._call(lambda: self.driver.measure(pos), "measure")
        expected = (pos.shape[0], self.description.spectral_axis.size)
        if batch.spectra.shape != expected or batch.timestamps.shape != (pos.shape[0],):
            raise DeviceFault(
                f"driver returned spectra {batch.spectra.shape} and timestamps {batch.timestamps.shape}; "
                f"expected {expected} and ({pos.shape[0]},)"
            )
        self._book(pos)
        if self.safety is not None:
            self.safety.commit(pos)
        return pos, batch

    def set_limits(self, safety: SafetyLimits | None) -> None:
        """Replace the safety limits (an operator's command); past measurements' dose is booked into them."""
        if safety is not None and self._n_measured:
            safety.commit(self._measured[: self._n_measured])
        self.safety = safety

    def _book(self, pos: NDArray[np.float64]) -> None:
        """Append measured positions ``(n, d)`` to the record of all of them."""
        end = self._n_measured + pos.shape[0]
        if end > self._measured.shape[0]:
            grown = np.empty((max(2 * self._measured.shape[0], end), self._measured.shape[1]))
            grown[: self._n_measured] = self._measured[: self._n_measured]
            self._measured = grown
        self._measured[self._n_measured : end] = pos
        self._n_measured = end

    def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return fn()
        except InstrumentError:
            raise
        except Exception as exc:
            raise DeviceFault(f"driver failed in {what}: {type(exc).__name__}: {exc}") from exc
