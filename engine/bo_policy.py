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


class ScalarBO:
    """What both model-based policies share: scalarised measured values and the BO proposal.

    The policies differ only in the inputs the GP sees for each candidate (positions, or latents).

    Args:
        scalariser: what to maximise; axis: spectral axis values ``(c,)``.
        acquisition: one of :data:`engine.acquisition.ACQUISITIONS`.
        rng: seeds the initial random design, the MC sampler and Thompson draws.
        initial: random measurements before the first GP.
    """

    def __init__(
        self,
        scalariser: Scalariser,
        axis: NDArray[np.float64],
        acquisition: str,
        rng: np.random.Generator,
        initial: int,
    ):
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"unknown acquisition {acquisition!r}; choose {', '.join(ACQUISITIONS)}")
        self.scalariser, self.axis, self.acquisition, self._rng = scalariser, axis, acquisition, rng
        self.initial = max(1, initial)
        self._indices: list[int] = []
        self._values: list[float] = []
        self.fit_warnings = 0

    def add(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Scalarise the measured spectra of candidates ``indices`` and remember them."""
        self._indices.extend(int(i) for i in indices)
        self._values.extend(float(v) for v in self.scalariser(spectra, self.axis))

    def propose(self, inputs: NDArray[np.float64], candidates: CandidateSet, q: int, version: int) -> Proposal:
        """Random until ``initial`` values are known, then the acquisition's best ``q`` on ``inputs (m, d)``."""
        free = candidates.available()
        if free.size == 0:
            return Proposal(np.empty(0, np.int64), np.empty(0))
        if len(self._values) < self.initial:
            k = min(q, free.size)
            return Proposal(self._rng.choice(free, size=k, replace=False).astype(np.int64), np.full(k, np.nan), version)
        finite = np.isfinite(self._values)
        idx = np.asarray(self._indices)[finite]
        choice = choose(
            inputs[idx],
            np.asarray(self._values)[finite],
            inputs,
            free,
            np.flatnonzero(candidates.pending).astype(np.int64),
            q,
            self.acquisition,
            seed=int(self._rng.integers(2**31 - 1)),
            step=len(self._values),
        )
        self.fit_warnings += choice.fit_warnings
        return Proposal(choice.indices, choice.values, version, choice.runner_up_values)

    @property
    def ready(self) -> bool:
        """Whether the next proposal comes from the GP (enough values are known)."""
        return len(self._values) >= self.initial


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
        self.bo = ScalarBO(scalariser, axis, acquisition, rng, initial)
        self.version = 0

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """Random until ``initial`` values are known, then the acquisition's best ``q`` available candidates."""
        if not self.bo.ready:
            return self.bo.propose(candidates.positions, candidates, q, -1)
        self.version += 1
        return self.bo.propose(candidates.positions, candidates, q, self.version)

    def tell(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Scalarise the measured spectra and remember them."""
        self.bo.add(indices, spectra)
