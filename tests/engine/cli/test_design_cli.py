"""``dualscope design`` end to end (threads, Dask LocalCluster, server pool, latent space) and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from engine.design import load_target_file, parse_design_config, peak_target
from engine.errors import ConfigError
from engine.io import save_surrogate
from engine.storage import check_run, read_run
from engine.surrogate import PairedData, Surrogate, SurrogateConfig
from simulators.darkfield import ClusterSample, DarkFieldOptions, darkfield_batch, sem_patch
from simulators.particles import detect_spheres

ROOT = Path(__file__).resolve().parents[3]

BASE = """
[run]
output_dir = "{out}"
seed = 1
[target]
kind = "structure"
rel_tol = 0.25
structure = {{ arrangement = "chain", n = 2, radius_nm = 20.0, gap_nm = 5.0, material = "Au" }}
[space]
pool = 512
[simulator]
materials = ["Au"]
n_max = 3
channels = 40
energy_min_ev = 1.6
energy_max_ev = 2.8
[optimiser]
initial = 4
[executor]
kind = "threads"
workers = 2
[stop]
budget = 12
"""


def _design(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "engine.cli.main", "design", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _config(tmp_path: Path, extra: str = "", base: str = BASE) -> Path:
    path = tmp_path / "design.toml"
    path.write_text(base.format(out=tmp_path / "runs") + extra)
    return path


def _run(tmp_path: Path) -> Path:
    (run,) = sorted((tmp_path / "runs").glob("*.zarr"))
    return run


def test_help_explains_the_design_command() -> None:
    result = _design("--help")
    assert result.returncode == 0 and "--scheduler" in result.stdout and "differential" in result.stdout


def test_design_with_threads_runs_bo_and_both_baselines_into_one_run(tmp_path: Path) -> None:
    result = _design(str(_config(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(_run(tmp_path))
    assert run.policy_names == ["design-bo", "random", "differential-evolution"]
    assert run.n == 36 and run.positions.shape == (36, 6) and run.spectra.shape == (36, 40)
    searches = run.attrs["outcome"]["searches"]
    assert [s["evaluations"] for s in searches] == [12, 12, 12]
    assert all(-1 <= s["best_score"] <= 0 for s in searches)  # −relative L2
    assert run.attrs["design"]["target_spectrum"] is not None
    _, integrity = check_run(_run(tmp_path))  # DE rows are outside the pool (candidate index -1)
    assert integrity.ok, integrity.problems
    assert _run(tmp_path).with_suffix(".png").stat().st_size > 10_000
    assert "calls to target" in result.stdout


def test_design_on_a_dask_local_cluster(tmp_path: Path) -> None:
    config = _config(tmp_path)
    text = config.read_text().replace("initial = 4", 'initial = 4\nbaselines = ["random"]')
    config.write_text(text)
    result = _design(str(config), "--executor", "dask", "--workers", "2", "--budget", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(_run(tmp_path))
    assert run.policy_names == ["design-bo", "random"] and run.n == 12
    assert "dask" in result.stdout


def test_design_on_a_pool_of_simulator_servers(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config.write_text(config.read_text().replace("initial = 4", "initial = 4\nbaselines = []"))
    result = _design(str(config), "--executor", "servers", "--workers", "2", "--budget", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_run(_run(tmp_path)).n == 6


def test_particle_detection_finds_the_spheres_of_an_sem_patch() -> None:
    options = DarkFieldOptions(patch_pixels=64, patch_nm=400.0, sem_dose_counts=400.0)
    sample = ClusterSample(np.array([[-45.0, 0.0, 0.0], [45.0, 10.0, 0.0]]), np.array([35.0, 30.0]))
    patch = sem_patch(sample, options, np.random.default_rng(0))
    centres, radii = detect_spheres(patch, 400.0 / 64)
    assert radii.size == 2
    np.testing.assert_allclose(np.sort(radii), [30.0, 35.0], atol=7.0)
    separation = np.linalg.norm(centres[0] - centres[1])
    assert abs(separation - np.hypot(90, 10)) < 10 and separation >= radii.sum()  # no overlap
    blank = detect_spheres(np.full((64, 64), 5.0), 6.25)
    assert blank[1].size == 0


def test_design_in_the_latent_space_of_a_trained_structure_vae(tmp_path: Path) -> None:
    options = DarkFieldOptions(patch_pixels=32, patch_nm=400.0, n_channels=40, max_particles=3)
    batch = darkfield_batch(300, options, np.random.default_rng(0))
    model = Surrogate(
        SurrogateConfig(kind="dualvae", latent=3, batch_size=32), 32, 40, device=torch.device("cpu"), seed=0
    )
    model.fit(PairedData.paired(batch.images, batch.spectra, batch.labels), 150)
    save_surrogate(model, tmp_path / "vae")
    config = _config(tmp_path)
    text = (
        config.read_text()
        .replace("[space]\npool = 512", f'[space]\nkind = "latent"\npool = 256\ncheckpoint = "{tmp_path / "vae"}"\n'
                 'pixel_nm = 12.5\nlatent_span = 1.5')
        .replace('kind = "threads"', 'kind = "inline"')
        .replace("n_max = 3", "n_medium = 1.25")
    )  # fmt: skip
    config.write_text(text)
    result = _design(str(config), "--budget", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(_run(tmp_path))
    assert run.positions.shape[1] == 3 and run.n == 18  # designs are latent coordinates
    group = zarr.open_group(_run(tmp_path), mode="r")
    payload = np.asarray(group["candidate_payload"][:], dtype=float)  # the spheres each candidate decodes to
    assert payload.shape[0] == run.candidate_positions.shape[0] and np.isfinite(payload).any(axis=1).all()
    assert "spheres" in result.stdout


def test_bad_configurations_say_what_is_wrong(tmp_path: Path) -> None:
    result = _design(str(_config(tmp_path, "\n[bogus]\nx = 1\n")))
    assert result.returncode == 2 and "bogus: unknown key" in result.stderr
    bad = _config(tmp_path).read_text().replace("channels = 40", "channels = 40\nradius_max_nm = 1.0")
    (tmp_path / "bad.toml").write_text(bad)
    result = _design(str(tmp_path / "bad.toml"))
    assert result.returncode == 2 and "radius" in result.stderr and "below the minimum" in result.stderr
    with pytest.raises(ConfigError, match="ucb_beta"):
        parse_design_config("[optimiser]\nucb_beta = 0\n")
    energy = np.linspace(1.6, 2.8, 40)
    with pytest.raises(ConfigError, match="outside the simulated range"):
        peak_target(energy, 3.5, 0.1)
    (tmp_path / "t.csv").write_text("# eV, nm2\n1.8,1\n2.0,3\n2.2,1\n")
    with pytest.raises(ConfigError, match=r"covers 1\.8-2\.2 eV"):
        load_target_file(tmp_path / "t.csv", energy, fit_scale=True)
    np.save(tmp_path / "t.npy", np.column_stack([energy, np.exp(-(((energy - 2.1) / 0.1) ** 2))]))
    target = load_target_file(tmp_path / "t.npy", energy, fit_scale=True)
    assert target.reached(3.0 * target.spectrum)[0] and abs(target.peak_ev(target.spectrum)[0] - 2.1) < 0.01
    assert json.dumps(target.label)
