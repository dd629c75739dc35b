"""Inverse design scaled out: DE baseline, Dask LocalCluster with a worker that dies, ZeroMQ server pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zmq
from scipy.stats import qmc

from engine.candidates import CandidateSet
from engine.cli.spawn import spawned_server
from engine.clock import SystemClock
from engine.design import (
    DE_NAME,
    DaskExecutor,
    DesignLog,
    DesignTarget,
    InlineExecutor,
    dask_client,
    differential_evolution_search,
    run_design,
)
from engine.policy import BOPolicy, InlineTrainer, PositionFeatures, ScalarBO, TargetMatch
from engine.storage import RunWriter, read_run
from engine.types import Axis, InstrumentDescription
from instruments.server_pool import ServerPoolExecutor
from simulators.design_sim import ClusterSimOptions, ClusterSimulator, DieOnce

OPTIONS = ClusterSimOptions(materials=("Au",), n_max=4, channels=40, energy_min_ev=1.6, energy_max_ev=2.8)
TARGET = ClusterSimulator(OPTIONS)(np.array([0.1, 0.6, 0.5, 0.2, 0.0, 0.5]))


def _bo(pool: np.ndarray, seed: int = 0) -> BOPolicy:
    energy = OPTIONS.energy_ev()
    bo = ScalarBO(
        TargetMatch(tuple(TARGET)),
        energy,
        "log-ei",
        np.random.default_rng(seed),
        4,
        PositionFeatures(pool),
        InlineTrainer(),
    )
    return BOPolicy("design-bo", bo)


def _writer(tmp_path: Path, pool: np.ndarray) -> RunWriter:
    m = pool.shape[0]
    description = InstrumentDescription(
        "dualscope-design", tuple(Axis(n, "1", 0.0, 1.0) for n in "abcdef"), OPTIONS.spectral_axis(), ()
    )
    cands = CandidateSet(pool, np.zeros((m, 2), np.int64), (1, m))
    return RunWriter.create(
        tmp_path / "design.zarr", description=description, images=[], candidates=cands, config_toml="",
        clock=SystemClock(), chunk_rows=4,
    )  # fmt: skip


def test_differential_evolution_spends_exactly_the_budget_and_records_it(tmp_path: Path) -> None:
    pool = qmc.Sobol(6, seed=0).random(64)
    writer = _writer(tmp_path, pool)
    target = DesignTarget(TARGET, OPTIONS.energy_ev())
    history = differential_evolution_search(
        target.score, 6, InlineExecutor(ClusterSimulator(OPTIONS)), np.random.default_rng(0), budget=45,
        log=DesignLog(writer, SystemClock(), "de"),
    )  # fmt: skip
    writer.close()
    assert history.method == DE_NAME and len(history.spectra) == 45 and set(history.indices) == {-1}
    run = read_run(tmp_path / "design.zarr")
    assert run.n == 45 and run.policy_names == [DE_NAME]
    np.testing.assert_allclose(run.positions, np.clip(np.asarray(history.designs), 0, 1))
    np.testing.assert_allclose(run.spectra, np.asarray(history.spectra, np.float32), rtol=1e-6)
    # a stop rule ends it early: here, as soon as one design is within 30 % of the target
    stopped = differential_evolution_search(
        target.score, 6, InlineExecutor(ClusterSimulator(OPTIONS)), np.random.default_rng(0), budget=400,
        stop=lambda h: target.distance(h.spectra[-1])[0] < 0.3,
    )  # fmt: skip
    assert target.distance(stopped.spectra[-1])[0] < 0.3 and len(stopped.spectra) < 400


def test_a_dask_worker_that_dies_mid_evaluation_costs_a_recorded_resubmission(tmp_path: Path) -> None:
    pool = qmc.Sobol(6, seed=1).random(128)
    writer = _writer(tmp_path, pool)
    simulate = DieOnce(ClusterSimulator(OPTIONS), str(tmp_path / "died"), mode="exit", after_s=0.2)
    with dask_client(None, 2) as client:
        executor = DaskExecutor(client, simulate)
        history = run_design(
            _bo(pool), CandidateSet(pool, np.zeros((128, 2), np.int64), (1, 128)), executor, budget=10, workers=2,
            log=DesignLog(writer, SystemClock(), "bo"),
        )  # fmt: skip
        executor.close()
    writer.close()
    assert (tmp_path / "died").exists()  # a worker process really exited mid-evaluation
    assert len(history.indices) == 10 and len(set(history.indices)) == 10
    assert history.failures and all("KilledWorker" in reason for _, reason in history.failures)
    assert set(history.resubmitted) == {i for i, _ in history.failures}
    died = history.failures[0][0]
    assert died in history.indices  # its design was evaluated after all
    run = read_run(tmp_path / "design.zarr")
    assert run.n == 10
    missing = run.attrs["missing"]
    assert any("KilledWorker" in m["reason"] and "re-submitted as bo-" in m["reason"] for m in missing)
    assert died in run.columns["candidate_index"].tolist()


def test_a_server_pool_retires_a_dead_server_and_keeps_going(tmp_path: Path) -> None:
    pool = qmc.Sobol(6, seed=2).random(64)
    context: zmq.Context[Any] = zmq.Context()
    dead = context.socket(zmq.ROUTER)  # bound, never answers: a server that hangs
    dead.setsockopt(zmq.LINGER, 0)
    port = dead.bind_to_random_port("tcp://127.0.0.1")
    try:
        with spawned_server("design-cda", OPTIONS.model_dump(mode="json")) as live:
            executor = ServerPoolExecutor([f"tcp://127.0.0.1:{port}", live], context, timeout_s=1.0, retries=0)
            history = run_design(
                _bo(pool), CandidateSet(pool, np.zeros((64, 2), np.int64), (1, 64)), executor, budget=8, workers=2
            )
            executor.close()
    finally:
        dead.close(linger=0)
        context.term()
    assert len(history.indices) == 8
    assert executor.retired == [f"tcp://127.0.0.1:{port}"]
    assert history.failures and "did not answer" in history.failures[0][1]
    np.testing.assert_allclose(
        history.spectra[0], ClusterSimulator(OPTIONS)(history.designs[0]), rtol=1e-5
    )  # the server computes what the in-process simulator does
