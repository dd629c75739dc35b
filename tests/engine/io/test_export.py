"""Data out: a run and an imported spectrum image as xarray, HyperSpy (rosettasciio), NeXus (h5py) and CSV."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from rsciio.hspy import file_reader

from engine.campaign import Budget, Campaign
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.errors import ConfigError
from engine.io import export, from_grid, run_dataset
from engine.policy import RandomPolicy
from engine.storage import RunWriter, read_run, write_spectrum_image
from engine.types import SpectralAxis
from instruments.local import LocalInstrument
from simulators.synthetic import SyntheticOptions, synthetic_microscope

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed 12-spectrum random campaign with one operator action and one resume noted."""
    folder = tmp_path_factory.mktemp("export")
    clock = SystemClock()
    scope = LocalInstrument(synthetic_microscope(SyntheticOptions(image_pixels=48, n_channels=32), clock))
    desc, image = scope.describe(), scope.acquire_image("haadf")
    candidates = CandidateSet.from_image_grid(image, desc, 4, 2)
    writer = RunWriter.create(folder / "run.zarr", description=desc, images=[image], candidates=candidates,
                              config_toml="[stop]\nbudget = 12\n", clock=clock)  # fmt: skip
    Campaign(instrument=scope, policy=RandomPolicy(np.random.default_rng(0)), recorder=writer,
             candidates=candidates, spectral_axis=desc.spectral_axis, stop_rules=[Budget(12)], clock=clock,
             request_prefix="x").run()  # fmt: skip
    writer.record_operator_action({"action": "pause", "who": "alice", "time": clock.time()})
    writer.log_resume({"at": clock.time(), "from_step": 7, "rows": 7})
    writer.close(outcome={"stop_reason": "budget"})
    return folder / "run.zarr"


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An imported (4, 5 | 16) spectrum image in nm with a 40 × 50 HAADF."""
    folder = tmp_path_factory.mktemp("cube")
    spectra = np.random.default_rng(1).random((4, 5, 16)).astype(np.float32)
    axis = SpectralAxis("energy_loss", "eV", 0.5, 0.1, 16)
    haadf = np.random.default_rng(2).random((40, 50))
    si = from_grid(spectra, 10.0 + 2.0 * np.arange(5), 20.0 + 2.0 * np.arange(4), "nm", axis, "test", image=haadf,
                   image_x=9.0 + 0.2 * np.arange(50), image_y=19.0 + 0.2 * np.arange(40))  # fmt: skip
    return write_spectrum_image(si, folder / "si.zarr")


def test_a_run_opens_in_xarray_with_labelled_coordinates(run_path: Path) -> None:
    run, ds = read_run(run_path), run_dataset(run_path)
    assert ds["spectra"].dims == ("measurement", "energy_loss") and ds.sizes["measurement"] == 12
    np.testing.assert_array_equal(ds["step"].values, run.columns["step"])
    np.testing.assert_array_equal(ds["x"].values, run.positions[:, 0])
    assert ds["x"].attrs["units"] == ds["y"].attrs["units"] == "nm" and ds["energy_loss"].attrs["units"] == "eV"
    assert np.issubdtype(ds["time"].dtype, np.datetime64) and set(ds["policy"].values) == {"random"}
    np.testing.assert_array_equal(ds["spectra"].sel(measurement=5).values, run.spectra[5])
    image = ds["image_haadf"]
    assert image.dims == ("image_y", "image_x") and image["image_x"].attrs["units"] == "nm"
    np.testing.assert_allclose(image["image_x"].values, run.images["haadf"].coords()[1])
    assert ds.attrs["config_toml"].startswith("[stop]")


def test_hyperspy_round_trip_keeps_the_axes_the_positions_and_the_image(run_path: Path, tmp_path: Path) -> None:
    run = read_run(run_path)
    written = export(run_path, "hspy", tmp_path / "run.hspy")
    assert [p.name for p in written] == ["run.hspy", "run_haadf.hspy"]
    (signal,) = file_reader(str(written[0]))
    np.testing.assert_array_equal(signal["data"], run.spectra)
    nav, energy = signal["axes"]
    assert nav["name"] == "measurement" and nav["navigate"] and not energy["navigate"]
    assert energy["units"] == "eV" and energy["size"] == 32
    np.testing.assert_allclose(energy["offset"] + energy["scale"] * np.arange(32), run.spectral_values)
    np.testing.assert_array_equal(signal["original_metadata"]["x (nm)"], run.positions[:, 0])
    assert signal["metadata"]["Signal"]["signal_type"] == "EELS"
    (image,) = file_reader(str(written[1]))
    _, x_axis = image["axes"]
    assert image["data"].shape == (48, 48) and x_axis["units"] == "nm"
    np.testing.assert_allclose(x_axis["offset"] + x_axis["scale"] * np.arange(48), run.images["haadf"].coords()[1])


def test_nexus_holds_nxdata_with_axes_and_units(run_path: Path, tmp_path: Path) -> None:
    run = read_run(run_path)
    (path,) = export(run_path, "nxs", tmp_path / "run.nxs")
    with h5py.File(path) as f:
        data = f["entry/spectra"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "spectra"
        assert list(data.attrs["axes"]) == ["measurement", "energy_loss"]
        np.testing.assert_array_equal(data["spectra"][()], run.spectra)
        np.testing.assert_allclose(data["energy_loss"][()], run.spectral_values)
        assert data["energy_loss"].attrs["units"] == "eV" and data["x"].attrs["units"] == "nm"
        np.testing.assert_array_equal(data["y"][()], run.positions[:, 1])
        image = f["entry/image_haadf"]
        assert list(image.attrs["axes"]) == ["y", "x"] and image["data"].shape == (48, 48)
        assert json.loads(f["entry/notes/operator_actions"][()])[0]["who"] == "alice"


def test_csv_has_one_row_per_spectrum_with_units_in_the_header(run_path: Path, tmp_path: Path) -> None:
    run = read_run(run_path)
    (path,) = export(run_path, "csv", tmp_path / "run.csv")
    with path.open() as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["step", "x (nm)", "y (nm)"] and header[-1].endswith(" eV") and len(body) == 12
    assert header[5] == "acquisition_value" and len(header) == 6 + 32
    np.testing.assert_allclose(np.array([r[6:] for r in body], dtype=float), run.spectra, rtol=1e-6)
    assert [r[4] for r in body] == ["random"] * 12


def test_an_imported_spectrum_image_keeps_its_y_x_channel_shape(cube_path: Path, tmp_path: Path) -> None:
    ds = run_dataset(cube_path)
    assert ds["spectra"].dims == ("y", "x", "energy_loss") and ds["spectra"].shape == (4, 5, 16)
    np.testing.assert_allclose(ds["x"].values, 10.0 + 2.0 * np.arange(5))
    written = export(cube_path, "hspy", tmp_path / "si.hspy")
    (signal,) = file_reader(str(written[0]))
    assert signal["data"].shape == (4, 5, 16)
    assert [(a["name"], a["units"], a["navigate"]) for a in signal["axes"]] == [
        ("y", "nm", True), ("x", "nm", True), ("energy_loss", "eV", False),
    ]  # fmt: skip
    np.testing.assert_allclose(signal["axes"][1]["offset"], 10.0)
    np.testing.assert_allclose(signal["data"], ds["spectra"].values)
    (nexus,) = export(cube_path, "nxs", tmp_path / "si.nxs")
    with h5py.File(nexus) as f:
        assert f["entry/spectra/spectra"].shape == (4, 5, 16) and list(f["entry/spectra"].attrs["axes"]) == [
            "y", "x", "energy_loss",
        ]  # fmt: skip


def test_bad_formats_and_existing_files_are_refused(run_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown export format 'tiff'"):
        export(run_path, "tiff", tmp_path / "x.tiff")
    (tmp_path / "taken.csv").write_text("")
    with pytest.raises(ConfigError, match="exists"):
        export(run_path, "csv", tmp_path / "taken.csv")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env_cmd = [sys.executable, "-m", "engine.cli.main", *args]
    return subprocess.run(env_cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_export_and_inspect_from_the_command_line(run_path: Path, tmp_path: Path) -> None:
    result = _cli("export", str(run_path), "--to", "nxs", "--out", str(tmp_path / "cli.nxs"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli.nxs").is_file() and "Wrote" in result.stdout
    bad = _cli("export", str(run_path), "--to", "tiff")
    assert bad.returncode == 2 and "choose from hspy, nxs, csv" in bad.stderr and "Traceback" not in bad.stderr
    shown = _cli("inspect", str(run_path), "--json")
    summary = json.loads(shown.stdout)
    assert summary["operator_actions"][0]["who"] == "alice" and summary["resumes"][0]["from_step"] == 7
    table = _cli("inspect", str(run_path))
    assert "pause by alice" in table.stdout and "from step 7" in table.stdout
