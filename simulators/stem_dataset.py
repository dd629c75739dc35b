"""A STEM-EELS twin recorded as a spectrum image: the HAADF image and one spectrum per grid position."""

from __future__ import annotations

import numpy as np

from engine.candidates import CandidateSet
from engine.protocols import Clock
from engine.spectrum_image import SpectrumImage
from simulators.stem_twin import StemTwinOptions, stem_twin


def stem_spectrum_image(options: StemTwinOptions, stride_px: int, clock: Clock) -> SpectrumImage:
    """Record the twin on a grid: Poisson counts of its expected spectrum at every ``stride_px``-th pixel.

    Args:
        options: the twin (specimen, spectrometer, dwell; ``options.seed`` seeds the specimen).
        stride_px: one probe position every ``stride_px`` image pixels (the grid starts at ``stride_px // 2``).
        clock: the twin's clock.

    Returns:
        A spectrum image: HAADF image ``(h, w)``, positions ``(m, 2)`` in nm, spectra ``(m, c)`` in counts
        per dwell; the noise is seeded with ``options.seed + 1``.
    """
    twin = stem_twin(options, clock)
    desc, image = twin.describe(), twin.acquire_image("haadf")
    grid = CandidateSet.from_image_grid(image, desc, stride_px, stride_px // 2)
    rng = np.random.default_rng(options.seed + 1)
    expected = np.concatenate([twin.expected_counts(grid.positions[i : i + 200]) for i in range(0, len(grid), 200)])
    return SpectrumImage(
        image, grid.positions, rng.poisson(expected).astype(np.float32), desc.spectral_axis,
        (desc.axes[0], desc.axes[1]), f"dualscope simulate stem --seed {options.seed}", float(desc.extra["dwell_s"]),
    )  # fmt: skip
