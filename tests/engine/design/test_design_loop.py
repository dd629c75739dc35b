"""The asynchronous inverse-design loop: slots kept full, pending respected, failures re-submitted once."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from scipy.stats import qmc

from engine.candidates import CandidateSet
from engine.design import InlineExecutor, Outcome, TargetTolerance, ThreadExecutor, peak_target, run_design
from engine.policy import BOPolicy, InlineTrainer, PositionFeatures, ScalarBO, TargetMatch, make_policy
from simulators.design_space import ClusterDesign, ClusterSpace

AXIS = np.linspace(0.0, 1.0, 32)


def _peak(u: np.ndarray) -> np.ndarray:
    """A cheap simulator: a Gaussian peak whose centre and height are set by the first two coordinates."""
    return (0.5 + u[1]) * np.exp(-0.5 * ((AXIS - u[0]) / 0.08) ** 2)


TARGET = _peak(np.array([0.62, 0.4, 0, 0]))


def _setup(seed: int = 0, m: int = 512) -> tuple[BOPolicy, CandidateSet]:
    pts = qmc.Sobol(4, seed=seed).random(m)
    pool = CandidateSet(pts, np.zeros((m, 2), np.int64), (1, m))
    bo = ScalarBO(
        TargetMatch(tuple(TARGET)),
        AXIS,
        "log-ei",
        np.random.default_rng(seed),
        6,
        PositionFeatures(pts),
        InlineTrainer(),
    )
    return BOPolicy("design-bo", bo), pool


def test_workers_stay_busy_and_nothing_is_evaluated_twice() -> None:
    policy, pool = _setup()
    lock = threading.Lock()
    running, peak_running, calls = 0, 0, 0
    first_wave = threading.Barrier(4)  # the first four evaluations wait for each other: all four slots filled

    def slow(u: np.ndarray) -> np.ndarray:
        nonlocal running, peak_running, calls
        with lock:
            running, calls = running + 1, calls + 1
            peak_running = max(peak_running, running)
            first = calls <= 4
        if first:
            first_wave.wait(timeout=120)  # the timeout is a hang guard only (it raises, failing the test)
        time.sleep(0.01 + 0.02 * u[2])
        with lock:
            running -= 1
        return _peak(u)

    executor = ThreadExecutor(slow, workers=4)
    try:
        history = run_design(policy, pool, executor, budget=30, workers=4)
    finally:
        executor.close()
    assert len(history.indices) == 30 and len(set(history.indices)) == 30  # mark_pending would raise on a repeat
    assert peak_running == 4  # a new design went out whenever a slot freed: the slots stayed full
    assert history.model_versions[:6] == [-1] * 6 and max(history.model_versions) >= 1
    scores = TargetMatch(tuple(TARGET))(np.asarray(history.spectra), AXIS)
    assert scores.max() > -0.25  # close to the target peak within 30 evaluations


def test_a_failed_evaluation_is_resubmitted_once_then_given_up() -> None:
    policy, pool = _setup(1)
    calls: dict[int, int] = {}
    cursed = {tuple(pool.positions[i]) for i in range(0, 512, 2)}  # half the pool fails the first time

    def flaky(u: np.ndarray) -> np.ndarray:
        key = tuple(u)
        calls[hash(key)] = calls.get(hash(key), 0) + 1
        if key in cursed and calls[hash(key)] == 1:
            raise RuntimeError("worker died")
        return _peak(u)

    history = run_design(policy, pool, InlineExecutor(flaky), budget=20, workers=2)
    assert len(history.indices) == 20
    assert history.failures and all(msg == "RuntimeError: worker died" for _, msg in history.failures)
    assert set(history.resubmitted) == {i for i, _ in history.failures}

    def broken(u: np.ndarray) -> np.ndarray:
        raise ValueError("cannot simulate")

    policy, pool = _setup(2, m=8)
    history = run_design(policy, pool, InlineExecutor(broken), budget=5, workers=1)
    assert history.indices == [] and len(history.failures) == 16  # every design tried twice, then given up
    assert pool.available().size == 0


def test_stop_rule_and_non_finite_spectra() -> None:
    policy, pool = _setup(3)
    history = run_design(policy, pool, InlineExecutor(lambda u: _peak(u) * np.nan), budget=3, workers=1, max_failures=1)
    assert history.indices == [] and all("non-finite" in msg for _, msg in history.failures)
    policy, pool = _setup(4)
    seen: list[Outcome] = []
    history = run_design(
        policy,
        pool,
        InlineExecutor(_peak),
        budget=50,
        workers=1,
        stop=lambda h: len(h.indices) >= 7,
        on_outcome=lambda o, h: seen.append(o),
    )
    assert len(history.indices) == 7 and len(seen) == 7


def _pool_best_found(make: Any, seeds: range = range(5), budget: int = 30) -> int:
    """On how many seeds a design search reaches the best of the 512-design pool within ``budget`` evaluations.

    Random search does so with probability 30/512 per seed: on all 5 seeds about once in 10⁶ tries.
    """
    score = TargetMatch(tuple(TARGET))
    hits = 0
    for seed in seeds:
        _, pool = _setup(seed)
        best = score(np.asarray([_peak(u) for u in pool.positions]), AXIS).max()
        history = run_design(make(seed), pool, InlineExecutor(_peak), budget=budget, workers=4)
        hits += bool(score(np.asarray(history.spectra), AXIS).max() >= best - 1e-12)
    return hits


def test_bo_reaches_the_pools_best_design_where_random_search_does_not() -> None:
    """Measured: BO reaches the best of 512 designs within 30 evaluations on every seed (within 20 on 3 of 5)."""
    assert _pool_best_found(lambda seed: _setup(seed)[0]) == 5


def test_the_pools_best_check_fails_for_random_search() -> None:
    """A test of the test above: seeded random search on the same pools and budget fails it."""
    assert _pool_best_found(lambda seed: make_policy("random", np.random.default_rng(seed))) <= 1


def test_inverse_design_of_a_gold_trimer_against_the_cda() -> None:
    """The loop end to end against the coupled-dipole simulator, three workers.

    It claims nothing about beating random search: with 16 evaluations of a 6-D space BO's best ranked
    13th-41st of the 256 pool designs on seeds 0-3, which random search's best-of-16 matches 58-94 % of
    the time (measured for issue 21); the test above is where BO must beat random.
    """
    workers = 3
    space = ClusterSpace(materials=("Au",), n_range=(1, 4))
    energy = np.linspace(1.6, 2.7, 60)
    target = ClusterDesign("chain", 3, 22.0, 4.0, "Au", 0.0).spectrum(energy)
    pts = qmc.Sobol(6, seed=0).random(256)
    pool = CandidateSet(pts, np.zeros((256, 2), np.int64), (1, 256))
    score = TargetMatch(tuple(target))
    bo = ScalarBO(score, energy, "log-ei", np.random.default_rng(0), 6, PositionFeatures(pts), InlineTrainer())
    executor = ThreadExecutor(lambda u: space.decode(u).spectrum(energy), workers)
    try:
        history = run_design(BOPolicy("design-bo", bo), pool, executor, budget=16, workers=workers)
    finally:
        executor.close()
    values = score(np.asarray(history.spectra), energy)
    assert len(history.indices) == 16 and len(set(history.indices)) == 16 and np.isfinite(values).all()
    assert np.all(values <= 0) and history.model_versions[:6] == [-1] * 6 and max(history.model_versions) >= 1


def test_the_tolerance_ratio_is_at_most_one_exactly_when_the_target_is_reached() -> None:
    energy = np.linspace(1.5, 3.0, 301)
    target = peak_target(energy, 2.2, 0.2, rel_tol=0.1, peak_tol_ev=0.02)
    spectra = np.array([peak_target(energy, c, w).spectrum for c, w in [(2.2, 0.2), (2.21, 0.2), (2.25, 0.2),
                                                                        (2.2, 0.3), (2.6, 0.2)]])  # fmt: skip
    ratio = target.tolerance_ratio(spectra)
    np.testing.assert_array_equal(ratio <= 1, target.reached(spectra))
    assert ratio[0] < 1e-6 and target.reached(spectra).tolist() == [True, True, False, False, False]
    # the peak error alone keeps 2.25 eV out even though its shape is close: the ratio says which
    assert abs(target.peak_ev(spectra[2:3])[0] - 2.25) < 0.005 and ratio[2] >= 2.5 - 1e-6
    assert target.score(spectra[1]) == -ratio[1]
    np.testing.assert_allclose(TargetTolerance(target)(spectra, energy), -np.log(np.maximum(ratio, 1e-12)))
