"""The guard keeps every measured position, so that limits set later book the dose already given."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.errors import OutOfLimits
from engine.safety import DoseBudget, SafetyLimits
from instruments.guard import GuardedDriver


def test_limits_set_later_book_the_dose_of_every_measurement_before_them(synthetic: Any) -> None:
    guard = GuardedDriver(synthetic)
    axes = [a.name for a in guard.description.axes]
    spot = np.array([[20.0, 30.0]])
    for _ in range(150):  # single spectra and batches, past the first growth of the record
        guard.measure(spot)
        guard.measure(np.repeat(spot, 2, axis=0))
    budget = DoseBudget(budget_e_per_nm2=1e9, electrons_per_measurement=100.0)
    limits = SafetyLimits(axes, dose=budget)
    guard.set_limits(limits)
    assert budget.peak_dose() == pytest.approx(450 * budget.per_dwell_e_per_nm2)
    tight = DoseBudget(budget_e_per_nm2=451 * budget.per_dwell_e_per_nm2, electrons_per_measurement=100.0)
    guard.set_limits(SafetyLimits(axes, dose=tight))
    guard.measure(spot)  # the 451st dwell there is within the budget
    with pytest.raises(OutOfLimits, match="dose"):
        guard.measure(spot)
