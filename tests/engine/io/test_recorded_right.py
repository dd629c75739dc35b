"""Recorded data read right and replayed for real (issue 26): Nanonis headers, channels, rotation; model use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.io import ImportFailed, import_file, replay_setup
from engine.report import run_property
from engine.storage import read_run
from tests.engine.cli.test_cli import _cli

ROOT = Path(__file__).resolve().parents[3]
BEPS = ROOT.parent / "shared" / "data" / "BEPS_PTO_50x50.h5"
NX, NY, POINTS = 6, 4, 16
CENTRE_M, SIZE_M = (50e-9, 60e-9), (100e-9, 80e-9)


def _old_grid(path: Path, angle: float, with_xy: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A Nanonis grid as older software wrote it: no delay, start/end time or comment in the header.

    Two channels (current, lock-in), a rotated frame, and per-point X, Y, Z parameters (X and Y left
    at 0 unless ``with_xy``: software that did not record them).
    """
    experiment = "X (m);Y (m);Z (m)"
    n_params = 5
    header = "\r\n".join(
        [
            f'Grid dim="{NX} x {NY}"',
            f"Grid settings={CENTRE_M[0]:E};{CENTRE_M[1]:E};{SIZE_M[0]:E};{SIZE_M[1]:E};{angle:E}",
            'Sweep Signal="Bias (V)"',
            'Fixed parameters="Sweep Start;Sweep End"',
            f'Experiment parameters="{experiment}"',
            f"# Parameters (4 byte)={n_params}",
            f"Experiment size (bytes)={4 * POINTS * 2}",
            f"Points={POINTS}",
            'Channels="Current (A);LIX 1 omega (A)"',
            'Experiment="Grid Spectroscopy"',
            "User=",
            ":HEADER_END:",
            "",
        ]
    )
    current = rng.normal(size=(NY, NX, POINTS)).astype(">f4")
    lockin = rng.normal(size=(NY, NX, POINTS)).astype(">f4")
    z = rng.normal(size=(NY, NX)).astype(">f4")
    # the frame's own grid, turned counterclockwise by -angle (Nanonis turns it clockwise by angle)
    fx = -SIZE_M[0] / 2 + (np.arange(NX) + 0.5) * SIZE_M[0] / NX
    fy = -SIZE_M[1] / 2 + (np.arange(NY) + 0.5) * SIZE_M[1] / NY
    gx, gy = np.meshgrid(fx, fy)
    t = np.deg2rad(-angle)
    sx = CENTRE_M[0] + np.cos(t) * gx - np.sin(t) * gy
    sy = CENTRE_M[1] + np.sin(t) * gx + np.cos(t) * gy
    xy = [sx, sy] if with_xy else [np.zeros((NY, NX)), np.zeros((NY, NX))]
    cols = [np.full((NY, NX), -1.0), np.full((NY, NX), 1.0), *xy, z]
    params = np.stack(cols, axis=2).astype(">f4")
    with path.open("wb") as f:
        f.write(header.encode("latin-1"))
        f.write(np.concatenate([params, current, lockin], axis=2).astype(">f4").tobytes())
    return {"current": current, "lockin": lockin, "x_nm": sx * 1e9, "y_nm": sy * 1e9, "z": z}


@pytest.mark.parametrize("with_xy", [True, False], ids=["positions-recorded", "positions-not-recorded"])
def test_an_old_rotated_nanonis_grid_imports_with_its_channel_and_positions(tmp_path: Path, with_xy: bool) -> None:
    truth = _old_grid(tmp_path / "old.3ds", 30.0, with_xy, np.random.default_rng(0))
    si = import_file(tmp_path / "old.3ds", "LIX 1 omega (A)")
    np.testing.assert_allclose(si.spectra, truth["lockin"].reshape(-1, POINTS).astype(np.float32))
    assert si.signal == "LIX 1 omega (A)"
    assert any("lacks 'Delay before measuring (s)'" in n for n in si.notes), si.notes
    expected = np.stack([truth["x_nm"].ravel(), truth["y_nm"].ravel()], axis=1)
    np.testing.assert_allclose(si.positions, expected, atol=1e-3)  # on the specimen, rotation included
    assert si.frame_rotation_deg == pytest.approx(-30.0, abs=1e-3)
    rows, cols = np.divmod(np.arange(NX * NY), NX)
    np.testing.assert_array_equal(si.pixels(), np.stack([rows, cols], axis=1))  # each spectrum on its own pixel
    np.testing.assert_allclose(si.image.data, truth["z"].astype(np.float32))  # the topography is the image
    assert all(a.low <= p.min() and p.max() <= a.high for a, p in zip(si.axes, si.positions.T, strict=True))


def test_the_first_channel_by_default_and_a_wrong_one_lists_them(tmp_path: Path) -> None:
    truth = _old_grid(tmp_path / "old.3ds", 0.0, True, np.random.default_rng(1))
    si = import_file(tmp_path / "old.3ds")
    np.testing.assert_allclose(si.spectra, truth["current"].reshape(-1, POINTS).astype(np.float32))
    assert any("choose with --channel" in n for n in si.notes)
    with pytest.raises(ImportFailed, match=r"no channel 'dI/dV'; the file has 'Current \(A\)', 'LIX 1 omega \(A\)'"):
        import_file(tmp_path / "old.3ds", "dI/dV")
    cli = _cli("import", str(tmp_path / "old.3ds"), "--out", str(tmp_path / "o.zarr"), "--channel", "dI/dV")
    assert cli.returncode == 2 and "the file has 'Current (A)', 'LIX 1 omega (A)'" in cli.stderr


def test_a_model_based_replay_decides_with_its_model_after_the_initial_ones(tmp_path: Path) -> None:
    result = _cli(
        "replay", str(BEPS), "--policy", "gp-position", "--budget", "20", "--output-dir", str(tmp_path), cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "decisions were taken without a model" not in result.stderr
    (run,) = tmp_path.glob("replay-gp-position-*.zarr")
    summary = json.loads(_cli("inspect", str(run), "--json", cwd=ROOT).stdout)
    assert summary["decisions_without_model"] == 5  # the policy's initial random measurements, no more


def test_refits_are_timed_in_the_run(tmp_path: Path) -> None:
    result = _cli(
        "replay", str(BEPS), "--policy", "gp-position", "--budget", "12", "--output-dir", str(tmp_path), cwd=ROOT
    )
    assert result.returncode == 0 and "refitting the model (inline" in result.stdout, result.stdout + result.stderr
    (run,) = tmp_path.glob("replay-gp-position-*.zarr")
    summary = json.loads(_cli("inspect", str(run), "--json", cwd=ROOT).stdout)
    assert summary["refits"] == 12 - 5 and summary["refit_total_s"] > 0  # inline: one per measurement after 5


def _replay_config(tmp_path: Path, scalariser: str, dataset: Path = BEPS, channel: str = "structure") -> Path:
    cfg = tmp_path / "replay.toml"
    cfg.write_text(
        f'[run]\nname = "grid"\noutput_dir = "{tmp_path}"\nfigure = false\n'
        f'[instrument]\nmode = "spawn"\ndriver = "replay"\nimage_channel = "{channel}"\n'
        f'[instrument.options]\ndataset = "{dataset}"\n'
        '[candidates]\nstride_px = 3\n[policy]\nname = "raster"\n'
        f"[policy.scalariser]\n{scalariser}\n[stop]\nbudget = 40\n"
    )
    return cfg


def test_a_band_outside_the_axis_is_refused_before_the_first_decision(tmp_path: Path) -> None:
    cfg = _replay_config(tmp_path, 'kind = "band"\nlow = 50\nhigh = 60')
    cfg.write_text(cfg.read_text().replace('name = "raster"', 'name = "gp-position"'))
    result = _cli("run", str(cfg), cwd=ROOT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "policy.scalariser: window [50, 60] holds no channel" in result.stderr and "(voltage, V)" in result.stderr


def test_the_default_grid_over_a_recording_never_ends_the_run(tmp_path: Path) -> None:
    """A twin recorded every 8th pixel, a candidate grid every 3rd: most candidates lie between recorded points."""
    recorded = tmp_path / "twin.zarr"
    made = _cli("simulate", "stem", "--out", str(recorded), "--stride", "8", "-o", "image_pixels=48", cwd=ROOT)
    assert made.returncode == 0, made.stderr
    result = _cli("run", str(_replay_config(tmp_path, 'kind = "band"', recorded, "haadf")), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = tmp_path.glob("grid-*.zarr")
    summary = json.loads(_cli("inspect", str(run), "--json", cwd=ROOT).stdout)
    assert summary["spectra"] > 0 and summary["missing_positions"] > 0  # off-grid: missing, not fatal
    assert summary["spectra"] == 40  # the budget counts spectra; the off-grid candidates were skipped


def test_replay_takes_any_scalariser_and_the_report_maps_it(tmp_path: Path) -> None:
    setup = replay_setup(BEPS, "gp-position", 10, scalariser='kind = "peak", low = -2, high = 6')
    assert setup.config.policy.scalariser.kind == "peak" and setup.config.policy.scalariser.high == 6
    result = _cli(
        "replay", str(BEPS), "--policy", "gp-position", "--budget", "6", "--scalariser", 'kind = "loop-area"',
        "--output-dir", str(tmp_path), cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.glob("replay-gp-position-*.zarr")
    assert run_property(read_run(run))[1].startswith("loop area")
    both = _cli("replay", str(BEPS), "--band", "1:2", "--scalariser", 'kind = "peak"', cwd=ROOT)
    assert both.returncode == 2 and "give --band or --scalariser, not both" in both.stderr
