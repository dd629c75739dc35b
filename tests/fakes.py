"""In-memory fakes that implement the engine's protocols (and pass the same contract tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.decisions import Decision, StepTimings
from engine.errors import RunStorageError
from engine.types import Measurement


@dataclass
class MemoryRecorder:
    """A :class:`~engine.protocols.Recorder` that keeps everything in lists."""

    decisions: list[Decision] = field(default_factory=list)
    rows: list[tuple[Decision, Measurement, StepTimings]] = field(default_factory=list)
    missing: list[tuple[Decision, str]] = field(default_factory=list)
    closed: bool = False

    def record_decision(self, decision: Decision) -> None:
        if self.closed:
            raise RunStorageError("closed")
        self.decisions.append(decision)

    def record_measurement(self, decision: Decision, measurement: Measurement, timings: StepTimings) -> int:
        if self.closed:
            raise RunStorageError("closed")
        self.rows.append((decision, measurement, timings))
        return self.n_recorded

    @property
    def n_recorded(self) -> int:
        return sum(m.positions.shape[0] for _, m, _ in self.rows)

    def spectra(self) -> np.ndarray:
        return np.concatenate([m.spectra for _, m, _ in self.rows])

    def candidates(self) -> np.ndarray:
        return np.concatenate([d.proposal.indices for d, _, _ in self.rows])

    def record_missing(self, decision: Decision, reason: str, *, released: bool = False) -> None:
        self.missing.append((decision, reason))

    def close(self) -> None:
        self.closed = True
