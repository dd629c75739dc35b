"""A spectrum image and a structural image from separate files, paired by their calibrations.

Gatan and Nion exports usually put the spectrum image and the HAADF recorded with it (or a survey
image) in separate files. ``read_structural_image`` reads the image with its calibration;
``pair_image`` resamples it onto the spectrum image's field of view, aligned with its scan grid:
``k`` image pixels per scan step (``k`` the nearest integer to scan step / image pixel, at least
1), so the image keeps about its own resolution and every probe position falls on a pixel centre.
Fields of view that do not contain the scan are refused, naming both extents.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from engine.io._importers import ImportFailed, _rsciio, _to_nm, _units, import_file
from engine.spectrum_image import SpectrumImage
from engine.types import Axis, Image, ImageAxis


def read_structural_image(path: Path) -> Image:
    """The structural image in ``path``, calibrated (lengths in nm).

    Args:
        path: a Gatan ``.dm3``/``.dm4`` or Velox ``.emd`` file (its first 2-D dataset), an ``.npz`` with
            ``image`` (``image_x``, ``image_y``: pixel-centre coordinates; ``length_units``), or any file
            ``engine.io.import_file`` reads (its structural image).

    Returns:
        The image ``(h, w)`` with its ``y`` and ``x`` axes.

    Raises:
        ImportFailed: no such file, no 2-D image in it, or no spatial calibration.

    Examples:
        >>> image = read_structural_image(haadf_file)
        >>> image.data.shape, image.x_axis.units
        ((200, 200), 'nm')
    """
    if not path.exists():
        raise ImportFailed(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".dm3", ".dm4", ".emd"):
        images = [o for o in _rsciio(path) if np.ndim(o["data"]) == 2]
        if not images:
            raise ImportFailed(f"{path}: no 2-D image in the file to pair with the spectrum image")
        iy, ix = images[0]["axes"]
        units = _units(ix)
        if not units:
            raise ImportFailed(f"{path}: the image has no spatial calibration, so it cannot be placed on the scan")
        y = float(iy.get("offset", 0.0)) + float(iy.get("scale", 1.0)) * np.arange(int(iy["size"]))
        x = float(ix.get("offset", 0.0)) + float(ix.get("scale", 1.0)) * np.arange(int(ix["size"]))
        return _calibrated(np.asarray(images[0]["data"]), x, y, units, path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if "image" in f.files and "spectra" not in f.files:
                data = np.asarray(f["image"])
                units = str(f["length_units"]) if "length_units" in f.files else "px"
                x = np.asarray(f["image_x"]) if "image_x" in f.files else np.arange(data.shape[1], dtype=float)
                y = np.asarray(f["image_y"]) if "image_y" in f.files else np.arange(data.shape[0], dtype=float)
                if units in ("", "px"):
                    raise ImportFailed(f"{path}: the image has no spatial calibration (length_units), so it cannot be "
                                       "placed on the scan")  # fmt: skip
                return _calibrated(data, x, y, units, path)
    return import_file(path).image


def _calibrated(data: NDArray, x: NDArray, y: NDArray, units: str, path: Path) -> Image:
    if np.ndim(data) != 2 or data.shape != (y.size, x.size):
        raise ImportFailed(f"{path}: image {np.shape(data)} does not match its axes ({y.size}, {x.size})")
    x_nm, nm = _to_nm(np.asarray(x, np.float64), units)
    y_nm, _ = _to_nm(np.asarray(y, np.float64), units)
    step_x = float(x_nm[1] - x_nm[0]) if x_nm.size > 1 else 1.0
    step_y = float(y_nm[1] - y_nm[0]) if y_nm.size > 1 else 1.0
    return Image(path.stem, np.asarray(data, np.float32), ImageAxis("y", nm, float(y_nm[0]), step_y),
                 ImageAxis("x", nm, float(x_nm[0]), step_x))  # fmt: skip


def _extent(coords: NDArray[np.float64], step: float) -> tuple[float, float]:
    """The field ``(low, high)`` pixel centres ``coords`` cover, edges included."""
    return float(coords.min()) - abs(step) / 2, float(coords.max()) + abs(step) / 2


def pair_image(si: SpectrumImage, image: Image, source: str) -> SpectrumImage:
    """``si`` with ``image`` resampled onto its field of view, aligned with its scan grid.

    Args:
        si: a spectrum image on a regular scan grid, positions in nm.
        image: a calibrated structural image (nm) whose field contains the scan's.
        source: the image's file, for notes and errors.

    Returns:
        ``si`` with the resampled image (bilinear), its axes covering the scan's field, and a note.

    Raises:
        ImportFailed: units that are not the same lengths, or a scan field the image does not contain.

    Examples:
        >>> paired = pair_image(si, image, "haadf.npz")
        >>> paired.image.data.shape  # 8 x 8 scan, 5 nm steps, 0.5 nm image pixels: 10 per step
        (80, 80)
    """
    units = si.axes[0].units
    if units != image.x_axis.units or image.x_axis.units != image.y_axis.units:
        raise ImportFailed(
            f"{source}: the image is calibrated in {image.x_axis.units or 'pixels'}, the spectrum image in "
            f"{units or 'pixels'}; both need lengths to be paired"
        )
    xs, ys = np.unique(si.positions[:, 0]), np.unique(si.positions[:, 1])
    step_x = float(np.diff(xs).min()) if xs.size > 1 else abs(image.x_axis.scale)
    step_y = float(np.diff(ys).min()) if ys.size > 1 else abs(image.y_axis.scale)
    iy, ix = image.coords()
    scan = (_extent(xs, step_x), _extent(ys, step_y))
    field = (_extent(ix, image.x_axis.scale), _extent(iy, image.y_axis.scale))
    tolerance = 0.5 * max(abs(image.x_axis.scale), abs(image.y_axis.scale))
    inside = all(f[0] - tolerance <= s[0] and s[1] <= f[1] + tolerance for s, f in zip(scan, field, strict=True))
    if not inside:
        raise ImportFailed(
            f"{source}: the image covers x {field[0][0]:g} to {field[0][1]:g}, y {field[1][0]:g} to {field[1][1]:g} "
            f"{units}; the spectrum image's scan x {scan[0][0]:g} to {scan[0][1]:g}, y {scan[1][0]:g} to "
            f"{scan[1][1]:g} {units}: the image does not contain the scan (is it the image recorded with it?)"
        )
    kx = max(1, round(step_x / abs(image.x_axis.scale)))
    ky = max(1, round(step_y / abs(image.y_axis.scale)))
    new_x = scan[0][0] + (np.arange(xs.size * kx) + 0.5) * step_x / kx
    new_y = scan[1][0] + (np.arange(ys.size * ky) + 0.5) * step_y / ky
    rows = (new_y - image.y_axis.offset) / image.y_axis.scale
    cols = (new_x - image.x_axis.offset) / image.x_axis.scale
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    data = ndimage.map_coordinates(image.data.astype(np.float64), [rr, cc], order=1, mode="nearest")
    paired = Image(
        image.channel,
        data.astype(np.float32),
        ImageAxis("y", units, float(new_y[0]), step_y / ky),
        ImageAxis("x", units, float(new_x[0]), step_x / kx),
    )
    axes = (Axis("x", units, scan[0][0], scan[0][1]), Axis("y", units, scan[1][0], scan[1][1]))
    note = (
        f"structural image from {source}: {image.data.shape[0]} x {image.data.shape[1]} px of "
        f"{abs(image.x_axis.scale):.3g} {units}, resampled onto the scan's field ({kx} x {ky} px per scan step)"
    )
    kept = tuple(n for n in si.notes if not n.startswith("no structural image in the file"))
    return replace(si, image=paired, axes=axes, notes=(*kept, note))
