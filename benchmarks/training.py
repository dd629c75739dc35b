"""Training on a Dask worker: how stale the snapshots are, against the local thread at the same refit cadence.

The real campaign loop (``engine.campaign.Campaign``) runs ``dualvae-bo`` against the structure twin in
process, in real time: the twin really waits its dwell (``DWELL_S``) for each spectrum, while refits
(one per new measurement when the trainer is free: ``refit_every = 1``) run either on the background
thread (``training = "background"``) or on one worker process of a loopback Dask ``LocalCluster``
(``training = "dask"``). Both wait for the first model, so every later decision uses a snapshot.

* **staleness** of a decision: the measurements told before it minus those its snapshot was cut at
  (``Snapshot.cut``): how many measurements the model has not learned from (the GP conditions on them,
  the features do not). Median over all model-based decisions of ``SEEDS`` twins.
* **tell**: time the loop spends telling the policy a measurement, which includes cutting the data and,
  for Dask, pickling the refit (the feature model's weights and data) and sending it.
* **decide**: time the loop spends deciding (polling for a snapshot included).

Both run on the same machine here (2 cores: the loop, the instrument and the trainer share them). On a
real set-up the Dask worker is another machine, with its own cores or GPU.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import Record, machine, results_dir
from benchmarks.discovery import STRUCTURE_BAND_EV
from engine.campaign import Budget, Campaign
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.config import PolicySection, ScalariserSection
from engine.decisions import Proposal
from engine.policy import BOPolicy, Snapshot, ThreadTrainer, Trainer, build_policy, open_dask_trainer
from engine.storage import RunWriter
from instruments.local import LocalInstrument
from simulators.stem_twin import StemTwinOptions, stem_twin

SEEDS = (100, 101, 102)
STEPS = 80
DWELL_S = 0.1
"""Real seconds per spectrum: a fast EELS acquisition."""
PRETRAIN_STEPS = 100


@dataclass
class Timed:
    """The policy, with the staleness of each model-based decision and the time of each call noted."""

    inner: BOPolicy
    staleness: list[int] = field(default_factory=list)
    tell_s: list[float] = field(default_factory=list)
    decide_s: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The wrapped policy's name."""
        return self.inner.name

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """The wrapped decision; its snapshot's staleness noted."""
        told = self.inner.bo.n_told
        t0 = time.perf_counter()
        proposal = self.inner.propose(candidates, q)
        self.decide_s.append(time.perf_counter() - t0)
        snap = self.inner.bo.snapshot
        if proposal.model_version >= 1 and snap is not None:
            self.staleness.append(told - snap.cut)
        return proposal

    def tell(self, indices: np.ndarray, spectra: np.ndarray) -> None:
        """The wrapped tell, timed."""
        t0 = time.perf_counter()
        self.inner.tell(indices, spectra)
        self.tell_s.append(time.perf_counter() - t0)


def session(seed: int, training: str, folder: Path) -> Timed:
    """``STEPS`` measurements of ``dualvae-bo`` on the structure twin ``seed`` with ``training`` thread or dask."""
    clock = SystemClock()
    scope = LocalInstrument(stem_twin(StemTwinOptions(seed=seed, acquisition_time_s=DWELL_S), clock))
    description, image = scope.describe(), scope.acquire_image("haadf")
    candidates = CandidateSet.from_image_grid(image, description, 4, 2)
    trainer: Trainer[Snapshot] = ThreadTrainer()
    if training == "dask":
        trainer = open_dask_trainer("local", trainer)
    section = PolicySection(
        name="dualvae-bo",
        initial=5,
        refit_every=1,
        wait_for_first_model=True,
        pretrain_steps=PRETRAIN_STEPS,
        scalariser=ScalariserSection(kind="band", low=STRUCTURE_BAND_EV[0], high=STRUCTURE_BAND_EV[1]),
    )
    rng = np.random.default_rng(seed)
    policy = build_policy(section, description.spectral_axis, rng, image, candidates, (), trainer)
    assert isinstance(policy, BOPolicy)
    timed = Timed(policy)
    writer = RunWriter.create(
        folder / f"training-{seed}-{training}.zarr", description=description, images=[image],
        candidates=candidates, config_toml="", clock=clock,
    )  # fmt: skip
    campaign = Campaign(
        instrument=scope, policy=timed, recorder=writer, candidates=candidates,
        spectral_axis=description.spectral_axis, stop_rules=[Budget(STEPS)], clock=clock,
        request_prefix=f"training{seed}",
    )  # fmt: skip
    try:
        campaign.run()
    finally:
        writer.close(outcome={"stop_reason": "benchmark"})
        trainer.close()
    fell_back = getattr(trainer, "fell_back", None)
    if fell_back is not None:
        raise RuntimeError(f"the Dask trainer fell back during the benchmark: {fell_back}")
    return timed


def _summary(runs: list[Timed]) -> dict[str, float]:
    stale = np.concatenate([np.asarray(r.staleness, float) for r in runs])
    tell = np.concatenate([np.asarray(r.tell_s, float) for r in runs]) * 1e3
    decide = np.concatenate([np.asarray(r.decide_s[6:], float) for r in runs]) * 1e3  # after the first model
    return {
        "staleness_median": float(np.median(stale)),
        "staleness_p95": float(np.percentile(stale, 95)),
        "staleness_mean": float(stale.mean()),
        "decisions": int(stale.size),
        "tell_ms_median": float(np.median(tell)),
        "tell_ms_p95": float(np.percentile(tell, 95)),
        "decide_ms_median": float(np.median(decide)),
        "decide_ms_p95": float(np.percentile(decide, 95)),
    }


def records(thread: dict[str, float], dask: dict[str, float]) -> list[Record]:
    """Staleness (Dask vs the thread) and the loop's cost of sending refits away."""
    where = machine()
    return [
        Record(
            "training",
            "snapshot staleness, Dask worker (median)",
            dask["staleness_median"],
            "measurements",
            "local thread, same refit cadence",
            thread["staleness_median"],
            dask["staleness_median"] / max(thread["staleness_median"], 1e-9),
            "",
            where,
        ),
        Record(
            "training",
            "loop time to tell a measurement, Dask (p95, sends the refit)",
            dask["tell_ms_p95"],
            "ms",
            "local thread",
            thread["tell_ms_p95"],
            dask["tell_ms_p95"] / max(thread["tell_ms_p95"], 1e-9),
            "",
            where,
        ),
        Record(
            "training",
            "decision p95, Dask",
            dask["decide_ms_p95"],
            "ms",
            "local thread",
            thread["decide_ms_p95"],
            dask["decide_ms_p95"] / max(thread["decide_ms_p95"], 1e-9),
            "value <= 50",
            where,
        ),
    ]


def run() -> list[Record]:
    """Both trainers on the same twins; the raw figures go to ``training_details.json`` beside the records."""
    with tempfile.TemporaryDirectory() as tmp:
        thread = [session(seed, "thread", Path(tmp)) for seed in SEEDS]
        dask = [session(seed, "dask", Path(tmp)) for seed in SEEDS]
    summary = {"thread": _summary(thread), "dask": _summary(dask)}
    details = {
        **summary,
        "seeds": list(SEEDS),
        "steps": STEPS,
        "dwell_s": DWELL_S,
        "staleness": {"thread": [r.staleness for r in thread], "dask": [r.staleness for r in dask]},
    }
    (results_dir() / "training_details.json").write_text(json.dumps(details, indent=1) + "\n")
    return records(summary["thread"], summary["dask"])


if __name__ == "__main__":
    for row in run():
        print(row)
