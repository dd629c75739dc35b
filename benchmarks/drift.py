"""Drift: where the probe lands on a drifting specimen, with and without tracking, and what it does to discovery.

Both parts run the real campaign loop (``engine.campaign.Campaign`` with the ``RunWriter``) against the
structure twin (``simulators.stem_twin``) in process, on a simulated clock: each step advances the
twin's time by ``SECONDS_PER_STEP`` (the spectrum's dwell and the stage settling of a slow, high
signal-to-noise EELS acquisition), so a 30-minute session takes seconds of wall time. The twin's
drift is 1 nm/min in a fixed direction plus a random walk of 0.3 nm/√min (each twin its own walk);
its ground truth stays in specimen coordinates, and the twin logs where each spectrum really landed.

* **placement**: ``random`` policy, 300 steps (30 minutes), five twins. The error of a step is the
  distance between where the engine meant to measure (the candidate's position on the reference image,
  which the run records) and where the twin measured; medians over all steps, in image pixels.
  Tracking: ``[drift] every_s = 15`` (a 128 × 128 tracking frame every 15 s), whole field.
* **discovery**: ``dualvae-bo`` (the structure-aware policy that needs fewest spectra on the held-out
  twins, ``discovery.json``) on held-out structure twins, the 0.40–0.55 eV band, 250 steps, inline
  refits every 2, once without drift and once drifting with tracking on; measurements to 50 % of the
  top 10 (the noise-free truth at the *intended* positions), median over the twins with a bootstrap
  interval.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import Record, machine, results_dir
from benchmarks.discovery import STRUCTURE_BAND_EV, structure_twin_truth
from benchmarks.stats import finite_or_none, km_median, median_interval
from engine.campaign import Budget, Campaign, DriftTracker, StepReport
from engine.candidates import CandidateSet
from engine.config import DriftSection, PolicySection, ScalariserSection
from engine.policy import InlineTrainer, RandomPolicy, build_policy
from engine.protocols import Policy
from engine.report import measurements_to, recall_curve, top_set
from engine.storage import RunWriter
from instruments.local import LocalInstrument
from simulators.drift import DriftOptions
from simulators.stem_twin import StemTwinOptions, stem_twin

SECONDS_PER_STEP = 6.0
DWELL_S = 0.01
"""The twin's dwell, for its counts (the discovery benchmark's): the simulated clock is what moves the drift."""
DRIFT = DriftOptions(rate_nm_per_min=1.0, direction_deg=30.0, walk_nm_per_sqrt_min=0.3)
TRACKING = DriftSection(enabled=True, every_n=None, every_s=15.0)
PLACEMENT_SEEDS = (100, 101, 102, 103, 104)
PLACEMENT_STEPS = 300
DISCOVERY_SEEDS = (100, 101, 102, 103, 104, 105)
DISCOVERY_STEPS = 250
BAND_EV = STRUCTURE_BAND_EV


class SimulatedClock:
    """Time that moves only when the benchmark says so (``advance``); starts at a fixed epoch."""

    def __init__(self, start: float = 1.8e9):
        self.now = start

    def time(self) -> float:
        """Seconds since the epoch."""
        return self.now

    def monotonic(self) -> float:
        """The same seconds (nothing else moves this clock)."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``."""
        self.now += seconds


@dataclass(frozen=True)
class Session:
    """One simulated session: intended positions ``(n, 2)`` nm, landings ``(n, 2)`` nm, the run's drift track."""

    intended: np.ndarray
    landed: np.ndarray
    candidate_index: np.ndarray
    drift_track: list[dict[str, object]]
    pixel_nm: float


def session(
    seed: int,
    steps: int,
    *,
    drift: DriftOptions | None,
    tracking: DriftSection | None,
    policy: str = "random",
    folder: Path,
    pipeline: bool = False,
) -> Session:
    """Run ``steps`` steps of ``policy`` against the structure twin ``seed`` on a simulated clock (``pipeline``:
    deciding while measuring)."""
    clock = SimulatedClock()
    drift = drift.model_copy(update={"seed": seed}) if drift is not None else None  # each twin its own walk
    options = StemTwinOptions(seed=seed, acquisition_time_s=DWELL_S, dead_channels=(80,), drift=drift or DriftOptions())
    twin = stem_twin(options, clock)
    scope = LocalInstrument(twin)
    description, image = scope.describe(), scope.acquire_image("haadf")
    candidates = CandidateSet.from_image_grid(image, description, 4, 2)
    rng = np.random.default_rng(seed)
    chosen: Policy
    if policy == "random":
        chosen = RandomPolicy(rng)
    else:
        section = PolicySection(
            name=policy,  # type: ignore[arg-type]
            initial=5,
            training="inline",
            refit_every=2,
            scalariser=ScalariserSection(kind="band", low=BAND_EV[0], high=BAND_EV[1]),
        )
        chosen = build_policy(section, description.spectral_axis, rng, image, candidates, (), InlineTrainer())
    writer = RunWriter.create(
        folder / f"drift-{seed}-{policy}-{tracking is not None}-{drift is not None}-{pipeline}.zarr",
        description=description,
        images=[image],
        candidates=candidates,
        config_toml="",
        clock=clock,
    )
    tracker = DriftTracker(tracking, image, description.axes, clock) if tracking is not None else None
    recorded: list[np.ndarray] = []
    indices: list[int] = []

    def on_step(report: StepReport) -> None:
        recorded.append(report.measurement.positions)
        indices.extend(report.decision.proposal.indices.tolist())
        clock.advance(SECONDS_PER_STEP)

    campaign = Campaign(
        instrument=scope,
        policy=chosen,
        recorder=writer,
        candidates=candidates,
        spectral_axis=description.spectral_axis,
        stop_rules=[Budget(steps)],
        clock=clock,
        request_prefix=f"drift{seed}",
        on_step=on_step,
        drift=tracker,
        on_drift=lambda e: writer.record_drift(e.to_json()),
        pipeline=pipeline,
    )
    try:
        campaign.run()
    finally:
        writer.close(outcome={"stop_reason": "benchmark"})
        close = getattr(chosen, "close", None)
        if close is not None:
            close()
    return Session(
        np.concatenate(recorded),
        twin.landings,
        np.asarray(indices, dtype=np.int64),
        writer.drift_track,
        float(image.x_axis.scale),
    )


def placement(folder: Path) -> dict[str, object]:
    """Median placement error (pixels) over 30-minute sessions, tracked and untracked, on each twin."""
    out: dict[str, list[float]] = {"tracked": [], "untracked": [], "final_drift_nm": [], "refused": []}
    for seed in PLACEMENT_SEEDS:
        for label, tracking in (("tracked", TRACKING), ("untracked", None)):
            s = session(seed, PLACEMENT_STEPS, drift=DRIFT, tracking=tracking, folder=folder)
            errors = np.linalg.norm(s.landed - s.intended, axis=1) / s.pixel_nm
            out[label].append(float(np.median(errors)))
            if tracking is not None:
                out["final_drift_nm"].append(float(np.linalg.norm(s.drift_track[-1]["shift"])))  # type: ignore[arg-type]
                out["refused"].append(float(sum(not e["accepted"] for e in s.drift_track)))
            print(f"  drift placement seed {seed} {label}: median error {out[label][-1]:.3f} px", flush=True)
    return {**out, "pixel_nm": 100.0 / 128}


def discovery(folder: Path) -> dict[str, object]:
    """Measurements to 50 % of the top 10 for dualvae-bo, without drift and drifting with tracking."""
    out: dict[str, list[float]] = {"still": [], "drifting": []}
    for seed in DISCOVERY_SEEDS:
        for label, drift in (("still", None), ("drifting", DRIFT)):
            tracking = TRACKING if drift is not None else None
            s = session(seed, DISCOVERY_STEPS, drift=drift, tracking=tracking, policy="dualvae-bo", folder=folder)
            values = structure_twin_truth(seed).values  # the band's noise-free values at the intended positions
            n50 = measurements_to(recall_curve(s.candidate_index, top_set(values)))
            out[label].append(n50)
            print(f"  drift discovery seed {seed} {label}: {n50} measurements to half the top set", flush=True)
    return out


def _km(values: list[float]) -> float:
    reached = [math.isfinite(v) for v in values]
    return km_median([v if math.isfinite(v) else DISCOVERY_STEPS for v in values], reached)


def records(place: dict[str, object], disc: dict[str, object] | None) -> list[Record]:
    """The benchmark's rows: placement tracked vs untracked; discovery drifting vs still."""
    where = machine()
    tracked, untracked = place["tracked"], place["untracked"]
    assert isinstance(tracked, list) and isinstance(untracked, list)
    t, u = float(np.median(tracked)), float(np.median(untracked))
    rows = [
        Record(
            "drift",
            "placement error with tracking, 30 min at 1 nm/min",
            t,
            "px",
            "without tracking",
            u,
            t / u,
            "value <= 0.5",
            where,
        ),
    ]
    if disc is not None:
        still, drifting = disc["still"], disc["drifting"]
        assert isinstance(still, list) and isinstance(drifting, list)
        a, b = _km(drifting), _km(still)
        rows.append(
            Record(
                "drift",
                "dualvae-bo measurements to 50% of the top 10, drifting with tracking",
                a,
                "measurements",
                "the same twins without drift",
                b,
                a / b,
                "ratio <= 1.2",
                where,
            )
        )
    return rows


def run() -> list[Record]:
    """Both parts; the raw figures go to ``drift_details.json`` beside the records."""
    with tempfile.TemporaryDirectory() as tmp:
        place = placement(Path(tmp))
        disc = discovery(Path(tmp))
    details: dict[str, object] = {"placement": place, "discovery": disc, "seconds_per_step": SECONDS_PER_STEP}
    for key in ("still", "drifting"):
        values = disc[key]
        assert isinstance(values, list)
        details[f"discovery_{key}_median"] = finite_or_none(_km(values))
        details[f"discovery_{key}_interval95"] = [finite_or_none(v) for v in median_interval(values)]
    (results_dir() / "drift_details.json").write_text(json.dumps(details, indent=1, default=finite_or_none) + "\n")
    return records(place, disc)
