"""Read users' spectrum images into ``SpectrumImage``.

Formats (by suffix):

* ``.npz``: keys ``spectra`` ``(ny, nx, c)``; optional ``image (h, w)`` with ``image_x (w,)`` and
  ``image_y (h,)`` (default: the image spans the scan grid's extent, so an oversampled HAADF keeps
  its relation to the spectrum positions), ``x (nx,)``, ``y (ny,)`` (scan coordinates),
  ``spectral_axis (c,)``, and string keys ``length_units``, ``spectral_name``, ``spectral_units``.
  The BEPS file's ``loops``/``voltage_V``/
  ``x_m``/``y_m`` keys are understood too.
* ``.npy``: a bare ``(ny, nx, c)`` array (pixel units, channel index).
* ``.h5`` (sidpy / pyNSID): the main dataset of the first channel, its dimension scales giving the
  spatial (``X``, ``Y``) and spectral axes and their units.
* ``.emd`` (Thermo Fisher Velox) and ``.dm3``/``.dm4`` (Gatan): through rosettasciio, which is
  GPL-licensed and therefore an optional extra (``pip install 'dualscope[formats]'``).
* ``.3ds`` (Nanonis grid spectroscopy): through nanonispy (MIT, in the same optional extra); the
  first channel as the spectra, the z-controller height as the structural image.
* a dualscope run (``*.zarr``): the measured positions and spectra and the run's structural image.

Lengths in metres are converted to nm. When a file has no structural image, a map of the mean
absolute signal is derived from the spectra and the import says so in ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import DualscopeError
from engine.io._axes import find_cube_axes
from engine.spectrum_image import SpectrumImage, rotate
from engine.types import Axis, Image, ImageAxis, SpectralAxis


class ImportFailed(DualscopeError):
    """A file could not be imported; the message names the file and the problem.

    Examples:
        >>> try:
        ...     import_file(folder / "no-such-file.h5")
        ... except ImportFailed as exc:
        ...     print("refused:", type(exc).__name__)
        refused: ImportFailed
    """


def _linear_or_points(name: str, units: str, values: NDArray[np.float64]) -> SpectralAxis:
    values = np.asarray(values, dtype=np.float64)
    if values.size > 1 and np.allclose(np.diff(values), values[1] - values[0], rtol=1e-6, atol=1e-12):
        return SpectralAxis(name, units, float(values[0]), float(values[1] - values[0]), values.size)
    step = float(values[1] - values[0]) if values.size > 1 and values[1] != values[0] else 1.0
    return SpectralAxis(name, units, float(values[0]), step, values.size, tuple(float(v) for v in values))


def _to_nm(values: NDArray[np.float64], units: str) -> tuple[NDArray[np.float64], str]:
    factor = {"m": 1e9, "um": 1e3, "µm": 1e3, "nm": 1.0, "pm": 1e-3, "Å": 0.1, "A": 0.1}.get(units.strip())
    return (values * factor, "nm") if factor is not None else (values, units)


def _span(grid: NDArray[np.float64], pixels: int) -> NDArray[np.float64]:
    """Pixel centres of an image of ``pixels`` covering the same extent as the scan ``grid`` (oversampled images)."""
    if pixels == grid.size:
        return grid
    step = float(grid[1] - grid[0]) if grid.size > 1 else 1.0
    start, width = grid[0] - step / 2, step * grid.size
    return np.asarray(start + (np.arange(pixels) + 0.5) * width / pixels, dtype=np.float64)


def from_grid(
    spectra: NDArray,
    x: NDArray,
    y: NDArray,
    length_units: str,
    spectral_axis: SpectralAxis,
    source: str,
    image: NDArray | None = None,
    image_x: NDArray | None = None,
    image_y: NDArray | None = None,
    notes: tuple[str, ...] = (),
    acquisition_time_s: float | None = None,
    signal: str = "counts",
) -> SpectrumImage:
    """Build a ``SpectrumImage`` from a ``(ny, nx, c)`` grid with coordinates ``x (nx,)``, ``y (ny,)``.

    ``image`` defaults to the mean absolute signal on the same grid; its coordinates default to the grid's.

    Args:
        spectra: the spectrum image ``(ny, nx, c)``.
        x: scan coordinates ``(nx,)``, ``length_units``.
        y: scan coordinates ``(ny,)``, ``length_units``.
        length_units: the coordinates' units; lengths (``m``, ``um``, ``nm``, ``pm``, ``Å``) become nm,
            anything else (``px``, ``''``) is kept.
        spectral_axis: the spectra's calibration.
        source: where the data came from.
        image: a structural image ``(h, w)`` (None: the mean absolute signal).
        image_x: its x coordinates ``(w,)`` (None: spanning the scan grid).
        image_y: its y coordinates ``(h,)`` (None: spanning the scan grid).
        notes: what the reader assumed.
        acquisition_time_s: the recorded dwell per spectrum, s, if known.

    Returns:
        The spectrum image.

    Raises:
        ImportFailed: a wrong shape, or NaN or infinite spectra.

    Examples:
        >>> from engine.types import SpectralAxis
        >>> si = from_grid(np.ones((4, 5, 16)), np.arange(5.0), np.arange(4.0), "nm",
        ...                SpectralAxis("energy_loss", "eV", 0.0, 0.1, 16), "example")
        >>> si.positions[:3].tolist()
        [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]
    """
    data = np.asarray(spectra, dtype=np.float32)
    if data.ndim != 3:
        raise ImportFailed(f"{source}: expected a spectrum image (ny, nx, c), got shape {data.shape}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).any(axis=2).sum())
        raise ImportFailed(f"{source}: {bad} spectra contain NaN or infinite values")
    x, units = _to_nm(np.asarray(x, np.float64), length_units)
    y, _ = _to_nm(np.asarray(y, np.float64), length_units)
    if image is None:
        image, image_x, image_y = np.abs(data).mean(axis=2), x, y
        notes = (*notes, "no structural image in the file: the image is the mean |signal| of each spectrum")
    else:
        image = np.asarray(image)
        image_x = (
            _to_nm(np.asarray(image_x, np.float64), length_units)[0]
            if image_x is not None
            else _span(x, image.shape[1])
        )
        image_y = (
            _to_nm(np.asarray(image_y, np.float64), length_units)[0]
            if image_y is not None
            else _span(y, image.shape[0])
        )
    xx, yy = np.meshgrid(x, y)
    positions = np.column_stack([xx.ravel(), yy.ravel()])

    def step(v: NDArray) -> float:
        return float(abs(v[1] - v[0])) if v.size > 1 else 1.0

    img = Image(
        "structure",
        np.asarray(image, np.float32),
        ImageAxis("y", units, float(image_y[0]), float(image_y[1] - image_y[0]) if image_y.size > 1 else 1.0),
        ImageAxis("x", units, float(image_x[0]), float(image_x[1] - image_x[0]) if image_x.size > 1 else 1.0),
    )
    pad_x, pad_y = step(x) / 2, step(y) / 2
    axes = (
        Axis("x", units, float(min(x.min(), image_x.min())) - pad_x, float(max(x.max(), image_x.max())) + pad_x),
        Axis("y", units, float(min(y.min(), image_y.min())) - pad_y, float(max(y.max(), image_y.max())) + pad_y),
    )
    flat = data.reshape(-1, data.shape[2])
    return SpectrumImage(img, positions, flat, spectral_axis, axes, source, acquisition_time_s, notes, signal=signal)


def _read_npz(path: Path) -> SpectrumImage:
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if {"loops", "voltage_V", "x_m", "y_m"} <= keys:  # the BEPS re-pack
            loops = np.asarray(f["loops"]).transpose(1, 0, 2)  # (x, y, v) → (y, x, v)
            axis = _linear_or_points("voltage", "V", f["voltage_V"])
            return from_grid(loops, f["x_m"], f["y_m"], "m", axis, str(path), signal="piezoresponse (a.u.)")
        if "spectra" not in keys:
            raise ImportFailed(f"{path}: an .npz needs a 'spectra' array (see engine.importers); it has {sorted(keys)}")
        spectra = np.asarray(f["spectra"])
        c = spectra.shape[-1]
        axis_values = np.asarray(f["spectral_axis"]) if "spectral_axis" in keys else np.arange(c, dtype=float)
        axis = _linear_or_points(
            str(f["spectral_name"]) if "spectral_name" in keys else "channel",
            str(f["spectral_units"]) if "spectral_units" in keys else "",
            axis_values,
        )
        length_units = str(f["length_units"]) if "length_units" in keys else "px"
        if spectra.ndim == 2:
            raise ImportFailed(f"{path}: flat (m, c) spectra need a grid here; save them as (ny, nx, c)")
        ny, nx = spectra.shape[:2]
        x = np.asarray(f["x"]) if "x" in keys else np.arange(nx, dtype=float)
        y = np.asarray(f["y"]) if "y" in keys else np.arange(ny, dtype=float)
        image = np.asarray(f["image"]) if "image" in keys else None
        ix = np.asarray(f["image_x"]) if "image_x" in keys else None
        iy = np.asarray(f["image_y"]) if "image_y" in keys else None
        return from_grid(spectra, x, y, length_units, axis, str(path), image, ix, iy)


def _read_npy(path: Path) -> SpectrumImage:
    data = np.load(path, allow_pickle=False)
    ny, nx = data.shape[:2] if data.ndim == 3 else (0, 0)
    axis = SpectralAxis("channel", "", 0.0, 1.0, data.shape[-1] if data.ndim else 1)
    return from_grid(data, np.arange(nx, dtype=float), np.arange(ny, dtype=float), "px", axis, str(path))


def _read_pynsid(path: Path) -> SpectrumImage:
    import h5py

    with h5py.File(path, "r") as f:
        main = None

        def find(name: str, obj: Any) -> None:
            nonlocal main
            if main is None and isinstance(obj, h5py.Dataset) and "DIMENSION_LIST" in obj.attrs and obj.ndim == 3:
                main = obj

        f.visititems(find)
        if main is None:
            raise ImportFailed(f"{path}: no 3-D sidpy/pyNSID dataset with dimension scales found")
        scales = []
        for dim in range(main.ndim):
            ds = f[main.attrs["DIMENSION_LIST"][dim][0]]
            kind = ds.attrs.get("dimension_type", b"")
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            units = ds.attrs.get("units", "")
            units = units.decode() if isinstance(units, bytes) else str(units)
            name = ds.attrs.get("name", ds.name.rsplit("/", 1)[-1])
            name = name.decode() if isinstance(name, bytes) else str(name)
            scales.append((name, kind.upper(), units, np.asarray(ds[()], dtype=np.float64)))
        data = np.asarray(main[()])
        quantity, value_units = (_text(main.attrs.get(k, "")) for k in ("quantity", "units"))
    spectral = [i for i, s in enumerate(scales) if s[1] == "SPECTRAL"]
    spatial = [i for i, s in enumerate(scales) if s[1] == "SPATIAL"]
    if len(spectral) != 1 or len(spatial) != 2:
        raise ImportFailed(f"{path}: expected two SPATIAL and one SPECTRAL dimension, found {[s[1] for s in scales]}")
    by_name = {scales[i][0].upper(): i for i in spatial}
    ix, iy = by_name.get("X", spatial[0]), by_name.get("Y", spatial[1])
    cube = np.transpose(data, (iy, ix, spectral[0]))
    name, _, units, values = scales[spectral[0]]
    axis = _linear_or_points(name.lower(), units, values)
    signal = f"{quantity or 'signal'} ({value_units})" if value_units else quantity or "counts"
    return from_grid(cube, scales[ix][3], scales[iy][3], scales[ix][2], axis, str(path), signal=signal)


def _text(value: Any) -> str:
    """An HDF5 attribute as text (bytes decoded)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _rsciio(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix.lower() == ".emd":
            from rsciio.emd import file_reader
        else:
            from rsciio.digitalmicrograph import file_reader
    except ImportError as exc:
        raise ImportFailed(
            f"{path}: reading {path.suffix} files needs rosettasciio (GPL-3.0, an optional extra): "
            "pip install -e '.[formats]'"
        ) from exc
    try:
        result: list[dict[str, Any]] = (
            file_reader(str(path), select_type=None) if path.suffix.lower() == ".emd" else file_reader(str(path))
        )
        return result
    except Exception as exc:  # rosettasciio raises many types for damaged files
        raise ImportFailed(f"{path}: cannot read it as {path.suffix} ({type(exc).__name__}: {exc})") from exc


def _name(ax: dict[str, Any]) -> str:
    return str(ax.get("name", "") or "channel")


def _axis_values(ax: dict[str, Any]) -> NDArray[np.float64]:
    return float(ax.get("offset", 0.0)) + float(ax.get("scale", 1.0)) * np.arange(int(ax["size"]), dtype=np.float64)


def _read_vendor(path: Path) -> SpectrumImage:
    objs = _rsciio(path)
    cubes = [o for o in objs if np.ndim(o["data"]) == 3]
    images = [o for o in objs if np.ndim(o["data"]) == 2]
    if not cubes:
        shapes = [np.shape(o["data"]) for o in objs]
        raise ImportFailed(
            f"{path}: no spectrum image in the file (found data of shapes {shapes}); a replay needs (y, x, channels)"
        )
    cube = cubes[0]
    found = find_cube_axes(cube["axes"], str(path))
    y_ax, x_ax, s_ax = (cube["axes"][i] for i in found.order)
    data = np.asarray(cube["data"].todense() if hasattr(cube["data"], "todense") else cube["data"])
    data = np.transpose(data, found.order)
    axis = SpectralAxis(
        _name(s_ax).lower().replace(" ", "_"),
        str(s_ax.get("units", "")),
        float(s_ax.get("offset", 0.0)),
        float(s_ax.get("scale", 1.0)),
        int(s_ax["size"]),
    )
    image = images[0] if images else None
    notes: list[str] = [f"axes in the file: {found.described}; spectral axis: {_name(s_ax)!r}"]
    x, y, units = _axis_values(x_ax), _axis_values(y_ax), _units(x_ax)
    img_kwargs: dict[str, Any] = {}
    if image is not None:
        iy, ix = image["axes"]
        img_kwargs = {"image": np.asarray(image["data"]), "image_x": _axis_values(ix), "image_y": _axis_values(iy)}
        title = image["metadata"].get("General", {}).get("title", "")
        if title:
            notes.append(f"structural image: {title}")
        if not units and _units(ix):  # the spectrum image is uncalibrated, its paired image is not
            x = _spread(img_kwargs["image_x"], float(ix.get("scale", 1.0)), x.size)
            y = _spread(img_kwargs["image_y"], float(iy.get("scale", 1.0)), y.size)
            units = _units(ix)
            notes.append(
                f"the spectrum image has no spatial calibration: positions spread over the paired image's ({units})"
            )
    if not units:
        units = "px"
        img_kwargs = {k: v for k, v in img_kwargs.items() if k == "image"}  # one pixel grid for both
        notes.append("no spatial calibration in the file: positions are in pixels (px)")
    return from_grid(data, x, y, units, axis, str(path), notes=tuple(notes), **img_kwargs)


def _units(ax: dict[str, Any]) -> str:
    """An axis' units, '' when absent or undefined."""
    units = str(ax.get("units", "") or "")
    return "" if units in ("<undefined>", "Undefined", "px", "pixel", "pixels") else units


def _spread(image_coords: NDArray[np.float64], scale: float, n: int) -> NDArray[np.float64]:
    """``n`` probe positions spread evenly over the field an image's coordinates span (pixel centres)."""
    low, span = float(image_coords[0]) - scale / 2, scale * image_coords.size
    return low + (np.arange(n) + 0.5) * span / n


NANONIS_OPTIONAL_KEYS = {
    "Delay before measuring (s)": "0",
    "Experiment": "",
    "Start time": "",
    "End time": "",
    "User": "",
    "Comment": "",
}
"""Header keys that nanonispy requires but older grid files lack, and what stands in for them."""


def _raw_3ds_keys(path: Path) -> set[str]:
    """The keys of a .3ds header (``key=value`` lines up to ``:HEADER_END:``)."""
    keys = set()
    with path.open("rb") as f:
        for raw in f:
            line = raw.decode("latin-1").strip()
            if line == ":HEADER_END:":
                break
            keys.add(line.split("=", 1)[0])
    return keys


def _read_3ds(path: Path, channel: str | None = None) -> SpectrumImage:
    try:
        import nanonispy
    except ImportError as exc:
        raise ImportFailed(
            f"{path}: reading Nanonis .3ds needs nanonispy (optional extra): pip install -e '.[formats]'"
        ) from exc
    notes: list[str] = []
    try:
        missing = {k: v for k, v in NANONIS_OPTIONAL_KEYS.items() if k not in _raw_3ds_keys(path)}
        if missing:
            notes.append(f"the header lacks {', '.join(map(repr, missing))}: filled with blanks (metadata only)")
        grid = nanonispy.read.Grid(str(path), header_override=missing or None)
    except Exception as exc:  # nanonispy raises KeyError/ValueError/OSError for damaged headers and data
        raise ImportFailed(f"{path}: cannot read it as a Nanonis grid ({type(exc).__name__}: {exc})") from exc
    header, signals = grid.header, grid.signals
    channels = [str(c) for c in header["channels"]]
    if channel is None:
        channel = channels[0]
        if len(channels) > 1:
            notes.append(f"spectra: the first channel {channel!r} of {channels} (choose with --channel)")
    elif channel not in channels:
        raise ImportFailed(f"{path}: no channel {channel!r}; the file has {', '.join(map(repr, channels))}")
    nx, ny = header["dim_px"]
    (cx, cy), (w, h) = header["pos_xy"], header["size_xy"]
    x = cx - w / 2 + (np.arange(nx) + 0.5) * w / nx
    y = cy - h / 2 + (np.arange(ny) + 0.5) * h / ny
    sweep = str(header["sweep_signal"])
    name, _, units = sweep.partition(" (")
    axis = _linear_or_points(
        name.strip().lower() or "sweep", units.rstrip(")"), np.asarray(signals["sweep_signal"], np.float64)
    )
    params = np.asarray(signals["params"], np.float64)
    names = [*_listed(header.get("fixed_parameters")), *_listed(header.get("experimental_parameters"))]
    image = None
    if "Z (m)" in names and names.index("Z (m)") < params.shape[2]:
        image = params[:, :, names.index("Z (m)")]
        notes.append(f"spectra: channel {channel!r}; image: z-controller height (topography)")
    si = from_grid(np.asarray(signals[channel]), x, y, "m", axis, str(path), image, notes=tuple(notes), signal=channel)
    angle = float(header.get("angle", 0.0))
    if not angle:
        return si
    recorded = [names.index(k) for k in ("X (m)", "Y (m)") if k in names]
    xy = params[:, :, recorded].reshape(-1, 2) * 1e9 if len(recorded) == 2 and max(recorded) < params.shape[2] else None
    fast = xy[nx - 1] - xy[0] if xy is not None and nx > 1 else np.zeros(2)  # the frame's x on the specimen
    if xy is not None and np.isfinite(xy).all() and np.hypot(*fast) > 0:  # the probe's own positions
        turn = float(np.degrees(np.arctan2(fast[1], fast[0])))
        how = f"the probe positions recorded with each spectrum (X (m), Y (m)); the frame turns {turn:.3g}°"
    else:
        centre = np.array([cx, cy]) * 1e9
        turn = -angle  # Nanonis turns the frame clockwise by its angle (an assumption: no positions recorded)
        xy = rotate(si.positions - centre, turn) + centre
        how = "the frame turned clockwise by the angle about its centre (no positions recorded to check)"
    return _rotated(si, xy, turn, f"the grid is rotated by {angle:g} degrees: positions are {how}")


def _listed(value: Any) -> list[str]:
    """A header entry that is a list of names or one name."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _rotated(si: SpectrumImage, positions: NDArray[np.float64], turn: float, note: str) -> SpectrumImage:
    """``si`` with positions on the specimen and axes that cover them; the image stays in its frame.

    The frame is turned ``turn`` degrees counterclockwise on the specimen.
    """
    pad = si.spacing() / 2
    low, high = positions.min(axis=0) - pad, positions.max(axis=0) + pad
    x_axis, y_axis = si.axes
    axes = (
        Axis(x_axis.name, x_axis.units, float(low[0]), float(high[0])),
        Axis(y_axis.name, y_axis.units, float(low[1]), float(high[1])),
    )
    return replace(si, positions=positions, axes=axes, notes=(*si.notes, note), frame_rotation_deg=turn)


def _read_run(path: Path) -> SpectrumImage:
    import zarr

    from engine.storage import SPECTRUM_IMAGE_ATTR, read_run, read_spectrum_image

    if SPECTRUM_IMAGE_ATTR in zarr.open_group(path, mode="r").attrs:
        return read_spectrum_image(path)

    run = read_run(path)
    if not run.images:
        raise ImportFailed(f"{path}: the run has no structural image")
    image = next(iter(run.images.values()))
    axes = tuple(run.description.axes)
    if len(axes) != 2:
        raise ImportFailed(f"{path}: replay needs 2 scan axes, the run has {len(axes)}")
    return SpectrumImage(
        image,
        run.positions,
        run.spectra,
        run.spectral_axis,
        (axes[0], axes[1]),
        str(path),
        None,
        ("recorded run: only measured positions are available",),
        complete=False,
        signal=run.signal,
    )


def import_file(path: Path, channel: str | None = None) -> SpectrumImage:
    """Read ``path`` (see the module docstring for the formats); ``ImportFailed`` names the problem.

    Args:
        path: a sidpy/pyNSID ``.h5``, Nanonis ``.3ds``, ``.npz``/``.npy``, Velox ``.emd``, Gatan ``.dm3``/``.dm4``
            file, a ``dualscope simulate``/``import`` dataset or a run.
        channel: a Nanonis grid's channel to take the spectra from (default: the first, e.g.
            ``Current (A)``; ``LIX 1 omega (A)`` for a lock-in dI/dV).

    Returns:
        The spectrum image: structural image, positions ``(m, 2)`` (nm when calibrated), spectra ``(m, c)``,
        spectral axis with units, and notes on what was assumed.

    Raises:
        ImportFailed: a missing, unsupported or corrupt file, or one without spectra.

    Examples:
        >>> si = import_file(grid)
        >>> si.positions.shape, si.spectra.shape
        ((20, 2), (20, 16))
    """
    if not path.exists():
        raise ImportFailed(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".zarr" or (path / "zarr.json").exists():
            return _read_run(path)
        if channel is not None and suffix != ".3ds":
            raise ImportFailed(f"{path}: --channel chooses among the channels of a Nanonis .3ds grid only")
        readers: dict[str, Callable[[Path], SpectrumImage]] = {
            ".3ds": lambda p: _read_3ds(p, channel),
            ".npz": _read_npz,
            ".npy": _read_npy,
            ".h5": _read_pynsid,
            ".hdf5": _read_pynsid,
            ".emd": _read_vendor,
            ".dm3": _read_vendor,
            ".dm4": _read_vendor,
        }
        if suffix not in readers:
            raise ImportFailed(
                f"{path}: unsupported format {suffix!r}; dualscope reads {', '.join(sorted(readers))} and runs (.zarr)"
            )
        return readers[suffix](path)
    except ImportFailed:
        raise
    except DualscopeError as exc:
        raise ImportFailed(f"{path}: {exc}") from exc
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise ImportFailed(
            f"{path}: cannot read it ({type(exc).__name__}: {exc}); "
            "is the file complete and of the format its suffix says?"
        ) from exc
