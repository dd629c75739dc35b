"""Colour scales for categories (cluster labels, particle counts) and for integer orders."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, ListedColormap
from numpy.typing import NDArray


def categorical_colours(values: NDArray) -> tuple[ListedColormap, BoundaryNorm, NDArray[np.int64]]:
    """A discrete colour scale for integer categories: one colour per value, a tick on each.

    Args:
        values: the categories ``(n,)`` (integers, e.g. particle counts or cluster labels).

    Returns:
        The colour map, the norm that puts each integer in its own bin, and the ticks (the integers
        from the smallest to the largest value).

    Examples:
        >>> cmap, norm, ticks = categorical_colours(np.array([1, 2, 4]))
        >>> ticks.tolist(), cmap.N
        ([1, 2, 3, 4], 4)
    """
    v = np.asarray(values)
    low, high = (int(np.nanmin(v)), int(np.nanmax(v))) if v.size else (0, 0)
    ticks = np.arange(low, high + 1)
    base = "tab10" if ticks.size <= 10 else "tab20"
    colours = colormaps[base](np.arange(ticks.size) % colormaps[base].N)
    cmap = ListedColormap(colours)
    return cmap, BoundaryNorm(np.arange(low - 0.5, high + 1.5), cmap.N), ticks
