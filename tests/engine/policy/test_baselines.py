"""The model-free baselines: the raster's cursor proposes exactly what a scan of every candidate would."""

from __future__ import annotations

import numpy as np

from engine.candidates import CandidateSet
from engine.policy import RasterPolicy


def _full_scan(order: np.ndarray, candidates: CandidateSet, q: int) -> np.ndarray:
    free = ~(candidates.measured | candidates.pending)
    return order[free[order]][:q]


def test_the_raster_cursor_agrees_with_a_full_scan_whatever_is_pending_released_or_measured() -> None:
    """Random grids and batch sizes; proposals measured, left pending or released (a fault) at random."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        rows, cols = (int(v) for v in rng.integers(1, 12, 2))
        m = rows * cols
        candidates = CandidateSet(np.zeros((m, 2)), np.zeros((m, 2), np.int64), (rows, cols))
        policy = RasterPolicy()
        serpentine = RasterPolicy()._serpentine((rows, cols))
        for _ in range(3 * m):
            q = int(rng.integers(1, 5))
            proposed = policy.propose(candidates, q).indices
            np.testing.assert_array_equal(proposed, _full_scan(serpentine, candidates, q))
            if proposed.size == 0:
                break
            candidates.mark_pending(proposed)
            fate = rng.random()
            if fate < 0.15:
                candidates.release(proposed)  # a fault: proposed again first
            elif fate > 0.3:
                candidates.mark_measured(proposed)
            pending = np.flatnonzero(candidates.pending)
            if pending.size and rng.random() < 0.5:  # an older pending one settles
                settle = candidates.mark_measured if rng.random() < 0.7 else candidates.release
                settle(pending[rng.integers(pending.size)][None])
