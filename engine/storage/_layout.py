"""What a run holds on disk (one Zarr v3 group per run).

Per-measurement arrays share the growing dimension ``measurement`` (``n`` rows):

================== ============ ============================== ====================================
array              dtype        shape                          meaning
================== ============ ============================== ====================================
``spectra``        float32      ``(n, c)``                     counts per channel
``positions``      float64      ``(n, d)``                     probe position, axes' units
``timestamps``     float64      ``(n,)``                       end of acquisition, s since epoch
``step``           int64        ``(n,)``                       campaign step that measured the row
``candidate_index`` int64       ``(n,)``                       index into ``candidate_positions``; -1 outside them
``policy_code``    int16        ``(n,)``                       index into attribute ``policies``
``acquisition_value`` float64   ``(n,)``                       NaN for model-free policies
``model_version``  int64        ``(n,)``                       -1 when no model was used
``runner_up_values`` float64    ``(n, 5)``                     acquisition values of the next best
                                                               candidates at that decision (NaN pad)
``time_decide_s``  float64      ``(n,)``                       seconds spent deciding the step
``time_condition_s`` float64    ``(n,)``                       of which conditioning the model on
                                                               new data (NaN for model-free policies)
``time_acquire_s`` float64      ``(n,)``                       of which scoring the candidates
``time_measure_s`` float64      ``(n,)``                       seconds from command to spectrum
``time_record_s``  float64      ``(n,)``                       seconds to make it durable (NaN if
                                                               the row was recovered after a crash)
================== ============ ============================== ====================================

Static arrays: ``<spectral axis name>`` ``(c,)`` (channel centres, with ``units``),
``image_<channel>`` ``(h, w)`` with coordinates ``image_y (h,)`` and ``image_x (w,)``,
``candidate_positions (m, d)`` and ``candidate_pixels (m, 2)``.

The group attribute ``dualscope`` holds the format version, ``committed_rows``
(the commit point: rows below it are complete in every array), the run status,
the instrument description, the config (TOML text), the software versions and
the policy names; with drift tracking on, ``drift_track`` lists every tracking frame's outcome
(``positions`` are then points of the reference image; the probe was sent to ``position + shift``
of the last accepted entry before the row's step); ``refits`` notes every model refit (version,
observations, data cut, device, host) and ``training_events`` where refits ran and why that changed
(a Dask worker lost, training back on the local thread). ``journal/wal.bin`` is the write-ahead journal;
``journal/writer.lock`` is locked by the process writing the run (the kernel drops the lock when that
process dies).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RunStorageError
from engine.protocols import Clock

FORMAT_VERSION = 2
RUNNER_UPS = 5
"""How many runner-up acquisition values each decision keeps."""
ATTR = "dualscope"
JOURNAL_PATH = ("journal", "wal.bin")
LOCK_PATH = ("journal", "writer.lock")
"""Held (``flock``) by the one process writing the run; it says which process that is."""
ROW_DIM = "measurement"


@dataclass(frozen=True)
class Column:
    """A per-measurement array: ``dtype``, trailing dims, fill value and meaning."""

    name: str
    dtype: str
    trailing_dims: tuple[str, ...]
    fill: float | int
    units: str = ""


def row_columns(spectral_dim: str) -> tuple[Column, ...]:
    """The per-measurement columns of a run whose spectral dimension is ``spectral_dim``."""
    return (
        Column("spectra", "float32", (spectral_dim,), float("nan"), "counts"),
        Column("positions", "float64", ("axis",), float("nan")),
        Column("timestamps", "float64", (), float("nan"), "seconds since 1970-01-01T00:00:00Z"),
        Column("step", "int64", (), -1),
        Column("candidate_index", "int64", (), -1),
        Column("policy_code", "int16", (), -1),
        Column("acquisition_value", "float64", (), float("nan")),
        Column("model_version", "int64", (), -1),
        Column("runner_up_values", "float64", ("runner_up",), float("nan")),
        Column("time_decide_s", "float64", (), float("nan"), "s"),
        Column("time_condition_s", "float64", (), float("nan"), "s"),
        Column("time_acquire_s", "float64", (), float("nan"), "s"),
        Column("time_measure_s", "float64", (), float("nan"), "s"),
        Column("time_record_s", "float64", (), float("nan"), "s"),
    )


def trailing_shape(column: str, channels: int, axes: int) -> tuple[int, ...]:
    """Shape of one row of ``column`` for ``channels`` spectral channels and ``axes`` position axes."""
    return {"spectra": (channels,), "positions": (axes,), "runner_up_values": (RUNNER_UPS,)}.get(column, ())


def ensure_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` if needed and check that runs can be written there, before anything starts.

    Args:
        output_dir: the configuration's ``run.output_dir``.

    Returns:
        Nothing; it raises when runs cannot go there.

    Raises:
        RunStorageError: it is a file, cannot be created, or is not writable (the message says which).

    Examples:
        >>> ensure_output_dir(folder / "runs")
        >>> (folder / "runs").is_dir()
        True
    """
    what = f"run.output_dir = {str(output_dir)!r}"
    if output_dir.exists() and not output_dir.is_dir():
        raise RunStorageError(f"{what} is a file, not a directory; choose a directory for the runs")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunStorageError(f"{what} cannot be created ({exc.strerror}); choose another directory") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise RunStorageError(f"{what} is not writable by this user; choose another directory")


def new_run_path(output_dir: Path, name: str, clock: Clock) -> Path:
    """``output_dir/<name>-<YYYYmmdd-HHMMSS>.zarr``, with a suffix if that exists already.

    Args:
        output_dir: where runs go.
        name: the run's name.
        clock: the time in the name.

    Returns:
        A path that does not exist yet.

    Examples:
        >>> new_run_path(Path("runs"), "demo", SystemClock()).suffix
        '.zarr'
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(clock.time()))
    path = output_dir / f"{name}-{stamp}.zarr"
    k = 1
    while path.exists():
        path = output_dir / f"{name}-{stamp}-{k}.zarr"
        k += 1
    return path
