"""Specimen drift in the twins: the displacement's law, images of the displaced specimen, ground truth kept still."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.registration import phase_cross_correlation

from simulators.drift import DriftOptions, SpecimenDrift
from simulators.stem_twin import StemTwinOptions, stem_twin
from simulators.synthetic import SyntheticOptions, synthetic_microscope
from tests.conftest import FakeClock


def test_steady_drift_moves_at_its_rate_and_direction() -> None:
    clock = FakeClock()
    drift = SpecimenDrift(DriftOptions(rate_nm_per_min=1.5, direction_deg=90.0), clock)
    clock.now += 600  # ten minutes
    np.testing.assert_allclose(drift.offset(), [0.0, 15.0], atol=1e-9)


def test_random_walk_has_the_rms_displacement_it_is_given() -> None:
    """After t minutes the 2-D walk's mean squared displacement is walk² · t (many independent walks)."""
    finals = []
    for seed in range(400):
        clock = FakeClock()
        drift = SpecimenDrift(DriftOptions(walk_nm_per_sqrt_min=0.5, seed=seed), clock)
        for _ in range(20):
            clock.now += 30.0
            offset = drift.offset()
        finals.append(offset)
    msd = float(np.mean(np.sum(np.square(finals), axis=1)))
    assert msd == pytest.approx(0.5**2 * 10, rel=0.2)  # 10 minutes


def test_time_going_backwards_holds_the_offset() -> None:
    clock = FakeClock()
    drift = SpecimenDrift(DriftOptions(rate_nm_per_min=1.0, walk_nm_per_sqrt_min=0.2), clock)
    clock.now += 60
    first = drift.offset()
    clock.now -= 30
    np.testing.assert_array_equal(drift.offset(), first)


@pytest.mark.parametrize("build", ["stem", "synthetic"])
def test_a_drifting_twin_images_the_displaced_specimen_and_lands_its_probe_there(build: str) -> None:
    clock = FakeClock()
    drift = DriftOptions(rate_nm_per_min=2.0, direction_deg=30.0)
    if build == "stem":
        twin = stem_twin(StemTwinOptions(seed=1, image_pixels=96, acquisition_time_s=0.0, drift=drift), clock)
    else:
        twin = synthetic_microscope(
            SyntheticOptions(seed=1, image_pixels=96, acquisition_time_s=0.0, drift=drift), clock
        )
    reference = twin.acquire_image("haadf")
    still = twin.expected_counts(np.array([[40.0, 50.0]]))
    clock.now += 150  # 5 nm along 30 degrees
    moved = np.array([5 * np.cos(np.pi / 6), 5 * np.sin(np.pi / 6)])
    frame = twin.acquire_image("haadf")
    shift, _, _ = phase_cross_correlation(reference.data, frame.data, upsample_factor=20, normalization=None)
    found = -np.array([shift[1] * frame.x_axis.scale, shift[0] * frame.y_axis.scale])
    np.testing.assert_allclose(found, moved, atol=0.3)
    # the probe sent to p lands on the specimen at p - d; the ground truth stays in specimen coordinates
    twin.measure(np.array([[40.0, 50.0]]) + moved)
    np.testing.assert_allclose(twin.landings, [[40.0, 50.0]], atol=1e-9)
    np.testing.assert_allclose(twin.expected_counts(np.array([[40.0, 50.0]])), still)


def test_drift_is_off_by_default() -> None:
    clock = FakeClock()
    twin = stem_twin(StemTwinOptions(seed=1, image_pixels=64, acquisition_time_s=0.0), clock)
    clock.now += 3600
    twin.measure(np.array([[30.0, 30.0]]))
    np.testing.assert_array_equal(twin.landings, [[30.0, 30.0]])
