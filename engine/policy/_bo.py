"""Bayesian optimisation over the candidates with bounded decision latency.

What the model-based policies share (``ScalarBO``): the scalarised measured values, refits
submitted to a ``Trainer`` (background thread, or inline for reproducible
runs), and decisions that use whichever snapshot finished last. A snapshot holds the GP inputs of
every candidate (positions, dual-VAE latents or DKL features), the fitted GP and its posterior at
every candidate; observations that arrived since it was cut enter by conditioning
(``engine.gp_posterior``), never by a refit on the critical path. The policies differ only in
their ``FeatureModel``. The first ``initial`` measurements, and any decision taken before the
first snapshot is ready, are random (seeded), recorded with model version -1.

``gp-position`` (this module) is the position-only baseline, and the policy for data without a
structural image. Pure decision code: no I/O.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from botorch.models import SingleTaskGP
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.config import ScalariserSection
from engine.decisions import PropertyMap, Proposal
from engine.errors import ConfigError
from engine.policy._acquisition import AcquisitionFactory, TravelCost, check_acquisition, select, ucb_beta
from engine.policy._gp_posterior import CandidatePosterior, fit_gp, unit_cube
from engine.policy._scalarisers import Scalariser
from engine.policy._spectral import PredictedScalars, prior_weight, select_sampled, standardised_draws
from engine.policy._trainer import Trainer, resolve_device
from engine.rng_state import rng_state, set_rng_state

FeatureCheckpoint = tuple[dict[str, Any], dict[str, torch.Tensor]]
"""A learned feature model's JSON metadata and weights (copies), as ``engine.checkpoints`` saves them."""


@dataclass(frozen=True)
class Features:
    """GP inputs of every candidate ``(m, d)`` in the unit cube, and what the refit leaves besides.

    ``model``: a GP already fitted on them (DKL), if any. ``checkpoint``: the feature model's
    checkpoint after this refit (learned features only; ``dualscope resume`` loads it).

    Attributes:
        unit: GP inputs ``(m, d)`` in ``[0, 1]``.
        model: a GP fitted jointly with the features (DKL), or None.
        checkpoint: the feature model's metadata and weights, or None.

    Examples:
        >>> out = PositionFeatures(positions).refit(np.arange(5), np.zeros(5), np.zeros((5, 16), np.float32))
        >>> float(out.unit.min()), float(out.unit.max()), out.model is None
        (0.0, 1.0, True)
    """

    unit: NDArray[np.float64]
    model: SingleTaskGP | None = None
    checkpoint: FeatureCheckpoint | None = None


class FeatureModel(Protocol):
    """Maps candidates to GP inputs; may learn from the measured data (in the trainer's thread).

    Examples:
        >>> features: FeatureModel = PositionFeatures(positions)  # or DKLFeatures, DualVAEFeatures
        >>> features.refit(np.arange(5), np.zeros(5), np.zeros((5, 16), np.float32)).unit.shape
        (50, 2)
    """

    def refit(self, observed: NDArray[np.int64], values: NDArray[np.float64], spectra: NDArray[np.float32]) -> Features:
        """Features of all candidates, after learning from ``observed (n,)``, ``values (n,)``, ``spectra (n, c)``."""
        ...


class PredictsSpectra(Protocol):
    """Draws the property at every candidate from predicted spectra (``dualvae-spectral``'s prior).

    Examples:
        >>> from engine.policy import DualVAEFeatures
        >>> from engine.surrogate import Surrogate, SurrogateConfig
        >>> patches = np.random.default_rng(0).random((50, 8, 8)).astype(np.float32)
        >>> vae = Surrogate(SurrogateConfig(batch_size=8, latent=2), 8, 21, device=torch.device("cpu"))
        >>> predictor: PredictsSpectra = DualVAEFeatures(vae, patches, 21, pretrain_steps=5)
        >>> predictor.scalar_draws(BandIntegral(0.0, 0.5), energy, 8).shape  # 8 draws at each of 50 candidates
        (8, 50)
    """

    def scalar_draws(self, scalariser: Scalariser, axis: NDArray[np.float64], samples: int) -> NDArray[np.float64]:
        """``samples`` predicted spectra per candidate, scalarised: ``(samples, m)`` values (NaN allowed)."""
        ...


class PositionFeatures:
    """The probe position itself, scaled to the unit cube (``positions (m, d)``).

    Args:
        positions: candidate positions ``(m, d)``, the axes' units.

    Examples:
        >>> PositionFeatures(positions).refit(np.arange(5), np.zeros(5), np.zeros((5, 16), np.float32)).unit.shape
        (50, 2)
    """

    def __init__(self, positions: NDArray[np.float64]):
        self._unit = unit_cube(positions)

    def refit(self, observed: NDArray[np.int64], values: NDArray[np.float64], spectra: NDArray[np.float32]) -> Features:
        """Positions do not learn."""
        return Features(self._unit)


@dataclass(frozen=True)
class Snapshot:
    """An immutable refit: version, the observations it saw and its posterior at every candidate.

    The policy that receives it conditions ``posterior`` on later observations (it owns it then).

    Attributes:
        version: increases with every refit (recorded with each decision as ``model_version``).
        n_obs: observations the GP was fitted on.
        y_mean: mean of the scalar values, for standardising.
        y_std: their standard deviation.
        posterior: the GP's posterior at every candidate, conditioned on the observations.
        fit_warnings: botorch warnings counted during the fit.
        features_checkpoint: the learned features' metadata and weights, for resume (None: positions).
        fit_s: seconds the refit took (features, GP fit and the posterior at every candidate).
        prior: ``dualvae-spectral``: the scalarised predicted spectra (standardised); the posterior is
            then the residual GP's, on ``y`` minus the prior's mean.
        cut: measurements told (finite values or not) when the refit's data was cut; the snapshot's
            staleness at a decision is the measurements told then minus ``cut``.
        device: the torch device the features were trained on (``cuda:0``, ``cpu``).
        host: the machine the refit ran on.
        features: the feature model after this refit (the policy's own object when trained in this
            process; the copy that comes back from a Dask worker); the policy continues from it.
        predicted: the same for ``dualvae-spectral``'s predictor (usually the same object as ``features``).

    Examples:
        >>> snapshot = Snapshot(version=1, n_obs=10, y_mean=0.0, y_std=1.0, posterior=posterior, fit_warnings=0)
        >>> snapshot.posterior.mean.shape  # ScalarBO makes one per refit; the next decisions condition it
        (30,)
    """

    version: int
    n_obs: int
    y_mean: float
    y_std: float
    posterior: CandidatePosterior
    fit_warnings: int
    features_checkpoint: FeatureCheckpoint | None = None
    fit_s: float = float("nan")
    prior: PredictedScalars | None = None
    cut: int = 0
    device: str = "cpu"
    host: str = ""
    features: FeatureModel | None = None
    predicted: PredictsSpectra | None = None
    prior_weight: float = float("nan")
    predicted_values: NDArray[np.float64] | None = None

    def residual(self, index: int, value: float) -> float:
        """The standardised value the posterior models at candidate ``index`` for a measured ``value``."""
        y = (value - self.y_mean) / self.y_std
        return y - float(self.prior.mean[index]) if self.prior is not None else y


@runtime_checkable
class Movable(Protocol):
    """A feature model whose networks can move between devices (the dual VAE's).

    Examples:
        >>> isinstance(PositionFeatures(positions), Movable)  # positions have nothing to move
        False
    """

    def to(self, device: torch.device) -> Any:
        """Move the networks to ``device``."""
        ...


HOME = torch.device("cpu")
"""Where a feature model rests between refits: any machine can unpickle it (a Dask result comes home)."""


@dataclass(frozen=True)
class RefitJob:
    """One refit as a self-contained task: the data it learns from and everything it needs, nothing else.

    It pickles (a Dask worker runs it on its own copy) and shares no state with the policy that cut it
    (a thread runs it on the policy's feature model, which only trainers touch). Calling it learns the
    features (on ``device``, resolved where it runs, and back on the CPU afterwards), fits the GP and
    builds its posterior at every candidate.

    Attributes:
        version: the snapshot's version.
        cut: measurements told when the data was cut.
        observed: candidate indices ``(n,)`` with a finite value.
        values: their values ``(n,)``, the scalariser's units.
        spectra: their spectra ``(n, c)``.
        features: the feature model to continue from.
        scalariser: the property (``dualvae-spectral`` scalarises its predicted spectra with it).
        axis: the spectral axis values ``(c,)``.
        predicted: ``dualvae-spectral``'s predictor, or None.
        prior_samples: predicted spectra per candidate.
        prior_as: ``"residual"`` or ``"input"`` (see ``ScalarBO``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        held_out: ``dualvae-spectral``'s held-out predictions ``(n,)`` at ``observed``, the values' units (NaN:
            none); with them the prior is scaled by ``engine.policy.prior_weight``, without (None) trusted as is.

    Examples:
        >>> job = RefitJob(1, 5, np.arange(5), np.arange(5.0), np.zeros((5, 16), np.float32),
        ...                PositionFeatures(positions), BandIntegral(0.0, 0.5), np.linspace(0.0, 1.0, 16))
        >>> snapshot = job()
        >>> snapshot.version, snapshot.n_obs, snapshot.device, snapshot.posterior.mean.shape
        (1, 5, 'cpu', (50,))
    """

    version: int
    cut: int
    observed: NDArray[np.int64]
    values: NDArray[np.float64]
    spectra: NDArray[np.float32]
    features: FeatureModel
    scalariser: Scalariser
    axis: NDArray[np.float64]
    predicted: PredictsSpectra | None = None
    prior_samples: int = 32
    prior_as: str = "residual"
    device: str = "cpu"
    held_out: NDArray[np.float64] | None = None

    def __call__(self) -> Snapshot:
        """Learn the features, fit the GP, build its posterior at every candidate: the next snapshot."""
        t0 = time.perf_counter()
        device = resolve_device(self.device)
        movable: Movable | None = self.features if isinstance(self.features, Movable) else None
        if movable is not None:
            movable.to(device)
        try:
            return self._fit(t0, str(device) if movable is not None else "cpu")
        finally:
            if movable is not None:
                movable.to(HOME)

    def _fit(self, t0: float, device: str) -> Snapshot:
        idx, values = self.observed, self.values
        mean, std = float(values.mean()), float(values.std()) or 1.0
        y = (values - mean) / std
        feats = self.features.refit(idx, y, self.spectra)
        x = torch.as_tensor(feats.unit, dtype=torch.float64)
        prior, weight, predicted_values = None, float("nan"), None
        if self.predicted is not None:
            draws = self.predicted.scalar_draws(self.scalariser, self.axis, self.prior_samples)
            prior = PredictedScalars(standardised_draws(draws, mean, std))
            predicted_values = mean + std * prior.mean  # unweighted: the next held-out predictions
            if self.prior_as == "input":
                x = torch.cat([x, torch.as_tensor(unit_cube(prior.mean[:, None]), dtype=torch.float64)], dim=1)
                prior = None
            else:
                if self.held_out is not None:
                    weight = prior_weight(self.held_out, values)
                    prior = prior.scaled(weight)
                y = y - prior.mean[idx]
        warn = 0
        model = feats.model
        if model is None:
            model, warn = fit_gp(x[idx], torch.as_tensor(y))
        posterior = CandidatePosterior(model, x, idx, y)
        return Snapshot(
            self.version, idx.size, mean, std, posterior, warn, feats.checkpoint, time.perf_counter() - t0, prior,
            self.cut, device, socket.gethostname(), self.features, self.predicted, weight, predicted_values,
        )  # fmt: skip


class ScalarBO:
    """Scalarised values, background refits and snapshot-based proposals.

    Args:
        scalariser: what to maximise; axis: spectral axis values ``(c,)``.
        acquisition: one of ``engine.policy.ACQUISITIONS``, or a user's botorch acquisition
            (``engine.policy.AcquisitionFactory``: ``(model, context) -> AcquisitionFunction``).
        rng: seeds the initial random design, the MC sampler and Thompson draws.
        initial: measurements before the first refit.
        features: the candidates' GP inputs.
        trainer: where refits run.
        refit_every: new observations between refits (when the trainer is free).
        travel_cost: acquisition units per field-of-view diagonal travelled (0: none).
        ucb_beta: a fixed ``β`` for ``ucb`` (``μ + √β σ``; small values exploit); default: the GP-UCB schedule.
        wait_for_first_model: with a background trainer, the first decision after ``initial`` waits for
            the first model instead of choosing at random while it trains (later refits never block).
        predicted: ``dualvae-spectral``: the model whose predicted spectra, scalarised, are the prior
            (``engine.policy._spectral``); the GP then models the residual.
        prior_samples: predicted spectra drawn per candidate at each refit.
        prior_as: how ``predicted`` enters: ``"residual"`` (the draws are the prior, the GP models the
            residual, acquisition on the ensemble) or ``"input"`` (the draws' mean is one more GP input,
            analytic acquisition; the alternative measured in docs/decisions/0011).
        prior_weight: with ``prior_as = "residual"``: ``"held-out"`` scales the prior by how well its
            predictions, each made before its spectrum was measured, explain the measured values
            (``engine.policy.prior_weight``; docs/decisions/0015); ``"none"`` trusts it as is.
        device: the torch device of the feature model's refits, resolved where each refit runs
            (``engine.policy.resolve_device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Examples:
        >>> axis = np.linspace(0.0, 1.0, 16)
        >>> def measure(indices):  # a toy instrument: the band at 0-0.5 is strongest near (0.8, 0.8)
        ...     strength = np.exp(-8 * ((positions[indices] - 0.8) ** 2).sum(axis=1))
        ...     return (strength[:, None] * (axis < 0.5) + 0.1).astype(np.float32)
        >>> bo = ScalarBO(BandIntegral(0.0, 0.5), axis, "log-ei", np.random.default_rng(0), 5,
        ...               PositionFeatures(positions), InlineTrainer())
        >>> policy = BOPolicy("gp-position", bo)
        >>> for _ in range(10):
        ...     proposal = policy.propose(candidates, 1)
        ...     candidates.mark_measured(proposal.indices)
        ...     policy.tell(proposal.indices, measure(proposal.indices))
        >>> bo.snapshot is not None and bo.snapshot.n_obs >= 5
        True
    """

    def __init__(
        self,
        scalariser: Scalariser,
        axis: NDArray[np.float64],
        acquisition: str | AcquisitionFactory,
        rng: np.random.Generator,
        initial: int,
        features: FeatureModel,
        trainer: Trainer[Snapshot],
        *,
        refit_every: int = 1,
        travel_cost: float = 0.0,
        ucb_beta: float | None = None,
        wait_for_first_model: bool = False,
        predicted: PredictsSpectra | None = None,
        prior_samples: int = 32,
        prior_as: str = "residual",
        prior_weight: str = "held-out",
        device: str = "cpu",
    ):
        check_acquisition(acquisition)
        if refit_every < 1 or travel_cost < 0 or (ucb_beta is not None and ucb_beta <= 0):
            raise ConfigError("refit_every must be >= 1, travel_cost >= 0 and ucb_beta > 0")
        self.scalariser, self.axis, self.acquisition, self._rng = scalariser, axis, acquisition, rng
        self.initial, self.features, self.trainer = max(1, initial), features, trainer
        self.refit_every, self.travel_cost, self.ucb_beta = refit_every, travel_cost, ucb_beta
        self.wait_for_first_model = wait_for_first_model
        if prior_as not in ("residual", "input"):
            raise ConfigError(f"prior_as must be 'residual' or 'input', not {prior_as!r}")
        if prior_weight not in ("held-out", "none"):
            raise ConfigError(f"prior_weight must be 'held-out' or 'none', not {prior_weight!r}")
        self.predicted, self.prior_samples, self.prior_as = predicted, prior_samples, prior_as
        self.weighs_prior = predicted is not None and prior_as == "residual" and prior_weight == "held-out"
        self.device = device
        self._n_told = 0  # measurements told, finite values or not (the schedule counts them all)
        self._last_index: int | None = None
        # observations with a finite value: what the GP sees, in the order it sees them
        self._obs_idx: list[int] = []
        self._obs_y: list[float] = []
        self._obs_spectra: list[NDArray[np.float32]] = []
        self._obs_held_out: list[float] = []  # the prior's prediction there before it was measured (NaN: none)
        self._told: list[tuple[NDArray[np.int64], NDArray[np.float32]]] = []  # all of it, for a new target
        self._retargeted = False  # the next decision waits for the first model of a new target
        self._submitted_n = -1
        self._next_version = 1
        self.snapshot: Snapshot | None = None
        self._live: CandidatePosterior | None = None
        self._live_n = 0
        self.fit_warnings = 0

    @property
    def n_told(self) -> int:
        """Measurements told so far, finite values or not (a snapshot's staleness is this minus its ``cut``)."""
        return self._n_told

    # ------------------------------------------------------------------ data in
    def add(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Scalarise the measured spectra of candidates ``indices`` and start a refit when due."""
        self._remember(indices, spectra)
        self._maybe_refit()

    def _remember(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Keep the measurements, scalarise them, count them all, note the probe's place."""
        spectra = np.asarray(spectra, dtype=np.float32)
        self._told.append((np.asarray(indices, np.int64), spectra))
        self._observe(indices, spectra, self._predicted_at(indices))
        self._n_told += len(indices)
        if len(indices):
            self._last_index = int(indices[-1])

    def _predicted_at(self, indices: NDArray[np.int64]) -> NDArray[np.float64]:
        """The prior's unweighted prediction of the property at ``indices`` by the snapshot in use (NaN: none).

        Called as their spectra arrive, before any refit has seen them: held-out predictions.
        """
        snap = self.snapshot
        if snap is None or snap.predicted_values is None:
            return np.full(len(indices), np.nan)
        return np.asarray(snap.predicted_values[np.asarray(indices, np.int64)], dtype=np.float64)

    def _observe(
        self, indices: NDArray[np.int64], spectra: NDArray[np.float32], held_out: NDArray[np.float64] | None = None
    ) -> None:
        """Scalarise and keep the observations with a finite value (what the GP sees), with held-out predictions."""
        values = self.scalariser(spectra, self.axis)
        predicted = np.full(len(indices), np.nan) if held_out is None else held_out
        for i, v, s, p in zip(indices, values, spectra, predicted, strict=True):
            if np.isfinite(v):  # NaN (no peak in the window, ...) is measured but not modelled
                self._obs_idx.append(int(i))
                self._obs_y.append(float(v))
                self._obs_spectra.append(s)
                self._obs_held_out.append(float(p))

    def retarget(self, scalariser: Scalariser) -> None:
        """Maximise ``scalariser`` from the next decision on; no measured spectrum is wasted.

        Every spectrum measured so far is scalarised again, the snapshot of the old target is
        dropped (a refit on it still running is waited for and discarded) and a refit on the new
        values starts at once; the next decision waits for it (once: later refits never block).
        Before ``initial`` measurements, decisions stay random as before.
        """
        self.trainer.wait()
        self.trainer.poll()  # the old target's model: of no use now
        self.scalariser = scalariser
        # the held-out predictions were of the old target: the new one's prior earns its weight afresh
        self._obs_idx, self._obs_y, self._obs_spectra, self._obs_held_out = [], [], [], []
        for indices, spectra in self._told:
            self._observe(indices, spectra)
        self.snapshot, self._live, self._live_n = None, None, 0
        self._submitted_n = -1
        self._maybe_refit()
        self._retargeted = self._submitted_n >= 0

    def _maybe_refit(self) -> None:
        n = self._n_told
        if n < self.initial or (self._submitted_n >= 0 and n - self._submitted_n < self.refit_every):
            return
        if len(self._obs_idx) < 2:
            return
        idx, values = np.asarray(self._obs_idx, np.int64), np.asarray(self._obs_y)
        spectra = np.asarray(self._obs_spectra, dtype=np.float32)  # copies: the job must not share state
        version = self._next_version
        if self.trainer.submit(self._job(version, n, idx, values, spectra)):
            self._submitted_n, self._next_version = n, version + 1

    def _job(
        self,
        version: int,
        cut: int,
        idx: NDArray[np.int64],
        values: NDArray[np.float64],
        spectra: NDArray[np.float32],
    ) -> RefitJob:
        """The refit of ``values (n,)`` at candidates ``idx (n,)`` as a self-contained task for the trainer."""
        held_out = np.asarray(self._obs_held_out[: idx.size], dtype=np.float64) if self.weighs_prior else None
        return RefitJob(
            version, cut, idx, values, spectra, self.features, self.scalariser, self.axis,
            self.predicted, self.prior_samples, self.prior_as, self.device, held_out,
        )  # fmt: skip

    def _adopt(self, snap: Snapshot) -> None:
        """Use ``snap`` from now on, and continue training from the feature model it was trained with."""
        self.snapshot, self._live, self._live_n = snap, snap.posterior, snap.n_obs
        if snap.features is not None:
            self.features = snap.features
        if snap.predicted is not None:
            self.predicted = snap.predicted

    # ------------------------------------------------------------------ resume
    def state(self) -> dict[str, Any]:
        """RNG state, schedule counters and which snapshot is in use (see ``engine.protocols.Resumable``)."""
        snap = self.snapshot
        return {
            "rng": rng_state(self._rng),
            "n_told": self._n_told,
            "submitted_n": self._submitted_n,
            "next_version": self._next_version,
            "snapshot_version": snap.version if snap is not None else 0,
            "snapshot_obs": snap.n_obs if snap is not None else 0,
            "awaiting_target_model": self._retargeted,
            **({"held_out": [p if np.isfinite(p) else None for p in self._obs_held_out]} if self.weighs_prior else {}),
        }

    def restore(self, state: Mapping[str, Any], told: list[tuple[NDArray[np.int64], NDArray[np.float32]]]) -> None:
        """Back to ``state`` with the measurements ``told`` before it; the snapshot in use is refitted now.

        The snapshot is fitted on the same observations as the one in use when ``state`` was taken
        (one fit, not the whole history); later observations are conditioned on at the next proposal,
        as they were. Stateless features (``gp-position``) give the same model; learned features (the
        dual VAE, DKL) learn all those observations in this one refit.

        Raises:
            ValueError: ``told`` does not hold the ``n_told`` measurements the state counts.
        """
        for indices, spectra in told:
            self._remember(indices, spectra)  # no refits: the one in use is rebuilt below
        if self._n_told != int(state["n_told"]):
            raise ValueError(f"the policy state counts {state['n_told']} measurements, the run has {self._n_told}")
        set_rng_state(self._rng, state["rng"])
        if self.weighs_prior and "held_out" in state:  # made by snapshots gone with the crash: kept in the state
            held_out = [np.nan if p is None else float(p) for p in state["held_out"]]
            if len(held_out) != len(self._obs_idx):
                raise ValueError(f"the policy state has {len(held_out)} held-out predictions for {len(self._obs_idx)}")
            self._obs_held_out = held_out
        self._submitted_n, self._next_version = int(state["submitted_n"]), int(state["next_version"])
        if state.get("awaiting_target_model"):  # taken between a target change and its first model: refit it
            self._next_version, self._submitted_n = self._next_version - 1, -1
            self._maybe_refit()
            self._retargeted = True
        version, n_obs = int(state["snapshot_version"]), int(state["snapshot_obs"])
        if version > 0:
            idx, values = np.asarray(self._obs_idx[:n_obs], np.int64), np.asarray(self._obs_y[:n_obs])
            spectra = np.asarray(self._obs_spectra[:n_obs], dtype=np.float32)
            self._adopt(self._job(version, self._submitted_n, idx, values, spectra)())

    def property_map(self) -> PropertyMap | None:
        """The current model's mean and standard deviation of the property at every candidate.

        The snapshot in use conditioned on the observations told up to the last decision (as that
        decision saw it; no refit is adopted here), in the scalariser's units; with a predicted-spectra
        prior (``dualvae-spectral``) the prior's mean and spread are added to the residual GP's. None
        before the first snapshot.

        Returns:
            A ``PropertyMap`` with ``mean`` and ``std`` of shape ``(m,)``.
        """
        snap, live = self.snapshot, self._live
        if snap is None or live is None:
            return None
        mean, var = np.array(live.mean, dtype=np.float64), np.clip(np.array(live.variance, dtype=np.float64), 0, None)
        if snap.prior is not None:
            mean = mean + snap.prior.mean
            var = var + snap.prior.draws.var(axis=0)
        return PropertyMap(snap.version, self._live_n, snap.y_mean + snap.y_std * mean, snap.y_std * np.sqrt(var))

    # ----------------------------------------------------------------- decisions
    def _catch_up(self) -> None:
        snap = self.trainer.poll()
        if snap is not None:
            self._adopt(snap)
            self.fit_warnings += snap.fit_warnings
        if self._live is None or self.snapshot is None:
            return
        for i, v in zip(self._obs_idx[self._live_n :], self._obs_y[self._live_n :], strict=True):
            self._live.add(i, self.snapshot.residual(i, v))
        self._live_n = len(self._obs_idx)

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """The acquisition's best ``q`` available candidates on the latest snapshot (random before one exists)."""
        free = candidates.available()
        if free.size == 0:
            return Proposal(np.empty(0, np.int64), np.empty(0))
        t0 = time.perf_counter()
        self._catch_up()
        if self._live is None and self._submitted_n >= 0 and (self.wait_for_first_model or self._retargeted):
            self.trainer.wait()  # the first model (of this target) is being fitted: wait rather than pick at random
            self._catch_up()
        self._retargeted = False
        t1 = time.perf_counter()
        if self._live is None or self.snapshot is None:
            k = min(q, free.size)
            return Proposal(self._rng.choice(free, size=k, replace=False).astype(np.int64), np.full(k, np.nan))
        travel = None
        if self.travel_cost > 0 and self._last_index is not None:
            travel = TravelCost(candidates.positions, self._last_index, self.travel_cost)
        pending = np.flatnonzero(candidates.pending).astype(np.int64)
        seed = int(self._rng.integers(2**31 - 1))
        beta = ucb_beta(self._n_told, candidates.positions.shape[0]) if self.ucb_beta is None else self.ucb_beta
        snap = self.snapshot
        if snap.prior is not None:
            choice = select_sampled(
                snap.prior,
                self._live,
                free,
                pending,
                q,
                self.acquisition,
                best_f=(max(self._obs_y) - snap.y_mean) / snap.y_std,
                observed=np.asarray(self._obs_idx, np.int64),
                seed=seed,
                beta=beta,
                travel=travel,
            )
        else:
            choice = select(self._live, free, pending, q, self.acquisition, seed=seed, step=self._n_told,
                            travel=travel, beta=beta)  # fmt: skip
        return Proposal(
            choice.indices,
            choice.values,
            self.snapshot.version,
            choice.runner_up_values,
            condition_s=t1 - t0,
            acquire_s=time.perf_counter() - t1,
        )


class BOPolicy:
    """A model-based policy: a name and the ``ScalarBO`` built with its feature model.

    ``gp-position`` uses ``PositionFeatures``; ``dualvae-bo`` the dual-VAE latents
    (``engine.dualvae_policy.DualVAEFeatures``); ``dkl`` a CNN trained jointly with the GP
    (``engine.dkl.DKLFeatures``).

    Args:
        name: the policy name recorded with each decision.
        bo: the shared machinery.
        build_scalariser: turns a ``[policy.scalariser]`` table into a scalariser on the run's
            spectral axis (``engine.policy.build_scalariser``); needed by ``retarget``.

    Examples:
        >>> bo = ScalarBO(PeakPosition(0.0, 2.0), energy, "log-ei", np.random.default_rng(0), 5,
        ...               PositionFeatures(positions), InlineTrainer())
        >>> policy = BOPolicy("gp-position", bo)
        >>> proposal = policy.propose(candidates, 1)
        >>> policy.name, proposal.model_version  # the first 5 decisions are random (no model yet)
        ('gp-position', -1)
    """

    def __init__(
        self, name: str, bo: ScalarBO, build_scalariser: Callable[[ScalariserSection], Scalariser] | None = None
    ):
        self.name, self.bo, self._build = name, bo, build_scalariser
        self.target: dict[str, Any] | None = None

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """See ``ScalarBO.propose``."""
        return self.bo.propose(candidates, q)

    def tell(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Scalarise the measured spectra, remember them, and start a refit when due."""
        self.bo.add(indices, spectra)

    def property_map(self) -> PropertyMap | None:
        """See ``ScalarBO.property_map``."""
        return self.bo.property_map()

    def retarget(self, section: ScalariserSection) -> None:
        """Maximise the scalariser ``section`` describes from the next decision (``ScalarBO.retarget``).

        Raises:
            ConfigError: the scalariser cannot be built (a window off the axis, a user function missing).
        """
        if self._build is None:
            raise ConfigError(f"{self.name} was built without a scalariser factory; it cannot change target")
        section.check_axis(self.bo.axis)  # a window off the axis fails here, not at the next refit
        self.bo.retarget(self._build(section))
        self.target = section.model_dump()

    def state(self) -> dict[str, Any]:
        """See ``ScalarBO.state``; with the scalariser an operator's ``target`` put in place, if any."""
        return {**self.bo.state(), **({"target": self.target} if self.target is not None else {})}

    def restore(self, state: Mapping[str, Any], told: list[tuple[NDArray[np.int64], NDArray[np.float32]]]) -> None:
        """See ``ScalarBO.restore``; a state taken after a ``target`` change restores that target first."""
        if state.get("target") is not None and self._build is not None:
            self.target = dict(state["target"])
            self.bo.scalariser = self._build(ScalariserSection.model_validate(self.target))
        self.bo.restore(state, told)
