"""One contract for every ``Driver``: the simulators, the replay driver and the Nion driver on Nion's simulator.

A lab's driver for its own microscope should pass these too (copy the fixture and add yours).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.cli.drivers import build_driver
from engine.clock import SystemClock
from engine.errors import AcquisitionAborted
from instruments.driver import Driver
from tests.conftest import positions_in

BEPS = Path(__file__).parent.parent.parent / "shared" / "data" / "BEPS_PTO_50x50.h5"
DRIVERS: dict[str, dict[str, Any]] = {
    "synthetic": {"image_pixels": 32, "n_channels": 64, "acquisition_time_s": 0.02},
    "stem-twin": {"image_pixels": 32, "n_channels": 64, "field_of_view_nm": 40.0, "acquisition_time_s": 0.02},
    "darkfield-twin": {"grid": 3, "n_channels": 64, "acquisition_time_s": 0.02},
    "replay": {"dataset": str(BEPS), "acquisition_time_s": 0.02, "tolerance": 1e12},  # nearest recorded point
    "nion": {"usim": True, "image_pixels": 32, "exposure_ms": 20.0},
}


@pytest.fixture(scope="module", params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Iterator[Any]:
    drv = build_driver(request.param, DRIVERS[request.param], SystemClock())
    yield drv
    close = getattr(drv, "close", None)
    if callable(close):
        close()


def test_is_a_driver_with_a_sane_description(driver: Any) -> None:
    assert isinstance(driver, Driver)
    d = driver.describe()
    assert d.axes and all(a.low < a.high and a.units for a in d.axes)
    assert d.spectral_axis.size >= 8 and d.spectral_axis.units
    assert d.image_channels and d.max_batch >= 1
    json.dumps(d.to_json())  # the description goes over the wire as JSON


def test_image_is_calibrated_inside_the_axes(driver: Any) -> None:
    d = driver.describe()
    img = driver.acquire_image(d.image_channels[0])
    assert img.data.ndim == 2 and np.isfinite(img.data).all()
    _y, x = img.coords()
    by_name = {a.name: a for a in d.axes}
    if "x" in by_name:
        assert by_name["x"].low <= x[0] < x[-1] <= by_name["x"].high


def test_measure_returns_finite_spectra_at_the_corners_and_inside(driver: Any) -> None:
    d = driver.describe()
    lows, highs = np.array([a.low for a in d.axes]), np.array([a.high for a in d.axes])
    pos = np.vstack([lows, highs, positions_in(d, 2)])
    batch = driver.measure(pos)
    assert batch.spectra.shape == (pos.shape[0], d.spectral_axis.size) and batch.spectra.dtype == np.float32
    assert np.isfinite(batch.spectra).all()
    assert batch.timestamps.shape == (pos.shape[0],) and np.all(np.diff(batch.timestamps) >= 0)
    assert batch.acquisition_time_s >= 0


def test_status_is_json_and_idle_abort_is_harmless(driver: Any) -> None:
    json.dumps(dict(driver.status()))
    driver.abort()  # nothing running
    d = driver.describe()
    assert driver.measure(positions_in(d, 1, seed=3)).spectra.shape[0] == 1


def test_abort_stops_a_long_acquisition(driver: Any) -> None:
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
