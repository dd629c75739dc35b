"""The ``dualvae-bo`` policy: a GP on the dual-VAE image latent of each candidate patch.

The dual VAE first learns the structural image alone (every candidate patch, no spectra yet); each
measured spectrum then warm-starts a bounded update of the surrogate (rolled back on failure), after
which the latents of all candidates are recomputed. A GP on those latents, trained on the
scalarised measured spectra, drives the botorch acquisition over the unmeasured candidates (see
:mod:`engine.acquisition`). Pure decision code: the surrogate is injected, no I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.bo_policy import ScalarBO
from engine.candidates import CandidateSet
from engine.decisions import Proposal
from engine.scalarisers import Scalariser
from engine.surrogate import PairedData, Surrogate


class DualVAEBOPolicy:
    """Bayesian optimisation on the dual VAE's joint latent.

    Args:
        surrogate: an untrained dual VAE for patches ``(p, p)`` and ``c``-channel spectra.
        patches: the candidate patches ``(m, p, p)``, row-aligned with the candidate set.
        scalariser: what to maximise; axis: spectral axis values ``(c,)``.
        acquisition: one of :data:`engine.acquisition.ACQUISITIONS`.
        rng: seeds the initial random design and the acquisition.
        initial: random measurements before the first GP.
        pretrain_steps: image-only training steps before the first decision.
        update_steps, update_seconds: bound of each warm-start update after new spectra.
    """

    name = "dualvae-bo"

    def __init__(
        self,
        surrogate: Surrogate,
        patches: NDArray[np.float32],
        scalariser: Scalariser,
        axis: NDArray[np.float64],
        acquisition: str,
        rng: np.random.Generator,
        *,
        initial: int = 5,
        pretrain_steps: int = 300,
        update_steps: int = 20,
        update_seconds: float = 1.0,
    ):
        self.bo = ScalarBO(scalariser, axis, acquisition, rng, initial)
        self.surrogate = surrogate
        self._update = (update_steps, update_seconds)
        m = patches.shape[0]
        self._data = PairedData(patches, np.zeros((m, axis.size), np.float32), np.zeros(m, bool))
        self.pretrain_report = surrogate.fit(self._data, pretrain_steps)
        self._latents = surrogate.image_latent(patches)
        self.updates: list[object] = []

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """Random until ``initial`` values are known, then the acquisition's best ``q`` on the latents."""
        return self.bo.propose(self._latents, candidates, q, self.surrogate.version)

    def tell(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Scalarise, add the spectra to the surrogate's data, update it (bounded) and refresh the latents."""
        self.bo.add(indices, spectra)
        self._data.spectra[indices] = spectra
        self._data.has_spectrum[indices] = True
        report = self.surrogate.update(self._data, max_steps=self._update[0], max_seconds=self._update[1])
        self.updates.append(report)
        if not report.rolled_back:
            self._latents = self.surrogate.image_latent(self._data.patches)
