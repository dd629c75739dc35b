"""Discovery curves: how fast a campaign finds the best locations of a known ground truth.

Used by the discovery benchmark, the demo and the run report. Pure functions, no I/O.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError


def top_set(values: NDArray[np.float64], fraction: float = 0.01) -> NDArray[np.int64]:
    """Indices of the top ``fraction`` of ``values (m,)``: at least one, ties at the threshold included.

    Args:
        values: the ground truth at every candidate ``(m,)``.
        fraction: the share of candidates in the top set, in (0, 1].

    Returns:
        Candidate indices ``(k,)`` of the top set.

    Raises:
        ConfigError: a fraction outside (0, 1].

    Examples:
        >>> top_set(np.array([0.1, 0.9, 0.5, 0.95]), fraction=0.5).tolist()
        [1, 3]
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, math.ceil(fraction * values.size))
    threshold = np.sort(values)[-k]
    return np.flatnonzero(values >= threshold).astype(np.int64)


def recall_curve(order: NDArray[np.int64] | list[int], top: NDArray[np.int64]) -> NDArray[np.float64]:
    """Fraction ``(k,)`` of ``top`` found after 1..k measurements, ``order`` being the candidates measured.

    Args:
        order: candidate indices in the order they were measured ``(n,)``.
        top: the top set ``(k,)``.

    Returns:
        Recall after each measurement ``(n,)``, in [0, 1].

    Examples:
        >>> recall_curve([0, 3, 1], np.array([1, 3])).tolist()  # measured 0, then 3, then 1
        [0.0, 0.5, 1.0]
    """
    hits = np.isin(np.asarray(order, dtype=np.int64), top)
    return np.asarray(np.cumsum(hits) / top.size, dtype=np.float64)


def measurements_to(curve: NDArray[np.float64], level: float = 0.5) -> float:
    """The first number of measurements whose recall reaches ``level`` (``inf`` if it never does).

    Args:
        curve: a recall curve ``(n,)``.
        level: the recall to reach.

    Returns:
        Measurements needed, or ``inf``.

    Examples:
        >>> measurements_to(np.array([0.0, 0.5, 1.0]))
        2.0
        >>> measurements_to(np.array([0.0, 0.25]))
        inf
    """
    reached = np.flatnonzero(curve >= level)
    return float(reached[0] + 1) if reached.size else math.inf


def discovery_curves(
    order: NDArray[np.int64], truth: NDArray, seed: int = 0, grid_width: int | None = None, permutations: int = 20
) -> dict[str, NDArray]:
    """Best ground-truth value found after each spectrum, for the run's ``order``, random and raster.

    Args:
        order: indices into ``truth`` in the run's acquisition order ``(n,)``.
        truth: scalar value at every recorded position ``(m,)`` (positions in row-major grid order).
        seed: seeds the random orders.
        grid_width: positions per grid row: the raster then scans as the loop's raster policy does
            (serpentine: every other row backwards); ``None``: row-major.
        permutations: random orders averaged.

    Returns:
        ``this run``; ``random``, the mean best-so-far over ``permutations`` seeded random orders;
        and ``raster``: best value so far ``(n,)`` each.

    Examples:
        >>> truth = np.array([0.1, 0.9, 0.5, 0.2])
        >>> curves = discovery_curves(np.array([1, 0]), truth, grid_width=2)
        >>> curves["this run"].tolist(), curves["raster"].tolist(), sorted(curves)
        ([0.9, 0.9], [0.1, 0.9], ['random', 'raster', 'this run'])
    """
    n = order.size
    rng = np.random.default_rng(seed)
    random = np.mean(
        [np.maximum.accumulate(truth[rng.permutation(truth.size)[:n]]) for _ in range(permutations)], axis=0
    )
    raster = np.arange(truth.size)
    if grid_width is not None and grid_width > 0 and truth.size % grid_width == 0:
        rows = raster.reshape(-1, grid_width)
        rows[1::2] = rows[1::2, ::-1].copy()
        raster = rows.ravel()
    return {
        "this run": np.maximum.accumulate(truth[order]),
        "random": random,
        "raster": np.maximum.accumulate(truth[raster[: min(n, truth.size)]]),
    }
