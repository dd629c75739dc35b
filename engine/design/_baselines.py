"""Baselines of inverse design, run with the same budget, simulator and executor as the BO loop.

* random search is ``RandomPolicy`` over the same pool of designs, through
  ``run_design`` (so it is asynchronous, recorded and fault-tolerant the
  same way as the BO loop);
* differential evolution: ``scipy.optimize.differential_evolution`` on the continuous unit
  cube, each generation evaluated in parallel through the executor (scipy's ``workers`` map with
  ``updating="deferred"``), stopped when the budget is spent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import differential_evolution

from engine.decisions import Proposal
from engine.design._loop import DesignHistory, DesignLog, Dispatch, Executor

Score = Callable[[NDArray[np.float64]], float]
"""The objective to maximise, from one spectrum ``(c,)`` (e.g. the negated relative L2 to a target)."""

DE_NAME = "differential-evolution"


DEStrategy = Literal["best1bin", "rand1bin", "currenttobest1bin", "best2bin", "rand2bin"]
"""Scipy's mutation strategies offered (binomial crossover)."""


@dataclass(frozen=True)
class DESettings:
    """Differential evolution's settings (scipy's names).

    The defaults were chosen on the design benchmark's development seeds from a grid as large as
    the set of BO variants tried there (``benchmarks/design.py``, ``DE_GRID``): a population of 16
    designs (popsize 2 in 6 dimensions, rounded up to a power of two by scipy's Sobol start), F 0.5,
    CR 0.9 needed 65 calls (Kaplan–Meier median of 30 runs) where scipy's mutation and crossover with
    popsize 5 needed 118.

    Attributes:
        popsize: population multiplier: ``popsize × dim`` designs per generation.
        mutation: the differential weight F, or ``(low, high)`` for dithering (a new F each generation).
        recombination: the crossover probability CR in [0, 1].
        strategy: scipy's strategy name (``best1bin``, ``rand1bin``, ...).

    Examples:
        >>> DESettings(popsize=3, mutation=(0.5, 1.0)).label()
        'best1bin, popsize 3, F 0.5-1, CR 0.9'
    """

    popsize: int = 2
    mutation: float | tuple[float, float] = 0.5
    recombination: float = 0.9
    strategy: DEStrategy = "best1bin"

    def label(self) -> str:
        """A short description, e.g. ``best1bin, popsize 5, F 0.5-1, CR 0.7``."""
        f = f"{self.mutation[0]:g}-{self.mutation[1]:g}" if isinstance(self.mutation, tuple) else f"{self.mutation:g}"
        return f"{self.strategy}, popsize {self.popsize}, F {f}, CR {self.recombination:g}"


class _BudgetSpent(Exception):
    """Raised inside scipy's map to end differential evolution when the budget is used up."""


def differential_evolution_search(
    score: Score,
    dim: int,
    executor: Executor,
    rng: np.random.Generator,
    *,
    budget: int,
    log: DesignLog | None = None,
    stop: Callable[[DesignHistory], bool] | None = None,
    settings: DESettings | None = None,
    max_failures: int = 2,
    prepare: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None = None,
) -> DesignHistory:
    """Scipy's differential evolution (Sobol initial population) on ``[0, 1]^dim``.

    The population is ``settings.popsize × dim`` designs; each generation is evaluated in parallel through
    ``executor``. A failed evaluation is re-submitted (recorded as such) until it has failed
    ``max_failures`` times, then scores ``-inf``. The search ends when ``budget`` evaluations have
    succeeded or ``stop`` says so (checked after each evaluation). Designs are outside any pool:
    their pool index is ``-1``.

    Args:
        score: maps a spectrum ``(c,)`` to the value to maximise.
        dim: dimension ``d`` of the design cube.
        executor: where evaluations run.
        rng: seeds scipy's generator.
        budget: successful evaluations to make.
        log: records decisions, spectra and failures.
        stop: checked after each evaluation.
        settings: population, mutation, crossover and strategy (default ``DESettings()``).
        max_failures: failed evaluations of one design before it scores ``-inf``.
        prepare: maps a point of the cube ``(d,)`` to what the executor is sent (default: the point).

    Returns:
        The search's history (pool indices ``-1``).

    Examples:
        >>> def score(spectrum):  # maximised: a peak at 2 eV
        ...     return float(-abs(energy[np.argmax(spectrum)] - 2.0))
        >>> history = differential_evolution_search(score, 2, InlineExecutor(simulate), np.random.default_rng(0),
        ...                                         budget=20, settings=DESettings(popsize=5))
        >>> history.method, len(history.spectra), set(history.indices)
        ('differential-evolution', 20, {-1})
    """
    de = settings if settings is not None else DESettings()
    history = DesignHistory(method=DE_NAME)
    dispatch = Dispatch(executor, log if log is not None else DesignLog.silent(), history, max_failures)
    outside = Proposal(np.array([-1], dtype=np.int64), np.array([np.nan]))  # DE designs are not in a pool

    def evaluate_all(func: object, designs: Iterable[NDArray[np.float64]]) -> Iterator[float]:
        """Scipy's ``workers`` map: one generation ``(k, d)`` in parallel → minimisation values ``(k,)``."""
        batch = [np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0) for u in designs]
        if len(history.indices) >= budget or (history.spectra and stop is not None and stop(history)):
            raise _BudgetSpent
        values = [np.inf] * len(batch)  # the rest of the last generation is never evaluated
        for k, u in enumerate(batch[: budget - len(history.indices)]):
            dispatch.submit(k, outside, u, u if prepare is None else prepare(u))
        while len(dispatch):
            outcome, _ = dispatch.next()
            if outcome.spectrum is None:
                continue  # given up: scores +inf
            history.add(-1, batch[outcome.index], outcome.spectrum, -1)
            values[outcome.index] = -float(score(outcome.spectrum))
            if stop is not None and stop(history):
                dispatch.drain()  # the search ends after this generation
        return iter(values)

    with contextlib.suppress(_BudgetSpent):
        differential_evolution(
            lambda u: 0.0,  # never called: every evaluation goes through evaluate_all
            [(0.0, 1.0)] * dim,
            maxiter=10**6,
            popsize=de.popsize,
            mutation=de.mutation,
            recombination=de.recombination,
            strategy=de.strategy,
            init="sobol",
            tol=0.0,
            atol=0.0,
            polish=False,
            updating="deferred",
            workers=evaluate_all,
            rng=int(rng.integers(2**31)),
        )
    return history
