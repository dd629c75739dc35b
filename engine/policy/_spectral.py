"""``dualvae-spectral``: decisions on the dual VAE's predicted spectra, corrected by the measured data.

For every candidate patch the dual VAE draws ``s`` spectra (image-latent posterior samples decoded,
plus the decoder's spread: ``Surrogate.sample_spectra``); the run's scalariser turns each draw into
a value, so the prior over the property respects the scalariser's non-linearity (a peak position,
a band ratio, a similarity to a target). Standardised like the measured values, these draws
``P (s, m)`` are the prior; a GP on the residual ``y − mean_s P`` between the measured values and
the prior's mean, with the image latent and the position as inputs, corrects it where data shows
it is wrong (docs/decisions/0011). Member ``k`` of the posterior at candidate ``c`` is

    ``f_k(c) = P[k, c] + μ_r(c) + σ_r(c) ε[k, c]``  with ``ε ~ N(0, 1)``,

an ensemble that botorch's Monte-Carlo acquisition functions consume as an ``EnsemblePosterior``
through a ``Model`` over candidate indices (``SampledCandidates``), averaging over every member once
(``EveryMember``, botorch's ``IndexSampler`` without the random resample): qLogEI, qLogNEI, qUCB,
Thompson sampling (one member drawn by the posterior's ``rsample``), and the posterior's spread for ``max-variance``.
Pure compute: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import PosteriorStandardDeviation
from botorch.acquisition.logei import qLogExpectedImprovement, qLogNoisyExpectedImprovement
from botorch.acquisition.monte_carlo import qUpperConfidenceBound
from botorch.models.model import Model
from botorch.posteriors.ensemble import EnsemblePosterior
from botorch.sampling.index_sampler import IndexSampler
from numpy.typing import NDArray

from engine.policy._acquisition import (
    AcquisitionContext,
    AcquisitionFactory,
    Choice,
    TravelCost,
    check_acquisition,
    greedy_batch,
    highest,
    user_acquisition,
)
from engine.policy._gp_posterior import CandidatePosterior

SHORTLIST = 256
"""Candidates the Monte-Carlo acquisitions score: those whose highest member is highest (see ``select_sampled``)."""
_CHUNK = 2048


@dataclass(frozen=True)
class PredictedScalars:
    """The prior: scalarised im2spec draws ``(s, m)`` at every candidate, standardised like the measured values.

    Attributes:
        draws: ``(s, m)`` standardised values, one row per draw.

    Examples:
        >>> prior = PredictedScalars(np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]))
        >>> prior.mean.tolist(), prior.size
        ([1.0, 1.0, 1.0], 2)
    """

    draws: NDArray[np.float64]

    @property
    def mean(self) -> NDArray[np.float64]:
        """The prior mean ``(m,)``: what the residual GP is fitted against."""
        return np.asarray(self.draws.mean(axis=0), dtype=np.float64)

    @property
    def size(self) -> int:
        """Draws ``s``."""
        return int(self.draws.shape[0])

    def scaled(self, weight: float) -> PredictedScalars:
        """The draws times ``weight`` (standardised values: 0 is the measured mean, so 0 turns the prior off)."""
        return PredictedScalars(self.draws * weight)


HELD_OUT_PAIRS = 40
"""The latest (prediction, measurement) pairs that set the prior's weight: the prior improves as spectra arrive."""
MAX_PRIOR_WEIGHT = 2.0
"""The highest weight: a VAE's predictions shrink towards the mean, so a slope above 1 is plausible; far above, not."""


def prior_weight(predicted: NDArray[np.float64], measured: NDArray[np.float64]) -> float:
    """How much to trust the predicted property: the shrunk slope of the measured values on held-out predictions.

    ``predicted[i]`` is the prior's mean at observation ``i`` from a model fitted before that spectrum
    was measured (NaN where there was none): a genuine out-of-sample prediction, unlike the current
    model's value there, which has learnt from that very spectrum. Over the latest ``HELD_OUT_PAIRS``
    pairs with a prediction, both centred and divided by the measured values' spread, the weight is
    the posterior mean of the slope ``w`` in ``y = a + w p + e`` under a ``N(0, 1)`` prior on ``w``:
    ``Σ p y / (Σ p² + σ²)``, with the noise ``σ² = (RSS + 1) / (n − 1)`` from the least-squares fit
    (one pseudo-observation of unit variance keeps it finite with few pairs), clipped to
    ``[0, MAX_PRIOR_WEIGHT]``. Predictions that were right get a weight near their slope; ones that
    explain nothing, or the opposite of what is measured, get 0 (the policy then decides on the
    residual GP alone, as ``dualvae-bo`` does); with fewer than 3 pairs the weight is 0.

    Args:
        predicted: held-out predictions ``(n,)``, in the measured values' units (NaN: none).
        measured: the measured values ``(n,)``, same units.

    Returns:
        The weight, in ``[0, MAX_PRIOR_WEIGHT]``.

    Examples:
        >>> y = np.linspace(0.0, 1.0, 40)
        >>> round(prior_weight(y, y), 2)  # predictions that were right: trusted
        1.0
        >>> noise = np.random.default_rng(0).normal(size=40)
        >>> round(prior_weight(noise, y), 2)  # predictions that explain nothing: next to nothing
        0.04
        >>> prior_weight(-y, y), prior_weight(np.full(40, np.nan), y)  # the wrong way round, or none made
        (0.0, 0.0)
    """
    p, y = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    keep = np.flatnonzero(np.isfinite(p) & np.isfinite(y))[-HELD_OUT_PAIRS:]
    spread = float(np.std(y[np.isfinite(y)])) if np.isfinite(y).any() else 0.0
    if keep.size < 3 or spread <= 0:
        return 0.0
    pc, yc = (p[keep] - p[keep].mean()) / spread, (y[keep] - y[keep].mean()) / spread
    sxx, sxy = float(pc @ pc), float(pc @ yc)
    if sxx <= 0:
        return 0.0
    rss = float(((yc - sxy / sxx * pc) ** 2).sum())
    noise = (rss + 1.0) / (keep.size - 1)
    return float(np.clip(sxy / (sxx + noise), 0.0, MAX_PRIOR_WEIGHT))


def standardised_draws(draws: NDArray[np.float64], mean: float, std: float) -> NDArray[np.float64]:
    """Draws ``(s, m)`` standardised like the measured values; a draw the scalariser cannot value is the worst one.

    A predicted spectrum with no peak in the window, a zero denominator or a non-positive value under
    a logarithm gives NaN: it stands for the lowest finite draw (such a spectrum is not what is
    wanted), and all-NaN draws for the measured mean.

    Args:
        draws: scalarised predicted spectra ``(s, m)``, in the scalariser's units (NaN allowed).
        mean: the measured values' mean, same units.
        std: their standard deviation (> 0).

    Returns:
        ``(s, m)`` finite values ``(draw − mean) / std``.

    Examples:
        >>> standardised_draws(np.array([[1.0, np.nan], [3.0, 5.0]]), mean=3.0, std=2.0).tolist()
        [[-1.0, -1.0], [0.0, 1.0]]
    """
    d = np.asarray(draws, dtype=np.float64)
    finite = np.isfinite(d)
    low = float(d[finite].min()) if finite.any() else mean
    return np.asarray((np.where(finite, d, low) - mean) / std, dtype=np.float64)


class EveryMember(IndexSampler):
    """botorch's ``IndexSampler``, taking every member of the ensemble once instead of a random resample.

    The Monte-Carlo acquisitions then average exactly over the ``s`` members (no resampling noise,
    no multinomial draw per call).

    Args:
        members: the ensemble's size ``s`` (the sampler's sample shape).

    Examples:
        >>> from botorch.posteriors.ensemble import EnsemblePosterior
        >>> posterior = EnsemblePosterior(torch.arange(6.0).reshape(2, 3, 1, 1))  # 2 candidates, 3 members
        >>> EveryMember(3)(posterior)[:, :, 0, 0].tolist()
        [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """

    def __init__(self, members: int):
        super().__init__(sample_shape=torch.Size([members]))

    def _construct_base_samples(self, posterior: EnsemblePosterior) -> None:
        shape = self.sample_shape + posterior.batch_shape
        if self.base_samples is None or self.base_samples.shape != shape:
            index = torch.arange(posterior.ensemble_size, device=posterior.device)
            self.register_buffer("base_samples", index.reshape(-1, *([1] * len(posterior.batch_shape))).expand(shape))


class SampledCandidates(Model):
    """A botorch ``Model`` over candidate indices whose posterior is the prior draws plus the residual GP.

    ``X (b, q, 1)`` holds candidate indices; the posterior is an ``EnsemblePosterior`` with values
    ``(b, s, q, 1)``: member ``k`` at candidate ``c`` is ``P[k, c] + μ_r(c) + σ_r(c) ε[k, c]``, the
    normal draws ``ε (s, m)`` fixed when the model is built (so every acquisition call, and every
    candidate of a joint batch, sees the same members).

    Args:
        prior: the scalarised im2spec draws.
        residual: the residual GP's posterior at every candidate (conditioned on all observations).
        variance: the residual's variance ``(m,)`` to use instead of the posterior's (kriging believers).
        seed: seeds ``ε``.

    Examples:
        >>> prior = PredictedScalars(np.random.default_rng(0).normal(size=(16, 30)))
        >>> model = SampledCandidates(prior, posterior, seed=0)
        >>> model.posterior(torch.arange(30, dtype=torch.float64).reshape(30, 1, 1)).values.shape
        torch.Size([30, 16, 1, 1])
    """

    def __init__(
        self,
        prior: PredictedScalars,
        residual: CandidatePosterior,
        variance: NDArray[np.float64] | None = None,
        *,
        seed: int = 0,
    ):
        super().__init__()
        var = residual.variance if variance is None else variance
        gen = torch.Generator().manual_seed(seed)
        eps = torch.randn(prior.draws.shape, generator=gen, dtype=torch.float64)
        sigma = torch.as_tensor(np.sqrt(np.clip(var, 0, None)), dtype=torch.float64)
        mean = torch.as_tensor(residual.mean, dtype=torch.float64)
        self._members = torch.as_tensor(prior.draws, dtype=torch.float64) + mean + sigma * eps  # (s, m)

    @property
    def num_outputs(self) -> int:
        """One outcome."""
        return 1

    @property
    def members(self) -> torch.Tensor:
        """The ensemble ``(s, m)`` at every candidate."""
        return self._members

    def posterior(self, X: torch.Tensor, *args: Any, **kwargs: Any) -> EnsemblePosterior:  # noqa: N803 (botorch's name)
        """The ensemble at the candidates whose indices ``X (..., q, 1)`` holds: values ``(..., s, q, 1)``."""
        idx = X[..., 0].long()  # (..., q)
        values = self._members[:, idx]  # (s, ..., q)
        return EnsemblePosterior(values.movedim(0, -2).unsqueeze(-1))


def select_sampled(
    prior: PredictedScalars,
    residual: CandidatePosterior,
    available: NDArray[np.int64],
    pending: NDArray[np.int64],
    q: int,
    acquisition: str | AcquisitionFactory,
    *,
    best_f: float,
    observed: NDArray[np.int64],
    seed: int,
    beta: float,
    travel: TravelCost | None = None,
) -> Choice:
    """Pick up to ``q`` of ``available`` candidates with a botorch Monte-Carlo acquisition on the ensemble.

    Args:
        prior: the scalarised im2spec draws ``(s, m)`` (standardised).
        residual: the residual GP's posterior at every candidate.
        available: indices that may be chosen ``(k,)``.
        pending: indices sent but not yet measured ``(p,)``: kriging believers of the residual GP, and
            botorch's ``X_pending`` for noisy log EI.
        q: batch size (greedy: each pick becomes a believer for the next).
        acquisition: one of ``engine.policy.ACQUISITIONS``.
        best_f: the best standardised measured value (log EI's incumbent).
        observed: measured candidate indices (noisy log EI's baseline: the 16 of highest posterior mean).
        seed: seeds the ensemble's normal draws and Thompson's member.
        beta: qUCB's ``β``.
        travel: optional travel cost.

    Returns:
        The chosen indices, their acquisition values and the runner-ups' values.

    log EI, noisy log EI and UCB score the ``SHORTLIST`` candidates whose highest ensemble member is
    highest (chosen once, before the first pick): an improvement no member reaches has an expected improvement
    near zero, so their maximiser lies there in all but pathological cases, and a decision over
    10,000 candidates costs the same as over 256.

    Examples:
        >>> prior = PredictedScalars(np.random.default_rng(0).normal(size=(16, 30)))
        >>> choice = select_sampled(prior, posterior, np.arange(10, 30), np.empty(0, np.int64), 1, "log-ei",
        ...                         best_f=1.0, observed=np.arange(10), seed=0, beta=0.5)
        >>> 10 <= int(choice.indices[0]) < 30
        True
    """
    check_acquisition(acquisition)
    free = np.sort(np.asarray(available, dtype=np.int64))
    first = SampledCandidates(prior, residual, residual.believe(pending) if len(pending) else None, seed=seed)
    if not isinstance(acquisition, str) or acquisition in ("log-ei", "ucb", "noisy-log-ei"):
        free = highest(free, first.members[:, free].max(dim=0).values.numpy(), SHORTLIST)

    def score(free: NDArray[np.int64], believers: NDArray[np.int64], pick: int) -> NDArray[np.float64]:
        model = first if pick == 0 else SampledCandidates(prior, residual, residual.believe(believers), seed=seed)
        return _scores(model, free, believers, acquisition, best_f, observed, seed + pick, beta)

    return greedy_batch(free, np.asarray(pending, np.int64), q, score, travel)


def _scores(
    model: SampledCandidates,
    free: NDArray[np.int64],
    believers: NDArray[np.int64],
    acquisition: str | AcquisitionFactory,
    best_f: float,
    observed: NDArray[np.int64],
    seed: int,
    beta: float,
) -> NDArray[np.float64]:
    """Acquisition value ``(k,)`` of each candidate in ``free``."""
    x = torch.as_tensor(free, dtype=torch.float64).reshape(-1, 1, 1)
    acq: AcquisitionFunction
    if not isinstance(acquisition, str):
        pending = torch.as_tensor(believers, dtype=torch.float64).reshape(-1, 1) if believers.size else None
        observed_x = torch.as_tensor(observed, dtype=torch.float64).reshape(-1, 1)
        acq = user_acquisition(acquisition, model, AcquisitionContext(best_f, observed_x, pending, beta))
        with torch.no_grad():
            parts = [acq(x[i : i + _CHUNK]).detach() for i in range(0, x.shape[0], _CHUNK)]
        return np.asarray(torch.cat(parts).numpy(), dtype=np.float64)
    if acquisition == "thompson":  # one member of the ensemble, drawn by its posterior, over every free candidate
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            draw = model.posterior(x[:, 0, :].unsqueeze(0)).rsample(torch.Size([1]))  # (1, 1, k, 1)
        return np.asarray(draw.reshape(-1).numpy(), dtype=np.float64)
    sampler = EveryMember(model.members.shape[0])
    if acquisition == "log-ei":
        acq = qLogExpectedImprovement(model, best_f=best_f, sampler=sampler)
    elif acquisition == "ucb":
        acq = qUpperConfidenceBound(model, beta=beta, sampler=sampler)
    elif acquisition == "noisy-log-ei":
        means = model.members.mean(0)[observed]
        baseline = observed[np.argsort(-means.numpy())[:16]]
        acq = qLogNoisyExpectedImprovement(
            model,
            X_baseline=torch.as_tensor(baseline, dtype=torch.float64).reshape(-1, 1),
            sampler=sampler,
            prune_baseline=False,
            cache_root=False,
            X_pending=torch.as_tensor(believers, dtype=torch.float64).reshape(-1, 1) if believers.size else None,
        )
    else:
        acq = PosteriorStandardDeviation(model)
    with torch.no_grad():
        parts = [acq(x[i : i + _CHUNK]).detach() for i in range(0, x.shape[0], _CHUNK)]
    return np.asarray(torch.cat(parts).numpy(), dtype=np.float64)
