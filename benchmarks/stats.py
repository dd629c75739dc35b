"""Statistics of the benchmarks: medians of censored runs and their bootstrap intervals.

A run that ends before it reaches its goal (the budget spent) is *censored*: all we know is that it
would have needed more than its budget. Counting it as its budget biases a median low; these
functions keep such runs as ``inf`` (or as a censored time for the Kaplan–Meier estimate) instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def km_median(times: Sequence[float], reached: Sequence[bool]) -> float:
    """The Kaplan–Meier median of ``times``: the first time at which half the runs are estimated done.

    Args:
        times: per run, the calls (or measurements) when it reached the goal, or when it was
            censored (stopped without reaching it) ``(n,)``.
        reached: per run, whether it reached the goal ``(n,)``; ``False`` is a censored run.

    Returns:
        The smallest event time with estimated survival ≤ 0.5; ``inf`` when the estimate never gets
        there (too many runs censored). With every censored run at one common budget this is the
        plain median with censored runs counted as ``inf``.

    Examples:
        >>> km_median([10, 300, 300, 300], [True, False, False, False])  # 3 of 4 never got there
        inf
        >>> km_median([10, 20, 300, 300], [True, True, False, False])  # half got there by 20
        20.0
        >>> km_median([10, 20, 30, 300], [True, True, True, False])
        20.0
    """
    t = np.asarray(times, dtype=np.float64)
    done = np.asarray(reached, dtype=bool)
    survival = 1.0
    for time in np.unique(t[done]):
        at_risk = int(np.sum(t >= time))
        events = int(np.sum((t == time) & done))
        survival *= 1.0 - events / at_risk
        if survival <= 0.5 + 1e-12:
            return float(time)
    return math.inf


def reached_by(times: Sequence[float], reached: Sequence[bool], n: float) -> float:
    """Fraction of runs that reached the goal within ``n`` calls (censored runs count as not reached)."""
    t, done = np.asarray(times, dtype=np.float64), np.asarray(reached, dtype=bool)
    return float(np.mean(done & (t <= n)))


def median_interval(values: Sequence[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the median of ``values`` (runs resampled); ∞ stays ∞ (censored runs)."""
    a = np.asarray(values, np.float64)
    picks = np.random.default_rng(seed).integers(0, a.size, size=(draws, a.size))
    medians = np.median(a[picks], axis=1)
    # order statistics, not interpolation: a censored (∞) median stays ∞ instead of becoming NaN
    return float(np.quantile(medians, 0.025, method="lower")), float(np.quantile(medians, 0.975, method="higher"))


def km_ratio_interval(
    method: tuple[Sequence[float], Sequence[bool]],
    reference: tuple[Sequence[float], Sequence[bool]],
    draws: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % bootstrap interval of km_median(``method``) / km_median(``reference``), runs resampled in pairs.

    Both are ``(times, reached)`` of the same runs (same target and seed at the same index). A draw in
    which the method's median is censored gives ∞ (or NaN when both are: such draws are left out,
    NaN when all are).
    """
    (ta, ra), (tb, rb) = (tuple(np.asarray(x) for x in m) for m in (method, reference))
    picks = np.random.default_rng(seed).integers(0, ta.size, size=(draws, ta.size))
    ratios = np.array([km_median(ta[p], ra[p]) / km_median(tb[p], rb[p]) for p in picks])  # ∞/∞ is NaN
    ratios = ratios[~np.isnan(ratios)]
    if ratios.size == 0:
        return math.nan, math.nan
    return float(np.quantile(ratios, 0.025, method="lower")), float(np.quantile(ratios, 0.975, method="higher"))


def median_ratio(value: float, reference: float, budget: float) -> tuple[float, bool]:
    """``value / reference`` of two medians, and whether it is only an upper bound.

    When the reference's median is censored (``inf``: it never got there within ``budget``) and
    ``value`` is finite, the true ratio is below ``value / budget``: that bound is returned, with
    ``True``, instead of a ratio of 0 that would look like a measurement.

    Examples:
        >>> median_ratio(38.0, 45.5, 250)[1], median_ratio(38.0, math.inf, 250)
        (False, (0.152, True))
    """
    if math.isinf(reference) and math.isfinite(value):
        return value / budget, True
    return (value / reference if reference else math.nan), False


def finite_or_none(value: float) -> float | None:
    """``value``, or ``None`` for ±∞ (JSON has no infinity: a censored median is written as null)."""
    return None if math.isinf(value) else value


def random_search_median(candidates: int, top: int, found: int) -> int:
    """The exact median number of measurements random search (without replacement) needs to find ``found`` of ``top``.

    The first ``t`` measurements of a uniformly random order hold a hypergeometric number of the
    ``top`` best among ``candidates``; the median is the smallest ``t`` at which finding ``found`` or
    more has probability at least 1/2. This is random search's figure beyond any budget a simulation
    of it can afford (its simulated runs are censored there).

    Examples:
        >>> random_search_median(961, 10, 5)  # half the top 1 % of 961 candidates
        435
    """
    from scipy.stats import hypergeom

    for t in range(found, candidates + 1):
        if hypergeom(candidates, top, t).sf(found - 1) >= 0.5:
            return t
    return candidates
