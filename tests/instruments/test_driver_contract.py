"""Every built-in driver and the README's example driver pass the driver contract a lab's driver subclasses.

The contract is :class:`instruments.testing.DriverContract`; each class below only says how to build
its driver, as a lab's own test would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.cli.drivers import build_driver
from engine.clock import SystemClock
from instruments.testing import DriverContract
from tests.instruments.test_readme import readme_driver_class

BEPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "BEPS_PTO_50x50.h5"


class TestSynthetic(DriverContract):
    def make_driver(self) -> Any:
        options = {"image_pixels": 32, "n_channels": 64, "acquisition_time_s": 0.02}
        return build_driver("synthetic", options, SystemClock())


class TestStemTwin(DriverContract):
    def make_driver(self) -> Any:
        options = {"image_pixels": 32, "n_channels": 64, "field_of_view_nm": 40.0, "acquisition_time_s": 0.02}
        return build_driver("stem-twin", options, SystemClock())


class TestDarkfieldTwin(DriverContract):
    def make_driver(self) -> Any:
        return build_driver("darkfield-twin", {"grid": 3, "n_channels": 64, "acquisition_time_s": 0.02}, SystemClock())


class TestReplay(DriverContract):
    def make_driver(self) -> Any:
        options = {"dataset": str(BEPS), "acquisition_time_s": 0.02, "tolerance": 1e12}  # nearest recorded point
        return build_driver("replay", options, SystemClock())


class TestNionOnNionsSimulator(DriverContract):
    def make_driver(self) -> Any:
        return build_driver("nion", {"usim": True, "image_pixels": 32, "exposure_ms": 20.0}, SystemClock())


class TestReadmeExample(DriverContract):
    """The custom-driver example of the README, exactly as printed there."""

    def make_driver(self) -> Any:
        return readme_driver_class()(dwell_s=0.02)


def test_a_contract_without_make_driver_cannot_run() -> None:
    """A lab that forgets make_driver gets told so, not a confusing fixture error."""

    class Incomplete(DriverContract):
        """Forgets make_driver."""

    with pytest.raises(TypeError, match="make_driver"):
        Incomplete()  # type: ignore[abstract]
