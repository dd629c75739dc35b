"""What inverse design aims at: a target spectrum (from a file or "a peak at E eV of width w") and a tolerance.

The distance of a spectrum is its relative L2 distance to the target (0 = identical), after the best
positive scale factor when only the shape matters (a peak given without an amplitude). A target is
*reached* when that distance is within ``rel_tol`` and the spectrum's peak lies within ``peak_tol_ev``
of the target's. What the searches optimise is the *tolerance ratio*, the larger of distance /
``rel_tol`` and peak error / ``peak_tol_ev`` (reached ⇔ ratio ≤ 1): optimising the distance alone
finds spectra of the right shape whose peak sits a few channels off, and then stalls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError
from engine.policy import PeakPosition, TargetMatch


@dataclass(frozen=True)
class DesignTarget:
    """A target spectrum ``(c,)`` on ``energy_ev (c,)`` and what counts as matching it.

    Attributes:
        spectrum: target values ``(c,)`` (nm² for cross-sections; arbitrary units when ``fit_scale``).
        energy_ev: photon energies ``(c,)``, eV.
        fit_scale: compare shapes only: each spectrum is scaled by its least-squares factor first.
        rel_tol: relative L2 distance that counts as a match.
        peak_tol_ev: largest peak-position error that counts as a match, eV.
        label: what the target is, for figures and logs.

    Examples:
        >>> energy = np.linspace(1.0, 3.0, 50)
        >>> target = peak_target(energy, 2.0, 0.2)
        >>> spectrum = np.asarray(target.spectrum) * 7.0  # the same shape, another height
        >>> bool(target.reached(spectrum[None, :])[0])  # a shape-only target ignores the scale
        True
    """

    spectrum: NDArray[np.float64]
    energy_ev: NDArray[np.float64]
    fit_scale: bool = False
    rel_tol: float = 0.1
    peak_tol_ev: float = 0.02
    label: str = "target"
    _match: TargetMatch = field(init=False, repr=False, compare=False)
    _peak: PeakPosition = field(init=False, repr=False, compare=False)
    _target_peak_ev: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.spectrum.shape != self.energy_ev.shape or self.spectrum.ndim != 1:
            raise ConfigError(f"target spectrum {self.spectrum.shape} and energies {self.energy_ev.shape} differ")
        if not np.isfinite(self.spectrum).all() or not np.any(self.spectrum):
            raise ConfigError("the target spectrum must be finite and not all zero")
        object.__setattr__(self, "_match", TargetMatch(tuple(self.spectrum.tolist()), self.fit_scale))
        object.__setattr__(self, "_peak", PeakPosition(float(self.energy_ev.min()), float(self.energy_ev.max())))
        object.__setattr__(self, "_target_peak_ev", float(self.peak_ev(self.spectrum)[0]))

    def distance(self, spectra: NDArray[np.floating]) -> NDArray[np.float64]:
        """Relative L2 distances ``(n,)`` of spectra ``(n, c)`` (or one ``(c,)`` → ``(1,)``)."""
        return -self._match(spectra, self.energy_ev)

    def tolerance_ratio(self, spectra: NDArray[np.floating]) -> NDArray[np.float64]:
        """``max(distance / rel_tol, |peak − target peak| / peak_tol_ev)`` per spectrum ``(n,)``; ≤ 1 is reached."""
        peak_error = np.abs(self.peak_ev(spectra) - self._target_peak_ev)
        return np.asarray(np.maximum(self.distance(spectra) / self.rel_tol, peak_error / self.peak_tol_ev))

    def score(self, spectrum: NDArray[np.floating]) -> float:
        """``−tolerance ratio`` of one spectrum ``(c,)``: what the searches maximise (≥ −1 is reached)."""
        return -float(self.tolerance_ratio(spectrum)[0])

    def peak_ev(self, spectra: NDArray[np.floating]) -> NDArray[np.float64]:
        """Peak positions ``(n,)`` in eV (parabolic refinement of the maximum)."""
        return self._peak(np.atleast_2d(np.asarray(spectra, dtype=np.float64)), self.energy_ev)

    def reached(self, spectra: NDArray[np.floating]) -> NDArray[np.bool_]:
        """Whether each spectrum ``(n, c)`` matches within both tolerances ``(n,)``."""
        close = np.abs(self.peak_ev(spectra) - self._target_peak_ev) <= self.peak_tol_ev
        return np.asarray((self.distance(spectra) <= self.rel_tol) & close)


class TargetTolerance:
    """The target as a scalariser: ``−ln(tolerance ratio)`` (higher is closer; ≥ 0 is reached).

    The logarithm spreads the sharp minimum around the target over a range a GP models well.

    Args:
        target: the design target.

    Examples:
        >>> energy = np.linspace(1.0, 3.0, 50)
        >>> objective = TargetTolerance(peak_target(energy, 2.0, 0.2))
        >>> objective(np.asarray(objective.target.spectrum)[None, :], energy).shape  # maximised by the BO
        (1,)
    """

    name = "target_log_tolerance"

    def __init__(self, target: DesignTarget):
        self.target = target

    def units(self, axis_units: str) -> str:
        """Dimensionless."""
        return ""

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """``−ln tolerance ratio`` per spectrum ``(n,)``."""
        return -np.log(np.maximum(self.target.tolerance_ratio(spectra), 1e-12))


def peak_target(
    energy_ev: NDArray[np.float64],
    centre_ev: float,
    width_ev: float,
    amplitude: float | None = None,
    *,
    rel_tol: float = 0.1,
    peak_tol_ev: float = 0.02,
) -> DesignTarget:
    """A Lorentzian 'peak at ``centre_ev`` with FWHM ``width_ev``' on ``energy_ev (c,)``.

    With ``amplitude`` (nm²) the match includes the height; without, only the shape counts.

    Args:
        energy_ev: the simulated photon energies ``(c,)``, eV.
        centre_ev: the peak's centre, eV (inside ``energy_ev``).
        width_ev: its full width at half maximum, eV.
        amplitude: its height, nm² (None: the shape only).
        rel_tol: relative L2 distance that counts as reached.
        peak_tol_ev: peak-position error that counts as reached, eV.

    Returns:
        The target.

    Raises:
        ConfigError: a width <= 0, or a centre outside the simulated range.

    Examples:
        >>> target = peak_target(np.linspace(1.0, 3.0, 50), 2.0, 0.2, amplitude=1500.0)
        >>> target.label
        'peak at 2 eV, FWHM 0.2 eV, 1500 nm²'
    """
    if width_ev <= 0:
        raise ConfigError(f"target.width_ev must be > 0, got {width_ev}")
    if not energy_ev.min() <= centre_ev <= energy_ev.max():
        raise ConfigError(
            f"target.centre_ev {centre_ev} eV lies outside the simulated range "
            f"[{energy_ev.min():g}, {energy_ev.max():g}] eV; move it or widen [simulator] energy_min_ev/energy_max_ev"
        )
    hw = width_ev / 2
    shape = hw**2 / ((energy_ev - centre_ev) ** 2 + hw**2)
    label = f"peak at {centre_ev:g} eV, FWHM {width_ev:g} eV"
    if amplitude is None:
        return DesignTarget(shape, energy_ev, True, rel_tol, peak_tol_ev, label + " (shape)")
    return DesignTarget(amplitude * shape, energy_ev, False, rel_tol, peak_tol_ev, label + f", {amplitude:g} nm²")


def load_target_file(
    path: Path, energy_ev: NDArray[np.float64], *, fit_scale: bool, rel_tol: float = 0.1, peak_tol_ev: float = 0.02
) -> DesignTarget:
    """A target spectrum from a two-column file (energy in eV, value): ``.csv``/``.txt`` or ``.npy`` ``(k, 2)``.

    The values are interpolated linearly onto ``energy_ev (c,)``, which the file must cover.

    Args:
        path: the file.
        energy_ev: the simulated photon energies ``(c,)``, eV.
        fit_scale: compare shapes only.
        rel_tol: relative L2 distance that counts as reached.
        peak_tol_ev: peak-position error that counts as reached, eV.

    Returns:
        The target on ``energy_ev``.

    Raises:
        ConfigError: an unreadable file, a wrong shape, or a range that does not cover ``energy_ev``.

    Examples:
        >>> path = folder / "target.csv"
        >>> e = np.linspace(0.5, 3.5, 200)
        >>> np.savetxt(path, np.c_[e, np.exp(-((e - 2.0) / 0.2) ** 2)], delimiter=",")
        >>> target = load_target_file(path, np.linspace(1.0, 3.0, 50), fit_scale=True)
        >>> target.spectrum.shape
        (50,)
    """
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            rows = [ln.replace(",", " ").split() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            data = np.array([[float(v) for v in r[:2]] for r in rows])
    except OSError as exc:
        raise ConfigError(f"cannot read the target file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"target file {path}: not two numeric columns (energy eV, value): {exc}") from exc
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < 2 or data.shape[0] < 2:
        raise ConfigError(f"target file {path}: expected two columns (energy eV, value), got shape {data.shape}")
    order = np.argsort(data[:, 0])
    e, v = data[order, 0], data[order, 1]
    if e[0] > energy_ev.min() + 1e-9 or e[-1] < energy_ev.max() - 1e-9:
        raise ConfigError(
            f"target file {path} covers {e[0]:g}-{e[-1]:g} eV but the simulator spans "
            f"{energy_ev.min():g}-{energy_ev.max():g} eV; "
            "set [simulator] energy_min_ev/energy_max_ev inside the file's range"
        )
    spectrum = np.interp(energy_ev, e, v)
    return DesignTarget(spectrum, energy_ev, fit_scale, rel_tol, peak_tol_ev, f"{path.name}")
