"""Policies: where to measure next.

Baselines (random, raster), the Bayesian-optimisation framework (features → GP → acquisition over
the candidate table), the scalarisers that turn a spectrum into the property to optimise, the
trainers that refit in the background, and the learned features (deep kernel, dual VAE).
``build_policy`` builds the policy a ``[policy]`` table names. Everything outside this package
imports from here.

Each public class and function has an Example, run by the tests in this namespace after the
setup below (an Example that reads a run uses ``run_path``, a closed run such as
``engine.campaign.Campaign``'s Example writes).

Examples:
    >>> import numpy as np, torch
    >>> from engine.candidates import CandidateSet
    >>> positions = np.random.default_rng(0).random((50, 2))  # 50 candidate probe positions
    >>> candidates = CandidateSet(positions, np.zeros((50, 2), np.int64), (1, 50))
    >>> energy = np.linspace(0.0, 2.0, 21)  # a spectral axis, eV
    >>> spectra = np.stack([np.exp(-((energy - c) / 0.2) ** 2) for c in (0.5, 1.0, 1.5)])  # peaks at 0.5, 1, 1.5 eV
    >>> x_all = torch.rand(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> y = torch.sin(6 * x_all[:10, 0])
    >>> y = (y - y.mean()) / y.std()
    >>> model, n_warnings = fit_gp(x_all[:10], y)  # a GP on 10 of 30 candidates
    >>> posterior = CandidatePosterior(model, x_all, np.arange(10), y.numpy())
"""

from typing import TYPE_CHECKING

from engine._lazy import lazy_face

if TYPE_CHECKING:  # imported on first use: see engine._lazy
    from engine.policy._acquisition import (
        ACQUISITIONS,
        AcquisitionContext,
        AcquisitionFactory,
        CandidateTable,
        Choice,
        TravelCost,
        select,
        ucb_beta,
    )
    from engine.policy._baselines import POLICY_NAMES, RandomPolicy, RasterPolicy, make_policy
    from engine.policy._bo import (
        BOPolicy,
        FeatureModel,
        Features,
        Movable,
        PositionFeatures,
        PredictsSpectra,
        RefitJob,
        ScalarBO,
        Snapshot,
    )
    from engine.policy._dask_trainer import DaskTrainer, open_dask_trainer
    from engine.policy._dkl import DKLFeatures
    from engine.policy._dualvae import DualVAEFeatures
    from engine.policy._factory import PythonParts, build_policy, check_policy_inputs, make_trainer
    from engine.policy._gp_posterior import CandidatePosterior, fit_gp, unit_cube
    from engine.policy._scalarisers import (
        BandIntegral,
        BandRatio,
        Logarithm,
        LoopArea,
        PeakPosition,
        PythonScalariser,
        Scalariser,
        TargetMatch,
        TargetSimilarity,
        UserFunction,
        build_scalariser,
    )
    from engine.policy._spectral import (
        SHORTLIST,
        EveryMember,
        PredictedScalars,
        SampledCandidates,
        prior_weight,
        select_sampled,
        standardised_draws,
    )
    from engine.policy._trainer import InlineTrainer, ThreadTrainer, Trainer, resolve_device

__all__ = [
    # building a policy from its configuration
    "build_policy",
    "check_policy_inputs",
    "build_scalariser",
    "make_trainer",
    "PythonParts",
    # baselines
    "RandomPolicy",
    "RasterPolicy",
    "make_policy",
    "POLICY_NAMES",
    # Bayesian optimisation
    "BOPolicy",
    "ScalarBO",
    "Snapshot",
    "FeatureModel",
    "Features",
    "PositionFeatures",
    "DKLFeatures",
    "DualVAEFeatures",
    "RefitJob",
    "Movable",
    # decisions on predicted spectra (dualvae-spectral)
    "PredictsSpectra",
    "PredictedScalars",
    "SampledCandidates",
    "select_sampled",
    "standardised_draws",
    "prior_weight",
    "EveryMember",
    "SHORTLIST",
    # GP posterior and acquisition
    "CandidatePosterior",
    "fit_gp",
    "unit_cube",
    "CandidateTable",
    "ACQUISITIONS",
    "AcquisitionContext",
    "AcquisitionFactory",
    "Choice",
    "TravelCost",
    "select",
    "ucb_beta",
    # scalarisers: spectrum → property
    "Scalariser",
    "BandIntegral",
    "BandRatio",
    "PeakPosition",
    "TargetSimilarity",
    "TargetMatch",
    "LoopArea",
    "Logarithm",
    "UserFunction",
    "PythonScalariser",
    # trainers
    "Trainer",
    "InlineTrainer",
    "ThreadTrainer",
    "DaskTrainer",
    "open_dask_trainer",
    "resolve_device",
]

__getattr__, __dir__ = lazy_face(__name__, __file__)
