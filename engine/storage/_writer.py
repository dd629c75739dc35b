"""Writes a run: journal first, then chunk-sized Zarr blocks behind a commit point.

Commit protocol
---------------
1. ``record_measurement`` appends the rows to the journal and ``fdatasync`` s it;
   only then does it return (the loop counts the rows as recorded). A crash from
   here on loses nothing: recovery replays the journal. With group commit (a
   pipelined campaign) it returns after the write and a syncer thread makes the
   rows durable about one ``fdatasync`` later; a power cut in between loses them
   from the run, not from the instrument's reply cache (``dualscope resume``
   fetches them back by request id).
2. When ``chunk_rows`` rows are buffered, ``RunWriter.flush`` writes them to
   every per-measurement array *before* the array's shape covers them (through
   a view with the larger shape that is never saved), makes the chunk files and
   their directories durable, then saves each array's new shape. So a plain zarr
   or xarray reader never sees a row whose data is not on disk.
3. It then raises the group attribute ``committed_rows``: the commit point. Rows
   below it are complete in every array.

Every Zarr file is written through ``DurableLocalStore``: a temporary file, fsynced,
then renamed over the old one, so a name on disk holds complete bytes, old or new,
even after a power cut; fsyncs of the directories make the renames durable.
``tests/engine/storage/test_power_cut.py`` checks this against a model of the page
cache that drops every write not yet fsynced (and one that also reorders them).
4. Only then is the journal truncated. A crash between 3 and 4 leaves journal
   entries below the commit point, which recovery skips.
"""

from __future__ import annotations

import asyncio
import platform
import threading
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from numpy.typing import NDArray
from zarr.core.sync import sync as zarr_sync

from engine import __version__
from engine.candidates import CandidateSet
from engine.decisions import Decision, StepTimings
from engine.errors import DualscopeError, RunCorrupt, RunStorageError
from engine.protocols import Clock
from engine.storage._durable_store import DurableLocalStore
from engine.storage._journal import Journal, fsync_dir
from engine.storage._layout import (
    ATTR,
    FORMAT_VERSION,
    JOURNAL_PATH,
    ROW_DIM,
    RUNNER_UPS,
    Column,
    row_columns,
    trailing_shape,
)
from engine.storage._lock import WriterLock
from engine.storage._reader import array_node as _array
from engine.types import Image, InstrumentDescription, Measurement


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages a run depends on."""
    versions = {"python": platform.python_version(), "dualscope": __version__}
    for pkg in ("zarr", "numpy", "pyzmq", "scipy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _view_with_rows(arr: zarr.Array, n_rows: int) -> zarr.AsyncArray[Any]:
    """A view of ``arr`` whose first dimension is ``n_rows``; its metadata is never saved."""
    meta = arr.metadata.update_shape((n_rows, *arr.shape[1:]))
    return zarr.AsyncArray(metadata=meta, store_path=arr.async_array.store_path, config=arr.async_array.config)


def _all_at_once(calls: Sequence[Coroutine[Any, Any, Any]]) -> None:
    """Run Zarr's coroutines together on its event loop and wait for all of them.

    One array at a time costs each its own hand-offs to Zarr's I/O thread (about 1 ms per write or
    resize here, 30 ms per block of 14 arrays); together they cost those once.
    """

    async def together() -> None:
        await asyncio.gather(*calls)

    zarr_sync(together())


class RunWriter:
    """The ``Recorder`` that writes a Zarr run.

    Use ``create`` for a new run and ``reopen`` to continue one (which
    recovers it first). Not thread-safe: one writer per run, one thread.

    Args:
        root: the run directory.
        group: its open Zarr group.
        clock: injected time source.

    Examples:
        >>> run = read_run(run_path)  # copy another run's description, image and candidates into a new one
        >>> writer = RunWriter.create(folder / "new.zarr", description=run.description,
        ...                           images=list(run.images.values()), candidates=read_candidates(run_path),
        ...                           config_toml="", clock=SystemClock())
        >>> writer.n_recorded, writer.status
        (0, 'open')
        >>> writer.close(outcome={"stop_reason": "nothing to do"})
        >>> read_run(folder / "new.zarr").attrs["status"]
        'closed'
    """

    commit_interval_s = 1.0
    """Group commit: blocks that fill faster than this are committed together (s)."""
    MAX_BLOCKS_PER_COMMIT = 16
    """Group commit: the most blocks one commit gathers (the journal holds them until it)."""

    def __init__(self, root: Path, group: zarr.Group, clock: Clock):
        self._lock = WriterLock.acquire(root, clock)  # first: a second writer must not touch anything
        self.root = root
        self._group = group
        self._clock = clock
        self._attrs: dict[str, Any] = dict(group.attrs[ATTR])  # type: ignore[arg-type]
        spectral_dim = self._attrs["spectral_axis"]["name"]
        self._columns: tuple[Column, ...] = row_columns(spectral_dim)
        self._arrays = {c.name: _array(group, c.name) for c in self._columns}
        self._chunk_rows = int(self._attrs["chunk_rows"])
        self._committed = int(self._attrs["committed_rows"])
        self._base = self._committed  # rows committed, or handed to the committer thread
        self._committer: ThreadPoolExecutor | None = None  # group commit: commits blocks off the caller's thread
        self._committing: Future[None] | None = None
        self._last_commit = float("-inf")  # group commit: when the last block was handed to the committer
        self._policies: list[str] = list(self._attrs["policies"])
        self._attrs_lock = threading.Lock()  # operator actions arrive from the control socket's thread
        self._buffer: list[dict[str, NDArray[Any]]] = []
        self._buffered = 0
        self._point: dict[str, Any] | None = None  # step and policy state of the last buffered measurement
        self._journal = Journal(root.joinpath(*JOURNAL_PATH))
        self._unsynced: list[tuple[int, int]] = []  # group commit: (journal entry, rows before it) not yet durable
        self._open: dict[str, dict[str, Any]] = {}  # decisions recorded, outcome not yet (request id → meta)
        self._closed = False

    # ------------------------------------------------------------------ create
    @classmethod
    def create(
        cls,
        path: Path,
        *,
        description: InstrumentDescription,
        images: Sequence[Image],
        candidates: CandidateSet,
        config_toml: str,
        clock: Clock,
        chunk_rows: int = 256,
        extra_attrs: Mapping[str, Any] | None = None,
        extra_arrays: Mapping[str, NDArray[Any]] | None = None,
    ) -> RunWriter:
        """Create a new, empty run at ``path`` (which must not exist).

        Args:
            path: the run directory, conventionally ``*.zarr``.
            description: the instrument's ``describe`` answer.
            images: structural images, each ``(h, w)``; all share one calibration.
            candidates: the candidate positions ``(m, d)`` and pixels ``(m, 2)``.
            config_toml: the configuration, as TOML text, stored verbatim.
            clock: injected time source.
            chunk_rows: rows per Zarr chunk and per flushed block.
            extra_attrs: further JSON attributes stored under ``dualscope`` (small: the attributes
                are rewritten at every commit).
            extra_arrays: further fixed arrays stored once next to the candidates (e.g. what each
                candidate design decodes to), by name.
        """
        if chunk_rows < 1:
            raise RunStorageError("chunk_rows must be >= 1")
        if path.exists():
            raise RunStorageError(f"{path} already exists; choose a new run path or resume that run")
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(DurableLocalStore(path), mode="w-", zarr_format=3)
        spec = description.spectral_axis
        c, d = spec.size, len(description.axes)
        for col in row_columns(spec.name):
            trailing = trailing_shape(col.name, c, d)
            group.create_array(
                col.name,
                shape=(0, *trailing),
                chunks=(chunk_rows, *trailing),
                dtype=col.dtype,
                fill_value=col.fill,
                dimension_names=(ROW_DIM, *col.trailing_dims),
                attributes={"units": col.units} if col.units else {},
            )
        energy = group.create_array(
            spec.name, shape=(c,), dtype="float64", dimension_names=(spec.name,), attributes={"units": spec.units}
        )
        energy[:] = spec.values()
        if images:
            y, x = images[0].coords()
            for name, values, axis in (("image_y", y, images[0].y_axis), ("image_x", x, images[0].x_axis)):
                arr = group.create_array(name, shape=values.shape, dtype="float64", dimension_names=(name,))
                arr[:] = values
                arr.attrs["units"] = axis.units
            for img in images:
                if img.data.shape != images[0].data.shape:
                    raise RunStorageError(f"image {img.channel!r} shape {img.data.shape} differs from the first")
                arr = group.create_array(
                    f"image_{img.channel}",
                    shape=img.data.shape,
                    dtype=img.data.dtype,
                    dimension_names=("image_y", "image_x"),
                    attributes={"units": img.units, "channel": img.channel},
                )
                arr[:] = img.data
        group.create_group(
            JOURNAL_PATH[0],
            attributes={"about": "write-ahead journal of rows not yet committed; see engine.storage.journal"},
        )
        cand = group.create_array(
            "candidate_positions",
            shape=candidates.positions.shape,
            dtype="float64",
            dimension_names=("candidate", "axis"),
        )
        cand[:] = candidates.positions
        pix = group.create_array(
            "candidate_pixels", shape=candidates.pixels.shape, dtype="int64", dimension_names=("candidate", "pixel")
        )
        pix[:] = candidates.pixels
        for name, values in (extra_arrays or {}).items():
            extra = group.create_array(name, shape=values.shape, dtype=values.dtype)
            extra[:] = values
        attrs = {
            "format_version": FORMAT_VERSION,
            "run_id": uuid.uuid4().hex,
            "status": "open",
            "created_at": clock.time(),
            "closed_at": None,
            "committed_rows": 0,
            "chunk_rows": chunk_rows,
            "instrument": description.to_json(),
            "spectral_axis": spec.to_json(),
            "axes": [a.to_json() for a in description.axes],
            "candidate_grid": list(candidates.grid_shape),
            "policies": [],
            "config_toml": config_toml,
            "versions": software_versions(),
            "recoveries": [],
            "missing": [],
            **dict(extra_attrs or {}),
        }
        group.update_attributes({ATTR: attrs})  # every file is fsynced as it is written (DurableLocalStore)
        for sub in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
            fsync_dir(sub)
        fsync_dir(path.parent)
        return cls(path, group, clock)

    # ------------------------------------------------------------------ reopen
    @classmethod
    def open_existing(cls, path: Path, clock: Clock) -> RunWriter:
        """Open an existing run for appending, without recovery (see ``engine.storage.recover_run``)."""
        if not (path / "zarr.json").exists():
            raise RunStorageError(f"no run at {path} (no zarr.json)")
        group = zarr.open_group(DurableLocalStore(path), mode="r+")
        if ATTR not in group.attrs:
            raise RunStorageError(f"{path} is a Zarr group but not a dualscope run (no {ATTR!r} attribute)")
        return cls(path, group, clock)

    # --------------------------------------------------------------- properties
    @property
    def run_id(self) -> str:
        """Unique id of this run (hex)."""
        return str(self._attrs["run_id"])

    @property
    def n_recorded(self) -> int:
        """Rows durable so far: committed to Zarr plus journaled in the buffer."""
        return self._base + self._buffered

    @property
    def durable_rows(self) -> int:
        """Rows on stable storage (safe from a power cut); below ``n_recorded`` only with group commit."""
        for seq, rows_before in list(self._unsynced):
            if not self._journal.durable(seq):
                return rows_before
        return self.n_recorded

    def group_commit(self) -> None:
        """Make measurements durable off the calling thread from now on (a pipelined campaign).

        ``record_measurement`` then returns once its rows are written to the journal: safe from a
        process crash (SIGKILL), and on stable storage about one ``fdatasync`` later, grouped by a
        syncer thread (``durable_rows``). Rows told to a policy but lost to a power cut in between
        are still in the instrument's reply cache: ``dualscope resume`` fetches them by request id.
        """
        self._check_open()
        self._journal.group_commit()
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="zarr-commit")

    @property
    def chunk_rows(self) -> int:
        """Rows per Zarr chunk."""
        return self._chunk_rows

    @property
    def committed_rows(self) -> int:
        """Rows below the Zarr commit point."""
        return self._committed

    # -------------------------------------------------------------- Recorder API
    def record_decision(self, decision: Decision) -> None:
        """Journal the decision before its command goes out (not fsynced: it rides with the measurement)."""
        self._check_open()
        meta = self._decision_meta(decision)
        self._journal.append(meta, {}, sync=False)
        self._open[decision.request_id] = meta

    def record_measurement(self, decision: Decision, measurement: Measurement, timings: StepTimings) -> int:
        """Journal ``measurement`` durably (fdatasync), buffer it, and return the rows recorded.

        With ``group_commit`` on, it returns once the rows are written (safe from SIGKILL) and a syncer
        thread makes them durable shortly after (``durable_rows``).

        ``timings.record_s`` is ignored: the writer measures it itself (journal
        write and any block flush this call performed, up to durability).
        """
        self._check_open()
        t0 = self._clock.monotonic()
        if self._buffered >= self._chunk_rows:
            self._next_block()
        rows = self._rows(decision, measurement, timings)
        first_row = self.n_recorded
        point = {"step": decision.step, "policy_state": _plain(decision.policy_state)}
        seq = self._journal.append(
            {"kind": "measurement", "first_row": first_row, "request_id": measurement.request_id, **point},
            rows,
            sync=True,
        )
        if not self._journal.durable(seq):
            while self._unsynced and self._journal.durable(self._unsynced[0][0]):
                del self._unsynced[0]
            self._unsynced.append((seq, first_row))
        self._point = point
        self._open.pop(decision.request_id, None)
        rows["time_record_s"][:] = self._clock.monotonic() - t0
        self._buffer.append(rows)
        self._buffered += measurement.positions.shape[0]
        return self.n_recorded

    def record_missing(self, decision: Decision, reason: str, *, released: bool = False) -> None:
        """Record (durably, in attribute ``missing``) that ``decision``'s candidates had no data, and why.

        ``released``: the candidates were released for another try (a fault), not given up.
        """
        self._check_open()
        entry = {
            "step": decision.step,
            "request_id": decision.request_id,
            "candidates": decision.proposal.indices.tolist(),
            "reason": reason,
            "released": released,
            "policy_state": _plain(decision.policy_state),
        }
        self._set_attrs(missing=[*self._attrs.get("missing", []), entry])
        self._open.pop(decision.request_id, None)

    def record_repeat(self, entry: Mapping[str, Any]) -> None:
        """Note (attribute ``repeats``) a measurement that may repeat one the instrument made before a crash."""
        self._check_open()
        self._set_attrs(repeats=[*self._attrs.get("repeats", []), dict(entry)])

    # ----------------------------------------------------------------- resuming
    def note_resume_point(self, step: int, policy_state: Mapping[str, Any] | None) -> None:
        """The step and policy state of the last buffered measurement (recovery replays them from the journal)."""
        self._point = {"step": step, "policy_state": _plain(policy_state)}

    def log_resume(self, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` to the run's ``resumes`` log and mark it ``open`` again."""
        self._check_open()
        self._set_attrs(resumes=[*self._attrs.get("resumes", []), dict(entry)], status="open")

    def note_instrument(self, instance: str | None) -> None:
        """The instrument instance this run talks to (attribute ``instrument_instance``; see ``recall``)."""
        self._check_open()
        self._set_attrs(instrument_instance=instance)

    def set_in_flight(self, decisions: Sequence[Mapping[str, Any]]) -> None:
        """Keep the decisions whose outcome is unknown (attribute ``in_flight``, by step) until they are reconciled."""
        self._check_open()
        kept = sorted((dict(d) for d in decisions), key=lambda d: int(d["step"]))
        self._set_attrs(in_flight=kept or None)

    @property
    def in_flight(self) -> list[dict[str, Any]]:
        """The decisions kept by ``set_in_flight`` (their journal meta), by step; a run of format 2 kept one."""
        kept = self._attrs.get("in_flight")
        if not kept:
            return []
        return [dict(kept)] if isinstance(kept, Mapping) else [dict(d) for d in kept]

    def settled_steps(self) -> set[int]:
        """Steps with an outcome recorded: committed rows (after a flush: every recorded row) and missing entries."""
        steps = {int(m["step"]) for m in self._attrs.get("missing", [])}
        if self._committed:
            steps.update(int(s) for s in np.asarray(self._arrays["step"][: self._committed]))
        return steps

    def note_refit(self, entry: Mapping[str, Any]) -> None:
        """Note a model refit (version, observations, seconds, first step that used it) in attribute ``refits``.

        Kept in memory and written with the next commit (a diagnostic: a crash may lose the last few).
        """
        self._check_open()
        with self._attrs_lock:
            self._attrs["refits"] = [*self._attrs.get("refits", []), dict(entry)]

    def record_operator_action(self, entry: Mapping[str, Any]) -> None:
        """Append an operator action (what, who, when, details; JSON) to attribute ``operator_actions``, durably."""
        self._check_open()
        self._set_attrs(operator_actions=[*self._attrs.get("operator_actions", []), dict(entry)])

    def record_drift(self, entry: Mapping[str, Any]) -> None:
        """Append a drift-tracking outcome (time, step, shift, error, accepted; JSON) to attribute ``drift_track``.

        Durable before it returns, so every command sent after it can be traced to the estimate it used.
        """
        self._check_open()
        self._set_attrs(drift_track=[*self._attrs.get("drift_track", []), dict(entry)])

    def record_training(self, entry: Mapping[str, Any]) -> None:
        """Append an event of where the refits run (time, event, reason; JSON) to attribute ``training_events``.

        Durable before it returns: a fallback from a Dask worker to the local thread is in the run even
        if the campaign is killed right after.
        """
        self._check_open()
        self._set_attrs(training_events=[*self._attrs.get("training_events", []), dict(entry)])

    @property
    def drift_track(self) -> list[dict[str, Any]]:
        """The drift-tracking outcomes recorded so far (a resumed campaign goes on from the last)."""
        return [dict(e) for e in self._attrs.get("drift_track", [])]

    def note_python_parts(self, names: Mapping[str, str]) -> None:
        """Note the parts of the policy given from Python, by name (attribute ``python_parts``): not in the TOML."""
        self._check_open()
        self._set_attrs(python_parts=dict(names))

    def set_control_endpoint(self, endpoint: str, public_key: str | None = None) -> None:
        """Note where this run's campaign takes operator commands (``dualscope ctl`` reads it).

        ``public_key``: the control socket's CURVE public key (Z85), when it requires keys.
        """
        self._check_open()
        self._set_attrs(control_endpoint=endpoint, control_public_key=public_key)

    @property
    def missing_request_ids(self) -> set[str]:
        """Request ids of decisions recorded as missing (they are not in flight)."""
        return {str(m["request_id"]) for m in self._attrs.get("missing", [])}

    def append_rows(self, rows: Mapping[str, NDArray[Any]], *, journaled: bool = False) -> int:
        """Append already-assembled rows (one array per column, ``k`` rows each), durably.

        This is the bulk path used by importers, recovery and benchmarks; the
        loop uses ``record_measurement``. With ``journaled=True`` the rows
        are already durable in this run's journal (recovery) and are only buffered.
        """
        self._check_open()
        if self._buffered >= self._chunk_rows:
            self._next_block()
        block = self._validate_rows(rows)
        if not journaled:
            meta = {"kind": "measurement", "first_row": self.n_recorded, "request_id": ""}
            self._journal.append(meta, block, sync=True)
        self._buffer.append(block)
        self._buffered += next(iter(block.values())).shape[0]
        return self.n_recorded

    def truncate_journal(self, size: int = 0) -> None:
        """Cut the journal to ``size`` bytes (recovery drops a torn tail this way)."""
        self._journal.truncate(size)

    def log_recovery(self, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` to the run's ``recoveries`` log and mark an unclosed run ``interrupted``."""
        status = "closed" if self._attrs["status"] == "closed" else "interrupted"
        self._set_attrs(recoveries=[*self._attrs.get("recoveries", []), dict(entry)], status=status)

    @property
    def status(self) -> str:
        """``open``, ``interrupted`` or ``closed``."""
        return str(self._attrs["status"])

    def flush(self) -> None:
        """Commit the buffered rows to Zarr (see the module docstring) and reset the journal.

        Decisions recorded whose outcome has not arrived yet (one in flight; two in a pipelined
        campaign) are journaled again after the reset, so that none is forgotten.
        """
        self._await_commit()
        if self._buffered:
            block = self._block(self._buffer)
            self._commit(block, self._base, self._point)
            self._journal.truncate(0)
            self._unsynced.clear()
            for meta in self._open.values():
                self._journal.append(meta, {}, sync=False)
            self._base += next(iter(block.values())).shape[0]
            self._buffer.clear()
            self._buffered = 0
        self._journal.drop_committing()  # a segment left by a crash: its rows are committed now

    def _next_block(self) -> None:
        """The buffer holds a full block: commit it (group commit: on the committer thread, while rows go on).

        With group commit, blocks that fill faster than one a ``commit_interval_s`` are gathered into
        one commit (at most ``MAX_BLOCKS_PER_COMMIT``): a commit's cost is mostly per call to Zarr, not
        per row, and on a loop of a thousand steps a second it is CPU the loop's thread would miss.
        """
        if self._committer is None:
            self.flush()
            return
        if self._committing is not None and self._committing.done():
            self._await_commit()  # a failure is said at once, not with the next commit
        soon = self._clock.monotonic() - self._last_commit < self.commit_interval_s
        if soon and self._buffered < self.MAX_BLOCKS_PER_COMMIT * self._chunk_rows:
            return
        self._last_commit = self._clock.monotonic()
        self._await_commit()  # the block before is in Zarr and its journal segment gone
        self._journal.rotate()  # the block's entries wait aside, durable, until the commit is
        self._unsynced.clear()
        for meta in self._open.values():
            self._journal.append(meta, {}, sync=False)
        rows, self._buffer = self._buffer, []
        start, self._base = self._base, self._base + self._buffered
        self._buffered = 0
        self._committing = self._committer.submit(self._commit_segment, rows, start, self._point)

    def _commit_segment(self, rows: list[dict[str, NDArray[Any]]], start: int, point: dict[str, Any] | None) -> None:
        """On the committer thread: commit buffered rows as one block, then drop the journal segment that held them."""
        block = self._block(rows)
        self._commit(block, start, point)
        self._journal.drop_committing()

    def _block(self, rows: Sequence[Mapping[str, NDArray[Any]]]) -> dict[str, NDArray[Any]]:
        """Buffered rows as one block: each column's arrays concatenated."""
        return {name: np.concatenate([r[name] for r in rows]) for name in self._arrays}

    def _await_commit(self) -> None:
        """Wait for the block on the committer thread; its failure is raised (its rows stay journaled)."""
        if self._committing is None:
            return
        committing, self._committing = self._committing, None
        try:
            committing.result()
        except (OSError, DualscopeError) as exc:
            raise RunStorageError(
                f"committing rows to Zarr in {self.root} failed: {exc}; they are safe in the journal, and "
                "`dualscope resume` or `dualscope inspect --repair` commits them"
            ) from exc

    def close(self, outcome: Mapping[str, Any] | None = None) -> None:
        """Flush, mark the run closed (with ``outcome``: stop reason, counts) and release the journal; idempotent."""
        if self._closed:
            return
        self.flush()
        kept = self.in_flight
        settled = self.settled_steps() if kept else set()
        unsettled = [d for d in kept if int(d["step"]) not in settled]
        self._set_attrs(
            status="closed",
            closed_at=self._clock.time(),
            outcome=dict(outcome or {}),
            **({"in_flight": unsettled or None} if kept else {}),
        )
        self._journal.truncate(0)
        self._journal.close()
        self._stop_committer()
        self._lock.close()
        self._closed = True

    def release(self, status: str) -> None:
        """Flush and release the journal without closing the run (it can be resumed); sets ``status``."""
        if self._closed:
            return
        self.flush()
        self._set_attrs(status=status)
        self._journal.close()
        self._stop_committer()
        self._lock.close()
        self._closed = True

    # ----------------------------------------------------------------- internal
    def _stop_committer(self) -> None:
        if self._committer is not None:
            self._committer.shutdown()
            self._committer = None

    def _check_open(self) -> None:
        if self._closed:
            raise RunStorageError(f"run {self.root} is closed")

    def _decision_meta(self, decision: Decision) -> dict[str, Any]:
        return {
            "kind": "decision",
            "step": decision.step,
            "request_id": decision.request_id,
            "policy": decision.policy,
            "candidates": decision.proposal.indices.tolist(),
            "decided_at": decision.decided_at,
            "policy_state": _plain(decision.policy_state),
        }

    def _policy_code(self, name: str) -> int:
        """The code of policy ``name``; a new name is made durable before any row can carry its code."""
        if name not in self._policies:
            self._policies.append(name)
            self._set_attrs(policies=list(self._policies))
        return self._policies.index(name)

    def _rows(self, decision: Decision, m: Measurement, timings: StepTimings) -> dict[str, NDArray[Any]]:
        k = m.positions.shape[0]
        if decision.proposal.indices.shape != (k,):
            raise RunStorageError(
                f"request {m.request_id}: {k} spectra for {decision.proposal.indices.size} proposed candidates"
            )
        return {
            "spectra": np.asarray(m.spectra, dtype=np.float32),
            "positions": np.asarray(m.positions, dtype=np.float64),
            "timestamps": np.asarray(m.timestamps, dtype=np.float64),
            "step": np.full(k, decision.step, dtype=np.int64),
            "candidate_index": decision.proposal.indices.astype(np.int64),
            "policy_code": np.full(k, self._policy_code(decision.policy), dtype=np.int16),
            "acquisition_value": np.asarray(decision.proposal.acquisition_values, dtype=np.float64),
            "model_version": np.full(k, decision.proposal.model_version, dtype=np.int64),
            "runner_up_values": np.tile(_runner_ups(decision.proposal.runner_up_values), (k, 1)),
            "time_decide_s": np.full(k, timings.decide_s, dtype=np.float64),
            "time_condition_s": np.full(k, decision.proposal.condition_s, dtype=np.float64),
            "time_acquire_s": np.full(k, decision.proposal.acquire_s, dtype=np.float64),
            "time_measure_s": np.full(k, timings.measure_s, dtype=np.float64),
            "time_record_s": np.full(k, np.nan, dtype=np.float64),
        }

    def _validate_rows(self, rows: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        missing = set(self._arrays) - set(rows)
        extra = set(rows) - set(self._arrays)
        if missing or extra:
            raise RunStorageError(f"rows must have exactly the columns {sorted(self._arrays)}")
        lengths = {np.shape(v)[0] for v in rows.values()}
        if len(lengths) != 1:
            raise RunStorageError(f"columns disagree on the number of rows: {sorted(lengths)}")
        out = {}
        for col in self._columns:
            arr = np.ascontiguousarray(rows[col.name], dtype=col.dtype)
            if arr.shape[1:] != self._arrays[col.name].shape[1:]:
                raise RunStorageError(f"column {col.name!r}: rows have shape {arr.shape[1:]}")
            out[col.name] = arr
        return out

    def _commit(self, block: Mapping[str, NDArray[Any]], start: int, point: dict[str, Any] | None) -> None:
        stop = start + next(iter(block.values())).shape[0]
        touched_dirs: set[Path] = set()
        for name, arr in self._arrays.items():
            if arr.shape[0] < start:
                raise RunCorrupt(f"array {name!r} has {arr.shape[0]} rows, fewer than the {start} committed")
            if arr.shape[0] > start:  # an uncommitted tail left by a crash: cut it first
                arr.resize((start, *arr.shape[1:]))
        # every array's rows before any array's shape covers them (the shapes are saved below)
        views = {name: _view_with_rows(arr, stop) for name, arr in self._arrays.items()}
        _all_at_once([view.setitem(slice(start, stop), block[name]) for name, view in views.items()])
        for arr in self._arrays.values():
            array_dir = self.root / arr.path
            first, last = start // self._chunk_rows, (stop - 1) // self._chunk_rows
            for i in range(first, last + 1):
                key = arr.metadata.encode_chunk_key((i, *([0] * (arr.ndim - 1))))
                chunk = array_dir / key
                if chunk.exists():  # a chunk equal to the fill value is not stored at all
                    # its bytes were fsynced before its name (DurableLocalStore); the name is durable once
                    # the chunk's directory and every new one above it (c/, c/<i>/): a new
                    # directory's entry is durable only once its parent is fsynced
                    touched_dirs.update(p for p in chunk.parents if p.is_relative_to(array_dir))
        for d in touched_dirs:
            fsync_dir(d)
        # zarr.json fsynced before its rename (DurableLocalStore); the shapes are saved together, then made durable
        _all_at_once([arr.async_array.resize((stop, *arr.shape[1:])) for arr in self._arrays.values()])
        for arr in self._arrays.values():
            fsync_dir(self.root / arr.path)
        self._committed = stop
        if point is not None:
            self._set_attrs(committed_rows=stop, resume_point=point)
        else:
            self._set_attrs(committed_rows=stop)

    def _set_attrs(self, **changes: Any) -> None:
        with self._attrs_lock:
            self._attrs.update(changes)
            self._group.update_attributes({ATTR: dict(self._attrs)})  # fsynced before its rename
        fsync_dir(self.root)


def _plain(state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A policy state as a plain JSON dict (``None`` stays ``None``)."""
    return None if state is None else dict(state)


def _runner_ups(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The first ``RUNNER_UPS`` values, NaN-padded to that length."""
    out = np.full(RUNNER_UPS, np.nan)
    v = np.asarray(values, dtype=np.float64).ravel()[:RUNNER_UPS]
    out[: v.size] = v
    return out
