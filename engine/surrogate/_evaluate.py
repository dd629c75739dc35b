"""Held-out metrics of a trained surrogate: im2spec R², 90 % interval coverage, spec2im error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.surrogate._data import PairedData
from engine.surrogate._surrogate import Surrogate


@dataclass(frozen=True)
class HeldOutMetrics:
    """What a surrogate scores on pairs it was not trained on.

    Attributes:
        im2spec_r2: coefficient of determination of the predicted mean spectra over all channels
            (None for a spec2im-only surrogate; NaN when the held-out spectra do not vary).
        coverage90_before: fraction of true channel values inside the predicted 90 % interval on the
            evaluation half of the held-out pairs, before calibration (None without im2spec).
        coverage90_after: the same on the same half after ``Surrogate.calibrate`` on the *other* half
            (the calibration half), so that it is a measurement, not true by construction.
        spec2im_mse: mean squared error of the predicted patches, in normalised intensity² (None for an
            im2spec-only surrogate).

    Examples:
        >>> metrics = evaluate_held_out(model, data)
        >>> metrics.im2spec_r2 is not None, metrics.coverage90_after is not None
        (True, True)
    """

    im2spec_r2: float | None
    coverage90_before: float | None
    coverage90_after: float | None
    spec2im_mse: float | None

    def to_json(self) -> dict[str, Any]:
        """The metrics that apply to this surrogate, by name."""
        return {k: v for k, v in vars(self).items() if v is not None}


def evaluate_held_out(surrogate: Surrogate, held_out: PairedData) -> HeldOutMetrics:
    """Score ``surrogate`` on ``held_out`` pairs; calibrate its spread on half of them, judge it on the rest.

    The held-out pairs with a spectrum are split alternately: even rows calibrate the predicted spread
    (``Surrogate.calibrate``), odd rows measure the 90 % coverage before and after. R² and the spec2im
    error use every held-out pair.

    Args:
        surrogate: a fitted surrogate (any kind); calibrated in place when it predicts spectra.
        held_out: pairs never used for fitting: patches ``(n, p, p)``, spectra ``(n, c)``; rows without a
            measured spectrum (image-only rows of a run) are left out of every metric.

    Returns:
        The metrics that apply to the surrogate's kind.

    Raises:
        ConfigError: fewer than 4 held-out rows have a measured spectrum (2 to calibrate, 2 to judge).

    Examples:
        >>> train, held_out = data.split(0.25, rng)
        >>> _ = model.fit(train, 5)
        >>> metrics = evaluate_held_out(model, held_out)
        >>> sorted(metrics.to_json())
        ['coverage90_after', 'coverage90_before', 'im2spec_r2', 'spec2im_mse']
    """
    pairs = held_out.subset(np.flatnonzero(held_out.has_spectrum))  # image-only rows have no spectrum to score
    if len(pairs) < 4:
        raise ConfigError(
            f"the held-out part has {len(pairs)} measured spectra; at least 4 are needed, 2 to calibrate the "
            "uncertainty and 2 to judge it (hold out more, or more data)"
        )
    r2 = before = after = mse = None
    kind = surrogate.config.kind
    if kind != "spec2im":
        mean, _ = surrogate.predict_spectra(pairs.patches)
        y = pairs.spectra
        total = float(((y - y.mean(axis=0)) ** 2).sum())
        r2 = float(1 - ((y - mean) ** 2).sum() / total) if total > 0 else float("nan")
        calibrate_on, judge_on = pairs.subset(np.arange(0, len(pairs), 2)), pairs.subset(np.arange(1, len(pairs), 2))
        before = surrogate.coverage(judge_on)
        surrogate.calibrate(calibrate_on)
        after = surrogate.coverage(judge_on)
    if kind != "im2spec":
        patches, _ = surrogate.predict_patches(pairs.spectra)
        mse = float(((patches - pairs.patches) ** 2).mean())
    return HeldOutMetrics(r2, before, after, mse)
