"""The ``gp-position`` policy: a GP on the probe position, botorch acquisition over the candidates.

It is the position-only Bayesian-optimisation baseline (and the policy for data without a
structural image). The first ``initial`` measurements are random (seeded); afterwards each decision
fits a GP on the scalarised measured spectra and picks the next ``q`` candidates with the chosen
acquisition (see :mod:`engine.acquisition`). Pure decision code: no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.acquisition import ACQUISITIONS, choose
from engine.candidates import CandidateSet
from engine.decisions import Proposal
from engine.scalarisers import Scalariser


class GPPositionPolicy:
    """GP on candidate positions, trained on ``scalariser`` values of the measured spectra.

    Args:
        scalariser: what to maximise.
        axis: spectral axis values ``(c,)``.
        acquisition: one of :data:`engine.acquisition.ACQUISITIONS`.
        rng: seeds the initial random design, the MC sampler and Thompson draws.
        initial: random measurements before the first GP.
    """

    name = "gp-position"

    def __init__(
        self,
        scalariser: Scalariser,
        axis: NDArray[np.float64],
        acquisition: str,
        rng: np.random.Generator,
        initial: int = 5,
    ):
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"unknown acquisition {acquisition!r}; choose {', '.join(ACQUISITIONS)}")
        self.scalariser, self.axis, self.acquisition, self._rng = scalariser, axis, acquisition, rng
        self.initial = max(1, initial)
        self._indices: list[int] = []
        self._values: list[float] = []
        self.version = 0
        self.fit_warnings = 0

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """Random until ``initial`` values are known, then the acquisition's best ``q`` available candidates."""
        free = candidates.available()
        if free.size == 0:
            return Proposal(np.empty(0, np.int64), np.empty(0))
        if len(self._values) < self.initial:
            k = min(q, free.size)
            return Proposal(self._rng.choice(free, size=k, replace=False).astype(np.int64), np.full(k, np.nan))
        finite = np.isfinite(self._values)
        idx = np.asarray(self._indices)[finite]
        choice = choose(
            candidates.positions[idx],
            np.asarray(self._values)[finite],
            candidates.positions,
            free,
            np.flatnonzero(candidates.pending).astype(np.int64),
            q,
            self.acquisition,
            seed=int(self._rng.integers(2**31 - 1)),
            step=len(self._values),
        )
        self.version += 1
        self.fit_warnings += choice.fit_warnings
        return Proposal(choice.indices, choice.values, self.version, choice.runner_up_values)

    def tell(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Scalarise the measured spectra and remember them."""
        self._indices.extend(int(i) for i in indices)
        self._values.extend(float(v) for v in self.scalariser(spectra, self.axis))
