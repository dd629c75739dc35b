"""A GP posterior over a fixed, discrete set of candidates, updated by conditioning in O(n m).

With hyperparameters fixed (they come from the last background refit), adding one observation to
an exact GP changes the posterior of every candidate by a rank-1 term. Keeping

- ``V = L⁻¹ K(X, C)``  ``(n, m)``, with ``L`` the Cholesky factor of ``K(X, X) + σ²I``,
- ``z = L⁻¹ (y − μ₀)``  ``(n,)``,
- the posterior mean ``μ₀ + Vᵀz`` and variance ``k(c, c) − ‖V[:, c]‖²``  ``(m,)``,

a new observation ``y*`` at candidate ``c*`` appends the row
``v = (K(c*, C) − V[:, c*]ᵀ V) / ℓ`` with ``ℓ = √(var(c*) + σ²)`` and the element
``(y* − mean(c*)) / ℓ`` to ``z``: one kernel row and one matrix-vector product, ``O(n m)`` instead of
the ``O(n³ + n² m)`` of a refit. Observations are always candidates, so ``L`` itself is never
needed. Kriging believers (pending points observed at their posterior mean) leave the mean
unchanged and lower the variance by the same rank-1 term.

The kernel, prior mean and noise are those of a fitted botorch ``SingleTaskGP`` (inputs in the unit
cube, outcomes standardised); joint covariances of any candidates come from the same ``V``
(``CandidatePosterior.covariance``). Pure compute.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.mlls import ExactMarginalLogLikelihood  # type: ignore[import-untyped]
from numpy.typing import NDArray

_JITTER = 1e-9


def fit_gp(x: torch.Tensor, y: torch.Tensor) -> tuple[SingleTaskGP, int]:
    """Fit a ``SingleTaskGP`` (RBF-ARD kernel, constant mean, Gaussian noise) by maximum marginal likelihood.

    Args:
        x: inputs in the unit cube ``(n, d)``, float64.
        y: standardised outcomes ``(n,)``.

    Returns:
        The fitted model and the number of botorch warnings (e.g. all values equal) counted, not raised.

    Examples:
        >>> model.train_inputs[0].shape, n_warnings
        (torch.Size([10, 2]), 0)
    """
    # a failed fit is retried from hyperparameters sampled with torch's global RNG: seed it here, so
    # that the same data always gives the same model (a resumed run makes the same decisions)
    with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng(devices=[]):
        warnings.simplefilter("always")
        torch.manual_seed(0)
        model = SingleTaskGP(x, y.unsqueeze(-1), outcome_transform=None)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model, len(caught)


def unit_cube(features: NDArray[np.floating]) -> NDArray[np.float64]:
    """Scale each column of ``features (m, d)`` to [0, 1] (constant columns become 0).

    Args:
        features: ``(m, d)``.

    Returns:
        ``(m, d)`` in ``[0, 1]``.

    Examples:
        >>> unit_cube(np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])).tolist()  # a constant column becomes 0
        [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]
    """
    f = np.asarray(features, dtype=np.float64)
    lo, hi = f.min(axis=0), f.max(axis=0)
    return np.asarray((f - lo) / np.where(hi > lo, hi - lo, 1.0), dtype=np.float64)


class CandidatePosterior:
    """The posterior of a GP with fixed hyperparameters at every candidate.

    Args:
        model: a fitted ``SingleTaskGP`` (its kernel, constant mean and noise are used).
        candidates: candidate inputs ``(m, d)`` in the space the model was fitted in.
        observed: candidate indices of the observations ``(n,)``.
        y: their outcomes ``(n,)`` on the model's (standardised) scale.

    Examples:
        >>> posterior.n, posterior.mean.shape, bool((posterior.variance >= 0).all())
        (10, (30,), True)
    """

    def __init__(
        self, model: SingleTaskGP, candidates: torch.Tensor, observed: NDArray[np.int64], y: NDArray[np.float64]
    ):
        self.model = model
        self.candidates = candidates.to(torch.float64)
        self.noise = float(model.likelihood.noise.detach().reshape(-1)[0])
        self.prior_mean = float(model.mean_module.constant.detach().reshape(-1)[0])
        m = candidates.shape[0]
        self._prior_var = self._kernel_diag()
        self.observed: list[int] = [int(i) for i in observed]
        self.y: list[float] = [float(v) for v in y]
        n = len(self.observed)
        self._v = torch.empty((max(2 * n, 16), m), dtype=torch.float64)
        with torch.no_grad():
            if n:
                xo = self.candidates[self.observed]
                k = self.model.covar_module(xo, xo).to_dense() + (self.noise + _JITTER) * torch.eye(
                    n, dtype=torch.float64
                )
                chol = torch.linalg.cholesky(k)
                cross = self.model.covar_module(xo, self.candidates).to_dense()
                self._v[:n] = torch.linalg.solve_triangular(chol, cross, upper=False)
                resid = torch.as_tensor(self.y, dtype=torch.float64).unsqueeze(-1) - self.prior_mean
                z = torch.linalg.solve_triangular(chol, resid, upper=False).squeeze(-1)
            else:
                z = torch.empty(0, dtype=torch.float64)
        self._z = z
        self._mean = self.prior_mean + self._v[:n].T @ z
        self._var = (self._prior_var - (self._v[:n] ** 2).sum(0)).clamp_min(0.0)

    def _kernel_diag(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.as_tensor(self.model.covar_module(self.candidates, diag=True).detach(), dtype=torch.float64)

    def _kernel_row(self, index: int) -> torch.Tensor:
        with torch.no_grad():
            row: torch.Tensor = self.model.covar_module(self.candidates[index : index + 1], self.candidates).to_dense()
        return row[0].detach()

    def _new_row(self, index: int, extra: list[torch.Tensor], var: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The row ``(m,)`` that observing candidate ``index`` appends to ``V`` (after ``extra`` rows), and ``ℓ``."""
        n = len(self.observed)
        ell = float(torch.sqrt(var[index].clamp_min(0.0) + self.noise + _JITTER))
        row = self._kernel_row(index) - self._v[:n, index] @ self._v[:n]
        for e in extra:
            row = row - e[index] * e
        return row / ell, ell

    @property
    def n(self) -> int:
        """Number of observations conditioned on."""
        return len(self.observed)

    @property
    def mean(self) -> NDArray[np.float64]:
        """Posterior mean at every candidate ``(m,)`` (standardised units)."""
        return np.asarray(self._mean.numpy(), dtype=np.float64)

    @property
    def variance(self) -> NDArray[np.float64]:
        """Posterior variance of the latent function at every candidate ``(m,)``."""
        return np.asarray(self._var.numpy(), dtype=np.float64)

    def add(self, index: int, y: float) -> None:
        """Condition on outcome ``y`` (standardised units) at candidate ``index``: ``O(n m)``."""
        n = len(self.observed)
        row, ell = self._new_row(index, [], self._var)
        z_new = (y - float(self._mean[index])) / ell
        if n == self._v.shape[0]:
            grown = torch.empty((2 * n, self._v.shape[1]), dtype=torch.float64)
            grown[:n] = self._v[:n]
            self._v = grown
        self._v[n] = row
        self._z = torch.cat([self._z, torch.tensor([z_new], dtype=torch.float64)])
        self._mean = self._mean + row * z_new
        self._var = (self._var - row**2).clamp_min(0.0)
        self.observed.append(int(index))
        self.y.append(float(y))

    def believe(self, indices: NDArray[np.int64]) -> NDArray[np.float64]:
        """Variance ``(m,)`` after observing ``indices`` at their posterior mean (kriging believers).

        The mean is unchanged by such observations; this object is not modified.
        """
        var = self._var.clone()
        extra: list[torch.Tensor] = []
        for i in indices:
            row, _ = self._new_row(int(i), extra, var)
            extra.append(row)
            var = (var - row**2).clamp_min(0.0)
        return np.asarray(var.numpy(), dtype=np.float64)

    def covariance(self, indices: NDArray[np.int64]) -> NDArray[np.float64]:
        """Joint posterior covariance ``(k, k)`` of the latent function at candidates ``indices (k,)``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        n = len(self.observed)
        with torch.no_grad():
            xs = self.candidates[idx]
            prior = self.model.covar_module(xs, xs).to_dense().detach()
        vs = self._v[:n][:, idx]
        return np.asarray((prior - vs.T @ vs).numpy(), dtype=np.float64)

    def batch_covariance(self, indices: NDArray[np.int64]) -> NDArray[np.float64]:
        """Joint posterior covariances ``(b, q, q)`` of the candidates ``indices (b, q)``.

        The covariance of the distinct candidates is computed once and indexed per batch (MC
        acquisitions repeat the same baseline points in every batch).
        """
        idx = np.asarray(indices, dtype=np.int64)
        unique, inverse = np.unique(idx.ravel(), return_inverse=True)
        gram = self.covariance(unique)
        inv = inverse.reshape(idx.shape)
        return np.asarray(gram[inv[:, :, None], inv[:, None, :]], dtype=np.float64)
