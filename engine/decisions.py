"""Records of what a policy decided and how long each stage of a step took."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Proposal:
    """A policy's answer: which candidates to measure next.

    Attributes:
        indices: candidate indices, shape ``(q,)``.
        acquisition_values: acquisition value per chosen index ``(q,)``; NaN for
            policies without one (random, raster).
        model_version: version of the surrogate snapshot used, or ``-1`` for none.
        runner_up_values: acquisition values of the next best candidates ``(r,)``.
        condition_s: seconds spent bringing the model up to date (conditioning on new data).
        acquire_s: seconds spent scoring the candidates and choosing.
    """

    indices: NDArray[np.int64]
    acquisition_values: NDArray[np.float64]
    model_version: int = -1
    runner_up_values: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    condition_s: float = math.nan
    acquire_s: float = math.nan


@dataclass(frozen=True)
class Decision:
    """A proposal stamped with who made it and when.

    Attributes:
        step: 0-based step number in the campaign.
        request_id: id of the instrument request that carries it out.
        policy: policy name.
        proposal: what was proposed.
        decided_at: seconds since the Unix epoch.
        policy_state: the policy's resumable state right after this proposal (JSON: its RNG state and
            counters), stored with the decision so that ``dualscope resume`` continues from here;
            ``None`` for policies that do not support it.
    """

    step: int
    request_id: str
    policy: str
    proposal: Proposal
    decided_at: float
    policy_state: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StepTimings:
    """Seconds spent in each stage of one step (``record`` is NaN until known)."""

    decide_s: float
    measure_s: float
    record_s: float = math.nan


@dataclass(frozen=True)
class PropertyMap:
    """What a model-based policy believes of the property at every candidate, now (for the live view).

    Attributes:
        version: the model snapshot (``model_version`` of the decisions made on it).
        n_obs: observations the model has been conditioned on so far.
        mean: posterior mean of the property at every candidate ``(m,)``, in the scalariser's units.
        std: its posterior standard deviation ``(m,)``, same units.

    Examples:
        >>> PropertyMap(3, 12, np.zeros(4), np.ones(4)).mean.shape
        (4,)
    """

    version: int
    n_obs: int
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
