"""One contract, two implementations: the in-process adapter and the ZeroMQ client+server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from engine.errors import BadRequest, DeviceFault, OutOfLimits
from engine.protocols import Instrument
from instruments.client import ZmqInstrument
from instruments.local import LocalInstrument
from instruments.testing import positions_in
from tests.conftest import CountingDriver


@pytest.fixture(params=["local", "zmq"])
def instrument(request: pytest.FixtureRequest, counting: CountingDriver, serve: Any, zmq_context: Any) -> Iterator[Any]:
    if request.param == "local":
        inst: Any = LocalInstrument(counting)
    else:
        srv = serve(counting)
        inst = ZmqInstrument(srv.endpoint, zmq_context, timeout_s=5, retries=1)
    yield inst
    inst.close()


def test_satisfies_protocol(instrument: Any) -> None:
    assert isinstance(instrument, Instrument)


def test_describe(instrument: Any) -> None:
    d = instrument.describe()
    assert [a.name for a in d.axes] == ["x", "y"]
    assert all(a.units == "nm" for a in d.axes)
    assert d.spectral_axis.units == "eV" and d.spectral_axis.size == 64
    assert d.image_channels == ("haadf",)


def test_acquire_image_with_calibration(instrument: Any) -> None:
    img = instrument.acquire_image("haadf")
    assert img.data.shape == (32, 32)
    _y, x = img.coords()
    assert x[0] > 0 and x[-1] < instrument.describe().axes[0].high
    assert img.x_axis.units == "nm"


def test_measure_batch(instrument: Any) -> None:
    desc = instrument.describe()
    pos = positions_in(desc, 5)
    m = instrument.measure(pos, request_id="batch-1")
    assert m.request_id == "batch-1"
    assert m.spectra.shape == (5, desc.spectral_axis.size) and m.spectra.dtype == np.float32
    assert m.timestamps.shape == (5,)
    np.testing.assert_allclose(m.positions, pos)
    m.check(desc.spectral_axis)


def test_same_request_id_never_measures_twice(instrument: Any, counting: CountingDriver) -> None:
    pos = positions_in(instrument.describe(), 2)
    first = instrument.measure(pos, request_id="once")
    again = instrument.measure(pos, request_id="once")
    assert counting.calls == 1
    np.testing.assert_array_equal(first.spectra, again.spectra)
    instrument.measure(pos, request_id="twice")
    assert counting.calls == 2


@pytest.mark.parametrize(
    ("positions", "error", "match"),
    [
        ([[-1.0, 5.0]], OutOfLimits, "outside"),
        ([[5.0, 1e6]], OutOfLimits, "y = 1e"),
        ([[np.nan, 5.0]], BadRequest, "NaN"),
        ([[1.0, 2.0, 3.0]], BadRequest, "shape"),
        (np.zeros((0, 2)), BadRequest, "n >= 1"),
        (np.ones((2000, 2)), BadRequest, "at most"),
    ],
)
def test_bad_positions_are_refused_before_the_driver(
    instrument: Any, counting: CountingDriver, positions: Any, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        instrument.measure(np.asarray(positions, dtype=float))
    assert counting.calls == 0


def test_unknown_channel(instrument: Any) -> None:
    with pytest.raises(BadRequest, match="unknown image channel 'sem'"):
        instrument.acquire_image("sem")


def test_driver_failure_is_a_device_fault(instrument: Any, counting: CountingDriver) -> None:
    counting.fail_with = RuntimeError("detector on fire")
    with pytest.raises(DeviceFault, match="detector on fire"):
        instrument.measure(positions_in(instrument.describe(), 1))


def test_driver_returning_wrong_shape_is_a_device_fault(instrument: Any, counting: CountingDriver) -> None:
    counting.spectra_override = lambda s: s[:, :10]
    with pytest.raises(DeviceFault, match="expected"):
        instrument.measure(positions_in(instrument.describe(), 1))


def test_status_and_abort(instrument: Any) -> None:
    status = instrument.status()
    assert "driver" in status
    instrument.abort()
