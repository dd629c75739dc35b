"""The campaign loop: propose, record the decision, measure, record the data, tell the policy, check stop rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.decisions import Decision, Proposal, StepTimings
from engine.errors import (
    AcquisitionAborted,
    DeviceFault,
    InstrumentBusy,
    InstrumentConnectionError,
    InstrumentTimeout,
    InvalidSpectrum,
    NoRecordedData,
)
from engine.operator import OperatorControl
from engine.protocols import Clock, Instrument, Policy, Recorder, StopRule
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
    """What one step did, handed to the progress callback."""

    decision: Decision
    measurement: Measurement
    timings: StepTimings
    n_recorded: int


@dataclass(frozen=True)
class CampaignResult:
    """How a campaign ended."""

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
            raise ValueError("batch_size and max_refusals must be >= 1")
        if fault_retries < 0 or max_faults_in_a_row < 1:
            raise ValueError("fault_retries must be >= 0 and max_faults_in_a_row >= 1")
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

    def run(self, first_step: int = 0, n_recorded: int = 0) -> CampaignResult:
        """Run steps until a stop rule fires or no candidate is left.

        Errors from the instrument or an invalid spectrum propagate after the
        step's candidates are released; everything recorded before stays recorded.
        """
        started, step, missing = self.clock.monotonic(), first_step, 0
        refused = in_a_row = faults = faults_in_a_row = 0
        while True:
            if self.operator is not None:
                self.operator.progress.update(n_recorded=n_recorded, step=step)
                self.operator.wait_while_paused()
            if (reason := self._stop_reason(n_recorded, started)) is not None:
                break
            t0 = self.clock.monotonic()
            method, proposal = self._next_proposal()
            if proposal.indices.size == 0:
                reason = "every candidate has been measured"
                break
            decision = Decision(step, f"{self.request_prefix}-{step:06d}", method, proposal, self.clock.time())
            self.recorder.record_decision(decision)
            positions = self.candidates.positions[proposal.indices]
            if (why_not := self._not_approved(method, positions)) is not None:
                self.candidates.mark_measured(proposal.indices)  # never proposed again
                self.recorder.record_missing(decision, why_not)
                step += 1
                continue
            if self.safety is not None and (why := self.safety.check(positions)) is not None:
                self.candidates.mark_measured(proposal.indices)  # never proposed again
                self.recorder.record_missing(decision, f"refused by the safety limits: {why}")
                refused, in_a_row, step = refused + 1, in_a_row + 1, step + 1
                if in_a_row >= self.max_refusals:
                    reason = (
                        f"stopped: the policy proposed {in_a_row} refused points in a row (last: {why}); "
                        "change the policy or the candidates, or review the [safety] limits"
                    )
                    break
                continue
            in_a_row = 0
            self.candidates.mark_pending(proposal.indices)
            t1 = self.clock.monotonic()
            try:
                measurement = self.instrument.measure(positions, request_id=decision.request_id)
                measurement.check(self.spectral_axis)
            except NoRecordedData as exc:  # replaying a run: the recording has nothing there
                self.candidates.mark_measured(proposal.indices)
                self.recorder.record_missing(decision, str(exc))
                missing += proposal.indices.size
                step += 1
                continue
            except FAULTS as exc:
                if not self.fault_retries:
                    self.candidates.release(proposal.indices)
                    raise
                faults, faults_in_a_row, step = faults + 1, faults_in_a_row + 1, step + 1
                what = self._after_fault(proposal.indices)
                self.recorder.record_missing(decision, f"{type(exc).__name__}: {exc}; {what}")
                if faults_in_a_row >= self.max_faults_in_a_row:
                    reason = f"stopped after {faults_in_a_row} failed measurements in a row; the last: {exc}"
                    if isinstance(exc, (InstrumentTimeout, InstrumentConnectionError)):
                        reason += "; the instrument is unreachable: check it runs and is reachable, then resume"
                    break
                continue
            except BaseException:
                self.candidates.release(proposal.indices)
                raise
            faults_in_a_row = 0
            timings = StepTimings(decide_s=t1 - t0, measure_s=self.clock.monotonic() - t1)
            n_recorded = self.recorder.record_measurement(decision, measurement, timings)
            if self.safety is not None:
                self.safety.commit(measurement.positions)
            self.candidates.mark_measured(proposal.indices)
            self.policy.tell(proposal.indices, measurement.spectra)
            step += 1
            if self.on_step is not None:
                self.on_step(StepReport(decision, measurement, timings, n_recorded))
        elapsed = self.clock.monotonic() - started
        return CampaignResult(n_recorded, step - first_step, reason, elapsed, missing, refused, faults)

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

    def _after_fault(self, indices: NDArray[np.int64]) -> str:
        """Release the candidates of a failed measurement, or give them up; what was done, in words."""
        counts = [self._failures.get(int(i), 0) + 1 for i in indices]
        self._failures.update({int(i): c for i, c in zip(indices, counts, strict=True)})
        if max(counts) > self.fault_retries:
            self.candidates.mark_measured(indices)
            return f"given up after {max(counts)} failed measurements"
        self.candidates.release(indices)
        return "released for another try"
