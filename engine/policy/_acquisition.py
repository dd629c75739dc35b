"""Acquisition over a discrete candidate set, on a ``CandidatePosterior``.

Every acquisition is botorch's own class evaluated on a ``CandidateTable``, a botorch
``Model`` whose inputs are candidate indices and whose posterior is the conditioned GP's (joint
where ``q > 1``), so scoring 10,000 candidates with an analytic acquisition (log EI, UCB, max
variance) costs a few vector operations. Noisy log EI (``qLogNoisyExpectedImprovement``, baseline:
the 16 observations of highest posterior mean, at most 256 candidates) and Thompson sampling (one
joint draw) score a shortlist (``SHORTLISTS``): the candidates with the highest upper bound
``μ + 3σ``, where their maximiser lies in all but pathological cases.

A batch of ``q`` is chosen greedily: each pick, and every externally pending point, is added as a
kriging believer (observed at its posterior mean: the mean is unchanged, the variance drops), so
later picks spread out; for noisy log EI they enter botorch's ``X_pending``; Thompson takes ``q``
independent draws. An optional travel cost subtracts ``weight × distance / field diagonal`` from each
score, the distance measured from the last measured position (then from the previous pick).
Pure compute, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogExpectedImprovement, PosteriorStandardDeviation, UpperConfidenceBound
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.sampling.normal import SobolQMCNormalSampler
from gpytorch.distributions import MultivariateNormal  # type: ignore[import-untyped]
from linear_operator.operators import DiagLinearOperator
from numpy.typing import NDArray

from engine.errors import ConfigError
from engine.policy._gp_posterior import CandidatePosterior

ACQUISITIONS = ("log-ei", "noisy-log-ei", "ucb", "max-variance", "thompson")
SHORTLISTS = {"noisy-log-ei": 256, "thompson": 512}
"""Acquisitions that score only the candidates of highest ``μ + 3σ``, and how many."""
RUNNER_UPS = 5
_CHUNK = 4096
_BASELINE = 16


@dataclass(frozen=True)
class AcquisitionContext:
    """What a user's acquisition factory may use besides the model (``AcquisitionFactory``).

    Inputs are candidate indices as botorch tensors (``(n, 1)``, float64): the model's ``X``.

    Attributes:
        best_f: the best observed value, standardised as the model's outcomes are.
        observed: the measured candidates ``(n, 1)``.
        pending: candidates sent but not measured, and earlier picks of this batch ``(p, 1)``, or None.
        beta: the UCB ``β`` the policy would use now.

    Examples:
        >>> context = AcquisitionContext(1.2, torch.zeros(3, 1, dtype=torch.float64), None, 0.5)
        >>> context.observed.shape
        torch.Size([3, 1])
    """

    best_f: float
    observed: torch.Tensor
    pending: torch.Tensor | None
    beta: float


AcquisitionFactory = Callable[[Model, AcquisitionContext], AcquisitionFunction]
"""A user's botorch acquisition, from Python: ``(model, context) -> AcquisitionFunction``. The model's inputs
``X (b, q, 1)`` are candidate indices (``CandidateTable``, ``SampledCandidates``); the policy scores every
free candidate with it and picks the highest."""


def acquisition_name(acquisition: str | AcquisitionFactory) -> str:
    """The name recorded for ``acquisition``: its own for a built-in, ``python:module.qualname`` for a factory.

    Examples:
        >>> acquisition_name("log-ei"), acquisition_name(ucb_beta)
        ('log-ei', 'python:engine.policy._acquisition.ucb_beta')
    """
    if isinstance(acquisition, str):
        return acquisition
    return f"python:{getattr(acquisition, '__module__', '?')}.{getattr(acquisition, '__qualname__', repr(acquisition))}"


def check_acquisition(acquisition: str | AcquisitionFactory) -> None:
    """Refuse an unknown name (a callable is the user's own: it is checked when first used).

    Raises:
        ConfigError: neither one of ``ACQUISITIONS`` nor callable.
    """
    if isinstance(acquisition, str) and acquisition not in ACQUISITIONS:
        raise ConfigError(f"unknown acquisition {acquisition!r}; choose {', '.join(ACQUISITIONS)} or pass a function")
    if not isinstance(acquisition, str) and not callable(acquisition):
        raise ConfigError(f"acquisition {acquisition!r} is neither a name nor a function (model, context)")


def user_acquisition(factory: AcquisitionFactory, model: Model, context: AcquisitionContext) -> AcquisitionFunction:
    """Call a user's ``factory``, checking that it gave an acquisition function.

    Raises:
        ConfigError: the factory raised or returned something else (its name and the problem named).
    """
    try:
        acq = factory(model, context)
    except Exception as exc:
        raise ConfigError(f"the acquisition {acquisition_name(factory)} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(acq, AcquisitionFunction):
        got = type(acq).__name__
        raise ConfigError(f"the acquisition {acquisition_name(factory)} returned {got}, not an AcquisitionFunction")
    return acq


@dataclass(frozen=True)
class Choice:
    """Chosen candidate indices ``(q,)``, their acquisition values, and the next best values ``(≤ 5,)``.

    Attributes:
        indices: chosen candidate indices ``(q,)``.
        values: their acquisition values ``(q,)``.
        runner_up_values: acquisition values of the next best candidates ``(≤ 5,)``.

    Examples:
        >>> choice = select(posterior, np.arange(10, 30), np.empty(0, np.int64), 2, "ucb", seed=0, step=10)
        >>> choice.indices.shape, choice.values.shape, choice.runner_up_values.shape
        ((2,), (2,), (5,))
    """

    indices: NDArray[np.int64]
    values: NDArray[np.float64]
    runner_up_values: NDArray[np.float64]


@dataclass(frozen=True)
class TravelCost:
    """Penalty for moving the probe far: ``weight`` acquisition units per field-of-view diagonal.

    Attributes:
        positions: every candidate's position ``(m, d)``, the instrument axes' units.
        start: candidate index of the last measured position.
        weight: acquisition units subtracted per diagonal of the candidates' bounding box.

    Examples:
        >>> positions = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> TravelCost(positions, start=0, weight=1.0).penalty(0, np.array([1, 3])).round(3).tolist()
        [0.707, 1.0]
    """

    positions: NDArray[np.float64]
    start: int
    weight: float

    def penalty(self, origin: int, indices: NDArray[np.int64]) -> NDArray[np.float64]:
        """Cost ``(k,)`` of moving from candidate ``origin`` to each of ``indices``."""
        span = self.positions.max(axis=0) - self.positions.min(axis=0)
        diagonal = float(np.linalg.norm(span)) or 1.0
        dist = np.linalg.norm(self.positions[indices] - self.positions[origin], axis=1)
        return np.asarray(self.weight * dist / diagonal, dtype=np.float64)


class CandidateTable(Model):
    """A botorch ``Model`` over candidate indices: ``X (b, q, 1)`` holds indices into the candidate set.

    Its posterior at ``q`` candidates is the joint normal of the conditioned GP (means from the
    posterior, covariance ``k(cᵢ, cⱼ) − V[:, cᵢ]ᵀ V[:, cⱼ]``), so stock botorch acquisition functions,
    analytic and Monte Carlo, work on it unchanged; ``q = 1`` reads the (believer-adjusted) marginal.

    Args:
        posterior: the conditioned posterior at every candidate.
        variance: marginal variance ``(m,)`` to use instead of the posterior's (kriging believers).

    Examples:
        >>> from botorch.acquisition import UpperConfidenceBound
        >>> table = CandidateTable(posterior)
        >>> ucb = UpperConfidenceBound(table, beta=0.2)
        >>> ucb(torch.arange(10, 30, dtype=torch.float64).reshape(20, 1, 1)).shape  # X holds candidate indices
        torch.Size([20])
    """

    def __init__(self, posterior: CandidatePosterior, variance: NDArray[np.float64] | None = None):
        super().__init__()
        self._post = posterior
        self._mean = torch.as_tensor(posterior.mean, dtype=torch.float64)
        var = posterior.variance if variance is None else variance
        self._var = torch.as_tensor(var, dtype=torch.float64).clamp_min(1e-12)

    @property
    def num_outputs(self) -> int:
        """One outcome."""
        return 1

    def posterior(self, X: torch.Tensor, *args: Any, **kwargs: Any) -> GPyTorchPosterior:  # noqa: N803 (botorch's name)
        """The joint normal at the candidates whose indices ``X (..., q, 1)`` holds."""
        idx = X[..., 0].long()
        if idx.shape[-1] == 1:
            return GPyTorchPosterior(MultivariateNormal(self._mean[idx], DiagLinearOperator(self._var[idx])))
        cov = torch.as_tensor(self._post.batch_covariance(idx.reshape(-1, idx.shape[-1]).numpy()))
        cov = cov.reshape(*idx.shape, idx.shape[-1]) + 1e-9 * torch.eye(idx.shape[-1], dtype=torch.float64)
        return GPyTorchPosterior(MultivariateNormal(self._mean[idx], cov))


def ucb_beta(step: int, n_candidates: int, delta: float = 0.1, scale: float = 0.2) -> float:
    """The GP-UCB schedule of Srinivas et al. (2010) for a finite set, scaled by ``scale``.

    Args:
        step: decision number ``t`` (from 1).
        n_candidates: size of the candidate set ``|D|``.
        delta: failure probability of the bound.
        scale: shrinks the theoretical schedule, which explores far more than works in practice.

    Returns:
        ``β_t = scale · 2 ln(|D| t² π² / (6 δ))``.

    Examples:
        >>> ucb_beta(1, 1000) < ucb_beta(100, 1000)  # explores more as decisions accumulate
        True
    """
    t = max(step, 1)
    return scale * 2.0 * math.log(n_candidates * t * t * math.pi**2 / (6 * delta))


def select(
    posterior: CandidatePosterior,
    available: NDArray[np.int64],
    pending: NDArray[np.int64],
    q: int,
    acquisition: str | AcquisitionFactory,
    *,
    seed: int,
    step: int,
    travel: TravelCost | None = None,
    shortlist: int | None = None,
    beta: float | None = None,
) -> Choice:
    """Pick up to ``q`` of ``available`` candidates (indices into the posterior's candidates).

    Args:
        posterior: the conditioned posterior at every candidate.
        available: indices that may be chosen (neither measured nor pending), ``(k,)``.
        pending: indices sent but not yet measured ``(p,)``.
        q: batch size.
        acquisition: one of ``ACQUISITIONS``, or a user's botorch acquisition (``AcquisitionFactory``),
            which scores every available candidate.
        seed: seeds the MC sampler and the Thompson draws.
        step: decision number (for the UCB schedule).
        travel: optional travel cost.
        shortlist: candidates scored by a shortlisted acquisition (default: ``SHORTLISTS``).
        beta: UCB's fixed ``β`` (the score is ``μ + √β σ``); default: ``ucb_beta``'s schedule.

    Returns:
        The chosen indices, their acquisition values and the runner-ups' values.

    Examples:
        >>> choice = select(posterior, np.arange(10, 30), np.empty(0, np.int64), 1, "log-ei", seed=0, step=10)
        >>> 10 <= int(choice.indices[0]) < 30
        True
    """
    check_acquisition(acquisition)
    gen = torch.Generator().manual_seed(seed)
    free = np.asarray(available, dtype=np.int64)
    keep = shortlist if shortlist is not None else SHORTLISTS.get(acquisition) if isinstance(acquisition, str) else None
    if keep is not None:
        free = highest(free, posterior.mean[free] + 3.0 * np.sqrt(posterior.variance[free]), keep)
    beta = ucb_beta(step, posterior.candidates.shape[0]) if beta is None else beta
    return greedy_batch(free, pending, q, lambda f, b, _pick: _scores(posterior, f, b, acquisition, gen, beta), travel)


def highest(free: NDArray[np.int64], upper: NDArray[np.float64], keep: int) -> NDArray[np.int64]:
    """The ``keep`` candidates of ``free (k,)`` with the highest ``upper (k,)``, sorted (all when ``k <= keep``).

    Examples:
        >>> highest(np.array([4, 7, 9]), np.array([0.3, 0.9, 0.5]), 2).tolist()
        [7, 9]
    """
    if free.size <= keep:
        return free
    return np.sort(free[np.argpartition(-upper, keep)[:keep]])


BatchScore = Callable[[NDArray[np.int64], NDArray[np.int64], int], NDArray[np.float64]]
"""Acquisition values ``(k,)`` of candidates ``free (k,)``, given the believers ``(p,)`` and the pick's number."""


def greedy_batch(
    free: NDArray[np.int64],
    pending: NDArray[np.int64],
    q: int,
    score: BatchScore,
    travel: TravelCost | None = None,
) -> Choice:
    """Choose up to ``q`` of ``free`` one at a time; each pick joins the believers of the next.

    Args:
        free: candidates that may be chosen ``(k,)``.
        pending: candidates sent but not yet measured ``(p,)`` (the first believers).
        q: batch size.
        score: acquisition values of the remaining free candidates, given the believers and the pick number.
        travel: optional travel cost, from the last measured position and then from the previous pick.

    Returns:
        The chosen indices, their values, and the first pick's runner-ups' values.

    Examples:
        >>> values = np.array([0.1, 0.9, 0.5, 0.7])
        >>> greedy_batch(np.arange(4), np.empty(0, np.int64), 2, lambda f, b, k: values[f]).indices.tolist()
        [1, 3]
    """
    chosen: list[int] = []
    values: list[float] = []
    runner_ups = np.empty(0)
    believers = [int(i) for i in pending]
    origin = travel.start if travel is not None else -1
    for pick in range(min(q, free.size)):
        scores = score(free, np.asarray(believers, np.int64), pick)
        if travel is not None and origin >= 0:
            scores = scores - travel.penalty(origin, free)
        order = np.argsort(-scores, kind="stable")
        best = int(order[0])
        if pick == 0:
            runner_ups = scores[order[1 : 1 + RUNNER_UPS]]
        chosen.append(int(free[best]))
        values.append(float(scores[best]))
        believers.append(int(free[best]))
        origin = int(free[best])
        free = np.delete(free, best)
    return Choice(np.asarray(chosen, np.int64), np.asarray(values), np.asarray(runner_ups, np.float64))


def _scores(
    posterior: CandidatePosterior,
    free: NDArray[np.int64],
    believers: NDArray[np.int64],
    acquisition: str | AcquisitionFactory,
    gen: torch.Generator,
    beta: float,
) -> NDArray[np.float64]:
    """Acquisition value ``(k,)`` of each candidate in ``free``."""
    if not isinstance(acquisition, str):
        variance = posterior.believe(believers) if believers.size else posterior.variance
        context = AcquisitionContext(
            float(max(posterior.y)),
            _as_x(np.asarray(posterior.observed, np.int64)).squeeze(1),
            _as_x(believers).squeeze(1) if believers.size else None,
            beta,
        )
        return _chunked(user_acquisition(acquisition, CandidateTable(posterior, variance), context), _as_x(free))
    if acquisition == "thompson":
        cov = posterior.covariance(free)
        cov[np.diag_indices_from(cov)] += 1e-8
        chol = torch.linalg.cholesky(torch.as_tensor(cov))
        eps = torch.randn(free.size, generator=gen, dtype=torch.float64)
        return np.asarray(posterior.mean[free] + (chol @ eps).numpy(), dtype=np.float64)
    if acquisition == "noisy-log-ei":
        return _noisy_log_ei(posterior, free, believers, gen)
    variance = posterior.believe(believers) if believers.size else posterior.variance
    table = CandidateTable(posterior, variance)
    acq: AcquisitionFunction
    if acquisition == "log-ei":
        acq = LogExpectedImprovement(table, best_f=max(posterior.y))
    elif acquisition == "ucb":
        acq = UpperConfidenceBound(table, beta=beta)
    else:
        acq = PosteriorStandardDeviation(table)
    return _chunked(acq, _as_x(free))


def _noisy_log_ei(
    posterior: CandidatePosterior, free: NDArray[np.int64], believers: NDArray[np.int64], gen: torch.Generator
) -> NDArray[np.float64]:
    """The qLogNEI of botorch on the candidate table; its baseline: the ``_BASELINE`` observations of highest mean."""
    observed = np.asarray(posterior.observed, dtype=np.int64)
    best = observed[np.argsort(-posterior.mean[observed])[:_BASELINE]]
    sampler = SobolQMCNormalSampler(
        sample_shape=torch.Size([64]), seed=int(torch.randint(2**31 - 1, (1,), generator=gen))
    )
    acq = qLogNoisyExpectedImprovement(
        CandidateTable(posterior),
        X_baseline=_as_x(best).squeeze(1),
        sampler=sampler,
        prune_baseline=False,
        cache_root=False,
        X_pending=_as_x(believers).squeeze(1) if believers.size else None,
    )
    return _chunked(acq, _as_x(free), chunk=128)


def _as_x(indices: NDArray[np.int64]) -> torch.Tensor:
    """Candidate indices ``(k,)`` as botorch inputs ``(k, 1, 1)``."""
    return torch.as_tensor(indices, dtype=torch.float64).reshape(-1, 1, 1)


def _chunked(acq: AcquisitionFunction, x: torch.Tensor, chunk: int = _CHUNK) -> NDArray[np.float64]:
    with torch.no_grad():
        parts = [acq(x[i : i + chunk]).detach() for i in range(0, x.shape[0], chunk)]
    return np.asarray(torch.cat(parts).numpy(), dtype=np.float64)
