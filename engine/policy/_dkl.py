"""The ``dkl`` baseline features: deep kernel learning on the structural image patches.

A small CNN maps each candidate patch to a few features in (0, 1) (sigmoid output); a GP with an
RBF-ARD kernel on those features is trained jointly with the CNN by maximising the exact marginal
log likelihood of the measured values (Wilson et al., 2016, "Deep kernel learning"; used for
autonomous STEM-EELS by Roccapriore, Kalinin and Ziatdinov, 2022). Each refit warm-starts the CNN
from the previous one and runs a bounded number of Adam steps; the features of every candidate
and the jointly trained GP go into the snapshot. Pure compute, no I/O.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from botorch.models import SingleTaskGP
from gpytorch.constraints import GreaterThan  # type: ignore[import-untyped]
from gpytorch.mlls import ExactMarginalLogLikelihood  # type: ignore[import-untyped]
from linear_operator.utils.warnings import NumericalWarning
from numpy.typing import NDArray
from torch import nn

from engine.errors import ConfigError
from engine.policy._bo import Features
from engine.policy._gp_posterior import unit_cube


def feature_extractor(patch: int, features: int) -> nn.Module:
    """CNN ``(b, 1, p, p) -> (b, features)`` in (0, 1): two conv-ReLU-pool blocks and a linear map."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (patch // 4) ** 2, 32),
        nn.ReLU(),
        nn.Linear(32, features),
        nn.Sigmoid(),
    ).to(torch.float64)


class DKLFeatures:
    """CNN features of the candidate patches, trained jointly with the GP on each refit.

    Args:
        patches: candidate patches ``(m, p, p)`` (``p`` a multiple of 4).
        seed: seeds the CNN weights.
        features: CNN output dimension (GP input dimension, plus the position's when given).
        steps: Adam steps per refit; lr: its learning rate.
        positions: candidate positions ``(m, d)``; when given, the GP inputs are the CNN features and the
            position (scaled to the unit cube) side by side, as ``dualvae-bo`` does with its latent.

    Examples:
        >>> base = np.random.default_rng(0).random((8, 8))
        >>> patches = np.stack([base * (0.2 + i / 30) for i in range(30)]).astype(np.float32)  # brighter and brighter
        >>> observed = np.arange(0, 30, 3)
        >>> values = patches[observed].mean(axis=(1, 2)).astype(np.float64)
        >>> features = DKLFeatures(patches, seed=0, features=2, steps=5)
        >>> out = features.refit(observed, values, np.zeros((10, 16), np.float32))
        >>> out.unit.shape, out.model is not None  # the GP was trained jointly with the CNN
        ((30, 2), True)
    """

    def __init__(
        self,
        patches: NDArray[np.float32],
        seed: int,
        *,
        features: int = 3,
        steps: int = 60,
        lr: float = 0.01,
        positions: NDArray[np.float64] | None = None,
    ):
        if patches.ndim != 3 or patches.shape[1] != patches.shape[2] or patches.shape[1] % 4:
            raise ConfigError(f"dkl needs square patches with a side divisible by 4, got {patches.shape[1:]}")
        p = np.asarray(patches, dtype=np.float64)
        p = (p - p.mean()) / (p.std() or 1.0)
        self._patches = torch.as_tensor(p).unsqueeze(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.cnn: nn.Module = feature_extractor(patches.shape[1], features)
        self.steps, self.lr = steps, lr
        self._positions = None if positions is None else torch.as_tensor(unit_cube(positions), dtype=torch.float64)
        self.losses: list[float] = []
        self.numerical_warnings = 0

    def refit(self, observed: NDArray[np.int64], values: NDArray[np.float64], spectra: NDArray[np.float32]) -> Features:
        """Train CNN and GP jointly on ``values (n,)`` at ``observed (n,)``; features of every candidate."""
        rows = torch.as_tensor(observed, dtype=torch.long)
        x_obs = self._patches[rows]
        y = torch.as_tensor(values, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # botorch's input-range hint: features move while training
            gp = SingleTaskGP(self._inputs(x_obs, rows).detach(), y.unsqueeze(-1), outcome_transform=None)
        # a noise floor: with noise-free values the joint training shrinks the noise until the kernel
        # matrix is singular (seen with position inputs on a smooth truth); 1e-4 of the standardised scale
        gp.likelihood.noise_covar.register_constraint("raw_noise", GreaterThan(1e-4))
        mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
        optimiser = torch.optim.Adam([*self.cnn.parameters(), *gp.parameters()], lr=self.lr)
        gp.train()
        self.cnn.train()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NumericalWarning)  # jitter on a near-singular kernel: counted
            self._train(gp, mll, optimiser, x_obs, rows, y)
        self.numerical_warnings += len(caught)
        self.cnn.eval()
        with torch.no_grad():
            unit = self._inputs(self._patches, None)
            gp.set_train_data(unit[rows], y, strict=False)  # type: ignore[operator]
        gp.eval()
        return Features(np.asarray(unit.numpy(), dtype=np.float64), gp)

    def _inputs(self, patches: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """GP inputs of ``patches``: CNN features, then the positions of candidates ``rows`` (all when None)."""
        feats = self.cnn(patches)
        if self._positions is None:
            return feats  # type: ignore[no-any-return]
        pos = self._positions if rows is None else self._positions[rows]
        return torch.cat([feats, pos], dim=1)

    def _train(
        self,
        gp: SingleTaskGP,
        mll: ExactMarginalLogLikelihood,
        optimiser: torch.optim.Optimizer,
        x: torch.Tensor,
        rows: torch.Tensor,
        y: torch.Tensor,
    ) -> None:
        for _ in range(self.steps):
            optimiser.zero_grad()
            feats = self._inputs(x, rows)
            gp.set_train_data(feats, y, strict=False)  # type: ignore[operator]
            loss = -mll(gp(feats), y).sum()
            loss.backward()
            optimiser.step()
            self.losses.append(float(loss.detach()))
