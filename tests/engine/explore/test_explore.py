"""Exploratory analysis: band maps, PCA/NMF against the data, labelling on held-out labels, separated VAEs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.explore import band_map, dual_vs_separated, label_map, nmf, pca
from engine.surrogate import PairedData

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_band_map_with_power_law_background_recovers_the_edge() -> None:
    energy = np.linspace(100.0, 300.0, 401)
    amplitude = np.array([1e7, 3e7, 5e7])
    edge = np.array([0.0, 50.0, 200.0])  # signal per channel above 200 eV
    spectra = amplitude[:, None] * energy[None, :] ** -3.0 + edge[:, None] * (energy[None, :] >= 200.0)
    band = (200.0, 250.0)
    n_band = int(((energy >= 200) & (energy <= 250)).sum())
    values = band_map(spectra, energy, band, background_window=(150.0, 195.0))
    np.testing.assert_allclose(values, edge * n_band, atol=1e-6 * spectra.max())
    raw = band_map(spectra, energy, band)
    assert np.all(raw > values)  # without background subtraction the tail is counted too
    with pytest.raises(ValueError, match="holds no channel"):
        band_map(spectra, energy, (500.0, 600.0))


def test_pca_reconstruction_error_matches_the_discarded_singular_values() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 40)) + 0.01 * rng.normal(size=(200, 40)) + 3.0
    centred = x - x.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    for k in (1, 3, 5):
        d = pca(x, n_components=k)
        expected = np.sqrt((s[k:] ** 2).sum()) / np.linalg.norm(x)
        assert d.reconstruction_error == pytest.approx(expected, rel=1e-6)
        assert d.components.shape == (k, 40) and d.weights.shape == (200, k)
    assert pca(x, variance=0.999).components.shape[0] == 5  # five real factors explain it


def test_nmf_is_non_negative_and_its_error_is_against_the_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((150, 3)) @ rng.random((3, 30))
    d = nmf(x, 3)
    assert d.components.min() >= 0 and d.weights.min() >= 0
    assert d.reconstruction_error == pytest.approx(np.linalg.norm(x - d.weights @ d.components) / np.linalg.norm(x))
    assert d.reconstruction_error < 0.05
    shifted = nmf(x - 0.5, 3)
    assert "negative values" in shifted.notes[0]


def test_labelling_accuracy_uses_held_out_labels_only() -> None:
    rng = np.random.default_rng(2)
    patches = rng.normal(size=(300, 8, 8)).astype(np.float32)
    truth = (patches[:, :4].mean(axis=(1, 2)) > 0).astype(np.int64)
    patches[truth == 1, :4] += 1.0
    labelled = rng.choice(300, size=40, replace=False)
    result = label_map(patches, labelled, truth[labelled], holdout=0.25, seed=0)
    assert set(result.train_index).isdisjoint(result.test_index)
    assert set(result.train_index) | set(result.test_index) == set(labelled.tolist())
    assert result.test_index.size == 10
    manual = float(np.mean(result.predicted[result.test_index] == truth[result.test_index]))
    assert result.held_out_accuracy == pytest.approx(manual)
    assert result.held_out_accuracy >= 0.8
    # two identical patches with different labels are reported as ambiguous
    patches[labelled[1]] = patches[labelled[0]]
    flipped = truth[labelled].copy()
    flipped[1] = 1 - flipped[0]
    assert (int(labelled[0]), int(labelled[1])) in label_map(patches, labelled, flipped).ambiguous


def test_separated_vaes_share_the_dual_vaes_split() -> None:
    rng = np.random.default_rng(3)
    patches = rng.random((120, 8, 8)).astype(np.float32)
    spectra = (patches.mean(axis=(1, 2))[:, None] * np.linspace(1, 2, 16)[None, :] * 100).astype(np.float32)
    data = PairedData.paired(patches, spectra)
    a = dual_vs_separated(data, holdout=0.25, steps=60, seed=4)
    b = dual_vs_separated(data, holdout=0.25, steps=60, seed=4)
    np.testing.assert_array_equal(a.train_index, b.train_index)
    assert set(a.train_index).isdisjoint(a.test_index) and a.test_index.size == 30
    assert a.dual_r2 == b.dual_r2 and a.separated_r2 == b.separated_r2  # seeded


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.mark.parametrize("source", ["fei_emd_si.emd", "BEPS_PTO_50x50.h5", "stem-twin"])
def test_explore_cli_runs_every_method(tmp_path: Path, source: str) -> None:
    if source == "stem-twin":
        path = tmp_path / "stem.zarr"
        made = _cli("simulate", "stem", "--out", str(path), "--stride", "8", "-o", "n_channels=120", cwd=ROOT)
        assert made.returncode == 0, made.stderr
    else:
        path = DATA / source
    labels = tmp_path / "labels.csv"
    labels.write_text("index,label\n" + "".join(f"{i},{(i // 7) % 2}\n" for i in range(0, 60, 3)))
    out = tmp_path / "out"
    result = _cli("explore", str(path), "--steps", "40", "--labels", str(labels), "--out", str(out), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    page = (out / "explore.html").read_text()
    for heading in ("Band map", "PCA", "NMF", "Spectral VAE labels", "Labelling", "Dual VAE vs separated VAEs"):
        assert f"<h2>{heading}</h2>" in page
    import zarr

    group = zarr.open_group(out / "results.zarr", mode="r")
    assert {"band_map", "pca_components", "nmf_weights", "vae_labels", "label_predicted", "split_test_index"} <= set(
        group.array_keys()
    )


def test_run_exploration_lands_in_the_run_report(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert (
        _cli("replay", str(DATA / "BEPS_PTO_50x50.h5"), "--budget", "40", "--output-dir", str(out), cwd=ROOT).returncode
        == 0
    )
    run = next(out.glob("*.zarr"))
    explored = _cli("explore", str(run), "-m", "pca", "-m", "band", cwd=ROOT)
    assert explored.returncode == 0, explored.stderr
    assert (run.with_suffix(".explore") / "explore.html").exists()
    assert _cli("report", str(run), "--train-steps", "0", cwd=ROOT).returncode == 0
    page = run.with_suffix(".html").read_text()
    assert "<h2>Exploration: PCA</h2>" in page and "<h2>Exploration: Band map</h2>" in page
    bad = _cli("explore", str(run), "-m", "tsne", cwd=ROOT)
    assert bad.returncode == 2 and "unknown method" in bad.stderr
