"""Train a surrogate on a dataset or run, score it on held-out pairs, write its checkpoint and figures."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.io import load_paired, save_surrogate
from engine.report._surrogate_figures import dual_latent_figure, latent_grid_figure, prediction_figure
from engine.surrogate import Surrogate, SurrogateConfig, TrainReport, evaluate_held_out


@dataclass(frozen=True)
class TrainingOutcome:
    """What ``train_surrogate`` did.

    Attributes:
        report: the fit's report (steps, wall time, loss curve, rolled back or not).
        metrics: name → value, as written to ``metrics.json`` (empty when the fit was rolled back).
        directory: the checkpoint directory (nothing is written when the fit was rolled back).
        figures: the PNG files written.

    Examples:
        >>> from engine.surrogate import TrainReport
        >>> failed = TrainingOutcome(TrainReport([], 0, 0.1, True, "NaN loss", 0))  # a rolled-back fit
        >>> failed.directory is None, failed.figures
        (True, [])
    """

    report: TrainReport
    metrics: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None
    figures: list[Path] = field(default_factory=list)


def train_surrogate(
    dataset: Path,
    directory: Path,
    config: SurrogateConfig,
    *,
    patch: int = 32,
    steps: int = 1500,
    holdout: float = 0.2,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> TrainingOutcome:
    """Fit a surrogate on ``dataset``, evaluate it on a held-out split, and write checkpoint, figures, metrics.

    Args:
        dataset: a ``dualscope simulate`` dataset or a run (``.zarr``).
        directory: the checkpoint directory to write (``weights.pt``, ``surrogate.json``, ``metrics.json``,
            ``latent.png``, ``latent_grid.png`` and, with im2spec, ``predictions.png``).
        config: the surrogate's kind and hyper-parameters.
        patch: patch side in pixels (a multiple of 8).
        steps: optimiser steps.
        holdout: fraction of the pairs held out for evaluation and calibration, in (0, 1).
        seed: seed of the weights, batches and split.
        device: a torch device name, e.g. ``cpu`` or ``cuda:0``.
        progress: called with (step, loss) while fitting.

    Returns:
        The outcome; nothing is written when the fit failed and was rolled back.

    Raises:
        ConfigError: an unusable dataset or option (patch size, holdout fraction).

    Examples:
        >>> out = train_surrogate(run_path, folder / "model", SurrogateConfig(batch_size=8),
        ...                       patch=8, steps=5, holdout=0.25)
        >>> out.report.rolled_back, sorted(out.metrics)[:3], len(out.figures)
        (False, ['coverage90_after', 'coverage90_before', 'im2spec_r2'], 3)
    """
    import torch

    data, energy, units = load_paired(dataset, patch)
    train_set, held_out = data.split(holdout, np.random.default_rng(seed))
    surrogate = Surrogate(config, patch, data.channels, device=torch.device(device), seed=seed)
    report = surrogate.fit(train_set, steps, progress)
    if report.rolled_back:
        return TrainingOutcome(report)
    metrics: dict[str, Any] = {
        "model": config.kind,
        "steps": report.steps,
        "train_seconds": round(report.wall_s, 2),
        "pairs": len(train_set),
        **evaluate_held_out(surrogate, held_out).to_json(),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_surrogate(surrogate, directory)
    figures = [
        dual_latent_figure(surrogate, held_out, energy, directory / "latent.png"),
        latent_grid_figure(surrogate, held_out, energy, directory / "latent_grid.png", units=units),
    ]
    if config.kind != "spec2im":
        figures.append(prediction_figure(surrogate, held_out, energy, units, directory / "predictions.png"))
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return TrainingOutcome(report, metrics, directory, figures)
