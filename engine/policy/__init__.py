"""Policies: where to measure next.

Baselines (random, raster), the Bayesian-optimisation framework (features → GP → acquisition over
the candidate table), the scalarisers that turn a spectrum into the property to optimise, the
trainers that refit in the background, and the learned features (deep kernel, dual VAE).
:func:`build_policy` builds the policy a ``[policy]`` table names. Everything outside this package
imports from here.

Each public class and function has an Example, run by the tests in this namespace; an Example
that reads a run uses ``run_path``, a closed run such as :class:`engine.campaign.Campaign`'s Example writes.
"""

from typing import TYPE_CHECKING

from engine._lazy import lazy_face

if TYPE_CHECKING:  # imported on first use: see engine._lazy
    from engine.policy._acquisition import ACQUISITIONS, CandidateTable, Choice, TravelCost, select, ucb_beta
    from engine.policy._baselines import POLICY_NAMES, RandomPolicy, RasterPolicy, make_policy
    from engine.policy._bo import BOPolicy, FeatureModel, Features, PositionFeatures, ScalarBO, Snapshot
    from engine.policy._dkl import DKLFeatures
    from engine.policy._dualvae import DualVAEFeatures
    from engine.policy._factory import build_policy, build_scalariser, make_trainer
    from engine.policy._gp_posterior import CandidatePosterior, fit_gp, unit_cube
    from engine.policy._scalarisers import (
        BandIntegral,
        BandRatio,
        Logarithm,
        LoopArea,
        PeakPosition,
        Scalariser,
        TargetMatch,
        TargetSimilarity,
        UserFunction,
    )
    from engine.policy._trainer import InlineTrainer, ThreadTrainer, Trainer

__all__ = [
    # building a policy from its configuration
    "build_policy",
    "build_scalariser",
    "make_trainer",
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
    # GP posterior and acquisition
    "CandidatePosterior",
    "fit_gp",
    "unit_cube",
    "CandidateTable",
    "ACQUISITIONS",
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
    # trainers
    "Trainer",
    "InlineTrainer",
    "ThreadTrainer",
]

__getattr__, __dir__ = lazy_face(__name__, __file__)
