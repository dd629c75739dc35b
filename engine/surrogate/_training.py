"""Bounded training with rollback: the last good weights come back on NaN or failure."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TrainReport:
    """What one ``fit`` or ``update`` did.

    Attributes:
        losses: training loss per step (the loss curve).
        steps: optimiser steps taken (and kept, unless rolled back).
        wall_s: seconds spent.
        rolled_back: whether the weights were restored to those before the call.
        reason: why it stopped or rolled back.
        version: model version after the call.
        terms: the last step's loss terms.

    Examples:
        >>> report.steps, report.rolled_back, len(report.losses) == report.steps
        (5, False, True)
    """

    losses: list[float]
    steps: int
    wall_s: float
    rolled_back: bool
    reason: str
    version: int
    terms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Tensors of a training set on the training device."""

    patches: Tensor
    spectra: Tensor
    has_spectrum: Tensor


def train_steps(
    net: Any,
    optimizer: torch.optim.Optimizer,
    data: Batch,
    *,
    max_steps: int,
    batch_size: int,
    generator: torch.Generator,
    deadline: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[list[float], dict[str, float], str]:
    """Run up to ``max_steps`` Adam steps on random mini-batches (or until ``deadline``, monotonic s).

    Returns the loss curve, the last loss terms and the stop reason. Raises ``FloatingPointError``
    on a non-finite loss (the caller rolls back).
    """
    n = data.patches.shape[0]
    losses: list[float] = []
    terms: dict[str, float] = {}
    net.train()
    for step in range(max_steps):
        if deadline is not None and time.monotonic() >= deadline:
            return losses, terms, f"time limit after {step} steps"
        idx = torch.randint(n, (min(batch_size, n),), generator=generator, device=generator.device)
        loss, terms = net.loss(data.patches[idx], data.spectra[idx], data.has_spectrum[idx], generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()
        losses.append(value)
        if on_step is not None:
            on_step(step + 1, value)
    return losses, terms, f"{max_steps} steps"


def with_rollback(
    net: nn.Module, optimizer: torch.optim.Optimizer, run: Callable[[], tuple[list[float], dict[str, float], str]]
) -> tuple[list[float], dict[str, float], str, bool]:
    """Call ``run``; on an exception or non-finite weights restore the weights and optimiser state.

    Returns ``(losses, terms, reason, rolled_back)``.
    """
    weights = copy.deepcopy(net.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    try:
        losses, terms, reason = run()
        if not all(torch.isfinite(p).all() for p in net.parameters()):
            raise FloatingPointError("weights became non-finite")
        return losses, terms, reason, False
    except (FloatingPointError, RuntimeError, ValueError) as exc:
        net.load_state_dict(weights)
        optimizer.load_state_dict(opt_state)
        return [], {}, f"rolled back: {type(exc).__name__}: {exc}", True
