"""Spectrum images as Zarr datasets (``dualscope import FILE --out DATASET.zarr``) and back.

Layout: ``image (h, w)`` with ``image_y (h,)``, ``image_x (w,)``; ``positions (m, 2)``; ``spectra (m, c)``;
``<spectral axis name> (c,)``; the group attribute ``dualscope_spectrum_image`` holds the axes, the
spectral calibration, the source file, the recorded dwell and the importer's notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from engine.errors import RunStorageError
from engine.spectrum_image import SpectrumImage
from engine.storage._reader import array_node
from engine.types import Axis, Image, ImageAxis, SpectralAxis

ATTR = "dualscope_spectrum_image"


def write_spectrum_image(si: SpectrumImage, out: Path) -> Path:
    """Write ``si`` to a new Zarr group at ``out``.

    Args:
        si: the spectrum image.
        out: the new dataset's directory (must not exist).

    Returns:
        ``out``.

    Raises:
        RunStorageError: ``out`` exists.

    Examples:
        >>> path = write_spectrum_image(si, folder / "si.zarr")
        >>> read_spectrum_image(path).spectra.shape
        (20, 16)
    """
    if out.exists():
        raise RunStorageError(f"{out} exists; choose a new output path")
    g = zarr.open_group(out, mode="w-")
    y, x = si.image.coords()
    arrays = {
        "image": (si.image.data, ("image_y", "image_x")),
        "image_y": (y, ("image_y",)),
        "image_x": (x, ("image_x",)),
        "positions": (si.positions, ("position", "axis")),
        "spectra": (si.spectra, ("position", si.spectral_axis.name)),
        si.spectral_axis.name: (si.spectral_axis.values(), (si.spectral_axis.name,)),
    }
    for name, (data, dims) in arrays.items():
        arr = g.create_array(name, shape=data.shape, dtype=data.dtype, dimension_names=dims)
        arr[...] = data
    g.attrs[ATTR] = {
        "axes": [a.to_json() for a in si.axes],
        "spectral_axis": si.spectral_axis.to_json(),
        "image": {
            "channel": si.image.channel,
            "units": si.image.units,
            "y": si.image.y_axis.to_json(),
            "x": si.image.x_axis.to_json(),
        },
        "source": si.source,
        "acquisition_time_s": si.acquisition_time_s,
        "notes": list(si.notes),
        "signal": si.signal,
        "frame_rotation_deg": si.frame_rotation_deg,
    }
    return out


def read_spectrum_image(path: Path) -> SpectrumImage:
    """Read a dataset written by ``write_spectrum_image``.

    Args:
        path: the dataset directory.

    Returns:
        The spectrum image.

    Raises:
        RunStorageError: not a spectrum-image dataset, or a damaged one.

    Examples:
        >>> back = read_spectrum_image(write_spectrum_image(si, folder / "si.zarr"))
        >>> back.positions.shape, back.spectral_axis.units
        ((20, 2), 'eV')
    """
    g = zarr.open_group(path, mode="r")
    if ATTR not in g.attrs:
        raise RunStorageError(f"{path}: not a dualscope spectrum-image dataset (no {ATTR!r} attribute)")
    meta: dict[str, Any] = dict(g.attrs[ATTR])  # type: ignore[arg-type]
    img = meta["image"]
    image = Image(
        img["channel"],
        np.asarray(array_node(g, "image")[...]),
        ImageAxis.from_json(img["y"]),
        ImageAxis.from_json(img["x"]),
        img["units"],
    )
    ax = [Axis.from_json(a) for a in meta["axes"]]
    return SpectrumImage(
        image,
        np.asarray(array_node(g, "positions")[...]),
        np.asarray(array_node(g, "spectra")[...]),
        SpectralAxis.from_json(meta["spectral_axis"]),
        (ax[0], ax[1]),
        str(meta["source"]),
        meta.get("acquisition_time_s"),
        tuple(meta.get("notes", ())),
        signal=str(meta.get("signal", "counts")),
        frame_rotation_deg=float(meta.get("frame_rotation_deg", 0.0)),
    )
