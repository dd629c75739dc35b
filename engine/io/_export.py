"""Runs and imported spectrum images out to the tools microscopists analyse with: xarray, HyperSpy, NeXus, CSV.

A run's spectra are a ``(measurement | energy)`` stack at scattered positions; an imported spectrum
image is a ``(y, x | channel)`` cube. Each format keeps the calibrated axes with their units, the
structural image with its axes, and (for runs) every probe position with its units.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import ConfigError
from engine.spectrum_image import SpectrumImage
from engine.storage import SPECTRUM_IMAGE_ATTR, RunData, read_run, read_spectrum_image
from engine.types import Image

if TYPE_CHECKING:
    import xarray as xr

EXPORT_FORMATS = ("hspy", "nxs", "csv")
"""What ``export`` writes: HyperSpy (via rosettasciio), NeXus (HDF5, ``NXdata`` with axes), plain CSV."""


def run_dataset(path: Path | str) -> xr.Dataset:
    """A run (or an imported spectrum image) as an ``xarray.Dataset`` with labelled, unit-carrying coordinates.

    Run: ``spectra (measurement, <spectral axis>)``; along ``measurement`` (the row, 0 … n−1) the
    coordinates ``step``, ``time`` (UTC), ``policy`` and one per scan axis (``x``, ``y``, with
    ``units``); the spectral axis's channel centres with ``units``; the decision columns
    (``acquisition_value``, ``model_version``, the stage timings in s); each structural image as
    ``image_<channel> (image_y, image_x)`` with its coordinates; ``candidate_positions (candidate, axis)``.
    Imported spectrum image: ``spectra (y, x, <spectral axis>)`` on its grid.

    Args:
        path: a run directory (``dualscope run``) or a dataset (``dualscope import``).

    Returns:
        The dataset, in memory; ``attrs`` hold the run id, status, instrument and config (TOML).

    Examples:
        >>> ds = run_dataset(run_path)
        >>> ds["spectra"].dims, ds["x"].attrs["units"], ds["energy_loss"].attrs["units"]
        (('measurement', 'energy_loss'), 'nm', 'eV')
        >>> int(ds["step"][3]), ds.sizes["measurement"]
        (3, 20)
    """
    import xarray as xr

    path = Path(path)
    if _is_spectrum_image(path):
        return _cube_dataset(read_spectrum_image(path))
    run = read_run(path)
    spectral = run.spectral_axis
    axes = run.description.axes
    coords: dict[str, Any] = {
        "measurement": ("measurement", np.arange(run.n), {"long_name": "row of the run (acquisition order)"}),
        spectral.name: (spectral.name, run.spectral_values, {"units": spectral.units}),
    }
    for name, (values, units) in _per_row(run).items():
        if name == "time":
            values, units = _utc(values), ""  # datetime64: the units are in the type
        coords[name] = ("measurement", values, {"units": units} if units else {})
    data: dict[str, Any] = {
        "spectra": (("measurement", spectral.name), run.spectra, {"units": "counts"}),
        "candidate_positions": (("candidate", "axis"), run.candidate_positions, {"axes": [a.name for a in axes]}),
    }
    for name in ("model_version", "time_decide_s", "time_measure_s", "time_record_s"):
        data[name] = ("measurement", run.columns[name], {"units": "s"} if name.startswith("time_") else {})
    for channel, image in run.images.items():
        data.update(_image_vars(channel, image))
    attrs = {
        "run_id": str(run.attrs.get("run_id", "")),
        "status": str(run.attrs.get("status", "")),
        "instrument": run.description.name,
        "config_toml": str(run.attrs.get("config_toml", "")),
        "source": str(path),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def export(path: Path | str, fmt: str, out: Path | str) -> list[Path]:
    """Write a run (or an imported spectrum image) as HyperSpy, NeXus or CSV.

    Args:
        path: the run or dataset.
        fmt: ``hspy`` (rosettasciio: the spectra as a signal with calibrated axes, ``(measurement |
            energy)`` for a run, ``(y, x | channel)`` for a spectrum image; each structural image as
            ``OUT_<channel>.hspy``), ``nxs`` (one HDF5 file: ``/entry/spectra`` and
            ``/entry/image_<channel>`` as ``NXdata`` with their axes) or ``csv`` (one row per spectrum:
            step, positions, time, policy, then one column per channel, units in the header).
        out: the file to write (must not exist).

    Returns:
        The files written.

    Raises:
        ConfigError: an unknown format, or ``out`` exists.

    Examples:
        >>> written = export(run_path, "nxs", folder / "run.nxs")
        >>> import h5py
        >>> with h5py.File(written[0]) as f:
        ...     f["entry/spectra"].attrs["signal"], f["entry/spectra/energy_loss"].attrs["units"]
        ('spectra', 'eV')
    """
    path, out = Path(path), Path(out)
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if out.exists():
        raise ConfigError(f"{out} exists; choose a new file name (nothing is overwritten)")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent} is not a directory; create it first")
    stack = _Stack.of(path)
    return {"hspy": _hspy, "nxs": _nexus, "csv": _csv}[fmt](stack, out)


class _Stack:
    """What every format writes: spectra with their navigation axes, the spectral axis, images, metadata."""

    def __init__(
        self,
        spectra: NDArray[Any],
        navigation: list[tuple[str, str, NDArray[np.float64]]],
        spectral: tuple[str, str, NDArray[np.float64], float, float],
        images: dict[str, Image],
        rows: dict[str, NDArray[Any]],
        title: str,
        metadata: dict[str, Any],
    ):
        self.spectra, self.navigation, self.spectral = spectra, navigation, spectral
        self.images, self.rows, self.title, self.metadata = images, rows, title, metadata

    @classmethod
    def of(cls, path: Path) -> _Stack:
        """A run's ``(measurement | energy)`` stack, or a spectrum image's ``(y, x | channel)`` cube."""
        if _is_spectrum_image(path):
            si = read_spectrum_image(path)
            x, y, cube = _grid(si)
            ax = si.spectral_axis
            meta = {"source": si.source, "notes": list(si.notes), "signal": si.signal}
            units = si.axes[0].units
            return cls(
                cube,
                [("y", units, y), ("x", units, x)],
                (ax.name, ax.units, ax.values(), ax.offset, ax.scale),
                {si.image.channel: si.image},
                {},
                path.stem,
                meta,
            )
        run = read_run(path)
        ax = run.spectral_axis
        rows = {f"{name} ({units})" if units else name: values for name, (values, units) in _per_row(run).items()}
        meta = {
            "run_id": str(run.attrs.get("run_id", "")),
            "instrument": run.description.name,
            "config_toml": str(run.attrs.get("config_toml", "")),
            "operator_actions": json.dumps(run.attrs.get("operator_actions", [])),
        }
        measurement = np.arange(run.n, dtype=np.float64)
        return cls(
            run.spectra,
            [("measurement", "", measurement)],
            (ax.name, ax.units, run.spectral_values, ax.offset, ax.scale),
            dict(run.images),
            rows,
            path.stem,
            meta,
        )


def _hspy(stack: _Stack, out: Path) -> list[Path]:
    try:
        from rsciio.hspy import file_writer
    except ImportError:
        raise ConfigError("HyperSpy export needs rosettasciio: pip install 'dualscope[formats]'") from None
    name, units, _, offset, scale = stack.spectral
    axes = [_uniform(n, u, v, navigate=True) for n, u, v in stack.navigation]
    axes.append({"name": name, "units": units, "size": stack.spectra.shape[-1], "offset": offset, "scale": scale,
                 "navigate": False})  # fmt: skip
    original = {**stack.metadata, **{k: np.asarray(v) for k, v in stack.rows.items() if k != "policy"}}
    if "policy" in stack.rows:
        original["policy"] = [str(p) for p in stack.rows["policy"]]
    written = [out]
    file_writer(str(out), _signal(stack.spectra, axes, stack.title, "EELS", original))
    for channel, image in stack.images.items():
        target = out.with_name(f"{out.stem}_{channel}{out.suffix}")
        y, x = image.y_axis, image.x_axis
        image_axes = [
            {"name": y.name, "units": y.units, "size": image.data.shape[0], "offset": y.offset, "scale": y.scale,
             "navigate": False},
            {"name": x.name, "units": x.units, "size": image.data.shape[1], "offset": x.offset, "scale": x.scale,
             "navigate": False},
        ]  # fmt: skip
        file_writer(str(target), _signal(np.asarray(image.data), image_axes, f"{stack.title} {channel}", "", {}))
        written.append(target)
    return written


def _signal(data: NDArray[Any], axes: list[dict[str, Any]], title: str, kind: str, original: dict[str, Any]) -> dict:
    """A rosettasciio signal dictionary (what HyperSpy's ``save`` hands its writer)."""
    from engine import __version__

    return {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": title}, "Signal": {"signal_type": kind, "quantity": "Counts"}},
        "original_metadata": original,
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "models": {},
        "learning_results": {},
        "package_info": {"name": "dualscope", "version": __version__},
    }


def _uniform(name: str, units: str, values: NDArray[np.float64], navigate: bool) -> dict[str, Any]:
    """An axis dict: uniform (offset, scale) when the values are evenly spaced, else the values themselves."""
    step = float(values[1] - values[0]) if values.size > 1 else 1.0
    if values.size < 2 or np.allclose(np.diff(values), step, rtol=1e-6, atol=0):
        return {"name": name, "units": units, "size": values.size, "offset": float(values[0]) if values.size else 0.0,
                "scale": step, "navigate": navigate}  # fmt: skip
    return {"name": name, "units": units, "axis": values, "navigate": navigate}


def _nexus(stack: _Stack, out: Path) -> list[Path]:
    import h5py

    name, units, values, _, _ = stack.spectral
    with h5py.File(out, "w") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "default": "spectra"})
        entry.create_dataset("title", data=stack.title)
        group = entry.create_group("spectra")
        nav = [n for n, _, _ in stack.navigation]
        group.attrs.update({"NX_class": "NXdata", "signal": "spectra", "axes": [*nav, name]})
        spectra = group.create_dataset("spectra", data=stack.spectra, compression="gzip")
        spectra.attrs["units"] = "counts"
        for k, (axis, axis_units, axis_values) in enumerate(stack.navigation):
            group.create_dataset(axis, data=axis_values).attrs["units"] = axis_units
            group.attrs[f"{axis}_indices"] = k
        group.create_dataset(name, data=values).attrs["units"] = units
        group.attrs[f"{name}_indices"] = len(nav)
        for column, data in stack.rows.items():  # per-measurement columns: positions, step, time, policy
            key = column.split(" (")[0]
            if key in nav or key == name:
                continue
            dset = group.create_dataset(key, data=data.astype("S") if data.dtype.kind == "U" else data)
            if " (" in column:
                dset.attrs["units"] = column.split(" (", 1)[1].rstrip(")")
        for channel, image in stack.images.items():
            ig = entry.create_group(f"image_{channel}")
            ig.attrs.update({"NX_class": "NXdata", "signal": "data", "axes": ["y", "x"]})
            ig.create_dataset("data", data=np.asarray(image.data), compression="gzip")
            ys, xs = image.coords()
            ig.create_dataset("y", data=ys).attrs["units"] = image.y_axis.units
            ig.create_dataset("x", data=xs).attrs["units"] = image.x_axis.units
        notes = entry.create_group("notes")
        notes.attrs["NX_class"] = "NXnote"
        for key, value in stack.metadata.items():
            notes.create_dataset(key, data=json.dumps(value) if not isinstance(value, str) else value)
    return [out]


def _csv(stack: _Stack, out: Path) -> list[Path]:
    name, units, values, _, _ = stack.spectral
    spectra = stack.spectra.reshape(-1, stack.spectra.shape[-1])
    if stack.rows:
        columns = {k: np.asarray(v) for k, v in stack.rows.items()}
    else:  # a spectrum image: its grid coordinates, row-major
        grids = np.meshgrid(*[v for _, _, v in stack.navigation], indexing="ij")
        columns = {f"{n} ({u})": g.ravel() for (n, u, _), g in zip(stack.navigation, grids, strict=True)}
    header = [*columns, *(f"{name} = {v:.6g} {units}" for v in values)]
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in range(spectra.shape[0]):
            writer.writerow([_text(columns[c][r]) for c in columns] + [f"{v:.7g}" for v in spectra[r]])
    return [out]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else f"{value:.10g}" if isinstance(value, float) else str(value)


def _image_vars(channel: str, image: Image) -> dict[str, Any]:
    ys, xs = image.coords()
    import xarray as xr

    return {
        f"image_{channel}": xr.DataArray(
            np.asarray(image.data),
            dims=("image_y", "image_x"),
            coords={
                "image_y": ("image_y", ys, {"units": image.y_axis.units}),
                "image_x": ("image_x", xs, {"units": image.x_axis.units}),
            },
            attrs={"units": image.units},
        )
    }


def _cube_dataset(si: SpectrumImage) -> xr.Dataset:
    import xarray as xr

    x, y, cube = _grid(si)
    ax, units = si.spectral_axis, si.axes[0].units
    coords = {
        "y": ("y", y, {"units": units}),
        "x": ("x", x, {"units": units}),
        ax.name: (ax.name, ax.values(), {"units": ax.units}),
    }
    data = {"spectra": (("y", "x", ax.name), cube, {"units": si.signal}), **_image_vars(si.image.channel, si.image)}
    return xr.Dataset(data, coords=coords, attrs={"source": si.source, "notes": "; ".join(si.notes)})


def _grid(si: SpectrumImage) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[Any]]:
    """The spectrum image as ``x (nx,)``, ``y (ny,)`` and a ``(ny, nx, c)`` cube (NaN where nothing was recorded)."""
    x, y = np.unique(si.positions[:, 0]), np.unique(si.positions[:, 1])
    cube = np.full((y.size, x.size, si.spectral_axis.size), np.nan, dtype=np.float32)
    cube[np.searchsorted(y, si.positions[:, 1]), np.searchsorted(x, si.positions[:, 0])] = si.spectra
    return x, y, cube


def _per_row(run: RunData) -> dict[str, tuple[NDArray[Any], str]]:
    """What every format keeps of each row, with units: step, the probe position per axis, time, policy, acquisition."""
    names = run.policy_names
    policy = [names[c] if 0 <= c < len(names) else "" for c in run.columns["policy_code"].astype(int)]
    return {
        "step": (run.columns["step"], ""),
        **{a.name: (run.positions[:, k], a.units) for k, a in enumerate(run.description.axes)},
        "time": (run.columns["timestamps"], "s since 1970-01-01 UTC"),
        "policy": (np.asarray(policy, dtype=str), ""),
        "acquisition_value": (run.columns["acquisition_value"], ""),
    }


def _utc(seconds: NDArray[np.float64]) -> NDArray[np.datetime64]:
    return (np.asarray(seconds, dtype=np.float64) * 1e9).astype("datetime64[ns]")


def _is_spectrum_image(path: Path) -> bool:
    """Whether ``path`` is a dataset of ``dualscope import`` (its group's attributes say so)."""
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # read_run then says what is wrong with it
    return isinstance(meta, dict) and SPECTRUM_IMAGE_ATTR in meta.get("attributes", {})
