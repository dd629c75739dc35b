"""The driver contract, shipped for labs: subclass ``DriverContract`` to test your microscope's driver.

A driver is what a lab writes for its own microscope (see ``instruments.driver.Driver``). The
generic server serves any object that passes these tests, so the rest of dualscope (wire protocol,
safety, campaigns, storage) works with it unchanged. Every built-in driver is tested through this
class (``tests/instruments/test_driver_contract.py``), as zarr ships ``zarr.testing.store.StoreTests``
for store implementers.

Examples:
    In your test suite (pytest)::

        from instruments.testing import DriverContract
        from my_lab.driver import MyScope

        class TestMyScope(DriverContract):
            def make_driver(self):
                return MyScope(port="/dev/ttyUSB0", dwell_s=0.02)

    ``pytest`` then runs every contract test against ``MyScope``. The abort test measures up to 200
    positions and aborts after 0.2 s, so give the driver a dwell of at least 20 ms per spectrum there.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from engine.errors import AcquisitionAborted
from engine.types import InstrumentDescription
from instruments.driver import Driver


def positions_in(desc: InstrumentDescription, n: int, seed: int = 0) -> NDArray[np.float64]:
    """``n`` random positions ``(n, d)`` inside the axes of ``desc`` (axes' units), seeded."""
    rng = np.random.default_rng(seed)
    lows = np.array([a.low for a in desc.axes])
    highs = np.array([a.high for a in desc.axes])
    return np.asarray(lows + rng.random((n, len(desc.axes))) * (highs - lows), dtype=np.float64)


class DriverContract(ABC):
    """What every ``Driver`` must do; subclass it and implement ``make_driver``.

    One driver is built per test class and closed (``close()``, when the driver has one) after it.
    """

    @abstractmethod
    def make_driver(self) -> Any:
        """Build the driver under test (connect to the microscope or start its simulator)."""

    @pytest.fixture(scope="class")
    @classmethod
    def driver(cls) -> Iterator[Any]:
        """The driver under test, closed after the class's tests."""
        drv = cls().make_driver()
        yield drv
        close = getattr(drv, "close", None)
        if callable(close):
            close()

    def test_is_a_driver_with_a_sane_description(self, driver: Any) -> None:
        """It implements the protocol; axes, spectral axis and channels are usable and JSON-serialisable."""
        assert isinstance(driver, Driver)
        d = driver.describe()
        assert d.axes and all(a.low < a.high and a.units for a in d.axes)
        assert d.spectral_axis.size >= 8 and d.spectral_axis.units
        assert d.image_channels and d.max_batch >= 1
        json.dumps(d.to_json())  # the description goes over the wire as JSON

    def test_image_is_calibrated_inside_the_axes(self, driver: Any) -> None:
        """The structural image is 2-D, finite, and its x calibration lies inside the x axis."""
        d = driver.describe()
        img = driver.acquire_image(d.image_channels[0])
        assert img.data.ndim == 2 and np.isfinite(img.data).all()
        _y, x = img.coords()
        by_name = {a.name: a for a in d.axes}
        if "x" in by_name:
            assert by_name["x"].low <= x[0] < x[-1] <= by_name["x"].high

    def test_measure_returns_finite_spectra_at_the_corners_and_inside(self, driver: Any) -> None:
        """A batch at the axes' corners and inside gives one finite float32 spectrum per position, in order."""
        d = driver.describe()
        lows, highs = np.array([a.low for a in d.axes]), np.array([a.high for a in d.axes])
        pos = np.vstack([lows, highs, positions_in(d, 2)])
        batch = driver.measure(pos)
        assert batch.spectra.shape == (pos.shape[0], d.spectral_axis.size) and batch.spectra.dtype == np.float32
        assert np.isfinite(batch.spectra).all()
        assert batch.timestamps.shape == (pos.shape[0],) and np.all(np.diff(batch.timestamps) >= 0)
        assert batch.acquisition_time_s >= 0

    def test_status_is_json_and_idle_abort_is_harmless(self, driver: Any) -> None:
        """Status is JSON; an abort with nothing running leaves the driver usable."""
        json.dumps(dict(driver.status()))
        driver.abort()  # nothing running
        d = driver.describe()
        assert driver.measure(positions_in(d, 1, seed=3)).spectra.shape[0] == 1

    def test_abort_stops_a_long_acquisition(self, driver: Any) -> None:
        """Abort from another thread ends a long batch with AcquisitionAborted; the driver is usable after."""
        d = driver.describe()
        pos = positions_in(d, min(d.max_batch, 200), seed=4)  # at 20 ms each: 4 s unless aborted
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                driver.measure(pos)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run)
        t0 = time.monotonic()
        worker.start()
        time.sleep(0.2)
        driver.abort()
        worker.join(10)
        assert not worker.is_alive() and time.monotonic() - t0 < 3.0
        assert isinstance(outcome[0], AcquisitionAborted)
        assert driver.measure(positions_in(d, 1, seed=5)).spectra.shape[0] == 1  # usable again
