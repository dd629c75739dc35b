"""The Nion driver against Nion's own simulated STEM (nionswift-usim), headless."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.clock import SystemClock
from engine.errors import BadRequest, ConfigError
from engine.storage import read_run
from instruments.drivers.nion import NionStem, to_fraction, to_nm
from instruments.drivers.nion_options import NionOptions
from instruments.drivers.nion_usim import open_nion

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nion() -> Iterator[NionStem]:
    driver = open_nion(NionOptions(usim=True, image_pixels=64, exposure_ms=5.0), SystemClock())
    yield driver
    driver.close()


def test_coordinates_round_trip() -> None:
    rng = np.random.default_rng(0)
    nm = rng.random((50, 2)) * 80.0
    fractions = to_fraction(nm, 80.0)
    assert np.all((fractions >= 0) & (fractions <= 1))
    np.testing.assert_allclose(fractions[:, 0], nm[:, 1] / 80.0)  # Nion's (y, x) order
    np.testing.assert_allclose(to_nm(fractions, 80.0), nm)


def test_describe_reads_the_scan_and_the_spectrometer(nion: NionStem) -> None:
    d = nion.describe()
    assert [a.name for a in d.axes] == ["x", "y"] and d.axes[0].high == pytest.approx(100.0)  # usim's 100 nm field
    assert d.spectral_axis.units == "eV" and d.spectral_axis.size == 512
    assert d.spectral_axis.offset == pytest.approx(-20.0)  # the camera's calibration (ZLP offset)
    assert d.image_channels == ("haadf",) and d.extra["scan"] == "usim_scan_device"


def test_image_and_spectra_depend_on_where_the_probe_is(nion: NionStem) -> None:
    img = nion.acquire_image("haadf")
    assert img.data.shape == (64, 64) and img.x_axis.units == "nm" and img.data.std() > 0
    bright = np.unravel_index(np.argmax(img.data), img.data.shape)
    dark = np.unravel_index(np.argmin(img.data), img.data.shape)
    y, x = img.coords()
    pos = np.array([[x[bright[1]], y[bright[0]]], [x[dark[1]], y[dark[0]]]])
    batch = nion.measure(pos)
    assert batch.spectra.shape == (2, 512) and np.isfinite(batch.spectra).all()
    energy = nion.describe().spectral_axis.values()
    loss = energy > 5.0  # beyond the zero-loss peak: plasmons and edges of the specimen under the probe
    assert batch.spectra[0, loss].sum() != pytest.approx(batch.spectra[1, loss].sum(), rel=1e-3)
    status = nion.status()
    assert status["probe_position_nm"] == pytest.approx(pos[-1].tolist())
    assert status["blanker"] is True and status["beam_blanked"] is True  # blanked between measurements


def test_unknown_channel_and_missing_devices_are_clear_errors(nion: NionStem) -> None:
    with pytest.raises(BadRequest, match="serves 'HAADF'"):
        nion.acquire_image("sem")
    with pytest.raises(ConfigError, match="usim = true or device_modules"):
        open_nion(NionOptions(), SystemClock())


def test_serve_nion_usim_and_run_a_random_campaign(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli.main",
            "serve",
            "nion",
            "--usim",
            "-o",
            "image_pixels=64",
            "-o",
            "exposure_ms=5",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        endpoint = re.match(r"READY (tcp://127\.0\.0\.1:\d+)", ready)
        assert endpoint, ready + (server.stderr.read() if server.stderr else "")
        cfg = tmp_path / "nion.toml"
        cfg.write_text(
            f'[run]\nname = "nion"\noutput_dir = "{tmp_path}"\n'
            f'[instrument]\nmode = "connect"\nendpoint = "{endpoint.group(1)}"\n'
            'image_channel = "haadf"\ntimeout_s = 30\n'
            '[candidates]\nstride_px = 8\n[policy]\nname = "random"\n[stop]\nbudget = 12\n'
        )
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli.main", "run", str(cfg)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.terminate()
        _out, errors = server.communicate(timeout=30)  # also closes the pipes
    run = read_run(next(tmp_path.glob("nion-*.zarr")))
    assert run.n == 12 and run.description.name == "nion-stem" and run.spectral_axis.units == "eV"
    assert run.images["haadf"].data.shape == (64, 64) and np.isfinite(run.spectra).all()
    assert server.returncode == 0, errors  # SIGTERM: a clean shutdown of the server and of Nion's stack


class _NoBlanker:
    """A STEM controller without the blanker control (as some microscopes are)."""

    def __init__(self, inner: object):
        self._inner = inner

    def TryGetVal(self, name: str) -> tuple[bool, float | None]:  # noqa: N802 (Nion's name)
        return (False, None) if name == "C_Blank" else self._inner.TryGetVal(name)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_microscope_without_a_blanker_is_reported_not_blanked(nion: NionStem) -> None:
    options = NionOptions(usim=True, image_pixels=64, exposure_ms=5.0)
    driver = NionStem(_NoBlanker(nion._stem), nion._scan, nion._eels, options, SystemClock())
    driver.measure(np.array([[50.0, 50.0]]))
    status = driver.status()
    assert status["blanker"] is False and status["beam_blanked"] is None
    assert driver.describe().extra["blanker"] is False


def test_drift_tracking_registers_nion_scan_frames(nion: NionStem) -> None:
    """usim's specimen does not drift; moving the scan's centre moves the field over it, as drift would."""
    import copy

    from engine.campaign import DriftTracker
    from engine.config import DriftSection

    reference = nion.acquire_image("haadf")
    tracker = DriftTracker(DriftSection(enabled=True, every_n=5), reference, nion.describe().axes, SystemClock())
    still = tracker.register(nion.acquire_image("haadf"), 0, 0)
    assert still.accepted and np.hypot(*still.measured) < 0.5 * reference.x_axis.scale
    original = copy.deepcopy(nion._scan.get_current_frame_parameters())
    moved = copy.deepcopy(original)
    moved.center_nm = (1.5, 3.0)  # Nion's (y, x): the field moves +3 nm in x, +1.5 nm in y over the specimen
    nion._scan.set_current_frame_parameters(moved)
    try:
        estimate = tracker.register(nion.acquire_image("haadf"), 1, 5)
    finally:
        nion._scan.set_current_frame_parameters(original)
    assert estimate.accepted, estimate.reason
    # in the scan frame the specimen moved the other way
    assert np.hypot(estimate.measured[0] + 3.0, estimate.measured[1] + 1.5) < 0.5 * reference.x_axis.scale
