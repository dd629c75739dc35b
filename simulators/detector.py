"""What a spectrometer's detector does to the expected counts: drift of the energy axis, gain, dead channels.

A real EELS spectrum image is not the loss function times a dose plus shot noise alone:

- the zero-loss peak, and with it the whole energy axis, wanders between spectra (high-tension and
  spectrometer instabilities, a few meV to tens of meV): spectrum ``i`` is recorded on an axis
  shifted by ``δᵢ ~ N(0, energy_jitter_ev²)``, i.e. channel ``E`` reads the counts expected at
  ``E + δᵢ``;
- the gain varies between read-outs (beam-current fluctuation, detector gain): spectrum ``i`` is
  multiplied by ``gᵢ = exp(gain_noise · ε − gain_noise² / 2)`` (mean 1);
- dead channels read zero whatever falls on them.

Counts are Poisson draws of the shifted, gain-scaled expectation. Pure function of its inputs and
the generator it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Detector:
    """A spectrometer's read-out of expected counts ``(n, c)`` on the energy axis ``(c,)``.

    Attributes:
        energy_axis: channel centres ``(c,)`` in eV.
        energy_jitter_ev: standard deviation of each spectrum's energy-axis shift (eV); 0: none.
        gain_noise: standard deviation of the log of each spectrum's gain; 0: none.
        dead_channels: channel indices that always read 0.

    Examples:
        >>> energy = np.linspace(0.2, 1.2, 101)
        >>> expected = np.exp(-0.5 * ((energy - 0.7) / 0.05) ** 2)[None, :] * 1000.0
        >>> detector = Detector(energy, energy_jitter_ev=0.01, gain_noise=0.03, dead_channels=(50,))
        >>> counts = detector.read(np.repeat(expected, 200, axis=0), np.random.default_rng(0))
        >>> counts.shape, float(counts[:, 50].max())  # the dead channel sees nothing
        ((200, 101), 0.0)
        >>> peaks = energy[counts.argmax(axis=1)]  # the peak wanders by about the jitter
        >>> 0.005 < float(peaks.std()) < 0.02
        True
    """

    energy_axis: NDArray[np.float64]
    energy_jitter_ev: float = 0.0
    gain_noise: float = 0.0
    dead_channels: tuple[int, ...] = ()

    def read(self, expected: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float32]:
        """Counts ``(n, c)`` for expected counts ``(n, c)`` (per spectrum: shift, gain, Poisson, dead channels)."""
        mean = np.clip(np.asarray(expected, dtype=np.float64), 0, None)
        n = mean.shape[0]
        if self.energy_jitter_ev > 0:
            shifts = np.asarray(self.energy_jitter_ev * rng.standard_normal(n), dtype=np.float64)
            axis = self.energy_axis
            mean = np.stack([np.interp(axis + d, axis, row) for d, row in zip(shifts, mean, strict=True)])
        if self.gain_noise > 0:
            s = self.gain_noise
            mean = mean * np.exp(s * rng.standard_normal(n) - s * s / 2)[:, None]
        counts = rng.poisson(mean).astype(np.float32)
        if self.dead_channels:
            counts[:, list(self.dead_channels)] = 0.0
        return counts
