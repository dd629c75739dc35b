"""Build the policy, scalariser and trainer that a run's ``[policy]`` table names.

The factory sits beside what it builds (as BoTorch's ``acquisition/factory.py`` does), so building
a policy never climbs back into the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.config import PolicySection, TrainingSection
from engine.errors import ConfigError
from engine.policy._acquisition import AcquisitionFactory, acquisition_name
from engine.policy._baselines import make_policy
from engine.policy._bo import BOPolicy, FeatureModel, PositionFeatures, ScalarBO, Snapshot
from engine.policy._dask_trainer import open_dask_trainer
from engine.policy._dkl import DKLFeatures
from engine.policy._dualvae import DualVAEFeatures
from engine.policy._scalarisers import (
    BandIntegral,
    PythonScalariser,
    Scalariser,
    build_scalariser,
)
from engine.policy._trainer import InlineTrainer, ThreadTrainer, Trainer, resolve_device
from engine.protocols import PhaseProgress, Policy
from engine.surrogate import Surrogate, SurrogateConfig, extract_patches
from engine.types import Image, SpectralAxis


def make_trainer(
    training: str,
    section: TrainingSection | None = None,
    *,
    clock: Callable[[], float] | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> Trainer[Snapshot]:
    """The trainer a ``policy.training`` value names.

    Args:
        training: ``"background"`` (refits on a worker thread; the loop never waits), ``"inline"``
            (refits in the loop: reproducible decisions) or ``"dask"`` (refits on a Dask worker, the
            thread as the fallback).
        section: the ``[training]`` table (scheduler, timeouts); needed by ``"dask"``.
        clock: monotonic seconds, for the Dask trainer's timeout (injected).
        on_fallback: told why, if Dask training falls back to the thread (the run records it).

    Returns:
        A ``ThreadTrainer``, an ``InlineTrainer`` or a ``DaskTrainer``; close it when the campaign ends.

    Raises:
        ConfigError: ``"dask"`` without a scheduler.

    Examples:
        >>> type(make_trainer("inline")).__name__
        'InlineTrainer'
    """
    if training == "inline":
        return InlineTrainer()
    if training != "dask":
        return ThreadTrainer()
    if section is None or not section.scheduler:
        raise ConfigError("policy.training = 'dask' needs [training] scheduler = 'tcp://HOST:8786' (or 'local')")
    return open_dask_trainer(
        section.scheduler,
        ThreadTrainer(),
        connect_timeout_s=section.connect_timeout_s,
        timeout_s=section.timeout_s,
        clock=clock,
        on_fallback=on_fallback,
    )


@dataclass(frozen=True)
class PythonParts:
    """What a Python caller gives instead of names in ``[policy]`` (``engine.Experiment``).

    Attributes:
        acquisition: a botorch acquisition factory ``(model, context) -> AcquisitionFunction``
            (``engine.policy.AcquisitionFactory``), used instead of ``policy.acquisition``.
        scalariser: a function ``(spectra (n, c), axis (c,)) -> (n,)`` or a ``Scalariser``, used instead of
            ``[policy.scalariser]``.

    Examples:
        >>> PythonParts(scalariser=lambda spectra, axis: spectra.sum(axis=1)).names()
        {'scalariser': 'python:<lambda>'}
    """

    acquisition: AcquisitionFactory | None = None
    scalariser: Scalariser | Callable[[NDArray, NDArray[np.float64]], NDArray] | None = None

    def scalariser_for(self, built: Scalariser) -> Scalariser:
        """The user's scalariser (wrapped when a bare function), or ``built`` from the configuration."""
        if self.scalariser is None:
            return built
        if hasattr(self.scalariser, "units") and hasattr(self.scalariser, "name"):
            return self.scalariser  # type: ignore[return-value]
        return PythonScalariser(self.scalariser)

    def names(self) -> dict[str, str]:
        """What the run records of them (``python:<module>.<name>``): these cannot be rebuilt from the TOML."""
        out = {}
        if self.acquisition is not None:
            out["acquisition"] = acquisition_name(self.acquisition)
        if self.scalariser is not None:
            out["scalariser"] = self.scalariser_for(BandIntegral(0.0, 0.0)).name
        return out


DUALVAE_UPDATE_STEPS = 20
"""dualvae-bo's warm-start steps per refit when ``update_steps`` is not set."""
DKL_STEPS = 60
"""dkl's joint CNN + GP steps per refit when ``update_steps`` is not set (its own default, not dualvae-bo's)."""


def build_policy(
    section: PolicySection,
    axis: SpectralAxis,
    rng: np.random.Generator,
    image: Image | None = None,
    candidates: CandidateSet | None = None,
    notes: Sequence[str] = (),
    trainer: Trainer[Snapshot] | None = None,
    progress: PhaseProgress | None = None,
    device: str = "cpu",
    python: PythonParts | None = None,
) -> Policy:
    """The policy a ``[policy]`` table names.

    Args:
        section: the validated ``[policy]`` table (``name``: random, raster, gp-position, dualvae-bo,
            dualvae-spectral or dkl).
        axis: the instrument's spectral axis (the scalariser's windows are in its units).
        rng: the run's random generator (seeds the policy and its networks).
        image: the structural image; needed by the structure-aware policies (dualvae-*, dkl).
        candidates: the candidate positions ``(m, d)`` and their image pixels; needed by model-based policies.
        notes: the instrument's notes (a recording without a structural image says so).
        trainer: where refits run (default inline).
        progress: told how a long start-up (the dual VAE's pre-training) goes; may raise
            ``engine.errors.Stopped`` to abandon it.
        device: the torch device of the refits (``[training] device``), resolved where each refit runs;
            the pre-training runs here, on this machine's GPU if it has one.
        python: an acquisition factory and/or a scalariser function given from Python, used instead of the
            names in ``section``.

    Returns:
        The policy, ready for ``engine.campaign.Campaign``.

    Raises:
        ConfigError: a model-based policy without candidates, or a structure-aware one without an image.

    Examples:
        >>> from engine.config import PolicySection
        >>> from engine.types import SpectralAxis
        >>> axis = SpectralAxis("energy loss", "eV", 0.0, 0.1, 20)
        >>> build_policy(PolicySection(name="random"), axis, np.random.default_rng(0)).name
        'random'
    """
    check_policy_inputs(section, image, candidates, notes)
    if section.name in ("random", "raster"):
        return make_policy(section.name, rng)
    assert candidates is not None and (image is not None or section.name == "gp-position")
    features: FeatureModel
    if section.name == "gp-position":
        features = PositionFeatures(candidates.positions)
    else:
        assert image is not None
        patches = extract_patches(image.data, candidates.pixels, section.patch_px)
        features = _image_features(section, patches, axis.size, rng, candidates.positions, progress)
    predicted = features if section.name == "dualvae-spectral" and isinstance(features, DualVAEFeatures) else None
    python = python or PythonParts()
    bo = ScalarBO(
        python.scalariser_for(build_scalariser(section.scalariser, axis)),
        axis.values(),
        python.acquisition or section.acquisition,
        rng,
        section.initial,
        features,
        trainer if trainer is not None else InlineTrainer(),
        refit_every=section.refit_every,
        travel_cost=section.travel_cost,
        wait_for_first_model=section.wait_for_first_model,
        predicted=predicted,
        prior_samples=section.prior_samples,
        prior_as=section.prior_as,
        prior_weight=section.prior_weight,
        device=device,
    )
    return BOPolicy(section.name, bo, lambda table: build_scalariser(table, axis))


def check_policy_inputs(
    section: PolicySection,
    image: Image | None,
    candidates: CandidateSet | None,
    notes: Sequence[str] = (),
    axis: SpectralAxis | None = None,
) -> None:
    """Whether the policy a ``[policy]`` table names can work with these inputs (cheap: builds nothing).

    Args:
        section: the validated ``[policy]`` table.
        image: the structural image, if any.
        candidates: the candidate set, if any.
        notes: the instrument's notes (a recording without a structural image says so).
        axis: the instrument's spectral axis: a model-based policy's scalariser windows must hold
            channels of it.

    Returns:
        Nothing; it raises when the policy cannot work.

    Raises:
        ConfigError: a model-based policy without candidates, a structure-aware one without an image,
            or a scalariser window outside the spectral axis.

    Examples:
        >>> from engine.config import PolicySection
        >>> check_policy_inputs(PolicySection(name="random"), None, None)  # random needs nothing
    """
    if section.name in ("random", "raster"):
        return
    if candidates is None:
        raise ConfigError(f"policy {section.name} needs the candidate set")
    if axis is not None and section.scalariser.kind != "user":  # a user's function is theirs to check
        try:  # a window outside the axis fails here, before the first decision, not at the first refit
            section.scalariser.check_axis(axis.values())
        except ConfigError as exc:
            raise ConfigError(
                f"policy.scalariser: {exc} ({axis.name}, {axis.units}); choose low and high within it"
            ) from None
    if section.name != "gp-position" and (image is None or any("no structural image" in n for n in notes)):
        raise ConfigError(
            f"{section.name} learns from the structural image, and this data has none "
            "(the importer derived one from the spectra); use policy gp-position, random or raster"
        )


def _image_features(
    section: PolicySection,
    patches: NDArray[np.float32],
    channels: int,
    rng: np.random.Generator,
    positions: NDArray[np.float64],
    progress: PhaseProgress | None,
) -> FeatureModel:
    seed = int(rng.integers(2**31 - 1))
    if section.name == "dkl":
        return DKLFeatures(
            patches,
            seed,
            steps=DKL_STEPS if section.update_steps is None else section.update_steps,
            positions=positions if section.latent_with_position else None,
        )
    surrogate = Surrogate(
        SurrogateConfig(batch_size=64), section.patch_px, channels, device=resolve_device("auto"), seed=seed
    )
    features = DualVAEFeatures(
        surrogate,
        patches,
        channels,
        pretrain_steps=section.pretrain_steps,
        update_steps=DUALVAE_UPDATE_STEPS if section.update_steps is None else section.update_steps,
        positions=positions if section.latent_with_position else None,
        progress=progress,
    )
    return features.to(torch.device("cpu"))  # at rest on the CPU: each refit moves it to its own device
