"""Power cuts: every row the writer promised durable survives a crash that drops what was not fsynced.

SIGKILL (test_storage_kill.py) keeps the page cache. Here a model of it (page_cache.py) takes a crash
image just before fsyncs throughout a run's life (creation, rows, commits, close), recovery runs on
each image, and every row acknowledged before that moment must be there, and right. With group commit
(the pipelined cases: a syncer thread makes rows durable, a committer thread commits blocks) the promise
is ``durable_rows``: what was acknowledged but not yet synced may be lost here, never damaged (the
campaign test of a power cut fetches it back from the instrument).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.clock import SystemClock
from engine.decisions import Decision, Proposal, StepTimings
from engine.errors import DualscopeError
from engine.storage import RunWriter, check_run, read_run, recover_run
from engine.types import Measurement
from tests.engine.storage.page_cache import PageCache, page_cache
from tests.engine.storage.writer_child import expected_position, expected_spectrum, make_run

ROWS = 40
CRASH_POINTS = None if os.environ.get("DUALSCOPE_POWER_CUTS") == "all" else 25
"""Crash images checked per case: 25 drawn uniformly from the run's fsyncs (300-1,500 of them);
``DUALSCOPE_POWER_CUTS=all`` (``make fuzz``) checks every one."""


@dataclass(frozen=True)
class Image:
    """A crash image and what the writer had acknowledged when it was taken."""

    path: Path
    acknowledged: int
    created: bool
    durable: int


@dataclass
class Progress:
    """What the writer has promised so far."""

    acknowledged: int = 0
    created: bool = False
    writer: RunWriter | None = None


def _write_run(
    path: Path, chunk_rows: int, rng: np.random.Generator, progress: Progress, pipelined: bool = False
) -> None:
    """A run of ``ROWS`` rows in steps of 1-3; ``pipelined``: each decision is recorded before the last's rows."""
    writer = make_run(path, chunk_rows)
    if pipelined:
        writer.group_commit()
        writer.commit_interval_s = 0.0  # a block per commit: the most committing segments to cut through
    progress.created, progress.writer = True, writer
    sizes = []
    while sum(sizes) < ROWS:
        sizes.append(min(int(rng.integers(1, 4)), ROWS - sum(sizes)))
    starts = np.cumsum([0, *sizes])
    decisions = [
        Decision(
            step, f"req-{step}", "raster", Proposal(np.arange(starts[step], starts[step] + k), np.full(k, np.nan)), 0.0
        )
        for step, k in enumerate(sizes)
    ]
    if pipelined:
        writer.record_decision(decisions[0])
    for step, decision in enumerate(decisions):
        if not pipelined:
            writer.record_decision(decision)
        elif step + 1 < len(decisions):
            writer.record_decision(decisions[step + 1])  # decided while this one was measured
        idx = decision.proposal.indices
        spectra = np.stack([expected_spectrum(j) for j in idx])
        m = Measurement(
            decision.request_id, np.stack([expected_position(j) for j in idx]), spectra, np.full(idx.size, 1e9), 0.0
        )
        writer.record_measurement(decision, m, StepTimings(0.0, 0.0))
        progress.acknowledged = int(starts[step + 1])  # record_measurement returned: the loop counts these rows
    writer.close()


def _images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, seed: int, chunk_rows: int, pipelined: bool = False
) -> list[Image]:
    """Crash images at a uniform sample of ``CRASH_POINTS`` of the run's fsyncs (reservoir sampling)."""
    disk, kept, seen = tmp_path / "disk", [], 0
    disk.mkdir()
    writes, choices, sample = (np.random.default_rng([seed, k]) for k in range(3))
    progress = Progress()

    def crash(cache: PageCache) -> None:
        nonlocal seen
        seen += 1
        slot = len(kept) if CRASH_POINTS is None or len(kept) < CRASH_POINTS else int(sample.integers(seen))
        if CRASH_POINTS is not None and slot >= CRASH_POINTS:
            return
        dest = tmp_path / f"image-{seen}"
        cache.crash_image(dest, mode, choices)
        durable = progress.acknowledged
        if progress.writer is not None:
            durable = min(durable, progress.writer.durable_rows)  # group commit: what was synced
        image = Image(dest / "run.zarr", progress.acknowledged, progress.created, durable)
        if slot < len(kept):
            shutil.rmtree(kept[slot].path.parent)
            kept[slot] = image
        else:
            kept.append(image)

    with page_cache(disk, monkeypatch, crash):
        _write_run(disk / "run.zarr", chunk_rows, writes, progress, pipelined)
    assert seen > ROWS or pipelined  # at least one fsync per acknowledged row (group commit: fewer)
    return sorted(kept, key=lambda image: int(image.path.parent.name.split("-")[1]))


def _check(image: Image) -> None:
    if not image.created:  # cut while the run was being created: nothing was promised, but no crash
        with contextlib.suppress(DualscopeError):  # a clear "not a run" / "cannot be decoded" is fine
            read_run(image.path)
        return
    before = read_run(image.path)  # readers see only complete rows, before any recovery
    for r in range(before.n):
        np.testing.assert_array_equal(before.spectra[r], expected_spectrum(r))
    report, _ = recover_run(image.path, SystemClock())
    after = read_run(image.path)
    assert after.n >= image.durable, f"{image.path}: durable {image.durable}, recovered {after.n}"
    for r in range(after.n):
        np.testing.assert_array_equal(after.spectra[r], expected_spectrum(r), err_msg=f"{image.path} row {r}")
        np.testing.assert_array_equal(after.positions[r], expected_position(r))
    _, integrity = check_run(image.path)
    assert integrity.ok, (image.path, integrity.problems, report)
    kept = after.attrs.get("in_flight") or []  # decisions with neither rows nor a missing entry
    assert len(kept) <= 2 and not {int(d["step"]) for d in kept} & {int(s) for s in after.columns["step"]}


@pytest.mark.parametrize(
    ("mode", "chunk_rows", "pipelined"),
    [("strict", 4, False), ("strict", 16, False), ("reordered", 4, False), ("reordered", 1, False),
     ("strict", 4, True), ("reordered", 1, True)],
)  # fmt: skip
def test_every_acknowledged_row_survives_a_power_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, chunk_rows: int, pipelined: bool
) -> None:
    images = _images(tmp_path, monkeypatch, mode, seed=chunk_rows, chunk_rows=chunk_rows, pipelined=pipelined)
    assert any(image.durable > 0 for image in images)
    for image in images:
        _check(image)
