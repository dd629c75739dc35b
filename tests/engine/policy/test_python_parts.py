"""Acquisitions and scalarisers given from Python: a user's botorch factory and a plain function."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from botorch.acquisition import ProbabilityOfImprovement, qSimpleRegret
from botorch.models.model import Model

from engine.errors import ConfigError
from engine.policy import (
    AcquisitionContext,
    PredictedScalars,
    PythonParts,
    PythonScalariser,
    select,
    select_sampled,
)
from tests.engine.policy.test_spectral_policy import STRUCTURE, _residual


def probability_of_improvement(model: Model, context: AcquisitionContext) -> ProbabilityOfImprovement:
    return ProbabilityOfImprovement(model, best_f=context.best_f)


def test_a_users_botorch_acquisition_scores_every_free_candidate_of_the_gp() -> None:
    measured = np.arange(0, 400, 23)
    posterior = _residual(measured, STRUCTURE[measured])
    free = np.setdiff1d(np.arange(400), measured)
    seen: list[AcquisitionContext] = []

    def mine(model: Model, context: AcquisitionContext) -> ProbabilityOfImprovement:
        seen.append(context)
        return probability_of_improvement(model, context)

    choice = select(posterior, free, np.array([1, 2]), 2, mine, seed=0, step=10)
    assert choice.indices.size == 2 and set(choice.indices.tolist()) <= set(free.tolist())
    assert np.all((choice.values >= 0) & (choice.values <= 1))  # probabilities: PI was used
    first = seen[0]
    assert first.best_f == pytest.approx(max(posterior.y)) and first.observed.shape == (measured.size, 1)
    assert first.pending is not None and first.pending[:, 0].tolist() == [1.0, 2.0]  # the pending points
    assert seen[1].pending is not None and seen[1].pending.shape == (3, 1)  # ... and the batch's first pick
    mean = posterior.mean[free]
    best_pi = free[np.argmax(mean)]  # with σ alike, PI ranks by the mean: the choice is near the top
    assert posterior.mean[choice.indices[0]] >= np.sort(mean)[-20] or choice.indices[0] == best_pi


def test_a_users_acquisition_runs_on_the_spectral_ensemble() -> None:
    measured = np.arange(0, 400, 41)
    residual = _residual(measured, np.zeros(measured.size))
    draws = 0.05 * np.random.default_rng(2).normal(size=(32, 400))
    draws[:, 217] += 3.0
    free = np.setdiff1d(np.arange(400), measured)
    choice = select_sampled(PredictedScalars(draws), residual, free, np.empty(0, np.int64), 1,
                            lambda model, context: qSimpleRegret(model), best_f=0.5, observed=measured, seed=3,
                            beta=0.5)  # fmt: skip
    assert choice.indices.tolist() == [217]


def test_a_factory_that_fails_or_returns_something_else_is_named() -> None:
    measured = np.arange(0, 400, 23)
    posterior = _residual(measured, STRUCTURE[measured])
    free = np.setdiff1d(np.arange(400), measured)

    def wrong(model: Model, context: AcquisitionContext) -> Any:
        return 42

    with pytest.raises(ConfigError, match="wrong returned int, not an AcquisitionFunction"):
        select(posterior, free, np.empty(0, np.int64), 1, wrong, seed=0, step=1)
    with pytest.raises(ConfigError, match=r"failed: ZeroDivisionError"):
        select(posterior, free, np.empty(0, np.int64), 1, lambda m, c: 1 / 0, seed=0, step=1)
    with pytest.raises(ConfigError, match="neither a name nor a function"):
        select(posterior, free, np.empty(0, np.int64), 1, 3, seed=0, step=1)  # type: ignore[arg-type]


def test_a_plain_function_is_a_scalariser_and_its_shape_is_checked() -> None:
    spectra = np.arange(12.0).reshape(3, 4)
    top = PythonScalariser(lambda s, axis: s.max(axis=1), "counts")
    assert top(spectra, np.arange(4.0)).tolist() == [3.0, 7.0, 11.0] and top.name.endswith(".<lambda>")
    with pytest.raises(ConfigError, match=r"returned shape \(3, 4\), expected \(3,\)"):
        PythonScalariser(lambda s, axis: s)(spectra, np.arange(4.0))
    names = PythonParts(probability_of_improvement, lambda s, axis: s.sum(axis=1)).names()
    assert names["acquisition"] == "python:tests.engine.policy.test_python_parts.probability_of_improvement"
    assert names["scalariser"].startswith("python:") and names["scalariser"].endswith("<lambda>")
