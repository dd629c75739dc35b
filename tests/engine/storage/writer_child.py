"""Child process for the SIGKILL test: writes deterministic rows and prints each acknowledged count."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.decisions import Decision, Proposal, StepTimings
from engine.storage import RunWriter
from engine.types import Axis, Image, ImageAxis, InstrumentDescription, Measurement, SpectralAxis

CHANNELS = 50


def expected_spectrum(i: int) -> np.ndarray:
    """Row ``i``'s spectrum: distinct per row and per channel."""
    return (i * 1000 + np.arange(CHANNELS)).astype(np.float32)


def expected_position(i: int) -> np.ndarray:
    return np.array([i % 97, (i * 7) % 89], dtype=np.float64)


def make_run(path: Path, chunk_rows: int) -> RunWriter:
    desc = InstrumentDescription(
        "kill-test",
        (Axis("x", "nm", 0, 100), Axis("y", "nm", 0, 100)),
        SpectralAxis("energy_loss", "eV", 0.0, 0.1, CHANNELS),
        ("haadf",),
    )
    img = Image("haadf", np.zeros((40, 40), np.float32), ImageAxis("y", "nm", 0, 2.5), ImageAxis("x", "nm", 0, 2.5))
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


def abandon(writer: RunWriter) -> None:
    """What SIGKILL leaves of an in-process writer: its files as they are, its descriptors (and lock) gone."""
    writer._journal.close()
    writer._lock.close()


def main() -> None:
    path, seed, chunk_rows = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    writer = make_run(path, chunk_rows)
    print("START", flush=True)
    i, step = 0, 0
    while True:
        k = int(rng.integers(1, 4))
        idx = np.arange(i, i + k, dtype=np.int64)
        decision = Decision(step, f"req-{step}", "raster", Proposal(idx, np.full(k, np.nan)), 0.0)
        writer.record_decision(decision)
        m = Measurement(
            f"req-{step}",
            np.stack([expected_position(j) for j in idx]),
            np.stack([expected_spectrum(j) for j in idx]),
            np.full(k, 1.0e9 + i),
            0.0,
        )
        n = writer.record_measurement(decision, m, StepTimings(0.0, 0.0))
        print(n, flush=True)
        i += k
        step += 1


if __name__ == "__main__":
    main()
