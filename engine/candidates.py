"""The discrete set of probe positions a policy may choose from."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError
from engine.types import Image, InstrumentDescription


class CandidateSet:
    """Candidate probe positions with measured and pending bookkeeping.

    Attributes:
        positions: shape ``(m, d)``, in the instrument axes' units.
        pixels: shape ``(m, 2)``, the ``(row, col)`` image pixel of each candidate
            (where its structural patch is centred).
        grid_shape: ``(rows, cols)`` of the candidate grid, candidates in row-major order.
    """

    def __init__(self, positions: NDArray[np.float64], pixels: NDArray[np.int64], grid_shape: tuple[int, int]):
        if positions.ndim != 2 or pixels.shape != (positions.shape[0], 2):
            raise ConfigError(f"positions (m, d) and pixels (m, 2) disagree: {positions.shape}, {pixels.shape}")
        if grid_shape[0] * grid_shape[1] != positions.shape[0]:
            raise ConfigError(f"grid {grid_shape} does not hold {positions.shape[0]} candidates")
        self.positions = positions
        self.pixels = pixels
        self.grid_shape = grid_shape
        self._measured = np.zeros(positions.shape[0], dtype=bool)
        self._pending = np.zeros(positions.shape[0], dtype=bool)

    @classmethod
    def from_image_grid(
        cls, image: Image, description: InstrumentDescription, stride_px: int, margin_px: int = 0
    ) -> CandidateSet:
        """Candidates every ``stride_px`` image pixels, ``margin_px`` in from the edges.

        Positions are the pixel centres in the image axes' units, clipped to the
        instrument's axis limits. Axes are matched by name (``x`` ↔ columns, ``y`` ↔ rows).
        """
        if stride_px < 1 or margin_px < 0:
            raise ConfigError("stride_px must be >= 1 and margin_px >= 0")
        h, w = image.data.shape
        rows = np.arange(margin_px, h - margin_px, stride_px)
        cols = np.arange(margin_px, w - margin_px, stride_px)
        if rows.size == 0 or cols.size == 0:
            raise ConfigError(f"no candidates: image {h}x{w} px, stride {stride_px}, margin {margin_px}")
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        pixels = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.int64)
        y, x = image.coords()
        by_name = {"x": x[pixels[:, 1]], "y": y[pixels[:, 0]]}
        missing = [a.name for a in description.axes if a.name not in by_name]
        if missing:
            raise ConfigError(f"cannot place image-grid candidates on axes {missing}; only 'x' and 'y' map to pixels")
        positions = np.stack([by_name[a.name] for a in description.axes], axis=1)
        lows = np.array([a.low for a in description.axes])
        highs = np.array([a.high for a in description.axes])
        return cls(np.clip(positions, lows, highs), pixels, (rows.size, cols.size))

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def measured(self) -> NDArray[np.bool_]:
        """Read-only mask ``(m,)`` of measured candidates."""
        view = self._measured.view()
        view.flags.writeable = False
        return view

    @property
    def pending(self) -> NDArray[np.bool_]:
        """Read-only mask ``(m,)`` of candidates sent but not yet measured."""
        view = self._pending.view()
        view.flags.writeable = False
        return view

    def available(self) -> NDArray[np.int64]:
        """Indices ``(k,)`` of candidates neither measured nor pending, ascending."""
        return np.flatnonzero(~(self._measured | self._pending)).astype(np.int64)

    def mark_pending(self, indices: NDArray[np.int64]) -> None:
        """Mark ``indices`` as sent to the instrument."""
        if np.any(self._measured[indices] | self._pending[indices]):
            raise ValueError("a proposed candidate is already measured or pending")
        self._pending[indices] = True

    def mark_measured(self, indices: NDArray[np.int64]) -> None:
        """Move ``indices`` from pending to measured."""
        self._pending[indices] = False
        self._measured[indices] = True

    def release(self, indices: NDArray[np.int64]) -> None:
        """Return pending ``indices`` to the pool (the command failed)."""
        self._pending[indices] = False
