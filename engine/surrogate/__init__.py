"""Surrogates of the structure→property relation: im2spec, spec2im and the dual VAE.

The networks and losses are in ``_model``, ``fit``/``update`` with rollback in ``_training``, the
API the rest of dualscope uses (prediction with uncertainty, latents, checkpoints) in ``_surrogate``
and the held-out metrics in ``_evaluate``. Everything outside this package imports from here.

Each public class and function has an Example, run by the tests in this namespace after the
setup below (an Example that reads a run uses ``run_path``, a closed run such as
``engine.campaign.Campaign``'s Example writes).

Examples:
    >>> import numpy as np, torch
    >>> rng = np.random.default_rng(0)
    >>> data = PairedData.paired(rng.random((32, 8, 8)), rng.random((32, 6)))  # 32 patches with their spectra
    >>> model = Surrogate(SurrogateConfig(batch_size=8), 8, 6, device=torch.device("cpu"), seed=0)
    >>> report = model.fit(data, 5)  # a (barely) trained dual VAE
"""

from typing import TYPE_CHECKING

from engine._lazy import lazy_face

if TYPE_CHECKING:  # imported on first use: see engine._lazy
    from engine.surrogate._data import PairedData, extract_patches
    from engine.surrogate._evaluate import HeldOutMetrics, evaluate_held_out
    from engine.surrogate._surrogate import CheckpointError, Normaliser, Surrogate, SurrogateConfig
    from engine.surrogate._training import TrainReport

__all__ = [
    # the model
    "Surrogate",
    "SurrogateConfig",
    "Normaliser",
    "CheckpointError",
    # data
    "PairedData",
    "extract_patches",
    # training and evaluation
    "TrainReport",
    "HeldOutMetrics",
    "evaluate_held_out",
]

__getattr__, __dir__ = lazy_face(__name__, __file__)
