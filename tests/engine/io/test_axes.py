"""Axis order read from the reader's metadata (issue 26): every order imports to (y, x, channels)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import ConfigError
from engine.io import _importers, import_file
from engine.io._axes import find_cube_axes

NY, NX, NE = 4, 5, 6
SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"


def _axis(kind: str, navigate: bool = True) -> dict[str, Any]:
    return {
        "y": {"name": "y", "units": "nm", "scale": 2.0, "offset": 10.0, "size": NY, "navigate": navigate},
        "x": {"name": "x", "units": "nm", "scale": 2.0, "offset": 0.0, "size": NX, "navigate": navigate},
        "E": {"name": "Energy loss", "units": "eV", "scale": 0.5, "offset": 1.0, "size": NE, "navigate": navigate},
    }[kind]


def _cube() -> np.ndarray:
    """Values that say where they came from: 100 y + 10 x + channel."""
    y, x, e = np.meshgrid(np.arange(NY), np.arange(NX), np.arange(NE), indexing="ij")
    return (100 * y + 10 * x + e).astype(np.float32)


ORDERS = list(itertools.permutations("yxE"))


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "".join(o))
@pytest.mark.parametrize("energy_navigates", [False, True], ids=["flagged-signal", "flagged-navigation"])
def test_every_axis_order_imports_as_y_x_channels(
    order: tuple[str, ...], energy_navigates: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    axes = [_axis(k, navigate=(k != "E") or energy_navigates) for k in order]
    data = np.transpose(_cube(), ["yxE".index(k) for k in order])  # how the reader hands it over
    monkeypatch.setattr(_importers, "_rsciio", lambda path: [{"data": data, "axes": axes, "metadata": {}}])
    si = _importers._read_vendor(Path("si.dm4"))
    assert si.spectra.shape == (NY * NX, NE) and si.spectral_axis.units == "eV"
    assert si.spectral_axis.name == "energy_loss"
    np.testing.assert_array_equal(si.spectra[0], np.arange(NE))  # row 0: y = 0, x = 0
    np.testing.assert_array_equal(si.spectra[NX + 2], 100 + 20 + np.arange(NE))  # y = 1, x = 2
    np.testing.assert_allclose(si.positions[NX + 2], [4.0, 12.0])
    assert any("axes in the file" in n and "'Energy loss' 6 eV" in n for n in si.notes)


def test_an_unnamed_cube_is_refused_naming_its_axes() -> None:
    axes = [{"name": "", "units": "", "size": n, "navigate": True} for n in (4, 5, 6)]
    with pytest.raises(ConfigError, match=r"cannot tell which axis is the spectrum.*'\?' 4 no units"):
        find_cube_axes(axes, "mystery.dm4")


def test_the_navigate_flag_breaks_a_tie_only() -> None:
    axes = [{"name": "", "units": "", "size": 4}, {"name": "", "units": "", "size": 5}]
    axes.append({"name": "", "units": "", "size": 6, "navigate": False})
    for a in axes[:2]:
        a["navigate"] = True
    assert find_cube_axes(axes, "f").spectral == 2


def test_uncalibrated_spatial_axes_are_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    axes = [{**_axis("y"), "units": "", "scale": 1.0, "offset": 0.0}, {**_axis("x"), "units": "<undefined>"}]
    axes[1].update(scale=1.0, offset=0.0)
    axes.append(_axis("E", navigate=False))
    monkeypatch.setattr(_importers, "_rsciio", lambda path: [{"data": _cube(), "axes": axes, "metadata": {}}])
    si = _importers._read_vendor(Path("si.dm4"))
    assert si.axes[0].units == "px" and any("positions are in pixels" in n for n in si.notes)


def test_a_paired_image_lends_its_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    axes = [{**_axis("y"), "units": "", "scale": 1.0, "offset": 0.0}, {**_axis("x"), "units": ""}]
    axes[1].update(scale=1.0, offset=0.0)
    axes.append(_axis("E", navigate=False))
    image_axes = [
        {"name": "y", "units": "nm", "scale": 0.5, "offset": 0.0, "size": 8},
        {"name": "x", "units": "nm", "scale": 0.5, "offset": 0.0, "size": 10},
    ]
    objs = [
        {"data": _cube(), "axes": axes, "metadata": {}},
        {"data": np.ones((8, 10)), "axes": image_axes, "metadata": {"General": {"title": "HAADF"}}},
    ]
    monkeypatch.setattr(_importers, "_rsciio", lambda path: objs)
    si = _importers._read_vendor(Path("si.dm4"))
    assert si.axes[0].units == "nm"
    np.testing.assert_allclose(np.unique(si.positions[:, 0]), -0.25 + (np.arange(NX) + 0.5) * 1.0)
    assert any("no spatial calibration" in n for n in si.notes)


def test_the_recorded_velox_file_reads_its_axes_from_the_metadata() -> None:
    si = import_file(SHARED / "fei_emd_si.emd")
    assert si.spectral_axis.units == "keV" and si.spectra.shape[1] == si.spectral_axis.size
    assert any(n.startswith("axes in the file:") for n in si.notes)
