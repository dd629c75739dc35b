"""The campaign loop: propose, record the decision, measure, record the data, tell the policy, check stop rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.campaign._operator import OperatorControl
from engine.candidates import CandidateSet
from engine.decisions import Decision, Proposal, StepTimings
from engine.errors import (
    AcquisitionAborted,
    ConfigError,
    DeviceFault,
    InstrumentBusy,
    InstrumentConnectionError,
    InstrumentTimeout,
    InvalidSpectrum,
    NoRecordedData,
)
from engine.protocols import Clock, Instrument, Policy, Recorder, Resumable, Retargetable, StopRule
from engine.safety import SafetyLimits
from engine.types import Measurement, SpectralAxis

FAULTS = (
    DeviceFault,
    InvalidSpectrum,
    InstrumentTimeout,
    InstrumentConnectionError,
    InstrumentBusy,
    AcquisitionAborted,
)
"""Failures of one measurement that a fault-tolerant campaign records and survives."""


@dataclass(frozen=True)
class StepReport:
    """What one step did, handed to the progress callback.

    Attributes:
        decision: what the policy decided (step, request id, proposal).
        measurement: the spectra ``(q, c)`` and positions ``(q, d)`` the instrument returned.
        timings: seconds spent deciding, measuring and recording.
        n_recorded: spectra recorded so far.

    Examples:
        >>> reports = []
        >>> on_step = reports.append  # pass as Campaign(on_step=...): one StepReport per recorded step
        >>> # after campaign.run(): [r.n_recorded for r in reports] == [1, 2, ...]
    """

    decision: Decision
    measurement: Measurement
    timings: StepTimings
    n_recorded: int


@dataclass(frozen=True)
class CampaignResult:
    """How a campaign ended.

    Attributes:
        n_recorded: spectra recorded, before and during this run of the loop.
        steps: decisions taken.
        stop_reason: why it ended, in words (a stop rule's reason, or no candidate left).
        elapsed_s: wall time of the loop, s.
        missing: chosen positions never measured in a recording (marked missing).
        refused: proposals refused by the safety limits.
        faults: failed measurements recorded as missing.

    Examples:
        >>> result = CampaignResult(n_recorded=10, steps=10, stop_reason="budget reached", elapsed_s=1.5)
        >>> result.missing, result.refused, result.faults  # nothing was lost, refused or failed
        (0, 0, 0)
    """

    n_recorded: int
    steps: int
    stop_reason: str
    elapsed_s: float
    missing: int = 0
    refused: int = 0
    faults: int = 0


class Campaign:
    """Sequences one experiment. It owns no I/O: every collaborator is injected.

    Args:
        instrument: where spectra come from.
        policy: what to measure next.
        recorder: where everything is made durable.
        candidates: the positions to choose from (mutated: measured/pending marks).
        spectral_axis: the calibration every spectrum must match.
        stop_rules: checked before each step; the first reason ends the campaign.
        clock: injected time source.
        request_prefix: request ids are ``f"{request_prefix}-{step:06d}"``, unique per run.
        batch_size: positions per ``measure`` call (``q``).
        on_step: called after each recorded step (progress bars, live plots).
        safety: limits checked before each command is sent; a refused batch is recorded as missing
            with its reason, and its candidates are never proposed again.
        max_refusals: refused batches in a row after which the campaign stops (the policy keeps
            proposing what the limits forbid).
        fault_retries: a failed measurement (device fault, invalid spectrum, timeout, lost
            connection, busy, aborted) is recorded as missing with what was done, and its candidates
            are released for another try, up to this many failures each; then they are given up.
            0: a fault ends the campaign with the error (everything before it stays recorded).
        max_faults_in_a_row: failed measurements in a row after which the campaign stops cleanly
            with a message (an instrument that stays unreachable).
        operator: the operator's pause / resume / stop / inject (a control socket drives it); an
            injected position is measured next, as the nearest unmeasured candidate, recorded as
            decided by ``operator:NAME``.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from engine.candidates import CandidateSet
        >>> from engine.policy import RandomPolicy
        >>> from engine.storage import RunWriter
        >>> from instruments.local import LocalInstrument
        >>> from simulators.synthetic import SyntheticOptions, synthetic_microscope
        >>> clock = SystemClock()
        >>> options = SyntheticOptions(image_pixels=32, n_channels=64, acquisition_time_s=0.002)
        >>> scope = LocalInstrument(synthetic_microscope(options, clock))
        >>> desc, image = scope.describe(), scope.acquire_image("haadf")
        >>> candidates = CandidateSet.from_image_grid(image, desc, stride_px=4, margin_px=2)
        >>> path = Path(tempfile.mkdtemp()) / "example.zarr"
        >>> writer = RunWriter.create(path, description=desc, images=[image], candidates=candidates,
        ...                           config_toml="", clock=clock)
        >>> campaign = Campaign(instrument=scope, policy=RandomPolicy(np.random.default_rng(0)), recorder=writer,
        ...                     candidates=candidates, spectral_axis=desc.spectral_axis, stop_rules=[Budget(10)],
        ...                     clock=clock, request_prefix="example")
        >>> result = campaign.run()
        >>> writer.close(outcome={"stop_reason": result.stop_reason})
        >>> result.n_recorded, result.stop_reason
        (10, 'budget of 10 measurements reached')
    """

    def __init__(
        self,
        *,
        instrument: Instrument,
        policy: Policy,
        recorder: Recorder,
        candidates: CandidateSet,
        spectral_axis: SpectralAxis,
        stop_rules: Sequence[StopRule],
        clock: Clock,
        request_prefix: str,
        batch_size: int = 1,
        on_step: Callable[[StepReport], None] | None = None,
        safety: SafetyLimits | None = None,
        max_refusals: int = 20,
        fault_retries: int = 0,
        max_faults_in_a_row: int = 5,
        operator: OperatorControl | None = None,
    ):
        if batch_size < 1 or max_refusals < 1:
            raise ConfigError("batch_size and max_refusals must be >= 1")
        if fault_retries < 0 or max_faults_in_a_row < 1:
            raise ConfigError("fault_retries must be >= 0 and max_faults_in_a_row >= 1")
        self.safety, self.max_refusals = safety, max_refusals
        self.fault_retries, self.max_faults_in_a_row = fault_retries, max_faults_in_a_row
        self._failures: dict[int, int] = {}
        self.operator = operator
        self.instrument, self.policy, self.recorder = instrument, policy, recorder
        self.candidates, self.spectral_axis = candidates, spectral_axis
        self.stop_rules, self.clock = tuple(stop_rules), clock
        self.request_prefix, self.batch_size, self.on_step = request_prefix, batch_size, on_step

    def _stop_reason(self, n_recorded: int, started: float) -> str | None:
        elapsed = self.clock.monotonic() - started
        for rule in self.stop_rules:
            if (reason := rule.should_stop(n_recorded, elapsed)) is not None:
                return reason
        return None

    def run(self, first_step: int = 0, n_recorded: int = 0, reconcile: Decision | None = None) -> CampaignResult:
        """Run steps until a stop rule fires or no candidate is left.

        Args:
            first_step: the step number to start from (a resumed run goes on from its last step).
            n_recorded: rows already recorded (the budget counts them).
            reconcile: a decision taken before a crash whose outcome is unknown: it is carried out
                first, with its own request id (the instrument answers from its reply cache if it
                measured it already), before any new decision.

        Errors from the instrument or an invalid spectrum propagate after the
        step's candidates are released; everything recorded before stays recorded.
        """
        started = self.clock.monotonic()
        tally = _Tally(step=first_step, n_recorded=n_recorded)
        reason: str | None = None
        if reconcile is not None:
            reason = self._carry_out(reconcile, self.clock.monotonic(), tally)
        while reason is None:
            if self.operator is not None:
                self.operator.progress.update(n_recorded=tally.n_recorded, step=tally.step)
                self.operator.wait_while_paused()
            if (reason := self._stop_reason(tally.n_recorded, started)) is not None:
                break
            t0 = self.clock.monotonic()
            self._apply_target()
            method, proposal = self._next_proposal()
            if proposal.indices.size == 0:
                reason = "every candidate has been measured"
                break
            state = self.policy.state() if isinstance(self.policy, Resumable) else None
            rid = f"{self.request_prefix}-{tally.step:06d}"
            decision = Decision(tally.step, rid, method, proposal, self.clock.time(), state)
            self.recorder.record_decision(decision)
            positions = self.candidates.positions[proposal.indices]
            if (why_not := self._not_approved(method, positions)) is not None:
                self.candidates.mark_measured(proposal.indices)  # never proposed again
                self.recorder.record_missing(decision, why_not)
                tally.step += 1
                continue
            reason = self._carry_out(decision, t0, tally)
        elapsed = self.clock.monotonic() - started
        return CampaignResult(
            tally.n_recorded, tally.step - first_step, reason, elapsed, tally.missing, tally.refused, tally.faults
        )

    def _carry_out(self, decision: Decision, t0: float, tally: _Tally) -> str | None:
        """Check the limits, measure, record the outcome, tell the policy; a reason to stop, or ``None``."""
        indices = decision.proposal.indices
        positions = self.candidates.positions[indices]
        tally.step += 1
        if self.safety is not None and (why := self.safety.check(positions)) is not None:
            self.candidates.mark_measured(indices)  # never proposed again
            self.recorder.record_missing(decision, f"refused by the safety limits: {why}")
            tally.refused, tally.refusals_in_a_row = tally.refused + 1, tally.refusals_in_a_row + 1
            if tally.refusals_in_a_row >= self.max_refusals:
                return (
                    f"stopped: the policy proposed {tally.refusals_in_a_row} refused points in a row (last: {why}); "
                    "change the policy or the candidates, or review the [safety] limits"
                )
            return None
        tally.refusals_in_a_row = 0
        self.candidates.mark_pending(indices)
        t1 = self.clock.monotonic()
        try:
            measurement = self.instrument.measure(positions, request_id=decision.request_id)
            measurement.check(self.spectral_axis)
        except NoRecordedData as exc:  # replaying a run: the recording has nothing there
            self.candidates.mark_measured(indices)
            self.recorder.record_missing(decision, str(exc))
            tally.missing += indices.size
            return None
        except FAULTS as exc:
            if not self.fault_retries:
                self.candidates.release(indices)
                raise
            tally.faults, tally.faults_in_a_row = tally.faults + 1, tally.faults_in_a_row + 1
            released, what = self._after_fault(indices)
            self.recorder.record_missing(decision, f"{type(exc).__name__}: {exc}; {what}", released=released)
            if tally.faults_in_a_row >= self.max_faults_in_a_row:
                reason = f"stopped after {tally.faults_in_a_row} failed measurements in a row; the last: {exc}"
                if isinstance(exc, (InstrumentTimeout, InstrumentConnectionError)):
                    reason += "; the instrument is unreachable: check it runs and is reachable, then resume"
                return reason
            return None
        except BaseException:
            self.candidates.release(indices)
            raise
        tally.faults_in_a_row = 0
        timings = StepTimings(decide_s=t1 - t0, measure_s=self.clock.monotonic() - t1)
        tally.n_recorded = self.recorder.record_measurement(decision, measurement, timings)
        if self.safety is not None:
            self.safety.commit(measurement.positions)
        self.candidates.mark_measured(indices)
        self.policy.tell(indices, measurement.spectra)
        if self.on_step is not None:
            self.on_step(StepReport(decision, measurement, timings, tally.n_recorded))
        return None

    def _apply_target(self) -> None:
        """An operator's new scalariser, if one waits: the policy maximises it from this decision on."""
        target = self.operator.take_target() if self.operator is not None else None
        if target is None or self.operator is None:
            return
        section, who = target
        if not isinstance(self.policy, Retargetable):
            self.operator.refused("target", who, f"policy {self.policy.name} has no target to change")
            return
        try:
            self.policy.retarget(section)
        except ConfigError as exc:
            self.operator.refused("target", who, str(exc))

    def _next_proposal(self) -> tuple[str, Proposal]:
        """An operator's injected point (the nearest available candidate) if one waits, else the policy's."""
        injected = self.operator.take_injected() if self.operator is not None else None
        if injected is not None:
            position, who = injected
            free = self.candidates.available()
            if free.size and position.shape == (self.candidates.positions.shape[1],):
                nearest = free[np.argmin(np.linalg.norm(self.candidates.positions[free] - position, axis=1))]
                return f"operator:{who}", Proposal(np.array([nearest], dtype=np.int64), np.array([np.nan]))
        return self.policy.name, self.policy.propose(self.candidates, self.batch_size)

    def _not_approved(self, method: str, positions: NDArray[np.float64]) -> str | None:
        """Approval mode: why the policy's proposal is not measured (vetoed, edited), or None to go ahead."""
        op = self.operator
        if op is None or op.approval_timeout_s is None or method.startswith("operator:"):
            return None
        verdict = op.await_verdict(positions)
        if verdict.action == "approve":
            return None
        if verdict.action == "edit" and verdict.position is not None:
            op.inject(verdict.position, verdict.who)
            return f"edited by {verdict.who}: measuring {verdict.position.tolist()} instead"
        return f"vetoed by {verdict.who}"

    def _after_fault(self, indices: NDArray[np.int64]) -> tuple[bool, str]:
        """Release the candidates of a failed measurement, or give them up: whether released, and in words."""
        counts = [self._failures.get(int(i), 0) + 1 for i in indices]
        self._failures.update({int(i): c for i, c in zip(indices, counts, strict=True)})
        if max(counts) > self.fault_retries:
            self.candidates.mark_measured(indices)
            return False, f"given up after {max(counts)} failed measurements"
        self.candidates.release(indices)
        return True, "released for another try"

    def restore_failures(self, counts: dict[int, int]) -> None:
        """Failed measurements per candidate so far (a resumed run goes on counting toward ``fault_retries``)."""
        self._failures = dict(counts)


@dataclass
class _Tally:
    """Counters of one ``Campaign.run``."""

    step: int
    n_recorded: int
    missing: int = 0
    refused: int = 0
    refusals_in_a_row: int = 0
    faults: int = 0
    faults_in_a_row: int = 0
