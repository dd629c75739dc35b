"""Surrogates: shapes, determinism, rollback on a poisoned batch, calibration, checkpoints, invariance."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.io import load_surrogate, save_surrogate
from engine.surrogate import CheckpointError, PairedData, Surrogate, SurrogateConfig, extract_patches
from simulators.darkfield import DarkFieldOptions, darkfield_batch

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def darkfield() -> PairedData:
    options = DarkFieldOptions(patch_pixels=16, n_channels=48, patch_nm=300, max_particles=3)
    batch = darkfield_batch(240, options, np.random.default_rng(0))
    return PairedData.paired(batch.images, batch.spectra, batch.labels)


def _model(kind: str = "dualvae", seed: int = 0, **kw: object) -> Surrogate:
    return Surrogate(SurrogateConfig(kind=kind, batch_size=32, samples=8, **kw), 16, 48, device=CPU, seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["dualvae", "im2spec", "spec2im"])
def test_shapes_of_every_prediction(kind: str, darkfield: PairedData) -> None:
    model = _model(kind)
    report = model.fit(darkfield, 20)
    assert report.steps == 20 and len(report.losses) == 20 and not report.rolled_back and report.version == 1
    x = darkfield.subset(np.arange(5))
    if kind != "spec2im":
        mean, std = model.predict_spectra(x.patches)
        assert mean.shape == std.shape == (5, 48) and np.all(std > 0)
        assert model.image_latent(x.patches).shape == (5, 8)
    else:
        with pytest.raises(ValueError, match="cannot do im2spec"):
            model.predict_spectra(x.patches)
    if kind != "im2spec":
        pm, ps = model.predict_patches(x.spectra)
        assert pm.shape == ps.shape == (5, 16, 16)
        assert model.spectrum_latent(x.spectra).shape == (5, 8)
    patches, spectra = model.decode_latent(np.zeros((3, 8)))
    assert patches.shape == (3, 16, 16) and spectra.shape == (3, 48)


def test_seeded_training_is_deterministic_on_cpu(darkfield: PairedData) -> None:
    a, b, c = _model(seed=3), _model(seed=3), _model(seed=4)
    la, lb, lc = a.fit(darkfield, 15).losses, b.fit(darkfield, 15).losses, c.fit(darkfield, 15).losses
    assert la == lb and la != lc
    np.testing.assert_array_equal(a.image_latent(darkfield.patches[:4]), b.image_latent(darkfield.patches[:4]))


def test_learning_reduces_the_loss_and_predicts(darkfield: PairedData) -> None:
    train, test = darkfield.split(0.25, np.random.default_rng(0))
    model = _model("im2spec")
    report = model.fit(train, 300)
    assert np.mean(report.losses[-20:]) < np.mean(report.losses[:20])
    mean, _ = model.predict_spectra(test.patches)
    y = test.spectra
    r2 = 1 - ((y - mean) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum()
    assert r2 > 0.5


def test_update_warm_starts_and_is_bounded(darkfield: PairedData) -> None:
    model = _model()
    with pytest.raises(ValueError, match="fit"):
        model.update(darkfield)
    model.fit(darkfield, 10)
    before = [p.detach().clone() for p in model.net.parameters()]
    report = model.update(darkfield.subset(np.arange(60)), max_steps=5)
    assert report.steps == 5 and report.version == 2 and not report.rolled_back
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(before, model.net.parameters(), strict=True))
    timed = model.update(darkfield, max_steps=10_000, max_seconds=0.2)
    # the limit is checked after each step (how long a step takes is the machine's business, not this test's)
    assert timed.steps < 10_000 and "time limit" in timed.reason


def test_a_poisoned_batch_rolls_back_to_the_last_good_weights(darkfield: PairedData) -> None:
    model = _model()
    model.fit(darkfield, 10)
    good = {k: v.clone() for k, v in model.net.state_dict().items()}
    poisoned = PairedData(
        darkfield.patches.copy(),
        darkfield.spectra * 1e30,
        darkfield.has_spectrum.copy(),
        darkfield.labels,  # overflows to inf
    )
    report = model.update(poisoned, max_steps=5)
    assert report.rolled_back and "non-finite" in report.reason and report.version == 1
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, good[k]), k
    assert not model.update(darkfield, max_steps=2).rolled_back


def test_nan_input_is_refused_with_a_clear_error(darkfield: PairedData) -> None:
    spectra = darkfield.spectra.copy()
    spectra[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PairedData.paired(darkfield.patches, spectra)


def test_calibration_fitted_on_some_pairs_holds_on_others(darkfield: PairedData) -> None:
    """Calibrated on one half of the held-out pairs, judged on the other (on its own half it is 0.9 by construction)."""
    train, test = darkfield.split(0.4, np.random.default_rng(1))
    calibrate_on, judge_on = test.subset(np.arange(0, len(test), 2)), test.subset(np.arange(1, len(test), 2))
    model = _model("im2spec")
    model.fit(train, 150)
    before = model.coverage(judge_on)
    factor = model.calibrate(calibrate_on)
    after = model.coverage(judge_on)
    assert factor > 0 and factor != 1.0
    assert abs(after - 0.9) < abs(before - 0.9) and after == pytest.approx(0.9, abs=0.05), (before, after)


def test_image_only_rows_still_train_the_image_branch(darkfield: PairedData) -> None:
    mask = np.zeros(len(darkfield), bool)
    mask[:20] = True
    partial = PairedData(darkfield.patches, np.where(mask[:, None], darkfield.spectra, 0), mask, darkfield.labels)
    model = _model()
    report = model.fit(partial, 30)
    assert "image" in report.terms and not report.rolled_back


def test_checkpoint_round_trip(tmp_path: Path, darkfield: PairedData) -> None:
    model = _model()
    model.fit(darkfield, 10)
    model.calibrate(darkfield)
    save_surrogate(model, tmp_path / "ckpt")
    loaded = load_surrogate(tmp_path / "ckpt", CPU)
    assert loaded.version == model.version and loaded.sigma_scale == model.sigma_scale
    np.testing.assert_allclose(
        loaded.image_latent(darkfield.patches[:5]), model.image_latent(darkfield.patches[:5]), rtol=1e-6
    )
    meta = json.loads((tmp_path / "ckpt" / "surrogate.json").read_text())
    meta["format"] = 99
    (tmp_path / "ckpt" / "surrogate.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format 99"):
        load_surrogate(tmp_path / "ckpt", CPU)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_surrogate(tmp_path / "nothing", CPU)


def test_invariant_decoder_is_rotation_aware() -> None:
    model = _model(invariant=True)
    z = torch.zeros(1, 8)
    decoder = model.net.image_decoder
    plain = decoder(z, torch.zeros(1, 3))
    rotated = decoder(z, torch.tensor([[math.pi / 2, 0.0, 0.0]]))
    # a quarter turn of the coordinate grid is a quarter turn of the decoded patch
    np.testing.assert_allclose(rotated[0].detach().numpy(), np.rot90(plain[0].detach().numpy(), k=1), atol=1e-5)


def test_invariant_model_trains(darkfield: PairedData) -> None:
    model = _model(invariant=True)
    assert not model.fit(darkfield, 10).rolled_back


def test_extract_patches_centres_and_edges() -> None:
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    patches = extract_patches(image, np.array([[5, 5], [0, 0]]), 4)
    assert patches.shape == (2, 4, 4)
    assert patches[0, 2, 2] == image[5, 5]
    assert patches[1, 2, 2] == image[0, 0]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    import subprocess

    env = {**os.environ, "COLUMNS": "200"}
    root = Path(__file__).resolve().parents[3]
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args], cwd=root, capture_output=True, text=True, timeout=300, env=env
    )


def test_train_cli_on_a_simulated_dataset(tmp_path: Path) -> None:
    data = tmp_path / "df.zarr"
    made = _cli(
        "simulate", "darkfield", "--n", "80", "--out", str(data), "-o", "patch_pixels=16", "-o", "n_channels=32"
    )
    assert made.returncode == 0, made.stderr
    result = _cli("train", str(data), "--steps", "30", "--patch", "16", "--out", str(tmp_path / "ckpt"))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("weights.pt", "surrogate.json", "latent.png", "latent_grid.png", "predictions.png", "metrics.json"):
        assert (tmp_path / "ckpt" / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "ckpt" / "metrics.json").read_text())
    assert {"im2spec_r2", "coverage90_before", "coverage90_after", "spec2im_mse"} <= metrics.keys()
    assert load_surrogate(tmp_path / "ckpt", CPU).config.kind == "dualvae"
    bad = _cli("train", str(data), "--model", "vae", "--steps", "1", "--patch", "16")
    assert bad.returncode == 2 and "unknown surrogate kind 'vae'" in bad.stderr


def test_train_cli_on_a_run(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[run]\nname = "r"\noutput_dir = "{tmp_path}"\nfigure = false\n[instrument]\nmode = "local"\n'
        "[instrument.options]\nimage_pixels = 64\nn_channels = 32\nacquisition_time_s = 0.0\n"
        '[candidates]\nstride_px = 4\n[policy]\nname = "random"\n[stop]\nbudget = 60\n'
    )
    assert _cli("run", str(cfg)).returncode == 0
    run = next(tmp_path.glob("r-*.zarr"))
    result = _cli(
        "train", str(run), "--model", "im2spec", "--steps", "20", "--patch", "16", "--out", str(tmp_path / "m")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["pairs"] > 60  # unmeasured patches included


def test_a_spectrum_image_is_split_by_whole_tiles() -> None:
    """No held-out patch has a training patch in the same tile: neighbours 3 px apart stay on one side."""
    xs, ys = np.meshgrid(np.arange(0.0, 60.0, 3.0), np.arange(0.0, 60.0, 3.0))
    positions = np.column_stack([xs.ravel(), ys.ravel()])
    n = len(positions)
    data = PairedData.paired(np.zeros((n, 8, 8)), np.ones((n, 4)), positions=positions)
    train, held = data.split(0.2, np.random.default_rng(0))
    assert train.positions is not None and held.positions is not None
    tile = lambda p: (np.floor(p / 60.0 * 5).clip(0, 4) @ np.array([1, 5])).astype(int)  # noqa: E731
    assert not set(tile(train.positions)) & set(tile(held.positions))
    assert 0.16 <= len(held) / n <= 0.32  # whole tiles: the fraction is reached tile by tile
    independent = PairedData.paired(np.zeros((n, 8, 8)), np.ones((n, 4)))  # no positions: rows at random
    assert len(independent.split(0.2, np.random.default_rng(0))[1]) == round(0.2 * n)
