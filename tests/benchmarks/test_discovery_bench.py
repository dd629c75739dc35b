"""The discovery benchmark's machinery, on a small budget: full-length curves, intervals, the baselines."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks import discovery
from benchmarks.discovery import (
    VARIANTS,
    CaseCache,
    Truth,
    Variant,
    campaign,
    evaluate,
    records,
    stem_twin_truth,
    structure_twin_truth,
)


@pytest.fixture(scope="module")
def twin0() -> Truth:
    """The demo twin's ground truth (seed 0), computed once for the module."""
    return stem_twin_truth(0)


def test_every_variant_runs_the_whole_budget_and_is_scored_against_both_baselines(twin0: Truth) -> None:
    truth = replace(twin0, cap=12)
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


def test_a_policy_that_finds_the_whole_top_set_early_still_runs_the_whole_budget(twin0: Truth) -> None:
    truth = twin0
    values = np.zeros_like(truth.values)
    values[:10] = 1.0 + np.arange(10)  # the top 1 % (10 of 961): the raster's first row
    order = campaign(replace(truth, values=values), "raster", 0, 60)
    assert set(range(10)) <= set(order[:31])  # everything found in the first row...
    assert len(order) == 60  # ...and the curve still has the budget's length (curves of one family stack)


def test_campaigns_in_the_cache_are_not_run_again(tmp_path: Path, twin0: Truth) -> None:
    truth = replace(twin0, cap=8)
    cache = CaseCache(tmp_path / "cases.jsonl")
    order, _ = cache.run(truth, 0, "random", Variant("random"))
    again = CaseCache(tmp_path / "cases.jsonl")  # another process, or a resumed run
    assert again.done.keys() == {"stem-twin-0|0|random"}
    with open(tmp_path / "cases.jsonl", "a") as f:
        f.write('{"key": "cut by a ki')  # a line cut by a kill is skipped
    assert CaseCache(tmp_path / "cases.jsonl").run(truth, 0, "random", Variant("random"))[0] == order


def test_structure_rows_score_dualvae_spectral_against_three_baselines_and_a_target_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The structure twin's rows (smoke size): goals against random, gp-position and dkl; the target change row."""
    monkeypatch.setattr(discovery, "RETARGET_AFTER", 6)
    monkeypatch.setattr(discovery, "PRETRAIN_STEPS", 20)  # the machinery, not the network, is under test
    truth = replace(structure_twin_truth(0), cap=12)
    family = {discovery.STRUCTURE_HELD_OUT: [(truth, 0)]}
    results = evaluate(family, discovery.STRUCTURE_VARIANTS)
    retarget = discovery.evaluate_retarget([(truth, 0)], CaseCache(None))
    assert retarget["budget"] == 6 and len(retarget["after_change_per_case"]) == 1
    rows = discovery.structure_records(results, retarget)
    goals = {(r.metric.split(":")[0].split()[-1], r.baseline): r.goal for r in rows if r.goal}
    assert goals == {
        ("dualvae-spectral", "random search (exact)"): "ratio <= 0.2",
        ("dualvae-spectral", "gp-position"): "ratio <= 0.7",
        ("dualvae-spectral", "dkl"): "ratio <= 0.8",
        ("gp-position", "half-way random-oracle"): "ratio >= 1",
        ("6", "fresh run on the new target"): "ratio <= 0.6",  # "target changed after 6"
    }
    half = next(r for r in rows if r.baseline == "half-way random-oracle")
    assert half.baseline_value == pytest.approx((435 + 5) / 2)  # random search's exact median and an oracle's
    spectral = {r.baseline for r in rows if r.metric.startswith(f"{discovery.STRUCTURE_HELD_OUT} dualvae-spectral:")}
    assert "dualvae-bo" in spectral  # does deciding on the prediction beat the GP on the same latent?


def test_the_scored_twin_families_are_disjoint_from_each_other_and_from_development() -> None:
    dev, scored, fresh = set(discovery.DEV_SEEDS), set(discovery.SCORED_SEEDS), set(discovery.FRESH_SEEDS)
    assert not (dev & scored or dev & fresh or scored & fresh) and len(fresh) >= 10


def test_a_position_gp_censored_beyond_the_half_way_point_meets_the_hard_target_check() -> None:
    """gp-position's median beyond a budget of 250 > 220 (half-way): ratio ≥ 250 / 220, a lower bound, not "no"."""
    censored = {"n50_median": None, "n50_interval95": [176.0, None], "recall_at_budget_median": 0.4}
    entry = {"cases": ["a"] * 10, "candidates": 961, "top_size": 10, "budget": 250}
    entry["policies"] = {"gp-position": censored}
    rows = discovery.structure_records({discovery.STRUCTURE_FRESH: entry}, None)
    half = next(r for r in rows if r.baseline == "half-way random-oracle")
    assert half.ratio == pytest.approx(250 / 220) and "lower bound" in half.metric
