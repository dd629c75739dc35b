"""The STEM-EELS twin, the dark-field twin and its dataset generator, and the fault injectors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from engine.clock import SystemClock
from engine.errors import DeviceFault, InvalidSpectrum
from engine.types import SpectralAxis
from instruments.client import ZmqInstrument
from instruments.local import LocalInstrument
from instruments.testing import positions_in
from simulators.cda import Cluster, EelsModel
from simulators.darkfield import DarkFieldOptions, darkfield_batch, darkfield_twin, spectral_axis
from simulators.darkfield_dataset import write_darkfield_dataset
from simulators.dielectric import ito
from simulators.faults import DriverFaults, FaultyDriver, FaultyProxy, TransportFaults
from simulators.monolayer import generate_monolayer
from simulators.stem_twin import StemTwinOptions, stem_twin, twin_specimen
from tests.conftest import CountingDriver

ROOT = Path(__file__).resolve().parents[2]
SMALL_TWIN = StemTwinOptions(field_of_view_nm=60.0, n_channels=120, image_pixels=64, acquisition_time_s=0.0, seed=3)


def test_monolayer_has_island_edge_dimers_chains_and_no_overlaps() -> None:
    layer = generate_monolayer(
        np.random.default_rng(1),
        field_of_view_nm=120,
        mean_radius_nm=5,
        radius_spread=0.08,
        gap_nm=1.5,
        island_fraction=0.55,
        vacancy_fraction=0.1,
        n_dimers=3,
        n_chains=2,
    )
    c, r = layer.centres_nm, layer.radii_nm
    gaps = np.linalg.norm(c[:, None] - c[None], axis=-1) - r[:, None] - r[None]
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() >= 0.5 - 1e-9
    assert set(np.unique(layer.kind)) == {0, 1, 2, 3}
    assert np.all(c - r[:, None] >= 0) and np.all(c + r[:, None] <= 120)


def test_stem_twin_spectra_are_the_cda_on_demand() -> None:
    twin = stem_twin(SMALL_TWIN.model_copy(update={"acquisition_time_s": 0.01}), SystemClock())
    desc = twin.describe()
    assert desc.name == "dualscope-stem-twin" and desc.spectral_axis.units == "eV"
    layer, sn = twin_specimen(SMALL_TWIN, np.random.default_rng(SMALL_TWIN.seed))
    assert desc.extra["particles"] == layer.radii_nm.size and sn.min() >= 0.03
    # noise-free model: the CDA loss at the probe (before resolution and counts) peaks where the CDA does
    cluster = Cluster(
        np.column_stack([layer.centres_nm, np.zeros(len(sn))]), layer.radii_nm, [ito(float(s)) for s in sn]
    )
    energy = SpectralAxis.from_json(desc.spectral_axis.to_json()).values()
    probe = layer.centres_nm[0] + np.array([layer.radii_nm[0] + 1.0, 0.0])
    direct = EelsModel(cluster, energy, dtype=np.float64).loss(probe[None])[0]
    twin_expected = twin.expected_counts(probe[None])[0]
    window = energy > 0.35  # away from the zero-loss tail
    assert abs(energy[window][np.argmax(direct[window])] - energy[window][np.argmax(twin_expected[window])]) < 0.03
    assert 0.4 < energy[window][np.argmax(direct[window])] < 1.0  # ITO mid-infrared plasmon


def test_stem_twin_is_seeded_and_noisy() -> None:
    a, b = (
        stem_twin(SMALL_TWIN.model_copy(update={"acquisition_time_s": 0.001}), SystemClock()),
        stem_twin(SMALL_TWIN.model_copy(update={"acquisition_time_s": 0.001}), SystemClock()),
    )
    pos = np.array([[20.0, 20.0], [45.0, 30.0]])
    np.testing.assert_array_equal(a.measure(pos).spectra, b.measure(pos).spectra)
    np.testing.assert_array_equal(a.acquire_image("haadf").data, b.acquire_image("haadf").data)
    s = a.measure(np.repeat(pos[:1], 50, axis=0)).spectra
    assert s.std(axis=0).max() > 0  # shot noise


def test_darkfield_batch_labels_and_physics() -> None:
    options = DarkFieldOptions(n_channels=120)
    batch = darkfield_batch(120, options, np.random.default_rng(0))
    assert set(np.unique(batch.labels)) == {1, 2, 3, 4}
    assert np.all(batch.labels == np.minimum(batch.n_particles, 4))
    assert np.all(np.isnan(batch.radii_nm) == (np.arange(options.max_particles)[None] >= batch.n_particles[:, None]))
    energy = spectral_axis(options).values()
    peak = energy[np.argmax(batch.cross_sections, axis=1)]
    assert peak[batch.labels == 1].mean() > peak[batch.labels == 4].mean() + 0.1  # coupled clusters are redder
    assert batch.images.shape == (120, 64, 64) and batch.images.max() > 0


def test_dataset_does_not_depend_on_workers(tmp_path: Path) -> None:
    options = DarkFieldOptions(n_channels=40, patch_pixels=24)
    a = write_darkfield_dataset(tmp_path / "a.zarr", 30, options, workers=1, block=8)
    b = write_darkfield_dataset(tmp_path / "b.zarr", 30, options, workers=2, block=8)
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    for name in ("images", "spectra", "labels", "radii_nm"):
        np.testing.assert_array_equal(ga[name][:], gb[name][:])
    assert ga["spectra"].shape == (30, 40) and ga.attrs["dualscope_dataset"]["n"] == 30
    with pytest.raises(FileExistsError):
        write_darkfield_dataset(a, 5, options)


def test_darkfield_twin_measures_the_cluster_under_the_spot() -> None:
    twin = darkfield_twin(DarkFieldOptions(grid=3, n_channels=60, acquisition_time_s=0.001), SystemClock())
    inst = LocalInstrument(twin)
    img = inst.acquire_image("sem")
    assert img.data.shape == (3 * 64, 3 * 64)
    on = inst.measure(np.array([[200.0, 200.0]])).spectra.sum()
    between = inst.measure(np.array([[400.0, 400.0]])).spectra.sum()  # a corner shared by four patches
    assert on > 5 * between


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.parametrize(
    ("driver", "channel", "options"),
    [
        ("stem-twin", "haadf", "field_of_view_nm = 60.0\nn_channels = 120\nacquisition_time_s = 0.001"),
        ("darkfield-twin", "sem", "grid = 3\nn_channels = 60\nacquisition_time_s = 0.001"),
    ],
)
def test_twins_drive_a_random_campaign_over_zeromq(tmp_path: Path, driver: str, channel: str, options: str) -> None:
    cfg = tmp_path / "twin.toml"
    cfg.write_text(
        f'[run]\nname = "{driver}"\noutput_dir = "{tmp_path}"\n[instrument]\nmode = "spawn"\ndriver = "{driver}"\n'
        f'image_channel = "{channel}"\n[instrument.options]\n{options}\n[candidates]\nstride_px = 8\n'
        '[policy]\nname = "random"\n[stop]\nbudget = 25\n'
    )
    result = _cli("run", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "25 spectra" in result.stdout
    run = next(tmp_path.glob(f"{driver}-*.zarr"))
    assert _cli("inspect", str(run)).returncode == 0


def test_simulate_darkfield_cli(tmp_path: Path) -> None:
    result = _cli("simulate", "darkfield", "--n", "20", "--out", str(tmp_path / "d.zarr"), "-o", "n_channels=32")
    assert result.returncode == 0, result.stderr
    assert zarr.open_group(tmp_path / "d.zarr", mode="r")["spectra"].shape == (20, 32)
    again = _cli("simulate", "darkfield", "--n", "5", "--out", str(tmp_path / "d.zarr"))
    assert again.returncode == 2 and "exists" in again.stderr


# ---- fault injection -----------------------------------------------------------------------------


def test_faulty_driver_nan_and_shape_and_errors(synthetic: Any) -> None:
    pos = positions_in(synthetic.describe(), 1)
    faulty = FaultyDriver(synthetic, np.random.default_rng(0), DriverFaults(nan_probability=1.0))
    inst = LocalInstrument(faulty)
    with pytest.raises(InvalidSpectrum, match="NaN"):
        inst.measure(pos).check(inst.describe().spectral_axis)
    faulty.faults = DriverFaults(wrong_shape_probability=1.0)
    with pytest.raises(DeviceFault, match="expected"):
        inst.measure(pos)
    faulty.faults = DriverFaults(error_probability=1.0)
    with pytest.raises(DeviceFault, match="injected"):
        inst.measure(pos)
    faulty.faults = DriverFaults()  # all off
    inst.measure(pos).check(inst.describe().spectral_axis)
    assert faulty.injected == {"stall": 0, "nan": 1, "wrong_shape": 1, "error": 1}


def test_dropped_duplicated_and_garbage_replies_never_lose_or_repeat_a_measurement(
    counting: CountingDriver, serve: Any, zmq_context: Any
) -> None:
    srv = serve(counting)
    faults = TransportFaults(drop_probability=0.3, duplicate_probability=0.3, garbage_probability=0.2)
    proxy = FaultyProxy(srv.endpoint, zmq_context, np.random.default_rng(4), faults)
    try:
        with ZmqInstrument(proxy.endpoint, zmq_context, timeout_s=0.2, retries=20) as client:
            pos = positions_in(counting.describe(), 30)
            for i in range(30):
                m = client.measure(pos[i : i + 1], request_id=f"m{i}")
                assert m.request_id == f"m{i}"
                np.testing.assert_allclose(m.positions, pos[i : i + 1])
    finally:
        proxy.close()
    assert counting.calls == 30, "every request measured exactly once"
    assert faults.counts["drop"] > 0 and faults.counts["duplicate"] > 0 and faults.counts["garbage"] > 0


def test_a_disconnect_is_survived_by_retries(counting: CountingDriver, serve: Any, zmq_context: Any) -> None:
    srv = serve(counting)
    faults = TransportFaults(disconnect_s=0.5, max_disconnects=1)
    proxy = FaultyProxy(srv.endpoint, zmq_context, np.random.default_rng(0), faults)
    try:
        with ZmqInstrument(proxy.endpoint, zmq_context, timeout_s=0.3, retries=5) as client:
            client.describe()
            faults.disconnect_probability = 1.0  # the next reply is lost and the link goes down for 0.5 s, once
            m = client.measure(positions_in(counting.describe(), 1), request_id="through-outage")
    finally:
        proxy.close()
    assert m.request_id == "through-outage" and faults.counts["disconnect"] == 1
    assert counting.calls == 1


def test_readme_figure_example_runs(tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    result = subprocess.run(
        [sys.executable, "examples/stem_twin_figure.py", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
