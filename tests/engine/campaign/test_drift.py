"""Drift tracking: the tracker's registration and checks, and the campaign sending the probe where the specimen is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.drift import SimulatedClock, session
from engine.campaign import DriftTracker
from engine.config import DriftSection
from engine.errors import ConfigError, DeviceFault
from engine.types import Axis, Image
from simulators.drift import DriftOptions
from simulators.stem_twin import StemTwinOptions, stem_twin

AXES = (Axis("x", "nm", 0.0, 100.0), Axis("y", "nm", 0.0, 100.0))
ON = DriftSection(enabled=True, every_n=5)


def _twin(clock: SimulatedClock, rate: float = 2.0):  # type: ignore[no-untyped-def]
    drift = DriftOptions(rate_nm_per_min=rate, direction_deg=-40.0)
    return stem_twin(StemTwinOptions(seed=4, image_pixels=128, acquisition_time_s=0.0, drift=drift), clock)


def test_the_tracker_finds_the_drift_to_a_fraction_of_a_pixel_and_moves_the_probe_with_it() -> None:
    clock = SimulatedClock()
    twin = _twin(clock)
    tracker = DriftTracker(ON, twin.acquire_image("haadf"), AXES, clock)
    for minutes in (1, 2, 3, 4, 5, 6):
        clock.now = 1.8e9 + 60 * minutes
        truth = twin._drift.offset()  # type: ignore[union-attr]
        estimate = tracker.register(twin.acquire_image("haadf"), step=minutes, n_recorded=5 * minutes)
        assert estimate.accepted, estimate.reason
        assert np.linalg.norm(tracker.offset - truth) < 0.2 * (100 / 128)  # a fifth of a pixel
    sent, outside = tracker.command(np.array([[50.0, 50.0]]))
    assert outside is None
    np.testing.assert_allclose(sent[0], np.array([50.0, 50.0]) + tracker.offset)


def test_a_tracking_window_follows_the_drift() -> None:
    clock = SimulatedClock()
    twin = _twin(clock, rate=3.0)
    section = DriftSection(enabled=True, every_n=5, window_nm=(30.0, 30.0, 70.0, 70.0))
    tracker = DriftTracker(section, twin.acquire_image("haadf"), AXES, clock)
    for minutes in range(1, 9):  # 24 nm in all: more than half the window
        clock.now = 1.8e9 + 60 * minutes
        estimate = tracker.register(twin.acquire_image("haadf"), step=minutes, n_recorded=0)
        assert estimate.accepted, estimate.reason
    assert np.linalg.norm(tracker.offset - twin._drift.offset()) < 0.3 * (100 / 128)  # type: ignore[union-attr]


def test_frames_that_fail_the_checks_are_recorded_and_move_nothing() -> None:
    clock = SimulatedClock()
    twin = _twin(clock)
    reference = twin.acquire_image("haadf")
    tracker = DriftTracker(DriftSection(enabled=True, every_n=5, max_shift_nm=1.0), reference, AXES, clock)
    blank = Image("haadf", np.zeros_like(reference.data), reference.y_axis, reference.x_axis)
    assert tracker.register(blank, 1, 5).reason == "the frame is blank or not finite"
    noise = Image("haadf", np.random.default_rng(0).random(reference.data.shape), reference.y_axis, reference.x_axis)
    refused = tracker.register(noise, 2, 10)
    assert not refused.accepted and "registration error" in refused.reason
    tracker = DriftTracker(DriftSection(enabled=True, every_n=5, max_shift_nm=1.0), reference, AXES, clock)
    clock.now += 60 * 1.25  # 2.5 nm: more than max_shift_nm allows in one frame
    jump = tracker.register(twin.acquire_image("haadf"), 3, 15)
    assert not jump.accepted and "max_shift_nm" in jump.reason
    assert np.isfinite(jump.measured).all()  # what it found is kept in the track
    np.testing.assert_array_equal(tracker.offset, [0.0, 0.0])
    # each refused frame allows one more max_shift_nm: steady drift cannot lock the tracker out for good
    again = tracker.register(twin.acquire_image("haadf"), 4, 20)
    assert not again.accepted  # 2.5 nm > 2 × 1 nm
    assert tracker.register(twin.acquire_image("haadf"), 5, 25).accepted  # 2.5 nm <= 3 × 1 nm
    failed = tracker.failed(4, 20, "DeviceFault: scan failed")
    assert not failed.accepted and failed.to_json()["error"] is None


def test_interval_restore_and_bad_settings() -> None:
    clock = SimulatedClock()
    reference = _twin(clock).acquire_image("haadf")
    tracker = DriftTracker(DriftSection(enabled=True, every_n=None, every_s=30.0), reference, AXES, clock)
    assert not tracker.due(1000)
    clock.advance(30.0)
    assert tracker.due(0)
    tracker.restore([{"shift": [1.5, -2.0], "n_recorded": 40}])
    np.testing.assert_array_equal(tracker.offset, [1.5, -2.0])
    by_count = DriftTracker(ON, reference, AXES, clock)
    by_count.restore([{"shift": [0.0, 0.0], "n_recorded": 40}])
    assert not by_count.due(44) and by_count.due(45)
    with pytest.raises(ConfigError, match="covers 1 × 1 pixels"):
        DriftTracker(DriftSection(enabled=True, window_nm=(10, 10, 11, 11)), reference, AXES, clock)
    with pytest.raises(ConfigError, match="tracks x/y scans"):
        DriftTracker(ON, reference, (Axis("bias", "V", -1, 1),), clock)
    with pytest.raises(ValueError, match="every_n or every_s"):
        DriftSection(enabled=True, every_n=None)
    edge = DriftTracker(ON, reference, AXES, clock)
    edge.restore([{"shift": [3.0, 0.0], "n_recorded": 0}])
    _, outside = edge.command(np.array([[98.0, 50.0]]))
    assert outside is not None and "drifted that point out of the field" in outside


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_a_tracked_campaign_measures_where_it_meant_to_and_an_untracked_one_does_not(
    tmp_path: Path, pipeline: bool
) -> None:
    """The campaign loop with the real writer on a simulated 12-minute session at 2 nm/min (random policy)."""
    drift = DriftOptions(rate_nm_per_min=2.0, direction_deg=200.0, walk_nm_per_sqrt_min=0.3, seed=3)
    on = DriftSection(enabled=True, every_n=2)
    tracked = session(7, 120, drift=drift, tracking=on, folder=tmp_path, pipeline=pipeline)
    untracked = session(7, 120, drift=drift, tracking=None, folder=tmp_path, pipeline=pipeline)
    px = tracked.pixel_nm
    error_tracked = np.median(np.linalg.norm(tracked.landed - tracked.intended, axis=1)) / px
    error_untracked = np.median(np.linalg.norm(untracked.landed - untracked.intended, axis=1)) / px
    assert error_tracked < 0.5 < 5 < error_untracked
    assert len(tracked.drift_track) >= 55 and all(e["accepted"] for e in tracked.drift_track)
    assert untracked.drift_track == []


def test_a_tracking_frame_that_cannot_be_acquired_is_recorded_and_the_campaign_goes_on(tmp_path: Path) -> None:
    class FailingFrames:
        """The twin, but every tracking frame after the first fails."""

        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner, self.frames = inner, 0

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.inner, name)

        def acquire_image(self, channel):  # type: ignore[no-untyped-def]
            self.frames += 1
            if self.frames > 1:
                raise DeviceFault("scan generator not responding")
            return self.inner.acquire_image(channel)

    from engine.campaign import Budget, Campaign
    from engine.candidates import CandidateSet
    from engine.policy import RandomPolicy
    from engine.storage import RunWriter, read_run
    from instruments.local import LocalInstrument

    clock = SimulatedClock()
    scope = FailingFrames(LocalInstrument(_twin(clock)))
    description, image = scope.describe(), scope.acquire_image("haadf")
    candidates = CandidateSet.from_image_grid(image, description, 8, 2)
    writer = RunWriter.create(
        tmp_path / "r.zarr", description=description, images=[image], candidates=candidates, config_toml="", clock=clock
    )
    campaign = Campaign(
        instrument=scope,
        policy=RandomPolicy(np.random.default_rng(0)),
        recorder=writer,
        candidates=candidates,
        spectral_axis=description.spectral_axis,
        stop_rules=[Budget(12)],
        clock=clock,
        request_prefix="t",
        drift=DriftTracker(ON, image, description.axes, clock),
        on_drift=lambda e: writer.record_drift(e.to_json()),
    )
    assert campaign.run().n_recorded == 12
    writer.close()
    track = read_run(tmp_path / "r.zarr").attrs["drift_track"]
    assert [e["accepted"] for e in track] == [False, False]
    assert all("scan generator not responding" in e["reason"] for e in track)
    assert track[0]["shift"] == [0.0, 0.0]


def test_a_resumed_campaign_goes_on_from_the_last_accepted_drift_estimate(tmp_path: Path) -> None:
    """The drift track is durable when recorded; the resumed campaign's tracker starts from its last entry."""
    from engine.candidates import CandidateSet
    from engine.cli.wiring import CampaignParts, drift_tracker
    from engine.config import RunConfig
    from engine.storage import RunWriter

    clock = SimulatedClock()
    twin = _twin(clock)
    description, image = twin.describe(), twin.acquire_image("haadf")

    candidates = CandidateSet.from_image_grid(image, description, 8, 2)
    writer = RunWriter.create(
        tmp_path / "r.zarr", description=description, images=[image], candidates=candidates, config_toml="", clock=clock
    )
    tracker = DriftTracker(ON, image, description.axes, clock)
    clock.advance(120)
    writer.record_drift(tracker.register(twin.acquire_image("haadf"), 5, 5).to_json())
    clock.advance(30)
    writer.record_drift(tracker.failed(9, 10, "DeviceFault: no frame").to_json())
    writer.release("interrupted")  # as a crash leaves it: not closed, its lock gone with the process
    reopened = RunWriter.open_existing(tmp_path / "r.zarr", clock)
    config = RunConfig(drift=ON)
    parts = CampaignParts(config, description, None, None, reopened, candidates, None, image)  # type: ignore[arg-type]
    resumed = drift_tracker(parts, clock)
    assert resumed is not None
    np.testing.assert_allclose(resumed.offset, tracker.offset)
    assert np.linalg.norm(resumed.offset) > 3  # 4 nm of drift found before the crash, kept
    assert not resumed.due(14) and resumed.due(15)
    off = CampaignParts(RunConfig(), description, None, None, reopened, candidates, None, image)  # type: ignore[arg-type]
    assert drift_tracker(off, clock) is None
    reopened.release("interrupted")
