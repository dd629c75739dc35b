"""dualvae-spectral: decisions on scalarised predicted spectra, a residual GP, botorch's Monte-Carlo machinery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.config import PolicySection, ScalariserSection
from engine.errors import ConfigError
from engine.policy import (
    ACQUISITIONS,
    BandIntegral,
    BOPolicy,
    CandidatePosterior,
    InlineTrainer,
    PositionFeatures,
    PredictedScalars,
    SampledCandidates,
    ScalarBO,
    Scalariser,
    build_policy,
    fit_gp,
    make_policy,
    select_sampled,
)
from engine.storage import read_run
from engine.types import Image, ImageAxis, SpectralAxis
from tests.engine.policy.test_bo_policy import _run, _twin_campaign

GRID = np.stack(np.meshgrid(np.linspace(0, 1, 20), np.linspace(0, 1, 20)), -1).reshape(-1, 2)
STRUCTURE = np.random.default_rng(7).normal(size=400)
"""A property set by what each candidate *is*, not where it is: no smoothness in position at all."""
AXIS = np.linspace(0, 1, 4)


def _spectra(values: NDArray[np.float64]) -> NDArray[np.float32]:
    """Flat spectra ``(n, 4)`` whose band integral over the whole axis is ``values (n,)``."""
    per_unit = float(BandIntegral(0, 1)(np.ones((1, AXIS.size)), AXIS)[0])
    return np.repeat(np.asarray(values)[:, None] / per_unit, AXIS.size, axis=1).astype(np.float32)


def _residual(measured: NDArray[np.int64], y: NDArray[np.float64]) -> CandidatePosterior:
    x = torch.as_tensor(GRID)
    model, _ = fit_gp(x[measured], torch.as_tensor(y))
    return CandidatePosterior(model, x, measured, y)


class Predictor:
    """A stand-in for the dual VAE: predicted spectra whose band integral is ``values`` plus spread."""

    def __init__(self, values: NDArray[np.float64], spread: float = 0.3, seed: int = 0):
        self.values, self.spread, self.rng = values, spread, np.random.default_rng(seed)

    def scalar_draws(self, scalariser: Scalariser, axis: NDArray[np.float64], samples: int) -> NDArray[np.float64]:
        draws = self.values[None, :] + self.spread * self.rng.standard_normal((samples, self.values.size))
        return scalariser(_spectra(draws.reshape(-1)), axis).reshape(samples, -1)


def test_the_ensemble_is_the_prior_draws_plus_the_residual_posterior() -> None:
    measured = np.arange(0, 400, 37)
    residual = _residual(measured, np.sin(measured / 50.0))
    draws = np.random.default_rng(0).normal(size=(8, 400))
    model = SampledCandidates(PredictedScalars(draws), residual, np.zeros(400), seed=0)  # no residual spread
    np.testing.assert_allclose(model.members.numpy(), draws + residual.mean[None, :])
    post = model.posterior(torch.tensor([[[3.0], [5.0]]], dtype=torch.float64))  # one batch of q = 2
    assert post.values.shape == (1, 8, 2, 1)  # botorch's EnsemblePosterior: (b, s, q, m)
    np.testing.assert_allclose(post.values[0, :, :, 0].numpy(), (draws + residual.mean)[:, [3, 5]])
    spread = SampledCandidates(PredictedScalars(np.zeros((4000, 400))), residual, seed=1).members.std(0).numpy()
    np.testing.assert_allclose(spread, np.sqrt(residual.variance), rtol=0.1)  # σ_r ε carries the GP's spread


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_every_acquisition_runs_on_the_ensemble_and_avoids_pending(acquisition: str) -> None:
    measured = np.arange(0, 400, 41)
    residual = _residual(measured, STRUCTURE[measured] - STRUCTURE[measured].mean())
    prior = PredictedScalars(np.random.default_rng(1).normal(size=(16, 400)))
    available = np.setdiff1d(np.arange(400), np.concatenate([measured, [5, 6]]))
    choice = select_sampled(prior, residual, available, np.array([5, 6]), 3, acquisition, best_f=1.0,
                            observed=measured, seed=0, beta=0.5)  # fmt: skip
    assert choice.indices.size == 3 == np.unique(choice.indices).size
    assert set(choice.indices.tolist()) <= set(available.tolist())
    assert np.all(np.isfinite(choice.values)) and choice.runner_up_values.size == 5


@pytest.mark.parametrize("acquisition", ["log-ei", "ucb", "thompson"])
def test_where_the_residual_is_flat_the_predicted_property_decides(acquisition: str) -> None:
    measured = np.arange(0, 400, 41)
    residual = _residual(measured, np.zeros(measured.size))
    draws = 0.05 * np.random.default_rng(2).normal(size=(32, 400))
    draws[:, 217] += 3.0  # every draw says candidate 217 holds the property
    free = np.setdiff1d(np.arange(400), measured)
    choice = select_sampled(PredictedScalars(draws), residual, free, np.empty(0, np.int64), 1, acquisition,
                            best_f=0.5, observed=measured, seed=3, beta=0.5)  # fmt: skip
    assert choice.indices.tolist() == [217]


def _spectral(predictor: Predictor, seed: int, high: float = 1.0, weight: str = "held-out") -> BOPolicy:
    """dualvae-spectral on the grid's positions, maximising the band from 0 to ``high`` (1: the whole axis)."""
    bo = ScalarBO(BandIntegral(0, high), AXIS, "log-ei", np.random.default_rng(seed), 4, PositionFeatures(GRID),
                  InlineTrainer(), predicted=predictor, prior_weight=weight)  # fmt: skip
    return BOPolicy("dualvae-spectral", bo)


def _hits_within(policy: object, budget: int) -> bool:
    """Whether ``policy`` measures the candidate of highest ``STRUCTURE`` within ``budget`` measurements."""
    cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    best = int(np.argmax(STRUCTURE))
    for _ in range(budget):
        p = policy.propose(cands, 1)  # type: ignore[attr-defined]
        cands.mark_pending(p.indices)
        cands.mark_measured(p.indices)
        policy.tell(p.indices, _spectra(STRUCTURE[p.indices]))  # type: ignore[attr-defined]
        if best in p.indices.tolist():
            return True
    return False


def test_a_prior_that_knows_the_structure_finds_the_maximum_where_random_search_does_not() -> None:
    """The predicted property leads to the maximum of 400 within 12 measurements on every seed.

    4 random, then 3 whose held-out predictions show the prior is right (its weight, 0 before, is then
    about 0.9: measured 9-10 measurements on seeds 0-4; trusted as is, within 8). The property has no
    spatial smoothness, so the residual GP on position cannot find it; random search hits it with
    probability 12/400 per seed.
    """
    assert sum(_hits_within(_spectral(Predictor(STRUCTURE, seed=s), s), 12) for s in range(5)) == 5


def test_the_check_fails_for_random_search_and_for_a_prior_that_knows_nothing() -> None:
    """Tests of the test above: random search, and the same policy with the prediction shuffled across candidates."""
    shuffled = np.random.default_rng(9).permutation(STRUCTURE)
    assert sum(_hits_within(_spectral(Predictor(shuffled, seed=s), s), 12) for s in range(5)) <= 1
    assert sum(_hits_within(make_policy("random", np.random.default_rng(s)), 12) for s in range(5)) <= 1


def test_measured_values_correct_the_prior_through_the_residual() -> None:
    """Where the prediction is wrong by a constant, the GP on the residual learns it: measured and unseen candidates."""
    policy = _spectral(Predictor(STRUCTURE - 2.0, spread=0.01), 0)
    cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    for _ in range(12):
        _hits_within_one(policy, cands)
    snap = policy.bo.snapshot
    assert snap is not None and snap.prior is not None and snap.prior.size == 32
    observed = np.asarray(policy.bo._obs_idx[: snap.n_obs])  # what the snapshot in use was fitted on
    y = (STRUCTURE[observed] - snap.y_mean) / snap.y_std
    predicted = snap.prior.mean[observed] + snap.posterior.mean[observed]
    np.testing.assert_allclose(predicted, y, atol=0.05)  # the GP absorbed the offset of the prediction
    unseen = np.setdiff1d(np.arange(400), observed)
    corrected = snap.prior.mean[unseen] + snap.posterior.mean[unseen]
    truth = (STRUCTURE[unseen] - snap.y_mean) / snap.y_std
    assert np.abs(corrected - truth).mean() < 0.5 * np.abs(snap.prior.mean[unseen] - truth).mean()


def _hits_within_one(policy: BOPolicy, cands: CandidateSet) -> None:
    p = policy.propose(cands, 1)
    cands.mark_pending(p.indices)
    cands.mark_measured(p.indices)
    policy.tell(p.indices, _spectra(STRUCTURE[p.indices]))


def test_draws_the_scalariser_cannot_value_count_as_the_worst() -> None:
    """A peak outside the window (NaN) in some predicted spectra: the prior stays finite, the decisions go on."""

    class Partial(Predictor):
        def scalar_draws(self, scalariser: Scalariser, axis: NDArray[np.float64], samples: int) -> NDArray[np.float64]:
            draws = super().scalar_draws(scalariser, axis, samples)
            draws[:, ::3] = np.nan
            return draws

    policy = _spectral(Partial(STRUCTURE), 0)
    cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    for _ in range(8):
        _hits_within_one(policy, cands)
    snap = policy.bo.snapshot
    assert snap is not None and snap.prior is not None and np.all(np.isfinite(snap.prior.draws))


def test_the_real_dual_vae_predicts_the_prior_and_the_policy_decides_on_it() -> None:
    """build_policy wires the dual VAE's scalarised im2spec draws in; the prediction varies across candidates.

    The spectra are noise, so the predictions explain nothing held out: the prior's weight is 0.
    """
    rng = np.random.default_rng(0)
    image = Image("haadf", rng.random((64, 64)).astype(np.float32), ImageAxis("y", "nm", 0.5, 1.0),
                  ImageAxis("x", "nm", 0.5, 1.0))  # fmt: skip
    axis = SpectralAxis("energy_loss", "eV", 0.2, 0.05, 16)
    pixels = np.stack(np.meshgrid(np.arange(8, 56, 6), np.arange(8, 56, 6), indexing="ij"), -1).reshape(-1, 2)
    cands = CandidateSet(pixels.astype(np.float64), pixels.astype(np.int64), (8, 8))
    peak = ScalariserSection(kind="peak", low=0.3, high=0.8)
    section = PolicySection(name="dualvae-spectral", initial=3, training="inline", pretrain_steps=10, update_steps=2,
                            patch_px=8, prior_samples=6, scalariser=peak)  # fmt: skip
    policy = build_policy(section, axis, rng, image, cands, trainer=InlineTrainer())
    assert isinstance(policy, BOPolicy) and policy.bo.predicted is not None
    for _ in range(6):
        p = policy.propose(cands, 1)
        cands.mark_pending(p.indices)
        cands.mark_measured(p.indices)
        policy.tell(p.indices, rng.poisson(50, size=(1, 16)).astype(np.float32))
    snap = policy.bo.snapshot
    assert snap is not None and snap.prior is not None
    assert snap.prior.draws.shape == (6, len(cands)) and snap.predicted_values is not None
    assert snap.predicted_values.shape == (len(cands),) and snap.predicted_values.std() > 0
    assert 0.0 <= snap.prior_weight <= 2.0
    assert p.model_version == snap.version and np.isfinite(p.acquisition_values[0])


def test_an_unknown_prior_use_is_refused() -> None:
    with pytest.raises(ConfigError, match="prior_as"):
        ScalarBO(BandIntegral(0, 1), AXIS, "log-ei", np.random.default_rng(0), 4, PositionFeatures(GRID),
                 InlineTrainer(), predicted=Predictor(STRUCTURE), prior_as="both")  # fmt: skip


def test_dualvae_spectral_campaign_over_zeromq(tmp_path: Path) -> None:
    """`dualscope run` with policy dualvae-spectral against the structure twin (detector jitter, gain, dead channel)."""
    run = _twin_campaign(
        tmp_path,
        "dualvae-spectral",
        "n_channels = 64\nacquisition_time_s = 0.001\ndead_channels = [20]",
        'acquisition = "ucb"\ninitial = 4\npretrain_steps = 30\nupdate_steps = 3\npatch_px = 16\nprior_samples = 8\n'
        'training = "inline"',
        'kind = "band"\nlow = 0.4\nhigh = 0.6',
        10,
    )
    mv = run.columns["model_version"]
    assert np.all(mv[:4] == -1) and np.all(np.diff(mv[4:]) == 1)  # inline: one snapshot per measurement
    assert np.all(np.isfinite(run.columns["acquisition_value"][4:]))
    assert np.all(run.spectra[:, 20] == 0)  # the dead channel, as the twin's detector reads it


SMOOTH_A = np.exp(-8 * ((GRID[:, 0] - 0.2) ** 2 + (GRID[:, 1] - 0.8) ** 2))
SMOOTH_B = np.exp(-8 * ((GRID[:, 0] - 0.75) ** 2 + (GRID[:, 1] - 0.3) ** 2))
TWO_BANDS = np.stack([SMOOTH_A, SMOOTH_A, SMOOTH_B, SMOOTH_B], axis=1).astype(np.float32)
"""Spectra whose first two channels carry property A and last two property B."""


def _until(policy: Any, cands: CandidateSet, target: int, cap: int) -> int | None:
    """Measurements (of ``TWO_BANDS``) until ``policy`` measures candidate ``target``; None if not within ``cap``."""
    for k in range(cap):
        p = policy.propose(cands, 1)
        cands.mark_pending(p.indices)
        cands.mark_measured(p.indices)
        policy.tell(p.indices, TWO_BANDS[p.indices])
        if target in p.indices.tolist():
            return k + 1
    return None


def _gp_position(seed: int, low: float, high: float) -> BOPolicy:
    bo = ScalarBO(BandIntegral(low, high), AXIS, "log-ei", np.random.default_rng(seed), 4, PositionFeatures(GRID),
                  InlineTrainer())  # fmt: skip
    return BOPolicy("gp-position", bo, lambda section: BandIntegral(section.low, section.high))


def test_after_a_target_change_the_policy_finds_the_new_maximum_faster_than_a_fresh_run() -> None:
    """25 measurements for A, then `target` B: every spectrum measured for A counts for B; none is wasted.

    Measured (seeds 0-5): B's maximum after the change in 1-2 measurements; a fresh run on B in 8-15.
    """
    best_b, after, fresh = int(np.argmax(SMOOTH_B)), [], []
    for seed in range(6):
        cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
        policy = _gp_position(seed, 0.0, 0.4)
        _until(policy, cands, -1, 25)
        policy.retarget(ScalariserSection(kind="band", low=0.6, high=1.0))
        after.append(_until(policy, cands, best_b, 60) or 61)
        fresh_cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
        fresh.append(_until(_gp_position(seed, 0.6, 1.0), fresh_cands, best_b, 60) or 61)
    assert np.median(after) <= 3 and np.median(fresh) >= 6, (after, fresh)


def test_a_new_target_revalues_what_was_measured_and_lives_in_the_state() -> None:
    """The next snapshot is fitted on B's values of every spectrum; a restored policy keeps the target."""
    cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    policy = _gp_position(0, 0.0, 0.4)
    _until(policy, cands, -1, 10)
    version = policy.bo.snapshot.version if policy.bo.snapshot else 0
    policy.retarget(ScalariserSection(kind="band", low=0.6, high=1.0))
    assert policy.bo.snapshot is None  # the old target's model is gone
    state = policy.state()
    told = [(np.asarray(i, np.int64), s) for i, s in policy.bo._told]
    nxt = policy.propose(cands, 1)
    snap = policy.bo.snapshot
    assert snap is not None and snap.version > version and snap.n_obs == 10
    measured = np.asarray(policy.bo._obs_idx)
    b_values = BandIntegral(0.6, 1.0)(TWO_BANDS[measured], AXIS)
    assert snap.y_mean == pytest.approx(b_values.mean())  # B's values, not A's
    assert state["target"] == ScalariserSection(kind="band", low=0.6, high=1.0).model_dump()
    again = _gp_position(0, 0.0, 0.4)  # built from the run's config (target A), then restored
    again.restore(state, told)
    assert again.target == state["target"]
    fresh_cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    for indices, _ in told:
        fresh_cands.mark_measured(indices)
    assert again.propose(fresh_cands, 1).indices.tolist() == nxt.indices.tolist()  # the same next decision


def test_a_target_off_the_axis_is_refused_and_the_old_one_stays() -> None:
    policy = _gp_position(0, 0.0, 0.4)
    with pytest.raises(ConfigError, match="holds no channel"):
        policy.retarget(ScalariserSection(kind="band", low=5.0, high=6.0))
    assert policy.target is None and policy.bo.scalariser == BandIntegral(0.0, 0.4)


def test_dualvae_spectral_replays_real_paired_data(tmp_path: Path) -> None:
    """`dualscope replay` of the real Velox file (HAADF + EDS, 16 x 16) with dualvae-spectral and the Au M line."""
    data = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fei_emd_si.emd"
    result = _run(tmp_path, "replay", str(data), "--policy", "dualvae-spectral", "--budget", "8", "--band", "2.0:2.3",
                  "--training", "inline", "--refit-every", "2", "--output-dir", str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(next(tmp_path.glob("replay-dualvae-spectral-*.zarr")))
    assert run.n == 8 and run.policy_names == ["dualvae-spectral"]
    versions = run.columns["model_version"]
    assert np.all(versions[:5] == -1) and versions[-1] >= 1  # decided on the model after the initial five


def test_a_prior_that_points_the_wrong_way_is_weighed_out() -> None:
    """A prediction low exactly where property A is high: weighed by its held-out record, it is turned off.

    Measured (seeds 0-5): A's maximum in 6-16 measurements with the weight; trusted as is, the prior
    keeps the policy away (13 to not within 60: 49, 28, -, 25, -, 13). The second assertion is the
    test of the first: with the weighting broken (the prior always trusted) it fails.
    """
    best = int(np.argmax(SMOOTH_A))

    def runs(weight: str) -> list[int]:
        out = []
        for seed in range(6):
            cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
            policy = _spectral(Predictor(-3 * SMOOTH_A, 0.05, seed), seed, 0.4, weight)
            out.append(_until(policy, cands, best, 60) or 61)
        return out

    weighted, trusted = runs("held-out"), runs("none")
    assert max(weighted) <= 20, weighted
    assert sum(n > 20 for n in trusted) >= 3, trusted


class Learning(Predictor):
    """A predictor whose every refit predicts ``values`` plus the number of refits so far (it "learns")."""

    def __init__(self, values: NDArray[np.float64]):
        super().__init__(values, spread=0.0)
        self.refits = 0

    def scalar_draws(self, scalariser: Scalariser, axis: NDArray[np.float64], samples: int) -> NDArray[np.float64]:
        self.refits += 1
        return super().scalar_draws(scalariser, axis, samples) + self.refits


def test_held_out_predictions_come_from_a_model_that_had_not_seen_the_spectrum() -> None:
    """Observation ``j`` (after 4 random) is predicted by refit ``j - 3``: the one cut at ``j`` measurements."""
    predictor = Learning(SMOOTH_A)
    policy = _spectral(predictor, 0, 0.4)
    cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    _until(policy, cands, -1, 10)
    bo = policy.bo
    held_out, observed = np.asarray(bo._obs_held_out), np.asarray(bo._obs_idx)
    assert np.all(np.isnan(held_out[:4]))  # the random start: no model yet
    values = BandIntegral(0.0, 0.4)(_spectra(SMOOTH_A[observed]), AXIS)
    refit = held_out[4:] - values[4:]  # the refit count each prediction carries
    np.testing.assert_allclose(refit, np.arange(1, 7), atol=1e-4)
    assert bo.snapshot is not None and bo.snapshot.prior_weight == pytest.approx(0.0, abs=0.2)  # always 1 off


def test_the_held_out_record_is_in_the_state_and_restores_the_same_decision() -> None:
    """A resumed run has no snapshots of before the crash: the held-out predictions come back from the state."""
    cands = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    policy = _spectral(Predictor(SMOOTH_A, 0.0), 3, 0.4)  # no spread: the same draws after the restore
    _until(policy, cands, -1, 12)
    state, told = policy.state(), [(np.asarray(i, np.int64), s) for i, s in policy.bo._told]
    assert len(state["held_out"]) == 12 and state["held_out"][:4] == [None] * 4
    nxt = policy.propose(cands, 1)
    again = _spectral(Predictor(SMOOTH_A, 0.0), 3, 0.4)
    again.restore(state, told)
    np.testing.assert_allclose(np.asarray(again.bo._obs_held_out[4:]), np.asarray(policy.bo._obs_held_out[4:]))
    fresh = CandidateSet(GRID.copy(), np.zeros((400, 2), np.int64), (20, 20))
    for indices, _ in told:
        fresh.mark_measured(indices)
    assert again.propose(fresh, 1).indices.tolist() == nxt.indices.tolist()
    assert "held_out" not in _spectral(Predictor(SMOOTH_A), 0, 0.4, "none").state()  # only where it weighs the prior


def test_an_unknown_prior_weight_is_refused() -> None:
    with pytest.raises(ConfigError, match="prior_weight"):
        _spectral(Predictor(STRUCTURE), 0, weight="always")
    with pytest.raises(ValueError, match="prior_weight"):
        PolicySection(name="dualvae-spectral", prior_weight="always")  # type: ignore[arg-type]
