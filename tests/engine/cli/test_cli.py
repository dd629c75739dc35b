"""The command line end to end: demo over a spawned ZeroMQ server, inspect, run, serve, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engine.storage import read_run
from instruments.client import ZmqInstrument

ROOT = Path(__file__).resolve().parents[3]
DUALSCOPE = [sys.executable, "-m", "engine.cli.main"]


def _cli(*args: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    if args[:1] == ("ctl",) and "--timeout-s" not in args:  # a loaded machine answers late, not never
        args = (*args, "--timeout-s", "60")
    return subprocess.run([*DUALSCOPE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["run"], ["serve"], ["inspect"], ["keys", "new"], ["ctl"], ["export"], ["view"]]
)
def test_help_explains_each_command(command: list[str]) -> None:
    result = _cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and len(result.stdout) > 300


def test_run_with_a_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[policy]\nname = 'random'\nbatchsize = 2\n")
    result = _cli("run", str(cfg))
    assert result.returncode == 2
    assert (
        "policy.batchsize: unknown key; allowed here: acquisition, batch_size, initial, latent_with_position, name"
        in result.stderr
    )


def test_inspect_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    result = _cli("inspect", str(tmp_path / "nothing.zarr"))
    assert result.returncode == 2 and "no run at" in result.stderr


def _write_config(tmp_path: Path, policy: str = 'name = "raster"', **stop: Any) -> Path:
    """A local synthetic campaign of raster (or ``policy``'s table body) writing runs named ``ctrlc-*``."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"""
[run]
name = "ctrlc"
output_dir = "{tmp_path}"
chunk_rows = 8
[instrument]
mode = "local"
[instrument.options]
image_pixels = 64
n_channels = 32
acquisition_time_s = 0.05
[policy]
{policy}
[stop]
budget = {stop.get("budget", 1000)}
"""
    )
    return cfg


def test_ctrl_c_stops_cleanly_after_the_current_measurement(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path)
    with _running(cfg) as (proc, run_path):  # interrupt once a spectrum is recorded, however slow the start-up
        _wait(lambda: re.search(r"[1-9]\d* spectra recorded", _cli("ctl", str(run_path), "status").stdout), 120)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "stopped by the operator" in out
    run = read_run(run_path)
    assert 0 < run.n < 1000 and run.attrs["status"] == "closed"
    assert run.attrs["outcome"]["stop_reason"] == "stopped by the operator"
    assert (run_path.with_suffix(".png")).exists()


def test_serve_then_connect(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*DUALSCOPE, "serve", "stem-twin", "--seed", "5", "-o", "image_pixels=48", "-o", "n_channels=40"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY tcp://127.0.0.1:")
        ctx: zmq.Context[Any] = zmq.Context()
        with ZmqInstrument(line.split()[1], ctx, timeout_s=10) as client:
            assert client.describe().spectral_axis.size == 40
            assert client.describe().name == "dualscope-stem-twin"
            assert client.acquire_image("haadf").data.shape == (48, 48)
        ctx.term()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)  # waits for it and closes its pipes
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_serve_refuses_non_loopback_and_bad_options() -> None:
    wide = _cli("serve", "synthetic", "--endpoint", "tcp://0.0.0.0:5555")
    assert wide.returncode == 2 and "loopback" in wide.stderr
    bad = _cli("serve", "synthetic", "-o", "pixels=3")
    assert bad.returncode == 2 and "pixels: unknown key" in bad.stderr
    listed = _cli("serve", "synthetic", "--list-options")
    assert listed.returncode == 0 and "acquisition_time_s" in listed.stdout


def _wait(condition: Any, timeout_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout_s, "timed out"
        time.sleep(0.01)


@contextmanager
def _running(cfg: Path, *status_args: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``dualscope run cfg`` in a child process, once its control socket answers ``ctl status``; killed if left."""
    proc = subprocess.Popen([*DUALSCOPE, "run", str(cfg)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        _wait(lambda: any(cfg.parent.glob("ctrlc-*.zarr")), 120)
        run_path = next(cfg.parent.glob("ctrlc-*.zarr"))
        _wait(lambda: "status: campaign" in _cli("ctl", str(run_path), "status", *status_args).stdout, 120)
        yield proc, run_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_drifting_twin_over_zeromq_is_tracked_and_the_report_draws_the_track(tmp_path: Path) -> None:
    """`dualscope run` with [drift] on against a spawned stem twin that drifts 60 nm/min (in real time)."""
    cfg = tmp_path / "drift.toml"
    cfg.write_text(
        f"""
[run]
name = "drift"
output_dir = "{tmp_path}"
[instrument]
mode = "spawn"
driver = "stem-twin"
[instrument.options]
image_pixels = 64
n_channels = 40
acquisition_time_s = 0.02
drift = {{ rate_nm_per_min = 60.0, direction_deg = 45.0 }}
[policy]
name = "random"
[stop]
budget = 30
[drift]
enabled = true
every_n = 5
"""
    )
    result = _cli("run", str(cfg))
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("drift-*.zarr")
    track = read_run(path).attrs["drift_track"]
    assert len(track) == 5 and all(e["accepted"] for e in track)  # after 5, 10, ..., 25 spectra
    shifts = [np.hypot(*e["shift"]) for e in track]
    assert shifts[-1] > max(shifts[0], 0.3)  # the specimen moved on, along 45 degrees
    assert all(abs(e["shift"][0] - e["shift"][1]) < 0.3 + 0.1 * np.hypot(*e["shift"]) for e in track)
    report = _cli("report", str(path), "--train-steps", "0")
    assert report.returncode == 0, report.stderr
    page = path.with_suffix(".html").read_text()
    assert "<h2>Drift</h2>" in page and "5 tracking frames registered against the reference image (0 refused" in page


def test_a_bad_drift_section_is_refused_before_anything_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[drift]\nenabled = true\nevery_n = 0\n")
    result = _cli("run", str(cfg))
    assert result.returncode == 2 and "drift.every_n" in result.stderr and "Traceback" not in result.stderr
