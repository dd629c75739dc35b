"""Inverse design: simulator calls to reach a target (BO vs differential evolution vs random), and Dask scaling.

Calls to target: three reachable targets (spectra of known clusters) × ten seeds; a search reaches
the target when a spectrum is within 0.1 relative L2 and its peak within 0.02 eV; every search runs
in-process (one evaluation at a time, reproducible) until then or the common budget ``CAP`` (the
same for every method). BO is the `dualscope design` search with its defaults (GP on the decoded
design coordinates of an 8,192-point Sobol pool, 16 random designs first, then UCB μ + √0.25 σ on
−ln tolerance ratio); DE is scipy's differential_evolution maximising the same objective (−tolerance
ratio); random draws from the same pool.

Fair tuning: BO's choices (β, inputs, acquisition; about 27 variants, docs/benchmarks.md) were made
on seeds 0-9. DE gets as many settings (``DE_GRID``: 27, population × mutation × strategy and
crossover), tried on the same development seeds 0-9; the best (Kaplan–Meier median calls) is the DE
that is scored. The scored runs use seeds 100-109, which no choice saw.

A run that spends the budget without reaching the target is *censored*, reported as such: medians
are Kaplan–Meier medians (``inf``: fewer than half the runs got there), beside the fraction of runs
that reached the target within 50, 100 and ``CAP`` calls. The ratio of medians comes with a 95 %
bootstrap interval (the 30 (target, seed) runs resampled, each keeping its methods' calls).

Dask scaling: a simulator with a fixed 0.5 s per call; on 2 cores that extra time is a sleep, not
CPU work (four CPU-bound workers could not run four times faster on two cores). Evaluations per
second of the asynchronous loop with 4 LocalCluster worker processes against 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import qmc

from benchmarks.common import Record, machine, results_dir
from benchmarks.stats import finite_or_none, km_median, km_ratio_interval, median_ratio, reached_by
from engine.candidates import CandidateSet
from engine.design import (
    DaskExecutor,
    DESettings,
    DesignHistory,
    DesignTarget,
    InlineExecutor,
    OptimiserSection,
    TargetTolerance,
    dask_client,
    differential_evolution_search,
    run_design,
)
from engine.policy import BOPolicy, InlineTrainer, PositionFeatures, RandomPolicy, ScalarBO
from simulators.design_sim import ClusterSimOptions, ClusterSimulator
from simulators.design_space import ClusterDesign

OPTIONS = ClusterSimOptions(n_max=5, materials=("Au", "Ag"), energy_min_ev=1.5, energy_max_ev=3.0, channels=80)
TARGETS = {
    "Au chain of 3, r 22 nm, gap 4 nm": ClusterDesign("chain", 3, 22.0, 4.0, "Au", 0.0),
    "Ag dimer, r 15 nm, gap 3 nm": ClusterDesign("chain", 2, 15.0, 3.0, "Ag", 0.0),
    "Au triangle, r 30 nm, gap 6 nm": ClusterDesign("triangle", 3, 30.0, 6.0, "Au", 0.0),
}
DEV_SEEDS = tuple(range(10))
"""Seeds BO's defaults were chosen on, and DE's settings are tuned on: never scored."""
SCORED_SEEDS = tuple(range(100, 110))
"""Held-out seeds: the scored runs."""
CAP = 300
"""Calls every method may make before its run counts as censored."""
REACHED_BY = (50, 100, CAP)
_STRATEGY_CR: tuple[tuple[Literal["best1bin", "rand1bin"], float], ...] = (
    ("best1bin", 0.7),
    ("best1bin", 0.9),
    ("rand1bin", 0.9),
)
DE_GRID = tuple(
    DESettings(popsize, mutation, recombination, strategy)
    for popsize in (2, 5, 10)  # populations of 16, 32, 64: scipy's Sobol start rounds popsize × 6 up to 2^k
    for mutation in (0.5, 0.8, (0.5, 1.0))
    for strategy, recombination in _STRATEGY_CR
)
"""Differential evolution's settings tried on the development seeds: as many as BO variants were tried."""
PREVIOUS_DE = DESettings(popsize=5, mutation=(0.5, 1.0), recombination=0.7, strategy="best1bin")
"""The differential evolution this benchmark ran before it was tuned (scipy's defaults but popsize 5)."""
UNTUNED = "differential-evolution (untuned: popsize 5)"
POOL = 8192
DEFAULTS = OptimiserSection()  # the BO runs with `dualscope design`'s defaults
Search = Callable[[DesignTarget, int], DesignHistory]
"""One search: (target, seed) → its history, stopped at the target or at ``CAP`` calls."""


@dataclass(frozen=True)
class Runs:
    """A method's runs over (target, seed): calls when it reached the target, or ``CAP`` (censored)."""

    calls: tuple[int, ...]
    reached: tuple[bool, ...]

    @property
    def median(self) -> float:
        """Kaplan–Meier median calls (``inf`` when fewer than half reached the target)."""
        return km_median(self.calls, self.reached)

    def by(self, n: int) -> float:
        """Fraction of runs that reached the target within ``n`` calls."""
        return reached_by(self.calls, self.reached, n)

    def pair(self) -> tuple[Sequence[float], Sequence[bool]]:
        """``(calls, reached)`` for the bootstrap."""
        return self.calls, self.reached


def _pool(seed: int) -> tuple[np.ndarray, CandidateSet]:
    pts = qmc.Sobol(6, seed=seed).random(POOL)
    return pts, CandidateSet(pts, np.zeros((POOL, 2), np.int64), (1, POOL))


def _stop(target: DesignTarget) -> Callable[[DesignHistory], bool]:
    return lambda h: bool(target.reached(h.spectra[-1])[0])


def _simulator() -> ClusterSimulator:
    return ClusterSimulator(OPTIONS)


def bo_search(target: DesignTarget, seed: int) -> DesignHistory:
    """`dualscope design`'s BO with its defaults, on the seed's pool."""
    pts, pool = _pool(seed)
    features = PositionFeatures(OPTIONS.space().features(pts))
    bo = ScalarBO(TargetTolerance(target), OPTIONS.energy_ev(), DEFAULTS.acquisition, np.random.default_rng(seed),
                  DEFAULTS.initial, features, InlineTrainer(), ucb_beta=DEFAULTS.ucb_beta)  # fmt: skip
    return run_design(BOPolicy("design-bo", bo), pool, InlineExecutor(_simulator()), budget=CAP, workers=1,
                      stop=_stop(target))  # fmt: skip


def de_search(settings: DESettings) -> Search:
    """Differential evolution with ``settings`` on the unit cube."""

    def search(target: DesignTarget, seed: int) -> DesignHistory:
        return differential_evolution_search(target.score, 6, InlineExecutor(_simulator()),
                                             np.random.default_rng(seed), budget=CAP, stop=_stop(target),
                                             settings=settings)  # fmt: skip

    return search


def random_search(target: DesignTarget, seed: int) -> DesignHistory:
    """Random draws from the seed's pool."""
    _, pool = _pool(seed)
    return run_design(RandomPolicy(np.random.default_rng(seed)), pool, InlineExecutor(_simulator()), budget=CAP,
                      workers=1, stop=_stop(target))  # fmt: skip


def runs_of(search: Search, seeds: tuple[int, ...]) -> Runs:
    """``search`` on every (target, seed): calls to the target, censored at ``CAP``."""
    energy = OPTIONS.energy_ev()
    calls, reached = [], []
    for design in TARGETS.values():
        target = DesignTarget(design.spectrum(energy), energy, rel_tol=0.1, peak_tol_ev=0.02)
        for seed in seeds:
            h = search(target, seed)
            hit = np.flatnonzero(target.reached(np.asarray(h.spectra))) if h.spectra else np.empty(0)
            calls.append(int(hit[0]) + 1 if hit.size else CAP)
            reached.append(bool(hit.size))
    return Runs(tuple(calls), tuple(reached))


def tune_de(seeds: tuple[int, ...] = DEV_SEEDS) -> tuple[DESettings, dict[str, Runs]]:
    """Every ``DE_GRID`` setting on ``seeds``; the best by Kaplan–Meier median (then by the fraction reached)."""
    tried = {s.label(): runs_of(de_search(s), seeds) for s in DE_GRID}
    best = min(DE_GRID, key=lambda s: (tried[s.label()].median, -tried[s.label()].by(CAP)))
    return best, tried


def dask_throughput(workers: int, evaluations: int) -> float:
    """Evaluations per second of the asynchronous loop on a LocalCluster of ``workers`` (0.5 s per call)."""
    slow = ClusterSimulator(OPTIONS.model_copy(update={"delay_s": 0.5}))
    _, pool = _pool(7)
    with dask_client(None, workers) as client:
        executor = DaskExecutor(client, slow)
        run_design(RandomPolicy(np.random.default_rng(0)), pool, executor, budget=workers, workers=workers)  # warm
        t0 = time.perf_counter()
        run_design(RandomPolicy(np.random.default_rng(1)), pool, executor, budget=evaluations, workers=workers)
        elapsed = time.perf_counter() - t0
        executor.close()
    return evaluations / elapsed


def _calls_text(runs: Runs) -> str:
    return "/".join(str(c) if r else f">{c}" for c, r in zip(runs.calls, runs.reached, strict=True))


def measure() -> dict[str, Any]:
    """Tune DE on the development seeds and run every method on the held-out seeds; ``design_runs.json``."""
    best, tried = tune_de()
    scored = {
        "design-bo": runs_of(bo_search, SCORED_SEEDS),
        "differential-evolution": runs_of(de_search(best), SCORED_SEEDS),
        UNTUNED: runs_of(de_search(PREVIOUS_DE), SCORED_SEEDS),
        "random": runs_of(random_search, SCORED_SEEDS),
    }
    saved = {
        "cap": CAP, "targets": list(TARGETS), "development_seeds": DEV_SEEDS, "scored_seeds": SCORED_SEEDS,
        "de_tuning": {k: {"calls": r.calls, "reached": r.reached, "km_median": finite_or_none(r.median)}
                      for k, r in tried.items()},
        "de_chosen": best.label(),
        "scored": {k: {"calls": r.calls, "reached": r.reached} for k, r in scored.items()},
    }  # fmt: skip
    (results_dir() / "design_runs.json").write_text(json.dumps(saved, indent=1))
    return saved


def records(saved: dict[str, Any], dask: tuple[float, float]) -> list[Record]:
    """The table's rows from ``measure``'s runs and the Dask rates (1 worker, 4 workers) in evaluations/s."""
    m = machine()
    tried = {k: Runs(tuple(v["calls"]), tuple(v["reached"])) for k, v in saved["de_tuning"].items()}
    scored = {k: Runs(tuple(v["calls"]), tuple(v["reached"])) for k, v in saved["scored"].items()}
    best, untuned = saved["de_chosen"], PREVIOUS_DE.label()
    rows = [
        Record("design", f"DE tuned on development seeds 0-9: {best} (Kaplan–Meier median of 30; {len(tried)} "
               "settings tried)", tried[best].median, "calls", untuned, tried[untuned].median,
               tried[best].median / tried[untuned].median, "", m),
    ]  # fmt: skip
    de = scored["differential-evolution"]
    for name, runs in scored.items():
        lo, hi = km_ratio_interval(runs.pair(), de.pair())
        by = ", ".join(f"{runs.by(n):.0%} by {n}" for n in REACHED_BY)
        rows.append(
            Record(
                "design",
                f"calls to target, {name}, held-out seeds 100-109 (Kaplan–Meier median of {len(runs.calls)}; "
                f"reached {by}; ratio 95 % {lo:.2f}-{hi:.2f}; per run {_calls_text(runs)})",
                runs.median,
                "calls",
                "differential-evolution",
                de.median,
                median_ratio(runs.median, de.median, CAP)[0],
                "ratio <= 0.334" if name == "design-bo" else "",
                m,
            )
        )
    bo, rnd = scored["design-bo"], scored["random"]
    ratio, upper = median_ratio(bo.median, rnd.median, CAP)
    bound = f": random's median is beyond {CAP}, the ratio is an upper bound" if upper else ""
    rows.append(
        Record("design", f"calls to target, design-bo vs random, held-out seeds (random reached {rnd.by(CAP):.0%} "
               f"by {CAP}{bound})", bo.median, "calls", "random", rnd.median, ratio, "", m)
    )  # fmt: skip
    one, four = dask
    rows.append(
        Record("design", "Dask LocalCluster, 0.5 s sleep per call: 4 workers vs 1", four, "evals/s", "1 worker", one,
               four / one, "ratio >= 3.2", m)
    )  # fmt: skip
    return rows


def run() -> list[Record]:
    """Tune DE, score every method on the held-out seeds, and time Dask (``make bench``)."""
    return records(measure(), (dask_throughput(1, 8), dask_throughput(4, 24)))
