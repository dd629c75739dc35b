"""The campaign loop with in-process instruments, fakes and an injected clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.campaign import Budget, Campaign, OperatorStop, StepReport, WallTime
from engine.candidates import CandidateSet
from engine.decisions import Decision, Proposal, StepTimings
from engine.errors import InvalidSpectrum, RunStorageError
from engine.policy import RandomPolicy, RasterPolicy, make_policy
from engine.protocols import Policy, Recorder, StopRule
from engine.storage import RunWriter, read_run
from engine.types import Measurement
from instruments.local import LocalInstrument
from tests.conftest import CountingDriver, FakeClock
from tests.fakes import MemoryRecorder


def _setup(driver: Any, stride: int = 4) -> tuple[LocalInstrument, CandidateSet]:
    inst = LocalInstrument(driver)
    image = inst.acquire_image("haadf")
    return inst, CandidateSet.from_image_grid(image, inst.describe(), stride, margin_px=1)


def _campaign(
    inst: Any, cands: CandidateSet, policy: Any, recorder: Any, rules: list, clock: Any = None, **kw: Any
) -> Campaign:
    return Campaign(
        instrument=inst,
        policy=policy,
        recorder=recorder,
        candidates=cands,
        spectral_axis=inst.describe().spectral_axis,
        stop_rules=rules,
        clock=clock or FakeClock(),
        request_prefix="test",
        **kw,
    )


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_budget_stops_and_every_measurement_is_recorded(counting: CountingDriver, pipeline: bool) -> None:
    inst, cands = _setup(counting)
    rec = MemoryRecorder()
    steps: list[StepReport] = []
    result = _campaign(
        inst, cands, RandomPolicy(np.random.default_rng(0)), rec, [Budget(20)], on_step=steps.append, pipeline=pipeline
    ).run()
    assert result.n_recorded == 20 == rec.n_recorded == counting.calls
    assert result.stop_reason == "budget of 20 measurements reached"
    assert len(set(rec.candidates().tolist())) == 20, "no candidate measured twice"
    assert cands.measured.sum() == 20 and not cands.pending.any()
    assert [s.n_recorded for s in steps] == list(range(1, 21))
    assert [d.request_id for d in rec.decisions] == [f"test-{i:06d}" for i in range(20)]


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_batches(counting: CountingDriver, pipeline: bool) -> None:
    inst, cands = _setup(counting)
    rec = MemoryRecorder()
    result = _campaign(inst, cands, RasterPolicy(), rec, [Budget(10)], batch_size=4, pipeline=pipeline).run()
    assert result.n_recorded == 12 and counting.calls == 3  # budget is checked between steps


def test_raster_is_serpentine(counting: CountingDriver) -> None:
    inst, cands = _setup(counting, stride=8)
    _rows, cols = cands.grid_shape
    rec = MemoryRecorder()
    _campaign(inst, cands, RasterPolicy(), rec, [Budget(2 * cols)]).run()
    order = rec.candidates()
    np.testing.assert_array_equal(order[:cols], np.arange(cols))
    np.testing.assert_array_equal(order[cols:], np.arange(2 * cols - 1, cols - 1, -1))


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_runs_out_of_candidates(counting: CountingDriver, pipeline: bool) -> None:
    inst, cands = _setup(counting, stride=8)
    result = _campaign(inst, cands, RasterPolicy(), MemoryRecorder(), [Budget(10_000)], pipeline=pipeline).run()
    assert result.n_recorded == len(cands) and "every candidate" in result.stop_reason


def test_wall_time_with_injected_clock(counting: CountingDriver) -> None:
    inst, cands = _setup(counting)
    clock = FakeClock(tick=1.0)  # every monotonic reading advances one second
    result = _campaign(inst, cands, RasterPolicy(), MemoryRecorder(), [Budget(1000), WallTime(10)], clock).run()
    assert "wall-time" in result.stop_reason and 1 <= result.n_recorded <= 5


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_operator_stop_after_current_measurement(counting: CountingDriver, pipeline: bool) -> None:
    inst, cands = _setup(counting)
    stop = OperatorStop()
    rec = MemoryRecorder()

    def on_step(report: StepReport) -> None:
        if report.n_recorded == 7:
            stop.request()

    result = _campaign(inst, cands, RasterPolicy(), rec, [Budget(100), stop], on_step=on_step, pipeline=pipeline).run()
    in_flight = 1 if pipeline else 0  # pipelined, the 8th was sent before the 7th was recorded: it lands too
    assert result.n_recorded == 7 + in_flight == rec.n_recorded and result.stop_reason == "stopped by the operator"


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_nan_spectrum_stops_with_a_named_error_and_keeps_the_run(
    counting: CountingDriver, tmp_path: Path, pipeline: bool
) -> None:
    inst, cands = _setup(counting)
    calls = {"n": 0}

    def poison(spectra: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 6:
            spectra = spectra.copy()
            spectra[0, 3] = np.nan
        return spectra

    counting.spectra_override = poison
    image = inst.acquire_image("haadf")
    writer = RunWriter.create(
        tmp_path / "r.zarr",
        description=inst.describe(),
        images=[image],
        candidates=cands,
        config_toml="",
        clock=FakeClock(),
        chunk_rows=4,
    )
    with pytest.raises(InvalidSpectrum, match=r"test-000005: spectra \[0\] contain NaN"):
        _campaign(inst, cands, RasterPolicy(), writer, [Budget(50)], pipeline=pipeline).run()
    assert not cands.pending.any(), "the failed step's candidate returns to the pool"
    writer.close()
    run = read_run(tmp_path / "r.zarr")
    assert run.n == 5 and np.isfinite(run.spectra).all()


def test_protocols_are_satisfied() -> None:
    assert isinstance(RandomPolicy(np.random.default_rng(0)), Policy)
    assert isinstance(RasterPolicy(), Policy)
    assert isinstance(MemoryRecorder(), Recorder)
    for rule in (Budget(1), WallTime(1), OperatorStop()):
        assert isinstance(rule, StopRule)


def test_make_policy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="random, raster"):
        make_policy("bo", np.random.default_rng(0))


def test_random_policy_is_seeded(counting: CountingDriver) -> None:
    _inst, cands = _setup(counting)
    a = RandomPolicy(np.random.default_rng(5)).propose(cands, 5).indices
    b = RandomPolicy(np.random.default_rng(5)).propose(cands, 5).indices
    np.testing.assert_array_equal(a, b)


def test_candidates_exclude_measured_and_pending(counting: CountingDriver) -> None:
    _, cands = _setup(counting, stride=8)
    cands.mark_pending(np.array([0, 1]))
    cands.mark_measured(np.array([0]))
    assert 0 not in cands.available() and 1 not in cands.available()
    with pytest.raises(ValueError, match="already"):
        cands.mark_pending(np.array([1]))
    cands.release(np.array([1]))
    assert 1 in cands.available()
    with pytest.raises(ValueError, match="read-only"):
        cands.measured[0] = False  # read-only views


# ---- Recorder contract: the in-memory fake and the Zarr writer behave the same ---------------


@pytest.fixture(params=["memory", "zarr"])
def recorder(request: pytest.FixtureRequest, tmp_path: Path, synthetic: Any) -> Any:
    if request.param == "memory":
        return MemoryRecorder()
    inst, cands = _setup(synthetic)
    return RunWriter.create(
        tmp_path / "c.zarr",
        description=inst.describe(),
        images=[inst.acquire_image("haadf")],
        candidates=cands,
        config_toml="",
        clock=FakeClock(),
        chunk_rows=3,
    )


def test_recorder_contract(recorder: Any, synthetic: Any) -> None:
    inst = LocalInstrument(synthetic)
    total = 0
    for step in range(5):
        k = 1 + step % 2
        idx = np.arange(total, total + k)
        d = Decision(step, f"c{step}", "raster", Proposal(idx, np.full(k, np.nan)), 0.0)
        recorder.record_decision(d)
        m: Measurement = inst.measure(np.full((k, 2), 10.0), request_id=f"c{step}")
        total += k
        assert recorder.record_measurement(d, m, StepTimings(0.0, 0.0)) == total
    recorder.close()
    recorder.close()  # idempotent
    with pytest.raises(RunStorageError):
        recorder.record_decision(d)


def test_positions_without_recorded_data_are_marked_and_skipped(counting: CountingDriver) -> None:
    from engine.errors import NoRecordedData

    inst, cands = _setup(counting)
    calls = {"n": 0}

    def flaky(spectra: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise NoRecordedData("never measured")
        return spectra

    counting.spectra_override = flaky
    rec = MemoryRecorder()
    result = _campaign(inst, cands, RasterPolicy(), rec, [Budget(10)]).run()
    assert result.n_recorded == 10 and result.missing == len(rec.missing) == 4
    skipped = {int(d.proposal.indices[0]) for d, _ in rec.missing}
    assert skipped.isdisjoint(rec.candidates().tolist()) and all(cands.measured[list(skipped)])


def test_a_pipelined_campaign_decides_the_next_step_while_the_last_is_measured(counting: CountingDriver) -> None:
    """Each decision after the first sees the step before pending, not told; nothing is told before it is recorded."""
    inst, cands = _setup(counting)
    rec = MemoryRecorder()
    seen: list[tuple[int, int, int]] = []  # (rows recorded, pending, told) at each proposal

    class Watching(RandomPolicy):
        told = 0

        def propose(self, candidates: CandidateSet, q: int) -> Proposal:
            seen.append((rec.n_recorded, int(candidates.pending.sum()), self.told))
            return super().propose(candidates, q)

        def tell(self, indices: np.ndarray, spectra: np.ndarray) -> None:
            assert rec.n_recorded >= self.told + indices.size, "told before it was recorded"
            self.told += indices.size

    result = _campaign(inst, cands, Watching(np.random.default_rng(0)), rec, [Budget(12)], pipeline=True).run()
    assert result.n_recorded == 12 == counting.calls
    assert seen[0] == (0, 0, 0)
    assert seen[1:] == [(k, 1, k) for k in range(11)]  # step k+1 decided with step k in flight
