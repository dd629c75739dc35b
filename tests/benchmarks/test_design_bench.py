"""The design benchmark's machinery on a small budget: one cap for every method, censored runs kept."""

from __future__ import annotations

import pytest

from benchmarks import design
from engine.design import DESettings


def test_every_method_gets_the_same_cap_and_censored_runs_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(design, "CAP", 12)
    for search in (design.bo_search, design.de_search(DESettings(popsize=2)), design.random_search):
        runs = design.runs_of(search, (0,))
        assert len(runs.calls) == len(design.TARGETS)  # one run per target
        assert all(1 <= c <= 12 for c in runs.calls)
        assert all(c == 12 for c, r in zip(runs.calls, runs.reached, strict=True) if not r)  # censored at the cap
        if not any(runs.reached):
            assert runs.median == float("inf")  # not the cap dressed as a result


def test_de_is_tuned_on_the_development_seeds_over_its_whole_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    grid = (DESettings(popsize=2, mutation=0.5), DESettings(popsize=3, mutation=0.8))
    monkeypatch.setattr(design, "CAP", 10)
    monkeypatch.setattr(design, "DE_GRID", grid)
    best, tried = design.tune_de((0,))
    assert set(tried) == {s.label() for s in grid} and best in grid


def test_de_is_given_as_many_settings_as_bo_variants_were_tried() -> None:
    assert len(design.DE_GRID) == 27 and len({s.label() for s in design.DE_GRID}) == 27
    assert set(design.SCORED_SEEDS).isdisjoint(design.DEV_SEEDS)
