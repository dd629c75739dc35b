"""Bayesian-optimisation choices over a discrete candidate set (gpytorch/botorch).

A GP is fitted on inputs scaled to the unit cube and standardised outcomes; an acquisition
function is evaluated on every available candidate; a batch of ``q`` is chosen greedily, each pick
(and every externally pending point) added to the model as a "kriging believer" observation at its
posterior mean, so that later picks spread out. Pure compute, no I/O.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogExpectedImprovement, PosteriorStandardDeviation, UpperConfidenceBound
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.sampling.normal import SobolQMCNormalSampler
from gpytorch.mlls import ExactMarginalLogLikelihood  # type: ignore[import-untyped]
from numpy.typing import NDArray

ACQUISITIONS = ("log-ei", "noisy-log-ei", "ucb", "max-variance", "thompson")


@dataclass(frozen=True)
class Choice:
    """Chosen candidate indices ``(q,)``, their acquisition values, and the next best values."""

    indices: NDArray[np.int64]
    values: NDArray[np.float64]
    runner_up_values: NDArray[np.float64]
    fit_warnings: int


def ucb_beta(step: int, n_candidates: int, delta: float = 0.1, scale: float = 0.2) -> float:
    """The GP-UCB schedule of Srinivas et al. (2010) for a finite set, scaled by ``scale``."""
    t = max(step, 1)
    return scale * 2.0 * math.log(n_candidates * t * t * math.pi**2 / (6 * delta))


def _fit(x: torch.Tensor, y: torch.Tensor) -> tuple[SingleTaskGP, int]:
    """Fit a GP; botorch's data and optimisation warnings (e.g. all values equal) are counted, not raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = SingleTaskGP(x, y)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model, len(caught)


def choose(
    train_x: NDArray[np.float64],
    train_y: NDArray[np.float64],
    candidates_x: NDArray[np.float64],
    available: NDArray[np.int64],
    pending: NDArray[np.int64],
    q: int,
    acquisition: str,
    seed: int,
    step: int,
) -> Choice:
    """Pick ``q`` of ``available`` candidates (indices into ``candidates_x (m, d)``).

    Args:
        train_x: measured inputs ``(n, d)``; train_y: scalar values ``(n,)`` (to maximise).
        candidates_x: every candidate's input ``(m, d)``.
        available: candidate indices that may be chosen (neither measured nor pending).
        pending: candidate indices sent but not yet measured (treated as kriging believers).
        q: batch size.
        acquisition: one of :data:`ACQUISITIONS`.
        seed: seeds the MC sampler and Thompson draws.
        step: decision number (for the UCB schedule).
    """
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {acquisition!r}; choose {', '.join(ACQUISITIONS)}")
    lo, hi = candidates_x.min(axis=0), candidates_x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    cand = torch.as_tensor((candidates_x - lo) / span, dtype=torch.float64)
    x = torch.as_tensor((train_x - lo) / span, dtype=torch.float64)
    mean, std = float(train_y.mean()), float(train_y.std()) or 1.0
    y = torch.as_tensor((train_y - mean) / std, dtype=torch.float64).unsqueeze(-1)
    model, n_warn = _fit(x, y)
    gen = torch.Generator().manual_seed(seed)
    free = [int(i) for i in available]
    chosen: list[int] = []
    values: list[float] = []
    runner_ups = np.empty(0)
    believers = [int(i) for i in pending]
    for pick in range(min(q, len(free))):
        current: Model = model
        if believers:
            xb = cand[believers]
            with torch.no_grad():
                yb = model.posterior(xb).mean
            current = model.condition_on_observations(xb, yb)
        scores = _scores(current, cand[free], x, y, acquisition, gen, ucb_beta(step + pick, len(candidates_x)))
        order = np.argsort(-scores)
        best = int(order[0])
        if pick == 0:
            runner_ups = scores[order[1:6]]
        chosen.append(free[best])
        values.append(float(scores[best]))
        believers.append(free[best])
        free.pop(best)
    return Choice(np.asarray(chosen, np.int64), np.asarray(values), np.asarray(runner_ups, np.float64), n_warn)


def _scores(
    model: Model,
    xs: torch.Tensor,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    acquisition: str,
    gen: torch.Generator,
    beta: float,
) -> NDArray[np.float64]:
    with torch.no_grad():
        if acquisition == "thompson":
            post = model.posterior(xs)
            loc, cov = post.mean.squeeze(-1), post.mvn.covariance_matrix  # type: ignore[attr-defined]
            cov = cov + 1e-8 * torch.eye(cov.shape[0], dtype=cov.dtype)
            chol = torch.linalg.cholesky(cov)
            eps = torch.randn(cov.shape[0], generator=gen, dtype=cov.dtype)
            return np.asarray((loc + chol @ eps).numpy(), dtype=np.float64)
        x1 = xs.unsqueeze(1)  # (m, 1, d): one candidate per batch
        acq: AcquisitionFunction
        if acquisition == "log-ei":
            acq = LogExpectedImprovement(model, best_f=train_y.max())
        elif acquisition == "ucb":
            acq = UpperConfidenceBound(model, beta=beta)
        elif acquisition == "max-variance":
            acq = PosteriorStandardDeviation(model)
        else:
            sampler = SobolQMCNormalSampler(
                sample_shape=torch.Size([64]), seed=int(torch.randint(2**31 - 1, (1,), generator=gen))
            )
            acq = qLogNoisyExpectedImprovement(model, X_baseline=train_x, sampler=sampler, prune_baseline=False)
        return np.asarray(acq(x1).detach().numpy(), dtype=np.float64)
