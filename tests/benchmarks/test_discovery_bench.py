"""The discovery benchmark's machinery, on a small budget: full-length curves, intervals, the baselines."""

from __future__ import annotations

import math
from dataclasses import replace

from benchmarks.discovery import VARIANTS, evaluate, median_interval, records, stem_twin_truth


def test_every_variant_runs_the_whole_budget_and_is_scored_against_both_baselines() -> None:
    truth = replace(stem_twin_truth(0), cap=12)
    results = evaluate({"stem-twin, held-out seed 0 (smoke)": [(truth, 0), (truth, 1)]})
    (entry,) = results.values()
    policies = entry["policies"]
    assert set(policies) == set(VARIANTS)  # both position variants of both structure-aware policies
    for rec in policies.values():
        assert len(rec["curve_median"]) == 12  # the full budget, not stopped at 50 % and padded
        assert len(rec["n50_per_case"]) == 2 and len(rec["n50_interval95"]) == 2
    rows = records(results)
    against = {(r.metric.split(":")[0], r.baseline) for r in rows}
    for variant in ("dualvae-bo", "dualvae-bo (latent only)", "dkl", "dkl (features only)"):
        assert (f"stem-twin, held-out seed 0 (smoke) {variant}", "gp-position") in against
    goals = [r for r in rows if r.goal]
    assert {r.baseline for r in goals} == {"random", "gp-position"}  # dualvae-bo's two goals, scored rows only


def test_the_median_interval_brackets_the_median_and_keeps_censored_runs() -> None:
    lo, hi = median_interval([10, 12, 14, 16, 18])
    assert lo <= 14 <= hi
    assert median_interval([10, math.inf, math.inf])[1] == math.inf
