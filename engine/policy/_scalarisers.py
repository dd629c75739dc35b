"""Scalarisers: what the scientist wants from a spectrum, as one number per spectrum.

Each is vectorised over a batch ``(n, c)`` of spectra (measured or predicted by the surrogate) on
the spectral axis values ``(c,)`` and declares the units of its result.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from engine.config import ScalariserSection, window_channels
from engine.errors import ConfigError
from engine.types import SpectralAxis


@runtime_checkable
class Scalariser(Protocol):
    """Maps spectra ``(n, c)`` on an axis ``(c,)`` to values ``(n,)`` in ``units``.

    Examples:
        >>> scalariser: Scalariser = PeakPosition(0.0, 2.0)  # any of the classes below, or your own
        >>> scalariser(spectra, energy).round(3).tolist(), scalariser.units("eV")
        ([0.5, 1.0, 1.5], 'eV')
    """

    @property
    def name(self) -> str:
        """Short name, e.g. ``band_integral``."""
        ...

    def units(self, axis_units: str) -> str:
        """Units of the result, given the spectral axis' units."""
        ...

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Values ``(n,)``."""
        ...


def _window(axis: NDArray[np.float64], low: float, high: float) -> NDArray[np.bool_]:
    return np.asarray(window_channels(axis, low, high), dtype=np.bool_)


def _target_on(target: tuple[float, ...], axis: NDArray[np.float64]) -> NDArray[np.float64]:
    """The target spectrum ``(c,)``, checked against the spectra's axis ``(c,)``."""
    t = np.asarray(target, np.float64)
    if t.size != axis.size:
        raise ConfigError(f"target has {t.size} channels, the spectra {axis.size}")
    return t


def _channel_widths(axis: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.abs(np.gradient(axis)) if axis.size > 1 else np.ones(1)


@dataclass(frozen=True)
class BandIntegral:
    """∫ S(E) dE over ``[low, high]`` (counts × axis units).

    Args:
        low: the band's start, the axis' units.
        high: its end.
        name: shown in records and figures.

    Examples:
        >>> BandIntegral(0.8, 1.2)(spectra, energy).round(2).tolist()
        [0.01, 0.29, 0.0]
    """

    low: float
    high: float
    name: str = "band_integral"

    def units(self, axis_units: str) -> str:
        """Counts times the axis units."""
        return f"counts {axis_units}".strip()

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Integral ``(n,)`` with per-channel widths (trapezoid-free, channel sums × width)."""
        sel = _window(axis, self.low, self.high)
        return np.asarray(np.asarray(spectra, np.float64)[:, sel] @ _channel_widths(axis)[sel])


@dataclass(frozen=True)
class PeakPosition:
    """Axis value of the maximum within ``[low, high]``, refined by a parabola through the top 3 channels.

    Args:
        low: the window's start, the axis' units.
        high: its end.
        name: shown in records and figures.

    Examples:
        >>> PeakPosition(0.0, 2.0)(spectra, energy).round(3).tolist()
        [0.5, 1.0, 1.5]
    """

    low: float
    high: float
    name: str = "peak_position"

    def units(self, axis_units: str) -> str:
        """The axis units."""
        return axis_units

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Peak positions ``(n,)``."""
        sel = np.flatnonzero(_window(axis, self.low, self.high))
        s = np.asarray(spectra, np.float64)[:, sel]
        i = np.argmax(s, axis=1)
        x = axis[sel]
        inner = (i > 0) & (i < sel.size - 1)
        out = x[i].astype(np.float64)
        j = i[inner]
        rows = np.flatnonzero(inner)
        y0, y1, y2 = s[rows, j - 1], s[rows, j], s[rows, j + 1]
        denom = y0 - 2 * y1 + y2
        shift = np.where(denom != 0, 0.5 * (y0 - y2) / np.where(denom != 0, denom, 1.0), 0.0)
        step = x[j + 1] - x[j]
        out[rows] = x[j] + np.clip(shift, -0.5, 0.5) * step
        return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class BandRatio:
    """Integral over band A divided by integral over band B (dimensionless).

    Args:
        a: the numerator's band.
        b: the denominator's band.
        name: shown in records and figures.

    Examples:
        >>> ratio = BandRatio(BandIntegral(0.0, 0.7), BandIntegral(1.3, 2.0))
        >>> (ratio(spectra, energy) > 1).tolist()
        [True, False, False]
    """

    a: BandIntegral
    b: BandIntegral
    name: str = "band_ratio"

    def units(self, axis_units: str) -> str:
        """Dimensionless."""
        return ""

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Ratios ``(n,)``; zero denominators give NaN."""
        num, den = self.a(spectra, axis), self.b(spectra, axis)
        return np.asarray(np.divide(num, den, out=np.full_like(num, np.nan), where=den != 0), dtype=np.float64)


@dataclass(frozen=True)
class TargetSimilarity:
    """Cosine similarity to a target spectrum ``(c,)`` (1 = same shape), higher is better.

    With a ``window`` only the channels inside it are compared: a steep background outside the
    feature of interest (the zero-loss peak's tail, which moves with every energy-axis jitter)
    then does not dominate the norms.

    Args:
        target: the target spectrum's values ``(c,)`` on the spectra's axis.
        window: ``(low, high)`` in the axis' units: compare only these channels (default: all).
        name: shown in records and figures.

    Examples:
        >>> similarity = TargetSimilarity.peak(energy, centre=1.0, width=0.2)
        >>> int(np.argmax(similarity(spectra, energy)))  # the spectrum whose peak sits at 1 eV
        1
        >>> windowed = TargetSimilarity.peak(energy, centre=1.0, width=0.2, window=(0.6, 1.4))
        >>> int(np.argmax(windowed(spectra + 5.0 * (energy < 0.3), energy)))  # a steep tail outside the window
        1
    """

    target: tuple[float, ...]
    window: tuple[float, float] | None = None
    name: str = "target_similarity"

    @classmethod
    def peak(
        cls, axis: NDArray[np.float64], centre: float, width: float, window: tuple[float, float] | None = None
    ) -> TargetSimilarity:
        """A Gaussian target 'a peak at ``centre`` with FWHM ``width``' on ``axis``, compared in ``window``."""
        sigma = width / 2.3548
        return cls(tuple(np.exp(-0.5 * ((axis - centre) / sigma) ** 2).tolist()), window)

    def units(self, axis_units: str) -> str:
        """Dimensionless."""
        return ""

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Cosine similarities ``(n,)``."""
        t = _target_on(self.target, axis)
        s = np.asarray(spectra, np.float64)
        if self.window is not None:
            sel = _window(axis, *self.window)
            s, t = s[:, sel], t[sel]
        norms = np.linalg.norm(s, axis=1) * np.linalg.norm(t)
        return np.asarray(np.divide(s @ t, norms, out=np.zeros(s.shape[0]), where=norms > 0), dtype=np.float64)


@dataclass(frozen=True)
class LoopArea:
    """Area enclosed by a hysteresis loop, ``|∮ R dV|`` (response units × axis units).

    The spectral axis is the excitation in acquisition order (e.g. the DC voltage of a BEPS
    triangle 0 → +V → 0 → −V → 0), not sorted; the loop is closed from the last point back to the
    first, so a loop traced twice counts twice and a response that does not depend on the
    direction of the sweep encloses no area.

    Args:
        name: shown in records and figures.

    Examples:
        >>> t = np.linspace(0, 2 * np.pi, 65)[:-1]
        >>> voltage, response = np.sin(t), np.cos(t)  # a circle of radius 1 in (V, R)
        >>> round(float(LoopArea()(response[None, :], voltage)[0]), 2)
        3.14
    """

    name: str = "loop_area"

    def units(self, axis_units: str) -> str:
        """Response units (taken as counts) times the axis units."""
        return f"counts {axis_units}".strip()

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Areas ``(n,)`` by the shoelace formula on the closed polygon ``(V_i, R_i)``."""
        v = np.asarray(axis, np.float64)
        r = np.asarray(spectra, np.float64)
        v_next, r_next = np.roll(v, -1), np.roll(r, -1, axis=1)
        return np.asarray(0.5 * np.abs(r_next @ v - r @ v_next), dtype=np.float64)


@dataclass(frozen=True)
class TargetMatch:
    """How close a spectrum is to a target ``(c,)``: ``−‖S − T‖₂ / ‖T‖₂`` (0 = identical, higher is better).

    Unlike ``TargetSimilarity`` it also compares the amplitude, as inverse design against a
    simulator needs; with ``fit_scale`` each spectrum is first multiplied by its least-squares
    (non-negative) factor, so only the shape counts.

    Args:
        target: the target spectrum's values ``(c,)`` on the spectra's axis.
        fit_scale: compare shapes only.
        name: shown in records and figures.

    Examples:
        >>> match = TargetMatch(tuple(spectra[1]), fit_scale=True)
        >>> int(np.argmax(match(3.0 * spectra, energy)))  # shape only: the scale does not matter
        1
    """

    target: tuple[float, ...]
    fit_scale: bool = False
    name: str = "target_match"

    def units(self, axis_units: str) -> str:
        """Dimensionless (a relative distance)."""
        return ""

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Negated relative L2 distances ``(n,)``."""
        t = _target_on(self.target, axis)
        s = np.atleast_2d(np.asarray(spectra, np.float64))
        if self.fit_scale:
            ss = np.einsum("ij,ij->i", s, s)
            s = s * np.divide(s @ t, ss, out=np.zeros(s.shape[0]), where=ss > 0).clip(min=0.0)[:, None]
        norm = float(np.linalg.norm(t)) or 1.0
        return np.asarray(-np.linalg.norm(s - t, axis=1) / norm, dtype=np.float64)


@dataclass(frozen=True)
class Logarithm:
    """``ln`` of another scalariser: the same ranking, a tamer scale for heavy-tailed positive values.

    A GP fitted on a few huge values and many small ones models the outliers and little else;
    on the logarithm it sees the structure of the whole range. Values ``≤ 0`` give NaN (not used by
    the GP).

    Args:
        inner: the scalariser whose values are logged.
        name: shown in records and figures.

    Examples:
        >>> Logarithm(PeakPosition(0.0, 2.0))(spectra, energy).round(3).tolist()
        [-0.693, 0.0, 0.405]
    """

    inner: Scalariser
    name: str = "log"

    def units(self, axis_units: str) -> str:
        """``ln(inner units)``."""
        return f"ln({self.inner.units(axis_units)})"

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """``ln`` of the inner values ``(n,)``; NaN where they are not positive."""
        v = self.inner(spectra, axis)
        return np.asarray(np.log(v, out=np.full_like(v, np.nan), where=v > 0), dtype=np.float64)


@dataclass(frozen=True)
class PythonScalariser:
    """A function passed from Python, taking ``(spectra (n, c), axis (c,))`` and returning values ``(n,)``.

    Args:
        function: the function (a lambda, a closure, a method: nothing needs to be importable).
        result_units: the units of its values.
        label: shown in records and figures (default: the function's name).

    Examples:
        >>> peak_height = PythonScalariser(lambda spectra, axis: spectra.max(axis=1), "counts")
        >>> peak_height(spectra, energy).round(3).tolist(), peak_height.units("eV")
        ([1.0, 1.0, 1.0], 'counts')
    """

    function: Callable[[NDArray, NDArray[np.float64]], NDArray]
    result_units: str = ""
    label: str = ""

    @property
    def name(self) -> str:
        """``label``, or ``python:<the function's name>``."""
        return self.label or f"python:{getattr(self.function, '__qualname__', 'function')}"

    def units(self, axis_units: str) -> str:
        """As given."""
        return self.result_units

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Call the function and check it returned ``(n,)`` values."""
        return checked_values(self.function(np.asarray(spectra), axis), np.shape(spectra)[0], self.name)


def checked_values(values: object, n: int, who: str) -> NDArray[np.float64]:
    """A user scalariser's ``values`` as float64 ``(n,)``, or a ``ConfigError`` naming ``who`` and the shape.

    Examples:
        >>> checked_values([1, 2], 2, "mine").tolist()
        [1.0, 2.0]
    """
    out = np.asarray(values, dtype=np.float64)
    if out.shape != (n,):
        raise ConfigError(f"user scalariser {who} returned shape {out.shape}, expected ({n},)")
    return out


@dataclass(frozen=True)
class UserFunction:
    """A user's ``module:function`` taking ``(spectra (n, c), axis (c,))`` and returning ``(n,)``.

    Args:
        path: ``module:function``, importable from the run's environment.
        result_units: the units of the function's values.
        name: shown in records and figures.

    Examples:
        >>> area = UserFunction("numpy:trapezoid")  # module:function taking (spectra (n, c), axis (c,))
        >>> area(spectra, energy).round(3).tolist()
        [0.354, 0.354, 0.354]
    """

    path: str
    result_units: str = ""
    name: str = "user"

    def _function(self) -> Callable[[NDArray, NDArray[np.float64]], NDArray]:
        module_name, sep, attr = self.path.partition(":")
        if not sep:
            raise ConfigError(f"user scalariser {self.path!r} must be 'module:function'")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load user scalariser {self.path!r}: {exc}") from exc
        if not callable(fn):
            raise ConfigError(f"user scalariser {self.path!r} is not callable")
        return fn  # type: ignore[no-any-return]

    def units(self, axis_units: str) -> str:
        """As declared in the configuration."""
        return self.result_units

    def __call__(self, spectra: NDArray, axis: NDArray[np.float64]) -> NDArray[np.float64]:
        """Call the user's function and check it returned ``(n,)`` finite numbers."""
        return checked_values(self._function()(np.asarray(spectra), axis), np.shape(spectra)[0], repr(self.path))


def build_scalariser(section: ScalariserSection, axis: SpectralAxis) -> Scalariser:
    """The scalariser a ``[policy.scalariser]`` table describes.

    Args:
        section: the validated table (kind ``band``, ``peak``, ``ratio``, ``target``, ``loop-area`` or ``user``;
            windows in the spectral axis' units).
        axis: the instrument's spectral axis (``target`` builds its reference peak on it).

    Returns:
        A scalariser mapping spectra ``(n, c)`` and axis values ``(c,)`` to properties ``(n,)``, wrapped in
        ``Logarithm`` when ``log = true``.

    Raises:
        ConfigError: ``kind = "user"`` without ``function``.

    Examples:
        >>> from engine.config import ScalariserSection
        >>> from engine.types import SpectralAxis
        >>> axis = SpectralAxis("energy loss", "eV", 0.0, 0.1, 20)
        >>> build_scalariser(ScalariserSection(kind="band", low=0.5, high=1.0), axis).name
        'band_integral'
    """
    inner = _scalariser(section, axis)
    return Logarithm(inner) if section.log else inner


def _scalariser(section: ScalariserSection, axis: SpectralAxis) -> Scalariser:
    if section.kind == "band":
        return BandIntegral(section.low, section.high)
    if section.kind == "peak":
        return PeakPosition(section.low, section.high)
    if section.kind == "ratio":
        return BandRatio(BandIntegral(section.low, section.high), BandIntegral(section.low_b, section.high_b))
    if section.kind == "target":
        window = (section.low, section.high) if (section.low, section.high) != (0.0, 1e9) else None
        return TargetSimilarity.peak(axis.values(), section.centre, section.width, window)
    if section.kind == "loop-area":
        return LoopArea()
    if not section.function:
        raise ConfigError("policy.scalariser.function is required when kind = 'user' (module:function)")
    return UserFunction(section.function, section.units)
