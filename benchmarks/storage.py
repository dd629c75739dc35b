"""Durable spectra per second into a run (1,000-channel float32) vs plain zarr appends in the same run.

``durable``: :meth:`RunWriter.append_rows` in blocks of ``block`` spectra; each call
returns only after its rows are fsynced in the journal, and every ``chunk_rows``
rows are committed to Zarr behind the commit point (chunk files, metadata and
the group attribute fsynced). ``plain``: the same blocks gathered in memory and appended
with ``zarr.Array.append`` a whole chunk at a time (as the durable writer commits them), to arrays
with the same chunks and codecs, no journal, no fsync. (Appending each 512-row block into a
4,096-row chunk instead rewrites the partial chunk every time, which made plain zarr look 4.5×
slower than the durable writer: an artefact of the baseline, withdrawn.)
Also: the latency of one durable single-spectrum record, as the loop sees it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from benchmarks.common import Record, machine
from engine.clock import SystemClock
from engine.decisions import Decision, Proposal, StepTimings
from engine.storage import RunWriter
from engine.storage._layout import row_columns, trailing_shape
from engine.types import Measurement

CHANNELS = 1000


def _rows(rng: np.random.Generator, start: int, k: int) -> dict[str, Any]:
    return {
        "spectra": rng.poisson(50.0, size=(k, CHANNELS)).astype(np.float32),
        "positions": rng.random((k, 2)) * 100,
        "timestamps": 1.7e9 + np.arange(start, start + k, dtype=np.float64),
        "step": np.arange(start, start + k),
        "candidate_index": np.arange(start, start + k),
        "policy_code": np.zeros(k, np.int16),
        "acquisition_value": np.full(k, np.nan),
        "model_version": np.full(k, -1),
        "runner_up_values": np.full((k, 5), np.nan),
        "time_condition_s": np.full(k, np.nan),
        "time_acquire_s": np.full(k, np.nan),
        "time_decide_s": np.zeros(k),
        "time_measure_s": np.zeros(k),
        "time_record_s": np.zeros(k),
    }


def _writer(path: Path, chunk_rows: int) -> RunWriter:
    from engine.candidates import CandidateSet
    from engine.types import Axis, Image, ImageAxis, InstrumentDescription, SpectralAxis

    desc = InstrumentDescription(
        "bench",
        (Axis("x", "nm", 0, 100), Axis("y", "nm", 0, 100)),
        SpectralAxis("energy_loss", "eV", 0, 0.01, CHANNELS),
        ("haadf",),
    )
    img = Image("haadf", np.zeros((16, 16), np.float32), ImageAxis("y", "nm", 0, 6), ImageAxis("x", "nm", 0, 6))
    cands = CandidateSet.from_image_grid(img, desc, 1)
    return RunWriter.create(
        path,
        description=desc,
        images=[img],
        candidates=cands,
        config_toml="",
        clock=SystemClock(),
        chunk_rows=chunk_rows,
    )


def durable_rate(workdir: Path, blocks: list[dict[str, Any]], chunk_rows: int) -> float:
    writer = _writer(workdir / "durable.zarr", chunk_rows)
    n = sum(b["spectra"].shape[0] for b in blocks)
    t0 = time.perf_counter()
    for b in blocks:
        writer.append_rows(b)
    writer.close()
    return n / (time.perf_counter() - t0)


def plain_rate(workdir: Path, blocks: list[dict[str, Any]], chunk_rows: int) -> float:
    group = zarr.open_group(workdir / "plain.zarr", mode="w")
    arrays = {}
    for col in row_columns("energy_loss"):
        trailing = trailing_shape(col.name, CHANNELS, 2)
        arrays[col.name] = group.create_array(
            col.name, shape=(0, *trailing), chunks=(chunk_rows, *trailing), dtype=col.dtype, fill_value=col.fill
        )
    n = sum(b["spectra"].shape[0] for b in blocks)
    t0 = time.perf_counter()
    pending: list[dict[str, Any]] = []
    buffered = 0
    for b in [*blocks, None]:  # None: flush the last partial chunk
        if b is not None:
            pending.append(b)
            buffered += b["spectra"].shape[0]
        if pending and (buffered >= chunk_rows or b is None):  # a whole chunk, as the durable writer commits
            for name, arr in arrays.items():
                arr.append(np.concatenate([p[name] for p in pending]))
            pending, buffered = [], 0
    return n / (time.perf_counter() - t0)


def single_record_latency(workdir: Path, n: int = 300) -> float:
    writer = _writer(workdir / "single.zarr", 64)
    rng = np.random.default_rng(1)
    times = []
    for i in range(n):
        d = Decision(i, f"r{i}", "raster", Proposal(np.array([i]), np.array([np.nan])), 0.0)
        writer.record_decision(d)
        m = Measurement(
            f"r{i}", rng.random((1, 2)), rng.poisson(50.0, (1, CHANNELS)).astype(np.float32), np.array([1.7e9 + i]), 0.0
        )
        t0 = time.perf_counter()
        writer.record_measurement(d, m, StepTimings(0.0, 0.0))
        times.append(time.perf_counter() - t0)
    writer.close()
    return float(np.median(times))


def run(n_rows: int = 40_960, block: int = 512, chunk_rows: int = 4096, repeats: int = 3) -> list[Record]:
    """Measure and return the storage records (medians over ``repeats`` interleaved runs)."""
    rng = np.random.default_rng(0)
    blocks = [_rows(rng, i, block) for i in range(0, n_rows, block)]
    durable, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            d = Path(tmp) / f"rep{r}"
            d.mkdir()
            plain.append(plain_rate(d, blocks, chunk_rows))
            durable.append(durable_rate(d, blocks, chunk_rows))
        latency = single_record_latency(Path(tmp))
    dur, pla = float(np.median(durable)), float(np.median(plain))
    m = machine()
    return [
        Record(
            "storage",
            f"durable spectra/s ({CHANNELS} ch float32, blocks of {block})",
            dur,
            "spectra/s",
            "plain zarr, whole-chunk appends, no fsync",
            pla,
            dur / pla,
            "value >= 20000",
            m,
        ),
        Record(
            "storage",
            "durable record of 1 spectrum (journal fdatasync)",
            latency * 1e6,
            "us",
            "",
            float("nan"),
            float("nan"),
            "",
            m,
        ),
    ]
