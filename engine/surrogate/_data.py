"""Paired structure/property data: image patches ``(n, p, p)`` and spectra ``(n, c)``.

Rows without a measured spectrum (``has_spectrum`` false) still train the image branch: the
whole structural image is known before the first spectrum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError


@dataclass(frozen=True)
class PairedData:
    """Patches and spectra, row-aligned.

    Attributes:
        patches: ``(n, p, p)`` float32.
        spectra: ``(n, c)`` float32; rows without a spectrum are ignored (use zeros or NaN).
        has_spectrum: ``(n,)`` bool.
        labels: optional ``(n,)`` int class per row (e.g. number of particles), for evaluation.
        positions: optional ``(n, 2)`` where each patch lies in one image (a spectrum image, a run);
            ``split`` then holds out whole tiles of the field, so that no held-out patch has a
            training patch a few pixels away.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> data = PairedData.paired(rng.random((10, 8, 8)), rng.random((10, 6)))
        >>> train, held_out = data.split(0.2, rng)
        >>> len(train), len(held_out), data.patch_size, data.channels
        (8, 2, 8, 6)
    """

    patches: NDArray[np.float32]
    spectra: NDArray[np.float32]
    has_spectrum: NDArray[np.bool_]
    labels: NDArray[np.int64] | None = None
    positions: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        n = self.patches.shape[0]
        if self.patches.ndim != 3 or self.patches.shape[1] != self.patches.shape[2]:
            raise ConfigError(f"patches must be (n, p, p), got {self.patches.shape}")
        if self.spectra.ndim != 2 or self.spectra.shape[0] != n or self.has_spectrum.shape != (n,):
            raise ConfigError("spectra (n, c) and has_spectrum (n,) must match the n patches")
        if not np.isfinite(self.patches).all():
            raise ConfigError("patches contain NaN or infinite values")
        if not np.isfinite(self.spectra[self.has_spectrum]).all():
            raise ConfigError("measured spectra contain NaN or infinite values")
        if self.positions is not None and self.positions.shape != (n, 2):
            raise ConfigError(f"positions must be (n, 2) for the {n} patches, got {self.positions.shape}")

    @classmethod
    def paired(
        cls, patches: NDArray, spectra: NDArray, labels: NDArray | None = None, positions: NDArray | None = None
    ) -> PairedData:
        """All rows have spectra."""
        n = patches.shape[0]
        return cls(
            np.asarray(patches, np.float32),
            np.asarray(spectra, np.float32),
            np.ones(n, bool),
            None if labels is None else np.asarray(labels, np.int64),
            None if positions is None else np.asarray(positions, np.float64),
        )

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    @property
    def patch_size(self) -> int:
        """Side ``p`` of the square patches."""
        return int(self.patches.shape[1])

    @property
    def channels(self) -> int:
        """Spectral channels ``c``."""
        return int(self.spectra.shape[1])

    def subset(self, index: NDArray[np.int64]) -> PairedData:
        """Rows ``index``."""
        return PairedData(
            self.patches[index],
            self.spectra[index],
            self.has_spectrum[index],
            None if self.labels is None else self.labels[index],
            None if self.positions is None else self.positions[index],
        )

    def tiles(self, tiles: int = 5) -> NDArray[np.int64] | None:
        """The tile ``(n,)`` of each row when the field is cut into ``tiles × tiles`` (None without positions).

        Use it as the groups of a grouped cross-validation, so that folds are blocked as ``split`` is.
        """
        return None if self.positions is None else _tile_of(self.positions, tiles)

    def split(self, holdout: float, rng: np.random.Generator, tiles: int = 5) -> tuple[PairedData, PairedData]:
        """``(train, held-out)`` with about a fraction ``holdout`` held out (see ``split_index``)."""
        train, held_out = self.split_index(holdout, rng, tiles)
        return self.subset(train), self.subset(held_out)

    def split_index(
        self, holdout: float, rng: np.random.Generator, tiles: int = 5
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Row indices ``(train, held-out)``, about a fraction ``holdout`` held out, each sorted.

        With ``positions`` the field is cut into ``tiles × tiles`` tiles and whole tiles, in random
        order, are held out until the fraction is reached (a spatially blocked split: neighbouring,
        overlapping patches stay on one side). Without positions (independent pairs) rows are drawn at
        random.
        """
        if not 0 < holdout < 1:
            raise ConfigError("holdout must be in (0, 1)")
        k = max(1, round(holdout * len(self)))
        if self.positions is None:
            order = rng.permutation(len(self))
            return np.sort(order[k:]).astype(np.int64), np.sort(order[:k]).astype(np.int64)
        tile = _tile_of(self.positions, tiles)
        held = np.zeros(len(self), bool)
        for t in rng.permutation(np.unique(tile)):
            if held.sum() >= k:
                break
            held |= tile == t
        if held.all():
            raise ConfigError("the held-out tiles took every row: hold out less, or use more tiles")
        return np.flatnonzero(~held).astype(np.int64), np.flatnonzero(held).astype(np.int64)


def _tile_of(positions: NDArray[np.float64], tiles: int) -> NDArray[np.int64]:
    """The tile ``(n,)`` of each position ``(n, 2)`` when its bounding box is cut into ``tiles × tiles``.

    Tile numbers are row-major; the last row and column include the box's far edge.
    """
    p = np.asarray(positions, np.float64)
    lo, span = p.min(axis=0), np.ptp(p, axis=0)
    cell = np.floor((p - lo) / np.where(span > 0, span, 1.0) * tiles).clip(0, tiles - 1).astype(np.int64)
    return np.asarray(cell[:, 1] * tiles + cell[:, 0], dtype=np.int64)


def extract_patches(image: NDArray, centres_px: NDArray[np.int64], size: int) -> NDArray[np.float32]:
    """Square patches ``(m, size, size)`` of ``image (h, w)`` centred on ``centres_px (m, 2)`` as ``(row, col)``.

    The image is reflect-padded so that patches at the edges keep their size.

    Args:
        image: the structural image ``(h, w)``.
        centres_px: patch centres ``(m, 2)`` as ``(row, col)`` pixels.
        size: patch side in pixels.

    Returns:
        Patches ``(m, size, size)``, float32.

    Examples:
        >>> image = np.arange(100.0).reshape(10, 10)
        >>> extract_patches(image, np.array([[5, 5], [0, 0]]), 4).shape  # edges are padded
        (2, 4, 4)
    """
    half = size // 2
    padded = np.pad(np.asarray(image, np.float32), half + 1, mode="reflect")
    out = np.empty((centres_px.shape[0], size, size), np.float32)
    for k, (r, c) in enumerate(np.asarray(centres_px, np.int64)):
        r0, c0 = r + 1, c + 1  # shift by the padding minus half
        out[k] = padded[r0 : r0 + size, c0 : c0 + size]
    return out
