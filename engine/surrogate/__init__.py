"""Surrogates of the structure→property relation: im2spec, spec2im and the dual VAE.

See :mod:`engine.surrogate.model` for the networks and losses, :mod:`engine.surrogate.training`
for ``fit``/``update`` with rollback, and :mod:`engine.surrogate.surrogate` for the API the rest
of dualscope uses (prediction with uncertainty, latents, checkpoints).
"""

from engine.surrogate.data import PairedData, extract_patches
from engine.surrogate.surrogate import Surrogate, SurrogateConfig
from engine.surrogate.training import TrainReport

__all__ = ["PairedData", "Surrogate", "SurrogateConfig", "TrainReport", "extract_patches"]
