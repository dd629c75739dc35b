"""The benchmarks' statistics: censored runs kept as censored, bootstrap intervals on medians and ratios."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.stats import km_median, km_ratio_interval, median_interval, median_ratio, reached_by

ALL = (True,) * 6


def test_equal_methods_give_a_ratio_of_one_whatever_the_draw() -> None:
    runs = ([10, 20, 30, 40, 50], [True] * 5)
    assert km_ratio_interval(runs, runs) == (1.0, 1.0)


def test_the_interval_contains_the_ratio_of_medians_and_widens_with_scatter() -> None:
    lo, hi = km_ratio_interval(([20, 21, 19, 20, 22, 18], ALL), ([40, 41, 39, 40, 42, 38], ALL))
    assert lo <= 0.5 <= hi
    scattered = ([5, 100, 20, 60, 10, 100], ALL), ([40, 300, 30, 100, 8, 120], ALL)
    slo, shi = km_ratio_interval(*scattered)
    assert shi - slo > hi - lo
    assert km_ratio_interval(*scattered, seed=3) == km_ratio_interval(*scattered, seed=3)  # seeded


def test_without_censoring_the_kaplan_meier_median_is_the_lower_median() -> None:
    times = [12, 3, 40, 7, 25]
    assert km_median(times, [True] * 5) == 12
    assert km_median([1, 2, 3, 4], [True] * 4) == 2  # survival reaches 0.5 at the second event


def test_censored_runs_raise_the_median_where_counting_them_as_the_budget_does_not() -> None:
    # 4 of 10 runs reach the target; 6 spend the budget of 300 without it
    times = [20, 30, 40, 50, 300, 300, 300, 300, 300, 300]
    reached = [True] * 4 + [False] * 6
    assert np.median(times) == 300  # "failures count as their cap": a finite number that looks like data
    assert km_median(times, reached) == math.inf  # the truth: fewer than half got there within the budget
    assert reached_by(times, reached, 45) == 0.3 and reached_by(times, reached, 300) == 0.4


def test_early_censoring_is_not_counted_as_a_failure() -> None:
    # a run stopped at 10 calls without reaching (a crash): it leaves the risk set instead of failing
    assert km_median([5, 10, 20, 30], [True, False, True, True]) == 20.0
    assert np.median([5, 20, 30]) == 20.0


def test_the_ratio_of_a_censored_method_to_a_finished_one_is_infinite() -> None:
    lo, hi = km_ratio_interval(([300] * 4, [False] * 4), ([10, 20, 30, 40], [True] * 4))
    assert lo == hi == math.inf


def test_the_median_interval_brackets_the_median_and_keeps_censored_runs() -> None:
    lo, hi = median_interval([10, 12, 14, 16, 18])
    assert lo <= 14 <= hi
    assert median_interval([10, math.inf, math.inf])[1] == math.inf


def test_a_ratio_against_a_censored_median_is_an_upper_bound_not_zero() -> None:
    assert median_ratio(38.0, 45.5, 250) == (38.0 / 45.5, False)
    assert median_ratio(38.0, math.inf, 250) == (38.0 / 250, True)  # the reference needed more than 250
    ratio, upper = median_ratio(math.inf, math.inf, 250)
    assert math.isnan(ratio) and not upper  # neither got there: no ratio at all


def test_the_docstring_examples_hold() -> None:
    import doctest

    from benchmarks import stats

    assert doctest.testmod(stats).failed == 0
