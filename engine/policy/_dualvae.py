"""The ``dualvae-bo`` features: the dual VAE's image latent of each candidate patch.

The dual VAE first learns the structural image alone (every candidate patch, no spectra yet), when
the features are built, before the campaign starts. Each refit (in the trainer, see
``engine.bo_policy``) adds the measured spectra to the surrogate's data, runs a bounded
warm-start update (rolled back on failure, in which case the previous latents stay) and recomputes
the latents of all candidates; the GP of the ``dualvae-bo`` policy is fitted on them. Pure decision
code: the surrogate is injected, no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from engine.policy._bo import Features
from engine.policy._gp_posterior import unit_cube
from engine.policy._scalarisers import Scalariser
from engine.protocols import PhaseProgress
from engine.surrogate import CheckpointError, Normaliser, PairedData, Surrogate, TrainReport

_BLOCK = 1024
"""Candidates whose predicted spectra are decoded at once by ``scalar_draws``."""


class DualVAEFeatures:
    """Image latents of the candidate patches, from a dual VAE updated with each refit's spectra.

    Args:
        surrogate: an untrained dual VAE for patches ``(p, p)`` and ``c``-channel spectra; from
            here on only ``refit`` (the trainer's thread) touches it.
        patches: the candidate patches ``(m, p, p)``, row-aligned with the candidate set.
        channels: spectral channels ``c``.
        pretrain_steps: image-only training steps, run here.
        update_steps: most optimiser steps of each warm-start update.
        update_seconds: most seconds of each warm-start update.
        positions: candidate positions ``(m, d)``; when given, the GP inputs are the latent and the
            position side by side (each scaled to the unit cube), so that the GP can also follow
            trends across the field of view that no single patch shows (a doping gradient).
        progress: told after each pre-training step (``engine.protocols.PhaseProgress``); raising
            ``engine.errors.Stopped`` from it abandons the pre-training.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> patches = rng.random((30, 8, 8)).astype(np.float32)
        >>> observed = np.arange(8)
        >>> values = patches[observed].mean(axis=(1, 2)).astype(np.float64)
        >>> import torch
        >>> from engine.surrogate import Surrogate, SurrogateConfig
        >>> vae = Surrogate(SurrogateConfig(batch_size=8, latent=2), 8, 16, device=torch.device("cpu"))
        >>> features = DualVAEFeatures(vae, patches, 16, pretrain_steps=5, update_steps=3)
        >>> out = features.refit(observed, values, np.random.default_rng(1).random((8, 16)).astype(np.float32))
        >>> out.unit.shape, out.checkpoint is not None  # the latent of every patch; weights for resume
        ((30, 2), True)
    """

    def __init__(
        self,
        surrogate: Surrogate,
        patches: NDArray[np.float32],
        channels: int,
        *,
        pretrain_steps: int = 300,
        update_steps: int = 20,
        update_seconds: float = 1.0,
        positions: NDArray[np.float64] | None = None,
        progress: PhaseProgress | None = None,
    ):
        self.surrogate = surrogate
        self._positions = None if positions is None else unit_cube(positions)
        self._update = (update_steps, update_seconds)
        m = patches.shape[0]
        self._data = PairedData(patches, np.zeros((m, channels), np.float32), np.zeros(m, bool))
        what = f"pre-training the dual VAE on {m} patches"
        on_step = None if progress is None else (lambda k, _loss: progress(what, k, pretrain_steps))
        if progress is not None:
            progress(what, 0, pretrain_steps)
        self.pretrain_report = surrogate.fit(self._data, pretrain_steps, on_step=on_step)
        self._latents = unit_cube(surrogate.image_latent(patches))
        self.updates: list[TrainReport] = []

    def refit(self, observed: NDArray[np.int64], values: NDArray[np.float64], spectra: NDArray[np.float32]) -> Features:
        """Add ``spectra (n, c)`` of candidates ``observed (n,)``, update the surrogate, return the latents."""
        self._data.spectra[observed] = spectra
        self._data.has_spectrum[observed] = True
        report = self.surrogate.update(self._data, max_steps=self._update[0], max_seconds=self._update[1])
        self.updates.append(report)
        if not report.rolled_back:
            self._latents = unit_cube(self.surrogate.image_latent(self._data.patches))
        meta, weights = self.surrogate.to_state()
        checkpoint = (meta, {k: v.detach().clone() for k, v in weights.items()})  # this thread's copy
        if self._positions is None:
            return Features(self._latents, checkpoint=checkpoint)
        return Features(np.concatenate([self._latents, self._positions], axis=1), checkpoint=checkpoint)

    def __getstate__(self) -> dict[str, Any]:
        """What pickles (a refit sent to a Dask worker): the measured spectra only, not the empty rows."""
        state = dict(self.__dict__)
        data = self._data
        rows = np.flatnonzero(data.has_spectrum)
        state["_data"] = (data.patches, data.spectra.shape, rows, data.spectra[rows])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the full spectra table from the measured rows."""
        patches, shape, rows, measured = state.pop("_data")
        spectra = np.zeros(shape, np.float32)
        spectra[rows] = measured
        has = np.zeros(shape[0], bool)
        has[rows] = True
        self.__dict__.update(state, _data=PairedData(patches, spectra, has))

    def to(self, device: torch.device) -> DualVAEFeatures:
        """Move the dual VAE to ``device`` (a refit on a worker's GPU; back on the CPU between refits)."""
        self.surrogate.to(device)
        return self

    def scalar_draws(self, scalariser: Scalariser, axis: NDArray[np.float64], samples: int) -> NDArray[np.float64]:
        """``dualvae-spectral``'s prior: ``samples`` im2spec draws per candidate, scalarised: ``(samples, m)``.

        Decoded in blocks of candidates, so 10,000 candidates × 32 draws never hold all their spectra
        at once. Runs in the trainer's thread, after ``refit``.
        """
        patches = self._data.patches
        out = np.empty((samples, patches.shape[0]), dtype=np.float64)
        for start in range(0, patches.shape[0], _BLOCK):
            block = self.surrogate.sample_spectra(patches[start : start + _BLOCK], samples)  # (s, b, c)
            flat = scalariser(block.reshape(-1, block.shape[-1]), axis)
            out[:, start : start + _BLOCK] = np.asarray(flat, dtype=np.float64).reshape(samples, -1)
        return out

    def load_checkpoint(self, meta: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        """Continue from a checkpoint taken by ``refit`` (``dualscope resume``): weights, normaliser, version.

        Raises:
            CheckpointError: it is for another network (other patch size, channels or latent size).
        """
        try:
            self.surrogate.net.load_state_dict(weights)
            self.surrogate.norm = Normaliser(**meta["normaliser"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"the feature checkpoint does not fit this dual VAE: {exc}") from exc
        self.surrogate.sigma_scale, self.surrogate.version = float(meta["sigma_scale"]), int(meta["version"])
        self._latents = unit_cube(self.surrogate.image_latent(self._data.patches))
