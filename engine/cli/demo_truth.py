"""The demo's ground truth: the twin's noise-free spectra at every candidate, for discovery curves.

Only the composition root may build a simulator in-process; the campaign itself measured the twin
over ZeroMQ and never saw these spectra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from engine.config import RunConfig, parse_config
from engine.errors import DualscopeError
from engine.policy import build_scalariser
from engine.protocols import Clock
from engine.report import recall_curve, top_set
from engine.storage import RunData
from simulators.stem_twin import StemTwinOptions, stem_twin


def twin_discovery(
    config: RunConfig, runs: dict[str, RunData], clock: Clock, fraction: float = 0.01
) -> tuple[dict[str, NDArray[np.float64]], int]:
    """Recall of the top ``fraction`` of candidates (by the config's scalariser) after each measurement.

    Args:
        config: the demo's configuration (a ``stem-twin`` instrument).
        runs: label → a run over the same candidates (e.g. the policy's and random's).
        clock: injected time source for the in-process twin.

    Returns:
        label → recall curve ``(n,)``, and the size of the top set.
    """
    options = StemTwinOptions.model_validate(config.instrument.options)
    stem = stem_twin(options, clock)
    first = next(iter(runs.values()))
    axis = stem.describe().spectral_axis
    cube = stem.expected_counts(first.candidate_positions)  # counts in one dwell
    values = build_scalariser(config.policy.scalariser, axis)(cube, axis.values())
    top = top_set(np.asarray(values, dtype=np.float64), fraction)
    curves = {label: recall_curve(run.columns["candidate_index"], top) for label, run in runs.items()}
    return curves, int(top.size)


def demo_configs(base: RunConfig, budget: int, output_dir: Path) -> tuple[RunConfig, list[RunConfig]]:
    """The demo's campaign (``base`` with the budget and output folder) and its baselines.

    The baselines, the position-only GP (``gp-position``) and ``random``, measure the same twin
    in-process with no dwell, with the same budget and seed; the GP refits inline (reproducible).
    """
    config = base.model_copy(
        update={
            "run": base.run.model_copy(update={"output_dir": output_dir, "figure": False}),
            "stop": base.stop.model_copy(update={"budget": budget}),
        }
    )
    instrument = config.instrument.model_copy(
        update={"mode": "local", "options": {**config.instrument.options, "acquisition_time_s": 0.0}}
    )
    baselines = [
        config.model_copy(
            update={
                "run": config.run.model_copy(update={"name": f"{name}-baseline"}),
                "instrument": instrument,
                "policy": config.policy.model_copy(update={"name": name, "training": "inline"}),
            }
        )
        for name in ("gp-position", "random")
    ]
    return config, baselines


def twin_truth(config_text: str, candidates: NDArray[np.float64], clock: Clock) -> NDArray[np.float32] | None:
    """The noise-free spectra of the STEM twin a run measured, at its candidates (for the live view's discovery).

    Args:
        config_text: the run's configuration (TOML, as stored in the run).
        candidates: the run's candidate positions ``(m, d)``, nm.
        clock: injected time source for the in-process twin.

    Returns:
        Counts in one dwell ``(m, c)``, or None when the run's instrument is not a twin this process
        can rebuild (another driver, or a server it only connected to).
    """
    try:
        config = parse_config(config_text, "the run's configuration")
        if config.instrument.driver != "stem-twin" or config.instrument.mode == "connect":
            return None
        stem = stem_twin(StemTwinOptions.model_validate(config.instrument.options), clock)
    except (DualscopeError, ValidationError):
        return None
    return np.asarray(stem.expected_counts(candidates), dtype=np.float32)
