"""A fault-tolerant campaign: driver and transport faults are recorded with what was done, and survived."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engine.campaign import Budget, Campaign
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.errors import DeviceFault
from engine.policy import RandomPolicy
from engine.storage import RunWriter, read_run
from instruments.client import ZmqInstrument
from instruments.local import LocalInstrument
from instruments.server import InstrumentServer
from simulators.faults import DriverFaults, FaultyDriver, FaultyProxy, TransportFaults
from tests.conftest import FakeClock
from tests.fakes import MemoryRecorder


def _campaign(inst: Any, recorder: Any, budget: int, **kw: Any) -> Campaign:
    cands = CandidateSet.from_image_grid(inst.acquire_image("haadf"), inst.describe(), 4, margin_px=1)
    return Campaign(
        instrument=inst, policy=RandomPolicy(np.random.default_rng(0)), recorder=recorder, candidates=cands,
        spectral_axis=inst.describe().spectral_axis, stop_rules=[Budget(budget)], clock=FakeClock(),
        request_prefix="faulty", **kw,
    )  # fmt: skip


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_driver_faults_are_recorded_and_the_campaign_completes(synthetic: Any, tmp_path: Path, pipeline: bool) -> None:
    faults = DriverFaults(nan_probability=0.15, wrong_shape_probability=0.1, error_probability=0.1)
    driver = FaultyDriver(synthetic, np.random.default_rng(3), faults)
    inst = LocalInstrument(driver)
    campaign = _campaign(inst, None, 40, fault_retries=2, pipeline=pipeline)
    writer = RunWriter.create(
        tmp_path / "r.zarr", description=inst.describe(), images=[inst.acquire_image("haadf")],
        candidates=campaign.candidates, config_toml="", clock=SystemClock(),
    )  # fmt: skip
    campaign.recorder = writer
    result = campaign.run()
    writer.close()
    injected = sum(driver.injected.values())
    # a call may carry two faults (NaN and wrong shape): each failed call is one recorded fault
    assert result.n_recorded == 40 and injected > 5 and 0.8 * injected <= result.faults <= injected
    assert result.steps == 40 + result.faults
    run = read_run(tmp_path / "r.zarr")
    assert run.n == 40 and np.isfinite(run.spectra).all()  # nothing bad was stored as a spectrum
    reasons = [m["reason"] for m in run.attrs["missing"]]
    assert len(reasons) == result.faults
    assert all(("released for another try" in r or "given up" in r) for r in reasons)
    assert any(r.startswith("InvalidSpectrum") for r in reasons) and any(r.startswith("DeviceFault") for r in reasons)


def test_transport_faults_are_survived(synthetic: Any, zmq_context: zmq.Context[Any]) -> None:
    server = InstrumentServer(synthetic, zmq_context, SystemClock())
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 5), daemon=True)
    thread.start()
    faults = TransportFaults(drop_probability=0.15, duplicate_probability=0.15, garbage_probability=0.1)
    proxy = FaultyProxy(server.endpoint, zmq_context, np.random.default_rng(1), faults)
    try:
        with ZmqInstrument(proxy.endpoint, zmq_context, timeout_s=0.3, retries=3) as inst:
            rec = MemoryRecorder()
            result = _campaign(inst, rec, 30, fault_retries=2).run()
        assert result.n_recorded == 30 and sum(faults.counts.values()) > 5
        assert len({d.request_id for d, _, _ in rec.rows}) == 30  # duplicates never recorded twice
    finally:
        proxy.close()
        stop.set()
        thread.join(timeout=5)
        server.close()


class _Unplugged:
    """A device that stopped answering."""

    def __init__(self, inner: Any):
        self.inner = inner

    def describe(self) -> Any:
        return self.inner.describe()

    def acquire_image(self, channel: str) -> Any:
        return self.inner.acquire_image(channel)

    def measure(self, positions: Any, request_id: str | None = None) -> Any:
        from engine.errors import InstrumentTimeout

        raise InstrumentTimeout(f"no reply to {request_id}; is the server running?", request_id or "")


def test_an_unreachable_device_ends_the_campaign_cleanly(synthetic: Any) -> None:
    rec = MemoryRecorder()
    result = _campaign(_Unplugged(LocalInstrument(synthetic)), rec, 10, fault_retries=2, max_faults_in_a_row=4).run()
    assert result.n_recorded == 0 and result.faults == 4 and len(rec.missing) == 4
    assert result.stop_reason.startswith("stopped after 4 failed measurements in a row; the last: no reply")
    assert result.stop_reason.endswith("the instrument is unreachable: check it runs and is reachable, then resume")


def test_without_fault_retries_a_fault_ends_the_campaign_with_the_error(synthetic: Any) -> None:
    driver = FaultyDriver(synthetic, np.random.default_rng(0), DriverFaults(error_probability=1.0))
    campaign = _campaign(LocalInstrument(driver), MemoryRecorder(), 5)
    with pytest.raises(DeviceFault, match="injected driver fault"):
        campaign.run()


def test_stalls_slow_replies_and_disconnects_are_survived(synthetic: Any, zmq_context: zmq.Context[Any]) -> None:
    driver = FaultyDriver(synthetic, np.random.default_rng(2), DriverFaults(latency_s=0.01, stall_probability=0.1,
                                                                          stall_s=0.6))  # fmt: skip
    server = InstrumentServer(driver, zmq_context, SystemClock())
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 5), daemon=True)
    thread.start()
    faults = TransportFaults(disconnect_probability=0.2, disconnect_s=0.4)
    proxy = FaultyProxy(server.endpoint, zmq_context, np.random.default_rng(4), faults)
    try:
        with ZmqInstrument(proxy.endpoint, zmq_context, timeout_s=0.25, retries=4) as inst:
            rec = MemoryRecorder()
            result = _campaign(inst, rec, 25, fault_retries=2).run()
        assert result.n_recorded == 25 and driver.injected["stall"] > 0 and faults.counts["disconnect"] > 0
        assert len({d.request_id for d, _, _ in rec.rows}) == 25
        assert result.faults == len(rec.missing)  # anything the client's retries could not absorb is recorded
    finally:
        proxy.close()
        stop.set()
        thread.join(timeout=5)
        server.close()
