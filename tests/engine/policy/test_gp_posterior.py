"""The O(n m) conditioned posterior against botorch's exact GP posterior (the slow, obviously right reference)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from botorch.models import SingleTaskGP

from engine.policy import CandidatePosterior, fit_gp, unit_cube


def _problem(seed: int = 0, m: int = 300, n: int = 25) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cand = torch.as_tensor(unit_cube(rng.normal(size=(m, 3))))
    obs = rng.choice(m, size=n, replace=False).astype(np.int64)
    f = np.sin(4 * cand[:, 0].numpy()) + cand[:, 1].numpy() ** 2
    y = f[obs] + 0.05 * rng.normal(size=n)
    return cand, obs, (y - y.mean()) / y.std()


def _exact(model: object, cand: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        post = model.posterior(cand)  # type: ignore[attr-defined]
    return post.mean.squeeze(-1).numpy(), post.variance.squeeze(-1).numpy()


def _refitted_free(post: CandidatePosterior) -> SingleTaskGP:
    """botorch's exact GP on all of ``post``'s observations with its hyperparameters (no refit)."""
    x = post.candidates[post.observed]
    y = torch.as_tensor(post.y, dtype=torch.float64).unsqueeze(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # standardisation hint: y is standardised already
        model = SingleTaskGP(x, y, outcome_transform=None)
    model.load_state_dict(post.model.state_dict())
    model.eval()
    return model


def test_built_posterior_equals_botorch() -> None:
    cand, obs, y = _problem()
    model, _ = fit_gp(cand[obs], torch.as_tensor(y))
    post = CandidatePosterior(model, cand, obs, y)
    mean, var = _exact(model, cand)
    np.testing.assert_allclose(post.mean, mean, atol=1e-7)
    np.testing.assert_allclose(post.variance, var, atol=1e-7)


def test_conditioning_one_by_one_equals_the_batch_build() -> None:
    cand, obs, y = _problem(1)
    model, _ = fit_gp(cand[obs], torch.as_tensor(y))
    grown = CandidatePosterior(model, cand, obs[:3], y[:3])
    for i, v in zip(obs[3:], y[3:], strict=True):
        grown.add(int(i), float(v))
    full = CandidatePosterior(model, cand, obs, y)
    np.testing.assert_allclose(grown.mean, full.mean, atol=1e-7)
    np.testing.assert_allclose(grown.variance, full.variance, atol=1e-7)
    mean, var = _exact(_refitted_free(grown), cand)
    np.testing.assert_allclose(grown.mean, mean, atol=1e-7)
    np.testing.assert_allclose(grown.variance, var, atol=1e-7)


def test_from_no_observation_is_the_prior() -> None:
    cand, obs, y = _problem(2)
    model, _ = fit_gp(cand[obs], torch.as_tensor(y))
    post = CandidatePosterior(model, cand, np.empty(0, np.int64), np.empty(0))
    np.testing.assert_allclose(post.mean, post.prior_mean)
    np.testing.assert_allclose(post.variance, 1.0)  # RBF kernel without output scale
    post.add(int(obs[0]), float(y[0]))
    assert post.variance[obs[0]] < 0.1 and post.n == 1


def test_believers_lower_variance_like_observations_at_the_mean() -> None:
    cand, obs, y = _problem(3)
    model, _ = fit_gp(cand[obs], torch.as_tensor(y))
    post = CandidatePosterior(model, cand, obs, y)
    pending = np.array([5, 17, 200], dtype=np.int64)
    pending = pending[~np.isin(pending, obs)]
    var = post.believe(pending)
    ref = CandidatePosterior(model, cand, obs, y)
    for i in pending:
        ref.add(int(i), float(ref.mean[i]))
    np.testing.assert_allclose(var, ref.variance, atol=1e-9)
    np.testing.assert_allclose(ref.mean, post.mean, atol=1e-9)  # believers do not move the mean
    assert post.n == obs.size  # believe() does not modify the posterior


def test_joint_covariance_equals_botorch() -> None:
    cand, obs, y = _problem(4)
    model, _ = fit_gp(cand[obs], torch.as_tensor(y))
    post = CandidatePosterior(model, cand, obs[:10], y[:10])
    for i, v in zip(obs[10:], y[10:], strict=True):
        post.add(int(i), float(v))
    idx = np.array([[3, 40, 41], [100, 7, 250]])
    cov = post.batch_covariance(idx)
    with torch.no_grad():
        ref = model.posterior(cand[torch.as_tensor(idx)]).mvn.covariance_matrix.numpy()
    np.testing.assert_allclose(cov, ref, atol=1e-7)
    np.testing.assert_allclose(post.covariance(idx[0]), ref[0], atol=1e-7)


def test_candidate_table_gives_botorch_the_same_acquisition_values() -> None:
    from botorch.acquisition.analytic import LogExpectedImprovement
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.sampling.normal import SobolQMCNormalSampler

    from engine.policy import CandidateTable

    cand, obs, y = _problem(5)
    model, _ = fit_gp(cand[obs], torch.as_tensor(y))
    post = CandidatePosterior(model, cand, obs, y)
    table = CandidateTable(post)
    idx = torch.arange(50, dtype=torch.float64).reshape(-1, 1, 1)
    with torch.no_grad():
        ours = LogExpectedImprovement(table, best_f=float(y.max()))(idx)
        ref = LogExpectedImprovement(model, best_f=float(y.max()))(cand[:50].unsqueeze(1))
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-6)
        base = np.asarray(obs[:8])
        kw = {"prune_baseline": False, "cache_root": False}
        nei_ours = qLogNoisyExpectedImprovement(
            table,
            torch.as_tensor(base, dtype=torch.float64).unsqueeze(-1),
            SobolQMCNormalSampler(torch.Size([256]), seed=0),
            **kw,
        )(idx[:10])
        nei_ref = qLogNoisyExpectedImprovement(
            model, cand[torch.as_tensor(base)], SobolQMCNormalSampler(torch.Size([256]), seed=0), **kw
        )(cand[:10].unsqueeze(1))
    np.testing.assert_allclose(nei_ours.numpy(), nei_ref.numpy(), atol=1e-3)  # same draws, same joint posterior
