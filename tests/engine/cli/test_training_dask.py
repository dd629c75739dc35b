"""`dualscope run` with ``training = "dask"``: refits on a LocalCluster's worker, which is killed mid-refit.

The test process hosts the cluster (scheduler and one worker process, loopback, ``allowed-failures``
0); the campaign is a `dualscope run` subprocess that connects to it. A watcher kills the worker
whenever it is running a refit, until the run records that training fell back to its own thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.dask_cluster import dask_client
from engine.storage import read_run

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(600)


def _config(tmp_path: Path, scheduler: str) -> Path:
    cfg = tmp_path / "dask.toml"
    cfg.write_text(
        f"""
[run]
name = "dask"
output_dir = "{tmp_path}"
[instrument]
mode = "spawn"
driver = "stem-twin"
[instrument.options]
image_pixels = 64
n_channels = 40
acquisition_time_s = 0.1
[candidates]
stride_px = 4
[policy]
name = "dualvae-bo"
patch_px = 8
pretrain_steps = 20
initial = 4
refit_every = 2
training = "dask"
wait_for_first_model = true
[policy.scalariser]
kind = "band"
low = 0.4
high = 0.55
[stop]
budget = 30
[training]
scheduler = "{scheduler}"
device = "auto"
"""
    )
    return cfg


def _kill_refits(client: Any, done: threading.Event, kills: list[int]) -> None:
    """Kill the worker each time it is running a task, until ``done``."""
    pause = threading.Event()
    while not done.is_set():
        with contextlib.suppress(OSError):  # the worker is restarting (CommClosedError is an OSError)
            if any(client.processing().values()):
                for pid in client.run(os.getpid).values():
                    os.kill(int(pid), signal.SIGKILL)
                    kills.append(int(pid))
        pause.wait(0.01)


def test_a_campaign_whose_worker_dies_mid_refit_completes_on_its_own_thread(tmp_path: Path) -> None:
    with dask_client(None, workers=1) as client:
        address = client.scheduler.address
        done, kills = threading.Event(), []
        watcher = threading.Thread(target=_kill_refits, args=(client, done, kills))
        watcher.start()
        try:
            env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
            result = subprocess.run(
                [sys.executable, "-m", "engine.cli.main", "run", str(_config(tmp_path, address))],
                cwd=ROOT, capture_output=True, text=True, timeout=540, env=env,
            )  # fmt: skip
        finally:
            done.set()
            watcher.join(60)
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("dask-*.zarr")
    run = read_run(path)
    assert run.n == 30 and "budget" in run.attrs["outcome"]["stop_reason"], run.attrs["outcome"]
    events = run.attrs["training_events"]
    assert events[0]["event"] == "start" and events[0]["scheduler"] == address and events[0]["device"] == "auto"
    assert kills, "the watcher never saw a refit running on the worker"
    fallback = [e for e in events if e["event"] == "fallback"]
    assert len(fallback) == 1, events
    assert "KilledWorker" in fallback[0]["reason"] or "failed during a refit" in fallback[0]["reason"]
    refits = run.attrs["refits"]
    assert len(refits) >= 3 and all(r["device"] == "cpu" and r["cut"] >= r["n_obs"] for r in refits)
    assert [r["version"] for r in refits] == sorted(r["version"] for r in refits)
    shown = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "inspect", str(path), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    summary = json.loads(shown.stdout)
    assert summary["training"].startswith(f"dask {address} (device auto); fell back to the local thread at ")
    assert summary["median_refit_staleness"] is not None and summary["median_refit_staleness"] >= 0


def test_dask_training_without_a_scheduler_is_refused_before_anything_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[policy]\nname = "gp-position"\ntraining = "dask"\n')
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "run", str(cfg), "--defaults"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "needs [training] scheduler" in result.stderr
    assert "Traceback" not in result.stderr
