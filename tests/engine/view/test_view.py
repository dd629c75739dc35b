"""The live view without a browser: what it reads of a run, its server's rules, and `dualscope view`'s errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from engine.campaign import Budget, Campaign
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.errors import ConfigError
from engine.policy import RandomPolicy
from engine.storage import RunWriter, read_candidates
from engine.view import NoCampaign, ViewServer, read_picture
from instruments.local import LocalInstrument
from simulators.synthetic import SyntheticOptions, synthetic_microscope
from tests.engine.cli.test_cli import DUALSCOPE, ROOT, _cli, _write_config


def _open_run(path: Path, budget: int) -> RunWriter:
    """A run of ``budget`` random spectra of the synthetic microscope, left open (rows past 8 not committed)."""
    clock = SystemClock()
    scope = LocalInstrument(synthetic_microscope(SyntheticOptions(image_pixels=32, n_channels=16), clock))
    desc, image = scope.describe(), scope.acquire_image("haadf")
    candidates = CandidateSet.from_image_grid(image, desc, 4, 2)
    writer = RunWriter.create(
        path, description=desc, images=[image], candidates=candidates, config_toml="", clock=clock, chunk_rows=8
    )
    Campaign(
        instrument=scope, policy=RandomPolicy(np.random.default_rng(0)), recorder=writer, candidates=candidates,
        spectral_axis=desc.spectral_axis, stop_rules=[Budget(budget)], clock=clock, request_prefix="view",
    ).run()  # fmt: skip
    return writer


def test_the_picture_follows_rows_still_in_the_journal(tmp_path: Path) -> None:
    writer = _open_run(tmp_path / "run.zarr", 13)
    try:
        picture = read_picture(tmp_path / "run.zarr", table_rows=4)
        assert writer.committed_rows == 8 and picture.n == 13  # 5 rows are durable in the journal only
        assert picture.status == "open" and picture.stop_reason == ""
        assert [r["step"] for r in picture.rows] == [12, 11, 10, 9]  # newest first
        assert picture.rows[0]["policy"] == "random" and np.isnan(picture.rows[0]["acquisition"])
        assert picture.latest.shape == (5, 16) and picture.latest_steps.tolist() == [8, 9, 10, 11, 12]
        assert picture.axis_names == ("x", "y") and picture.axis_units == ("nm", "nm")
        assert picture.image is not None and picture.candidates_xy.shape[1] == 2
        assert picture.spectral_label.endswith("(eV)")
        best = picture.best_so_far
        assert np.all(np.diff(best) >= 0) and best[-1] == picture.scalar.max()
        banded = read_picture(tmp_path / "run.zarr", band="1:2")
        assert banded.property_label.startswith("counts summed over 1–2 eV")
    finally:
        writer.close(outcome={"stop_reason": "test"})
    assert read_picture(tmp_path / "run.zarr").stop_reason == "test"


def test_the_server_binds_loopback_only_and_says_when_the_port_is_taken(tmp_path: Path) -> None:
    writer = _open_run(tmp_path / "run.zarr", 3)
    writer.close()
    with pytest.raises(ConfigError, match="loopback only"):
        ViewServer(tmp_path / "run.zarr", NoCampaign(), address="0.0.0.0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is taken; choose another with --port"):
            ViewServer(tmp_path / "run.zarr", NoCampaign(), port=port)


def test_the_page_and_its_scripts_come_from_the_server_not_a_cdn(tmp_path: Path) -> None:
    writer = _open_run(tmp_path / "run.zarr", 3)
    writer.close()
    server = ViewServer(tmp_path / "run.zarr", NoCampaign(), port=0)
    try:
        with urllib.request.urlopen(server.url, timeout=30) as reply:
            page = reply.read().decode()
        assert "dualscope: run.zarr" in page and "cdn." not in page and "https://" not in page
        script = page.split('<script src="', 1)[1].split('"', 1)[0]
        assert script.startswith("/static/js/bokeh")
        with urllib.request.urlopen(server.url.rstrip("/") + script, timeout=30) as reply:
            assert reply.status == 200 and len(reply.read()) > 100_000  # BokehJS, from the installed package
    finally:
        server.close()


def test_dualscope_view_refuses_what_is_not_a_run_and_a_taken_port(tmp_path: Path) -> None:
    missing = _cli("view", str(tmp_path / "nope.zarr"))
    assert missing.returncode == 2 and "no run at" in missing.stderr and "Traceback" not in missing.stderr
    writer = _open_run(tmp_path / "run.zarr", 3)
    writer.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = _cli("view", str(tmp_path / "run.zarr"), "--port", port)
    assert busy.returncode == 2 and "is taken; choose another with --port" in busy.stderr
    assert "Traceback" not in busy.stderr


def test_run_with_view_serves_the_page_while_the_campaign_runs(tmp_path: Path) -> None:
    """`dualscope run --view --view-port 0` prints the URL once the run exists; the page is there until the end."""
    cfg = _write_config(tmp_path)
    proc = subprocess.Popen([*DUALSCOPE, "run", str(cfg), "--view", "--view-port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})  # fmt: skip
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:  # the instrument line, then the view's
            if found := re.search(r"View: +(http://127\.0\.0\.1:\d+/)", line):
                url = found.group(1)
                break
        assert url, proc.stderr.read() if proc.stderr else ""
        with urllib.request.urlopen(url, timeout=60) as reply:
            assert reply.status == 200 and "dualscope: ctrlc-" in reply.read().decode()
        (run_path,) = tmp_path.glob("ctrlc-*.zarr")
        assert _cli("ctl", str(run_path), "stop", "--as", "test").returncode == 0
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "stopped by the operator" in out, out + err


def test_with_a_twins_truth_the_picture_has_the_discovery_curve(tmp_path: Path) -> None:
    """Discovery = the fraction of the truth's top 1 % measured so far, valued by the run's own property."""
    writer = _open_run(tmp_path / "run.zarr", 30)
    writer.close()
    m = read_candidates(tmp_path / "run.zarr").positions.shape[0]
    truth = np.zeros((m, 16), np.float32)
    truth[:, 0] = np.arange(m)  # the run's property is the total: the last candidates are the best
    picture = read_picture(tmp_path / "run.zarr", truth=truth)
    top = np.arange(m - picture.top_size, m)
    assert picture.top_size == max(1, round(0.01 * m))
    assert picture.discovery is not None and picture.discovery.shape == (30,)
    np.testing.assert_allclose(picture.discovery, np.cumsum(np.isin(picture.candidate_index, top)) / top.size)
    assert read_picture(tmp_path / "run.zarr").discovery is None


def test_the_truth_comes_from_a_twin_the_view_can_rebuild_and_from_nothing_else() -> None:
    from engine.cli.demo_truth import twin_truth

    candidates = np.array([[10.0, 10.0], [30.0, 40.0]])
    twin = '[instrument]\nmode = "local"\ndriver = "stem-twin"\n[instrument.options]\nimage_pixels = 32\n'
    twin += "n_channels = 24\n"
    cube = twin_truth(twin, candidates, SystemClock())
    assert cube is not None and cube.shape == (2, 24) and np.all(cube >= 0)
    assert twin_truth(twin.replace("stem-twin", "synthetic"), candidates, SystemClock()) is None
    served = twin.replace('mode = "local"', 'mode = "connect"\nendpoint = "tcp://127.0.0.1:5555"')
    assert twin_truth(served, candidates, SystemClock()) is None  # its options are the server's, not known here
