"""Decision latency with 1,000 measured points and 10,000 candidates.

``snapshot``: the policy as it runs (:class:`engine.bo_policy.ScalarBO`): each decision conditions
the latest snapshot on the newest observation (O(n m)) and scores every candidate; refits run on
the background thread every ``refit_every`` observations, competing for the same two cores while
the decisions are timed. ``refit``: the reference in the same run, a botorch ``SingleTaskGP``
fitted from scratch on all observations at each step, then log EI on every candidate.
The GP inputs are fixed 4-D features (standing in for dual-VAE latents); the values a smooth function plus noise.

``dualvae-spectral``: the same, with a prior of 32 draws per candidate (the truth plus noise, standing in
for the dual VAE's scalarised predictions, which the trainer thread computes with each refit): each
decision indexes the ensemble and scores it with botorch's Monte-Carlo acquisition. What the refit
itself costs for them (decoding 32 spectra for each of 10,000 patches and valuing them) is timed
separately with the real dual VAE.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
from botorch.acquisition.analytic import LogExpectedImprovement

from benchmarks.common import Record, machine
from engine.candidates import CandidateSet
from engine.policy import ACQUISITIONS, BandIntegral, PositionFeatures, ScalarBO, Snapshot, ThreadTrainer, fit_gp

M, N, D = 10_000, 1_000, 4


def _truth(x: np.ndarray) -> np.ndarray:
    return np.sin(5 * x[:, 0]) * np.cos(3 * x[:, 1]) + x[:, 2] ** 2 - 0.5 * x[:, 3]


class _Prior:
    """Stands in for the dual VAE's scalarised predictions: ``samples`` noisy copies of the truth."""

    def __init__(self, values: np.ndarray, rng: np.random.Generator):
        self.values, self.rng = values, rng

    def scalar_draws(self, scalariser: object, axis: np.ndarray, samples: int) -> np.ndarray:
        return self.values[None, :] + 0.3 * self.rng.standard_normal((samples, self.values.size))


def _policy(
    acquisition: str, rng: np.random.Generator, unit: np.ndarray, prior: _Prior | None = None
) -> tuple[ScalarBO, ThreadTrainer[Snapshot]]:
    trainer: ThreadTrainer[Snapshot] = ThreadTrainer()
    bo = ScalarBO(BandIntegral(-1, 1), np.zeros(1), acquisition, rng, 5, PositionFeatures(unit), trainer,
                  refit_every=25, predicted=prior)  # fmt: skip
    return bo, trainer


def decision_latency(
    acquisition: str, decisions: int = 60, seed: int = 0, spectral: bool = False
) -> tuple[np.ndarray, int, int]:
    """Seconds per decision ``(decisions,)`` after ``N`` observations, the first and last snapshot versions."""
    rng = np.random.default_rng(seed)
    unit = rng.random((M, D))
    values = _truth(unit) + 0.05 * rng.normal(size=M)
    cands = CandidateSet(unit.copy(), np.zeros((M, 2), np.int64), (100, 100))
    bo, trainer = _policy(acquisition, rng, unit, _Prior(values, np.random.default_rng(seed + 1)) if spectral else None)
    first = rng.choice(M, size=N, replace=False).astype(np.int64)
    cands.mark_pending(first)
    cands.mark_measured(first)
    bo.add(first, values[first, None].astype(np.float32))
    trainer.wait()
    seconds, versions = [], []
    for _ in range(decisions):
        t0 = time.perf_counter()
        p = bo.propose(cands, 1)
        seconds.append(time.perf_counter() - t0)
        versions.append(p.model_version)
        cands.mark_pending(p.indices)
        cands.mark_measured(p.indices)
        bo.add(p.indices, values[p.indices, None].astype(np.float32))  # may start a background refit
    trainer.close()
    if any(b < a for a, b in itertools.pairwise(versions)):
        raise AssertionError(f"snapshot versions went back: {versions}")
    return np.asarray(seconds), versions[0], versions[-1]


def refit_latency(steps: int = 3, seed: int = 0) -> np.ndarray:
    """Seconds per decision ``(steps,)`` when a ``SingleTaskGP`` is refitted from scratch each step."""
    rng = np.random.default_rng(seed)
    unit = rng.random((M, D))
    values = _truth(unit) + 0.05 * rng.normal(size=M)
    observed = list(rng.choice(M, size=N, replace=False))
    x = torch.as_tensor(unit)
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        y = values[observed]
        y = (y - y.mean()) / y.std()
        model, _ = fit_gp(x[observed], torch.as_tensor(y))
        acq = LogExpectedImprovement(model, best_f=float(y.max()))
        with torch.no_grad():
            scores = torch.cat([acq(x[i : i + 2000].unsqueeze(1)) for i in range(0, M, 2000)])
        scores[observed] = -torch.inf
        observed.append(int(torch.argmax(scores)))
        seconds.append(time.perf_counter() - t0)
    return np.asarray(seconds)


def prior_refit_seconds(seed: int = 0) -> float:
    """Seconds the trainer thread spends on dualvae-spectral's prior: 32 draws for each of ``M`` 16-px patches."""
    from engine.policy import DualVAEFeatures
    from engine.surrogate import Surrogate, SurrogateConfig

    rng = np.random.default_rng(seed)
    patches = rng.random((M, 16, 16)).astype(np.float32)
    vae = Surrogate(SurrogateConfig(batch_size=64), 16, 300, device=torch.device("cpu"), seed=seed)
    features = DualVAEFeatures(vae, patches, 300, pretrain_steps=1)
    axis = np.linspace(0.15, 1.35, 300)
    t0 = time.perf_counter()
    features.scalar_draws(BandIntegral(0.40, 0.55), axis, 32)
    return time.perf_counter() - t0


def run() -> list[Record]:
    """p50/p95 decision latency per acquisition next to the refit-from-scratch reference."""
    where = machine()
    ref = refit_latency()
    ref_p50 = float(np.median(ref)) * 1e3
    records = [
        Record("latency", "refit SingleTaskGP + log-ei, median", ref_p50, "ms", "", math.nan, math.nan, "", where)
    ]
    for acquisition in ACQUISITIONS:
        seconds, v0, v1 = decision_latency(acquisition)
        p95 = float(np.percentile(seconds, 95)) * 1e3
        p50 = float(np.median(seconds)) * 1e3
        goal = "value <= 50"
        records.append(
            Record(
                "latency",
                f"{acquisition} p95 (p50 {p50:.1f} ms; snapshots v{v0}→v{v1})",
                p95,
                "ms",
                "refit each step",
                ref_p50,
                p95 / ref_p50,
                goal,
                where,
            )
        )
    for acquisition in ACQUISITIONS:
        seconds, v0, v1 = decision_latency(acquisition, spectral=True)
        p95, p50 = float(np.percentile(seconds, 95)) * 1e3, float(np.median(seconds)) * 1e3
        metric = f"dualvae-spectral {acquisition} p95 (p50 {p50:.1f} ms; 32 draws per candidate; snapshots v{v0}→v{v1})"
        records.append(Record("latency", metric, p95, "ms", "refit each step", ref_p50, p95 / ref_p50,
                              "value <= 50", where))  # fmt: skip
    prior_s = prior_refit_seconds()
    what = f"dualvae-spectral prior in the trainer thread: 32 predicted spectra for each of {M:,} candidates, valued"
    records.append(Record("latency", what, prior_s, "s", "", math.nan, math.nan, "", where))
    return records
