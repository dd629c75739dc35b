"""Read a run as it stands at its commit point, without changing anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.errors import RunCorrupt, RunStorageError
from engine.storage._durable_store import DurableLocalStore
from engine.storage._journal import read_journal
from engine.storage._layout import ATTR, FORMAT_VERSION, JOURNAL_PATH, row_columns
from engine.types import Image, ImageAxis, InstrumentDescription, SpectralAxis


@dataclass(frozen=True)
class RunData:
    """The committed content of a run.

    Attributes:
        path: the run directory.
        attrs: the ``dualscope`` group attribute (config, versions, status, ...).
        columns: every per-measurement array sliced to ``n`` committed rows
            (``spectra (n, c)``, ``positions (n, d)``, ``timestamps (n,)``, ...).
        array_rows: the row count each per-measurement array has on disk
            (more than ``n`` only after a crash, before recovery).
        spectral_values: channel centres ``(c,)``.
        images: structural images by channel.
        candidate_positions: ``(m, d)``.
        pending_rows: durable rows of a live or interrupted run still in its journal, appended after
            the committed ones (only with ``read_run(path, journal=True)``; 0 otherwise).
        damaged: rows whose chunks cannot be decoded, per array, as ``(start, stop)`` ranges (only
            with ``read_run(path, damaged_ok=True)``; those rows hold the array's fill value).

    Examples:
        >>> run = read_run(run_path)
        >>> run.n, run.spectra.shape, run.positions.shape
        (20, (20, 64), (20, 2))
        >>> run.policy_names
        ['random']
    """

    path: Path
    attrs: dict[str, Any]
    columns: dict[str, NDArray[Any]]
    array_rows: dict[str, int]
    spectral_values: NDArray[np.float64]
    images: dict[str, Image]
    candidate_positions: NDArray[np.float64]
    pending_rows: int = 0
    damaged: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Rows read: the committed ones, plus ``pending_rows`` from the journal."""
        return self.committed + self.pending_rows

    @property
    def committed(self) -> int:
        """Rows below the commit point."""
        return int(self.attrs["committed_rows"])

    @property
    def spectra(self) -> NDArray[np.float32]:
        """``(n, c)`` spectra."""
        return self.columns["spectra"]

    @property
    def positions(self) -> NDArray[np.float64]:
        """``(n, d)`` probe positions."""
        return self.columns["positions"]

    @property
    def spectral_axis(self) -> SpectralAxis:
        """Calibration of the spectra."""
        return SpectralAxis.from_json(self.attrs["spectral_axis"])

    @property
    def description(self) -> InstrumentDescription:
        """The instrument's description at the start of the run."""
        return InstrumentDescription.from_json(self.attrs["instrument"])

    @property
    def signal(self) -> str:
        """What the spectra's values are, with units (``counts``; a replay says what it recorded)."""
        return str(self.description.extra.get("signal", "counts"))

    @property
    def policy_names(self) -> list[str]:
        """Policy name per ``policy_code``."""
        return list(self.attrs["policies"])


def open_run_group(path: Path, mode: str = "r") -> zarr.Group:
    """Open a run's Zarr group, translating failures into ``RunStorageError``.

    Args:
        path: the run directory.
        mode: ``r`` (read only) or ``r+``.

    Returns:
        The group.

    Raises:
        RunStorageError: no ``zarr.json``. RunCorrupt: a store that cannot be opened.

    Examples:
        >>> group = open_run_group(run_path)
        >>> group.attrs["dualscope"]["status"]
        'closed'
    """
    if not (path / "zarr.json").is_file():
        raise RunStorageError(f"no run at {path}: it has no zarr.json (is the path right?)")
    try:
        store = zarr.storage.LocalStore(path, read_only=True) if mode == "r" else DurableLocalStore(path)
        group = zarr.open_group(store, mode=mode)  # type: ignore[arg-type]
    except Exception as exc:  # zarr raises many types for a damaged store
        raise RunCorrupt(f"{path}: cannot open as a Zarr group ({type(exc).__name__}: {exc})") from exc
    if ATTR not in group.attrs:
        raise RunStorageError(f"{path} is a Zarr group but not a dualscope run (no {ATTR!r} attribute)")
    version = group.attrs[ATTR].get("format_version")  # type: ignore[union-attr]
    if version != FORMAT_VERSION:
        raise RunStorageError(f"{path}: run format version {version}; this dualscope reads {FORMAT_VERSION}")
    return group


def read_run(path: Path | str, *, journal: bool = False, damaged_ok: bool = False) -> RunData:
    """Read the committed rows of the run at ``path`` (read-only; safe while it is being written).

    Args:
        path: the run directory.
        journal: also read the durable rows waiting in the journal (a live run before its first
            commit, or an interrupted one before recovery); ``pending_rows`` counts them.
        damaged_ok: read around chunks that cannot be decoded (a truncated or overwritten file):
            their rows hold the fill value and ``damaged`` names them. Without it such a chunk
            raises ``RunCorrupt`` naming the array and rows.

    Returns:
        Its committed rows, attributes, images, candidates and spectral axis.

    Raises:
        RunStorageError: not a run. RunCorrupt: a run that cannot be read.

    Examples:
        >>> run = read_run(run_path)
        >>> run.attrs["status"], run.spectral_axis.units
        ('closed', 'eV')
    """
    path = Path(path)
    group = open_run_group(path)
    attrs: dict[str, Any] = dict(group.attrs[ATTR])  # type: ignore[arg-type]
    n = int(attrs["committed_rows"])
    spectral = SpectralAxis.from_json(attrs["spectral_axis"])
    columns: dict[str, NDArray[Any]] = {}
    array_rows: dict[str, int] = {}
    damaged: dict[str, list[tuple[int, int]]] = {}
    try:
        for col in row_columns(spectral.name):
            arr = array_node(group, col.name)
            array_rows[col.name] = int(arr.shape[0])
            if arr.shape[0] < n:
                raise RunCorrupt(f"{path}: array {col.name!r} has {arr.shape[0]} rows but {n} are committed")
            columns[col.name], bad = _read_rows(arr, n)
            if bad:
                if not damaged_ok:
                    raise RunCorrupt(
                        f"{path}: array {col.name!r} cannot be decoded at {describe_ranges(bad)} "
                        "(a damaged chunk file); `dualscope inspect` lists every damaged array"
                    )
                damaged[col.name] = bad
        images: dict[str, Image] = {}
        if "image_y" in group:
            y_arr, x_arr = array_node(group, "image_y"), array_node(group, "image_x")
            y_axis = _image_axis("y", np.asarray(y_arr[:]), str(y_arr.attrs.get("units", "")))
            x_axis = _image_axis("x", np.asarray(x_arr[:]), str(x_arr.attrs.get("units", "")))
            # the directory, not group.array_keys(): zarr lists a torn write's leftover
            # "zarr.<id>.partial" as a member and fails on it (a run killed mid-write must stay readable)
            for key in sorted(p.name for p in path.iterdir() if p.is_dir()):
                if key.startswith("image_") and key not in ("image_y", "image_x"):
                    arr = array_node(group, key)
                    channel = key.removeprefix("image_")
                    units = str(arr.attrs.get("units", ""))
                    images[channel] = Image(channel, np.asarray(arr[:]), y_axis, x_axis, units)
        spectral_values = np.asarray(array_node(group, spectral.name)[:])
        candidates = np.asarray(array_node(group, "candidate_positions")[:])
    except KeyError as exc:
        raise RunCorrupt(f"{path}: missing array {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise RunCorrupt(f"{path}: a static array cannot be decoded ({type(exc).__name__}: {exc})") from exc
    pending = _journal_rows(path, n, columns) if journal else 0
    return RunData(path, attrs, columns, array_rows, spectral_values, images, candidates, pending, damaged)


_DECODE_ERRORS = (RuntimeError, ValueError, OSError, TypeError)
"""What zarr and its codecs raise for a chunk file that is truncated or overwritten."""


def _read_rows(arr: zarr.Array, n: int) -> tuple[NDArray[Any], list[tuple[int, int]]]:
    """Rows ``[0, n)`` of ``arr`` and the ranges of rows whose chunks cannot be decoded.

    One read when the array is sound; chunk by chunk (damaged chunks filled) only after that fails.
    """
    try:
        return np.asarray(arr[:n]), []
    except _DECODE_ERRORS:
        out = np.full((n, *arr.shape[1:]), arr.fill_value, dtype=arr.dtype)  # read around the damage below
    step = int(arr.chunks[0])
    bad: list[tuple[int, int]] = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        try:
            out[start:stop] = arr[start:stop]
        except _DECODE_ERRORS:
            bad.append((start, stop))
    return out, bad


def describe_ranges(ranges: list[tuple[int, int]]) -> str:
    """Row ranges as people read them, for messages about damaged or missing rows.

    Args:
        ranges: ``(start, stop)`` pairs, stop exclusive (as ``RunData.damaged`` holds them).

    Returns:
        The inclusive ranges as text.

    Examples:
        >>> describe_ranges([(0, 4), (8, 9)])
        'rows 0-3, 8'
    """
    parts = [f"{a}-{b - 1}" if b - a > 1 else f"{a}" for a, b in ranges]
    return "rows " + ", ".join(parts)


def _journal_rows(path: Path, committed: int, columns: dict[str, NDArray[Any]]) -> int:
    """Append the journal's durable rows beyond ``committed`` to ``columns`` in place; return how many."""
    entries, _, _ = read_journal(path.joinpath(*JOURNAL_PATH))
    blocks: list[dict[str, NDArray[Any]]] = []
    expected = committed
    for entry in entries:
        if entry.meta["kind"] != "measurement":
            continue
        first, k = int(entry.meta["first_row"]), int(entry.arrays["spectra"].shape[0])
        if first + k <= committed:
            continue  # committed already; the journal was not yet cut
        if first != expected or set(entry.arrays) != set(columns):
            break  # a gap or a foreign entry: stop rather than misplace rows
        blocks.append(dict(entry.arrays))
        expected += k
    if blocks:
        for name in columns:
            columns[name] = np.concatenate([columns[name], *(b[name] for b in blocks)])
    return expected - committed


def read_candidates(path: Path) -> CandidateSet:
    """The candidate set a run was created with: positions ``(m, d)``, pixels ``(m, 2)``, grid shape.

    Args:
        path: the run directory.

    Returns:
        The candidate set, with no measured or pending marks.

    Raises:
        RunStorageError: not a run. RunCorrupt: missing candidate arrays.

    Examples:
        >>> candidates = read_candidates(run_path)  # positions and pixels; measured marks are the resume's job
        >>> candidates.positions.shape[1], int(candidates.measured.sum())
        (2, 0)
    """
    group = open_run_group(path)
    attrs: dict[str, Any] = dict(group.attrs[ATTR])  # type: ignore[arg-type]
    grid = [int(g) for g in attrs["candidate_grid"]]
    try:
        return CandidateSet(
            np.asarray(array_node(group, "candidate_positions")[:]),
            np.asarray(array_node(group, "candidate_pixels")[:]),
            (int(grid[0]), int(grid[1])),
        )
    except (KeyError, ValueError) as exc:
        raise RunCorrupt(f"{path}: cannot read the candidates ({exc})") from exc


def array_node(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a run group; ``RunCorrupt`` if it is missing or not an array.

    Args:
        group: a run's group.
        name: the array's name.

    Returns:
        The array.

    Raises:
        RunCorrupt: missing, or not an array.

    Examples:
        >>> array_node(open_run_group(run_path), "spectra").shape
        (20, 64)
    """
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise RunCorrupt(f"{name!r} in the run is a group, expected an array")
    return node


def _image_axis(name: str, values: NDArray[np.float64], units: str) -> ImageAxis:
    scale = float(values[1] - values[0]) if values.size > 1 else 1.0
    return ImageAxis(name, units, float(values[0]), scale)
