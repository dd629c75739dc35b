"""The ``Driver`` protocol: the few methods a lab writes for its microscope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from engine.types import JSON, Image, InstrumentDescription, SpectrumBatch


@runtime_checkable
class Driver(Protocol):
    """A microscope, simulator or replay, seen by the generic server.

    The server validates every request against ``describe`` before the driver
    sees it (axis limits, batch size, image channel), so a driver may assume its
    inputs are in range. Exceptions other than
    ``engine.errors.InstrumentError`` are reported as ``device_fault``.
    ``abort`` and ``status`` may be called from another thread while
    ``measure`` or ``acquire_image`` runs. Acquisitions never overlap, but
    successive ones may come from either of the server's two threads
    (decision 0017): an SDK that must be called from one thread needs the
    driver to hand its calls to that thread.
    """

    def describe(self) -> InstrumentDescription:
        """Axes with limits and units, spectral calibration, image channels."""
        ...

    def acquire_image(self, channel: str) -> Image:
        """One frame of ``channel`` ``(h, w)`` with its calibration."""
        ...

    def measure(self, positions: NDArray[np.float64]) -> SpectrumBatch:
        """Spectra ``(n, c)`` at validated ``positions (n, d)`` in the axes' units."""
        ...

    def status(self) -> Mapping[str, JSON]:
        """Driver state (probe position, blanking, what is running)."""
        ...

    def abort(self) -> None:
        """Stop the acquisition in progress as soon as possible."""
        ...
