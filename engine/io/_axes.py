"""Which axis of a recorded cube is the spectrum: read from the reader's axis metadata, never assumed.

rosettasciio (and HyperSpy) describe each axis of ``data`` with a dict: ``name``, ``units``,
``scale``, ``offset``, ``size`` and ``navigate`` (False for the signal axis). Files come back as
``(y, x, energy)`` or ``(energy, y, x)``, and the flag is not always right, so the spectral axis is
the one whose name or units say so; ``navigate`` only breaks a tie; an unresolved tie is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError

SPECTRAL_UNITS = frozenset({"ev", "kev", "mev", "v", "mv", "1/cm", "cm-1", "cm^-1", "hz", "khz", "thz"})
"""Units that only a spectral axis has (``nm`` is not here: it is a length as often as a wavelength)."""
SPECTRAL_NAMES = ("energy", "loss", "wavelength", "wavenumber", "bias", "voltage", "frequency", "raman", "eels")
SPATIAL_NAMES = {"x": "x", "y": "y", "width": "x", "height": "y", "column": "x", "row": "y"}
LENGTH_UNITS = frozenset({"m", "mm", "um", "µm", "nm", "pm", "å", "a", "angstrom"})


@dataclass(frozen=True)
class CubeAxes:
    """Where each axis of a cube lies: ``y``, ``x`` and the spectral axis, as indices into ``data``'s axes.

    Attributes:
        y: index of the slow scan axis.
        x: index of the fast scan axis.
        spectral: index of the spectral axis.
        described: the axes as read (name, size, units, in the file's order), for messages.
    """

    y: int
    x: int
    spectral: int
    described: str

    @property
    def order(self) -> tuple[int, int, int]:
        """The transpose that makes ``data`` ``(y, x, channels)``."""
        return self.y, self.x, self.spectral


def _text(axis: dict[str, Any], key: str) -> str:
    value = axis.get(key, "")
    return "" if value is None or str(value) in ("<undefined>", "Undefined") else str(value)


def describe_axes(axes: Sequence[dict[str, Any]]) -> str:
    """``'y' 50 nm, 'x' 60 nm, 'Energy loss' 2048 eV`` (the file's order)."""
    return ", ".join(
        f"{_text(a, 'name') or '?'!r} {a.get('size', '?')} {_text(a, 'units') or 'no units'}" for a in axes
    )


def _spectral_score(axis: dict[str, Any]) -> int:
    name, units = _text(axis, "name").lower(), _text(axis, "units").lower().replace(" ", "")
    if units in SPECTRAL_UNITS or any(word in name for word in SPECTRAL_NAMES):
        return 2
    if name in SPATIAL_NAMES or units in LENGTH_UNITS or units in ("px", "pixel", "pixels"):
        return 0
    return 1  # says nothing either way


def find_cube_axes(axes: Sequence[dict[str, Any]], source: str) -> CubeAxes:
    """The spectral, ``y`` and ``x`` axes of a 3-D recording, from its axis metadata.

    Args:
        axes: one dict per axis of ``data``, in ``data``'s order (rosettasciio's ``axes``).
        source: the file, for messages.

    Returns:
        The axes' indices; ``CubeAxes.order`` transposes ``data`` to ``(y, x, channels)``.

    Raises:
        ConfigError: not three axes, or no single axis that the names, units or ``navigate`` flags
            mark as spectral (the message lists the axes).

    Examples:
        >>> axes = [{"name": "Energy loss", "units": "eV", "size": 6, "navigate": True},
        ...         {"name": "y", "units": "nm", "size": 40, "navigate": True},
        ...         {"name": "x", "units": "nm", "size": 50, "navigate": True}]
        >>> find_cube_axes(axes, "si.dm4").order  # (energy, y, x) in the file: transpose to (y, x, energy)
        (1, 2, 0)
    """
    described = describe_axes(axes)
    if len(axes) != 3:
        raise ConfigError(f"{source}: a spectrum image has 3 axes (y, x, spectrum); this data has {described}")
    scores = [_spectral_score(a) for a in axes]
    best = max(scores)
    picked = [i for i, s in enumerate(scores) if s == best]
    if len(picked) > 1:  # the names and units do not decide: the signal axis is the one not navigated
        signal = [i for i in picked if axes[i].get("navigate") is False]
        picked = signal if len(signal) == 1 else picked
    if len(picked) != 1 or best == 0:
        raise ConfigError(
            f"{source}: cannot tell which axis is the spectrum from its axes ({described}); "
            "name it in the file (units eV, keV, V, or a name such as 'Energy loss'), or export it as "
            ".npz with spectra (ny, nx, channels) and spectral_axis"
        )
    spectral = picked[0]
    rest = [i for i in range(3) if i != spectral]
    named = {SPATIAL_NAMES.get(_text(axes[i], "name").lower()): i for i in rest}
    if set(named) == {"x", "y"}:
        y, x = named["y"], named["x"]
    else:
        y, x = rest  # the reader's convention: navigation axes in data order, slow (y) before fast (x)
    return CubeAxes(y, x, spectral, described)
