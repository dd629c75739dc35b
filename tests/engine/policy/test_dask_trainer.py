"""Refits on a Dask worker: results come back as snapshots, a lost worker falls back to the local thread.

All on a loopback ``LocalCluster`` of one worker process (``allowed-failures`` 0, as ``dask_client``
sets it), started once for the module.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from engine.candidates import CandidateSet
from engine.dask_cluster import dask_client
from engine.policy import (
    BandIntegral,
    DaskTrainer,
    DualVAEFeatures,
    Features,
    PositionFeatures,
    RefitJob,
    ScalarBO,
    Snapshot,
    ThreadTrainer,
    open_dask_trainer,
    resolve_device,
    unit_cube,
)
from engine.surrogate import Surrogate, SurrogateConfig

pytestmark = pytest.mark.timeout(300)

AXIS = np.linspace(0.0, 1.0, 16)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with dask_client(None, workers=1) as c:
        yield c


class BlocksOnAWorker:
    """Position features whose refit, on a Dask worker (another process), blocks until the worker is killed."""

    def __init__(self, positions: np.ndarray, started: str):
        self._unit, self._home, self._started = unit_cube(positions), os.getpid(), started

    def refit(self, observed: np.ndarray, values: np.ndarray, spectra: np.ndarray) -> Features:
        if os.getpid() != self._home:
            open(self._started, "w").close()
            threading.Event().wait(120)  # the test kills this process long before
        return Features(self._unit)


class Raises:
    """A feature model whose refit fails (a numerical failure, not the cluster's)."""

    def refit(self, observed: np.ndarray, values: np.ndarray, spectra: np.ndarray) -> Features:
        raise FloatingPointError("the kernel matrix is not positive definite")


def _job(features: Any, version: int = 1, device: str = "auto") -> RefitJob:
    rng = np.random.default_rng(version)
    spectra = rng.random((6, AXIS.size)).astype(np.float32)
    return RefitJob(version, 6, np.arange(6), rng.random(6), spectra, features, BandIntegral(0.0, 0.5), AXIS,
                    device=device)  # fmt: skip


def _positions(m: int = 60) -> np.ndarray:
    return np.random.default_rng(0).random((m, 2)) * 50.0


def _dualvae(m: int = 60) -> DualVAEFeatures:
    patches = np.random.default_rng(1).random((m, 8, 8)).astype(np.float32)
    vae = Surrogate(SurrogateConfig(batch_size=16, latent=2), 8, AXIS.size, device=torch.device("cpu"))
    return DualVAEFeatures(vae, patches, AXIS.size, pretrain_steps=5, update_steps=3, positions=_positions(m))


def _worker_pid(client: Any) -> int:
    (pid,) = client.run(os.getpid).values()
    return int(pid)


def _wait_for(path: str) -> None:
    """Block until the worker has started the refit (it writes ``path``)."""
    pause = threading.Event()
    for _ in range(2400):
        if os.path.exists(path):
            return
        pause.wait(0.05)
    raise AssertionError("the refit never started on the worker")


def test_a_refit_on_the_worker_comes_back_and_the_policy_trains_on_from_its_weights(client: Any) -> None:
    features = _dualvae()
    trainer: DaskTrainer[Snapshot] = DaskTrainer(client, ThreadTrainer(), "local")
    bo = ScalarBO(BandIntegral(0.0, 0.5), AXIS, "log-ei", np.random.default_rng(0), 3, features, trainer)
    candidates = CandidateSet(_positions(), np.zeros((60, 2), np.int64), (1, 60))
    rng = np.random.default_rng(2)
    versions = []
    for _ in range(6):
        proposal = bo.propose(candidates, 1)
        candidates.mark_measured(proposal.indices)
        bo.add(proposal.indices, rng.random((1, AXIS.size)).astype(np.float32))
        trainer.wait(120.0)  # the test waits; the loop never does (poll)
        bo.propose(candidates, 1)  # takes the snapshot that came back
        versions.append(bo.snapshot.version if bo.snapshot else 0)
    trainer.close()
    assert trainer.fell_back is None and trainer.failures == []
    assert versions[-1] == 4 and versions == sorted(versions)  # refits 1..4 after the 3 initial measurements
    assert bo.features is not features  # the worker's copy came home and training continues from it
    assert isinstance(bo.features, DualVAEFeatures) and bo.features.surrogate.version == 1 + 4
    assert features.surrogate.version == 1  # the copy left behind was never trained: no shared state
    assert bo.snapshot is not None and bo.snapshot.device == "cpu" and bo.snapshot.cut >= bo.snapshot.n_obs


def test_the_device_is_resolved_on_the_worker(client: Any) -> None:
    """``auto`` is the worker's own choice; a CUDA request on a worker without CUDA fails there, naming it."""
    assert client.submit(resolve_device, "auto", pure=False).result() == resolve_device("auto")
    trainer: DaskTrainer[Snapshot] = DaskTrainer(client, ThreadTrainer(), "local")
    trainer.submit(_job(_dualvae(), device="auto"))
    trainer.wait(120.0)
    snap = trainer.poll()
    assert snap is not None and snap.device == str(resolve_device("auto"))
    if torch.cuda.is_available():  # pragma: no cover - this machine has no GPU
        pytest.skip("the worker has CUDA: cuda is a valid request here")
    trainer.submit(_job(_dualvae(), device="cuda"))
    trainer.wait(120.0)
    assert trainer.poll() is None and trainer.fell_back is None  # the refit's own error, not the cluster's
    (failure,) = trainer.failures
    assert "ConfigError" in failure and "has no CUDA device" in failure
    trainer.close()


def test_a_refit_that_raises_is_a_failure_not_a_fallback(client: Any) -> None:
    trainer: DaskTrainer[Snapshot] = DaskTrainer(client, ThreadTrainer(), "local")
    assert trainer.submit(_job(Raises()))
    trainer.wait(120.0)
    assert trainer.poll() is None and trainer.fell_back is None
    assert trainer.failures == ["FloatingPointError: the kernel matrix is not positive definite"]
    trainer.submit(_job(PositionFeatures(_positions())))  # the cluster is still in use
    trainer.wait(120.0)
    assert trainer.poll() is not None and trainer.fell_back is None
    trainer.close()


def test_a_worker_killed_mid_refit_falls_back_and_the_refit_is_run_here(client: Any, tmp_path: Any) -> None:
    reasons: list[str] = []
    trainer: DaskTrainer[Snapshot] = DaskTrainer(client, ThreadTrainer(), "local", on_fallback=reasons.append)
    started = str(tmp_path / "started")
    assert trainer.submit(_job(BlocksOnAWorker(_positions(), started), version=7))
    _wait_for(started)
    os.kill(_worker_pid(client), signal.SIGKILL)
    trainer.wait(120.0)
    assert trainer.fell_back is not None and len(reasons) == 1
    assert "KilledWorker" in reasons[0] and "training continues on this machine" in reasons[0]
    trainer.wait(120.0)
    snap = trainer.poll()
    assert snap is not None and snap.version == 7  # the lost refit ran here: its data was not lost
    assert trainer.submit(_job(PositionFeatures(_positions()), version=8))  # from now on, the local thread
    trainer.wait(120.0)
    assert trainer.poll() is not None and len(reasons) == 1
    trainer.close()
    client.wait_for_workers(1, timeout=120)  # the nanny restarts the worker for the other tests


def test_a_refit_that_does_not_come_back_in_time_falls_back(client: Any, tmp_path: Any) -> None:
    now = [0.0]
    reasons: list[str] = []
    trainer: DaskTrainer[Snapshot] = DaskTrainer(
        client, ThreadTrainer(), "local", timeout_s=30.0, clock=lambda: now[0], on_fallback=reasons.append
    )
    started = str(tmp_path / "started")
    trainer.submit(_job(BlocksOnAWorker(_positions(), started)))
    _wait_for(started)
    assert trainer.poll() is None and trainer.fell_back is None  # still out, not overdue
    now[0] = 31.0
    assert trainer.poll() is None and trainer.fell_back is not None
    assert "did not come back within 30 s" in reasons[0]
    trainer.wait(120.0)
    assert trainer.poll() is not None  # run again here
    trainer.close()  # cancels the task still blocking the worker
    os.kill(_worker_pid(client), signal.SIGKILL)  # free the worker for the other tests
    client.wait_for_workers(1, timeout=120)


def test_an_unreachable_scheduler_starts_training_on_this_machine() -> None:
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reasons: list[str] = []
    trainer = open_dask_trainer(
        f"tcp://127.0.0.1:{port}", ThreadTrainer(), connect_timeout_s=1.0, on_fallback=reasons.append
    )
    assert trainer.fell_back is not None and "could not be reached" in reasons[0]
    assert trainer.submit(_job(PositionFeatures(_positions())))
    trainer.wait(60.0)
    assert trainer.poll() is not None
    trainer.close()
