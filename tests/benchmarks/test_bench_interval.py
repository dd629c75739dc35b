"""The design benchmark's bootstrap interval on a ratio of medians."""

from __future__ import annotations

from benchmarks.design import ratio_interval


def test_equal_methods_give_a_ratio_of_one_whatever_the_draw() -> None:
    calls = {"a": [10, 20, 30, 40, 50], "b": [10, 20, 30, 40, 50]}
    assert ratio_interval(calls, "a", "b") == (1.0, 1.0)


def test_the_interval_contains_the_ratio_of_medians_and_widens_with_scatter() -> None:
    steady = {"a": [20, 21, 19, 20, 22, 18], "b": [40, 41, 39, 40, 42, 38]}
    scattered = {"a": [5, 100, 20, 60, 10, 100], "b": [40, 300, 30, 100, 8, 120]}
    lo, hi = ratio_interval(steady, "a", "b")
    assert lo <= 0.5 <= hi
    slo, shi = ratio_interval(scattered, "a", "b")
    assert shi - slo > hi - lo
    assert ratio_interval(scattered, "a", "b", seed=3) == ratio_interval(scattered, "a", "b", seed=3)  # seeded
