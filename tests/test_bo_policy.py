"""The gp-position policy and the acquisition layer: invariants, determinism, a run over ZeroMQ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.acquisition import ACQUISITIONS, choose, ucb_beta
from engine.bo_policy import GPPositionPolicy
from engine.candidates import CandidateSet
from engine.scalarisers import BandIntegral
from engine.storage import read_run

ROOT = Path(__file__).parent.parent
GRID = np.stack(np.meshgrid(np.linspace(0, 1, 20), np.linspace(0, 1, 20)), -1).reshape(-1, 2)
TRUTH = -((GRID[:, 0] - 0.7) ** 2 + (GRID[:, 1] - 0.3) ** 2)


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_choices_are_unique_available_and_avoid_pending(acquisition: str) -> None:
    measured = np.arange(0, 400, 37)
    pending = np.array([5, 6, 7])
    available = np.setdiff1d(np.arange(400), np.r_[measured, pending])
    c = choose(GRID[measured], TRUTH[measured], GRID, available, pending, 5, acquisition, seed=1, step=11)
    assert len(set(c.indices.tolist())) == 5
    assert set(c.indices.tolist()) <= set(available.tolist())
    assert c.values.shape == (5,) and np.all(np.isfinite(c.values)) and c.runner_up_values.size == 5
    again = choose(GRID[measured], TRUTH[measured], GRID, available, pending, 5, acquisition, seed=1, step=11)
    np.testing.assert_array_equal(c.indices, again.indices)  # seeded


def test_ucb_schedule_grows_slowly() -> None:
    assert ucb_beta(1, 400) < ucb_beta(100, 400) < 2 * ucb_beta(1, 400) + 5


def _policy(acquisition: str = "log-ei") -> GPPositionPolicy:
    axis = np.linspace(0, 1, 4)
    return GPPositionPolicy(BandIntegral(0, 1), axis, acquisition, np.random.default_rng(0), initial=4)


def test_policy_campaign_never_repeats_and_finds_the_maximum() -> None:
    cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    policy = _policy()
    seen: list[int] = []
    for _ in range(25):
        p = policy.propose(cands, 1)
        idx = p.indices
        assert not set(idx.tolist()) & set(seen)
        cands.mark_pending(idx)
        cands.mark_measured(idx)
        seen += idx.tolist()
        spectra = np.repeat(TRUTH[idx, None] + 1.0, 4, axis=1).astype(np.float32)  # band integral ∝ truth
        policy.tell(idx, spectra)
    assert int(np.argmax(TRUTH)) in seen or TRUTH[seen].max() > TRUTH.max() - 0.01
    assert policy.version == 25 - 4  # one model per decision after the random start
    assert p.model_version == policy.version and p.runner_up_values.size > 0


def test_batch_respects_pending_marks() -> None:
    cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    policy = _policy("thompson")
    first = policy.propose(cands, 4)
    cands.mark_pending(first.indices)
    policy.tell(first.indices, np.ones((4, 4), np.float32))  # values known...
    second = policy.propose(cands, 4)
    assert not set(first.indices.tolist()) & set(second.indices.tolist())  # ...but still pending: never re-proposed


def test_unknown_acquisition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown acquisition 'pi'"):
        GPPositionPolicy(BandIntegral(0, 1), np.zeros(3), "pi", np.random.default_rng(0))


def test_gp_position_campaign_over_zeromq(tmp_path: Path) -> None:
    cfg = tmp_path / "bo.toml"
    cfg.write_text(
        f'[run]\nname = "bo"\noutput_dir = "{tmp_path}"\n[instrument]\nmode = "spawn"\ndriver = "stem-twin"\n'
        "[instrument.options]\nfield_of_view_nm = 60.0\nn_channels = 120\nacquisition_time_s = 0.001\n"
        '[candidates]\nstride_px = 8\n[policy]\nname = "gp-position"\nacquisition = "ucb"\ninitial = 4\n'
        '[policy.scalariser]\nkind = "band"\nlow = 0.5\nhigh = 1.0\n[stop]\nbudget = 15\n'
    )
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "run", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(next(tmp_path.glob("bo-*.zarr")))
    assert run.n == 15 and run.policy_names == ["gp-position"]
    assert len(set(run.columns["candidate_index"].tolist())) == 15
    mv = run.columns["model_version"]
    assert np.all(mv[:4] == -1) and np.all(np.diff(mv[4:]) == 1)  # model versions monotone
    assert np.all(np.isfinite(run.columns["acquisition_value"][4:]))


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


def test_dualvae_bo_campaign_over_zeromq(tmp_path: Path) -> None:
    cfg = tmp_path / "dv.toml"
    cfg.write_text(
        f'[run]\nname = "dv"\noutput_dir = "{tmp_path}"\n[instrument]\nmode = "spawn"\ndriver = "stem-twin"\n'
        "[instrument.options]\nfield_of_view_nm = 60.0\nn_channels = 64\nacquisition_time_s = 0.001\n"
        '[candidates]\nstride_px = 8\n[policy]\nname = "dualvae-bo"\nacquisition = "log-ei"\ninitial = 4\n'
        "pretrain_steps = 30\nupdate_steps = 3\npatch_px = 16\n"
        '[policy.scalariser]\nkind = "peak"\nlow = 0.4\nhigh = 1.2\n'
        "[stop]\nbudget = 12\n"
    )
    result = _run(tmp_path, "run", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(next(tmp_path.glob("dv-*.zarr")))
    assert run.n == 12 and run.policy_names == ["dualvae-bo"]
    assert len(set(run.columns["candidate_index"].tolist())) == 12
    mv = run.columns["model_version"]
    assert mv[0] == 1 and np.all(np.diff(mv) == 1)  # one surrogate version per update, monotone
    assert np.all(np.isfinite(run.columns["acquisition_value"][4:]))


def test_dualvae_bo_says_it_needs_a_structural_image(tmp_path: Path) -> None:
    data = ROOT.parent / "shared" / "data" / "BEPS_PTO_50x50.h5"
    result = _run(
        tmp_path, "replay", str(data), "--policy", "dualvae-bo", "--budget", "10", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert "needs" in result.stderr or "has none" in result.stderr
    assert "gp-position" in result.stderr
    assert not list(tmp_path.glob("*.zarr"))  # refused before any run was created
