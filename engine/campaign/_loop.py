"""The campaign loop: propose, record the decision, measure, record the data, tell the policy, check stop rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from engine.campaign._drift import DriftEstimate, DriftTracker
from engine.campaign._operator import OperatorControl
from engine.campaign._resume import ROWS_TOLD
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
from engine.protocols import (
    Clock,
    Instrument,
    MapsProperty,
    Policy,
    QueuesCommands,
    Recorder,
    Resumable,
    Retargetable,
    StopRule,
)
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
        spectral_axis: the calibration of the spectra (to value them, e.g. a band in eV, in a live plot).

    Examples:
        >>> reports = []
        >>> on_step = reports.append  # pass as Campaign(on_step=...): one StepReport per recorded step
        >>> # after campaign.run(): [r.n_recorded for r in reports] == [1, 2, ...]
    """

    decision: Decision
    measurement: Measurement
    timings: StepTimings
    n_recorded: int
    spectral_axis: SpectralAxis | None = None


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
        drift: drift tracking: when a tracking frame is due (before a decision) the campaign acquires
            one and hands it to the tracker; every command goes to the candidate's position plus the
            estimated drift, and the run records the candidate's (reference-image) position.
        on_drift: called with each tracking frame's outcome, before any step uses it (the run's
            ``drift_track``).
        pipeline: decide while the instrument measures: the next decision is taken (with the step in
            flight as a pending point), recorded and sent while the last command is measured. An
            instrument that queues commands (``QueuesCommands``: the ZeroMQ client with ``queue``)
            gets it at once from this thread (``submit``) and starts it the moment the last ends;
            another instrument measures on a thread of its own, which sends it the moment the last
            reply is in. Meanwhile the loop records the last step and tells the policy; the recorder
            may make it durable a little later (group commit, ``RunWriter.group_commit``): what the
            policy is told is safe from a crash of this process at once, and from a power cut within
            one sync, after which ``dualscope resume`` fetches it from the instrument by request id. A
            crash leaves at most two decisions in flight, which resume reconciles by request id.

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
        drift: DriftTracker | None = None,
        on_drift: Callable[[DriftEstimate], None] | None = None,
        pipeline: bool = False,
    ):
        if batch_size < 1 or max_refusals < 1:
            raise ConfigError("batch_size and max_refusals must be >= 1")
        if fault_retries < 0 or max_faults_in_a_row < 1:
            raise ConfigError("fault_retries must be >= 0 and max_faults_in_a_row >= 1")
        self.safety, self.max_refusals = safety, max_refusals
        self.fault_retries, self.max_faults_in_a_row = fault_retries, max_faults_in_a_row
        self._failures: dict[int, int] = {}
        self.operator = operator
        self.drift, self.on_drift = drift, on_drift
        self.pipeline = pipeline
        self._measuring: ThreadPoolExecutor | None = None  # pipelined to an instrument that cannot queue
        self._queues: QueuesCommands | None = None  # pipelined to an instrument that queues: submit, collect here
        self._stateful: Resumable | None = None  # the policy, if it has a state to store with each decision
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

    def run(self, first_step: int = 0, n_recorded: int = 0, reconcile: Sequence[Decision] = ()) -> CampaignResult:
        """Run steps until a stop rule fires or no candidate is left.

        Args:
            first_step: the step number of the first new decision (a resumed run goes on after its last step).
            n_recorded: rows already recorded (the budget counts them).
            reconcile: decisions taken before a crash whose outcome is unknown, by step: they are carried
                out first, each with its own request id (the instrument answers from its reply cache if it
                measured it already), before any new decision. Pipelined, the last goes back in flight.

        Errors from the instrument or an invalid spectrum propagate after the
        step's candidates are released; everything recorded before stays recorded.
        """
        started = self.clock.monotonic()
        tally = _Tally(step=first_step, n_recorded=n_recorded)
        # a runtime protocol check costs µs: once a run, not once a step
        self._stateful = self.policy if isinstance(self.policy, Resumable) else None
        reason: str | None = None
        flight: _Flight | None = None
        if self.pipeline:  # one command measures while the loop decides the next
            # an instrument that queues gets the next command at once and starts it the moment the last
            # ends (no idle round trip between); another one measures on a thread of its own
            queues = isinstance(self.instrument, QueuesCommands) and self.instrument.queue_depth > 0
            self._queues = self.instrument if queues and isinstance(self.instrument, QueuesCommands) else None
            if self._queues is None:
                self._measuring = ThreadPoolExecutor(1, thread_name_prefix="measure")
        try:
            for k, decision in enumerate(reconcile):  # their steps were taken before ``first_step``
                now, step = self.clock.monotonic(), tally.step
                if self.pipeline and k == len(reconcile) - 1:
                    flight, reason = self._launch(decision, now, now, tally)
                else:
                    reason = self._carry_out(decision, now, tally)
                tally.step = step
                if reason is not None:
                    break
            while reason is None:
                if self.operator is not None:
                    self.operator.progress.update(n_recorded=tally.n_recorded, step=tally.step)
                if flight is not None and self._needs_idle(flight, tally.n_recorded, started):
                    reason, flight = self._land(flight, tally), None
                    continue
                if self.operator is not None:
                    self.operator.wait_while_paused()
                if (reason := self._stop_reason(tally.n_recorded, started)) is not None:
                    break
                if self.drift is not None and self.drift.due(tally.n_recorded):
                    self._track(self.drift, tally)
                t0 = self.clock.monotonic()
                self._apply_target()
                method, proposal = self._next_proposal()
                if proposal.indices.size == 0:
                    reason = "every candidate has been measured"
                    break
                state = {**self._stateful.state(), ROWS_TOLD: tally.n_recorded} if self._stateful is not None else None
                rid = f"{self.request_prefix}-{tally.step:06d}"
                decision = Decision(tally.step, rid, method, proposal, self.clock.time(), state)
                self.recorder.record_decision(decision)
                if self.operator is not None and self.operator.map_wanted and isinstance(self.policy, MapsProperty):
                    self.operator.publish_map(self.policy.property_map())  # a live view looks at it
                positions = self.candidates.positions[proposal.indices]
                if (why_not := self._not_approved(method, positions)) is not None:
                    self.candidates.mark_measured(proposal.indices)  # never proposed again
                    self.recorder.record_missing(decision, why_not)
                    tally.step += 1
                    continue
                if not self.pipeline:
                    reason = self._carry_out(decision, t0, tally)
                    continue
                # sent behind the one measuring (at once to an instrument that queues, else the moment its
                # reply is in), while this thread records that one and tells the policy
                previous = flight
                flight, reason = self._launch(decision, t0, self.clock.monotonic(), tally)
                if previous is not None:
                    reason = self._land(previous, tally) or reason
            if flight is not None:
                reason = self._land(flight, tally) or reason
                flight = None
        finally:
            if flight is not None and flight.future is not None:  # an error: let the command finish, keep it open
                wait([flight.future])
            if flight is not None:
                self.candidates.release(flight.decision.proposal.indices)
            if self._measuring is not None:
                self._measuring.shutdown()
                self._measuring = None
        elapsed = self.clock.monotonic() - started
        return CampaignResult(
            tally.n_recorded, tally.step - first_step, reason, elapsed, tally.missing, tally.refused, tally.faults
        )

    def _needs_idle(self, flight: _Flight, n_recorded: int, started: float) -> bool:
        """Whether a pause, a stop or a tracking frame comes next, counting the flight: it must land first.

        A pause holds nothing in flight; a stop lands it (a failed one leaves room in the budget); the
        instrument takes one command at a time, so a tracking frame waits for it.
        """
        n = n_recorded + flight.decision.proposal.indices.size
        return (
            (self.operator is not None and self.operator.paused)
            or self._stop_reason(n, started) is not None
            or (self.drift is not None and self.drift.due(n))
        )

    def _carry_out(self, decision: Decision, t0: float, tally: _Tally) -> str | None:
        """Check the limits, measure, record the outcome, tell the policy; a reason to stop, or ``None``."""
        flight, reason = self._launch(decision, t0, self.clock.monotonic(), tally)
        return reason if flight is None else self._land(flight, tally)

    def _launch(
        self, decision: Decision, t0: float, decided: float, tally: _Tally
    ) -> tuple[_Flight | None, str | None]:
        """Check the limits and send the command (pipelined: submitted, or on the measuring thread).

        No flight if refused.
        """
        indices = decision.proposal.indices
        positions = self.candidates.positions[indices]
        tally.step += 1
        if self.safety is not None and (why := self.safety.check(positions)) is not None:
            self.candidates.mark_measured(indices)  # never proposed again
            self.recorder.record_missing(decision, f"refused by the safety limits: {why}")
            tally.refused, tally.refusals_in_a_row = tally.refused + 1, tally.refusals_in_a_row + 1
            if tally.refusals_in_a_row >= self.max_refusals:
                return None, (
                    f"stopped: the policy proposed {tally.refusals_in_a_row} refused points in a row (last: {why}); "
                    "change the policy or the candidates, or review the [safety] limits"
                )
            return None, None
        tally.refusals_in_a_row = 0
        sent = positions
        if self.drift is not None:
            sent, outside = self.drift.command(positions)
            if outside is not None:
                self.candidates.mark_measured(indices)  # out of the field for now: not proposed again
                self.recorder.record_missing(decision, outside)
                tally.missing += indices.size
                return None, None
        if self.pipeline and self.safety is not None:
            self.safety.commit(positions)  # the next check must see this one, which lands only later
        self.candidates.mark_pending(indices)
        flight = _Flight(decision, positions, sent, decided - t0, self.clock.monotonic())
        if self._queues is not None:
            try:
                self._queues.submit(sent, decision.request_id)
            except FAULTS as exc:
                flight.failed = exc
        elif self._measuring is not None:
            flight.future = self._measuring.submit(self._measure, flight)
        return flight, None

    def _measure(self, flight: _Flight) -> Measurement:
        """Send the flight's command and wait for its spectra (pipelined: on the measuring thread)."""
        flight.sent_at = self.clock.monotonic()
        return self.instrument.measure(flight.sent, request_id=flight.decision.request_id)

    def _outcome(self, flight: _Flight) -> Measurement | BaseException:
        """Wait for the flight's measurement (or its error), checked against the spectral axis."""
        try:
            if flight.failed is not None:
                raise flight.failed
            if self._queues is not None:  # every command of this run was submitted
                measurement = self._queues.collect(flight.decision.request_id)
            else:
                measurement = flight.future.result() if flight.future is not None else self._measure(flight)
            measurement.check(self.spectral_axis)
        except BaseException as exc:
            return exc
        flight.measured_s = self.clock.monotonic() - flight.sent_at
        return measurement

    def _land(self, flight: _Flight, tally: _Tally) -> str | None:
        """Wait for the flight's measurement and settle it."""
        return self._settle(flight, self._outcome(flight), tally)

    def _settle(self, flight: _Flight, outcome: Measurement | BaseException, tally: _Tally) -> str | None:
        """Record a flight's outcome, tell the policy; a reason to stop, or ``None``. Errors propagate."""
        decision, indices = flight.decision, flight.decision.proposal.indices
        if isinstance(outcome, NoRecordedData):  # replaying a run: the recording has nothing there
            self.candidates.mark_measured(indices)
            self.recorder.record_missing(decision, str(outcome))
            tally.missing += indices.size
            return None
        if isinstance(outcome, FAULTS):
            if not self.fault_retries:
                self.candidates.release(indices)
                raise outcome
            tally.faults, tally.faults_in_a_row = tally.faults + 1, tally.faults_in_a_row + 1
            released, what = self._after_fault(indices)
            self.recorder.record_missing(decision, f"{type(outcome).__name__}: {outcome}; {what}", released=released)
            if tally.faults_in_a_row >= self.max_faults_in_a_row:
                reason = f"stopped after {tally.faults_in_a_row} failed measurements in a row; the last: {outcome}"
                if isinstance(outcome, (InstrumentTimeout, InstrumentConnectionError)):
                    reason += "; the instrument is unreachable: check it runs and is reachable, then resume"
                return reason
            return None
        if isinstance(outcome, BaseException):
            self.candidates.release(indices)
            raise outcome
        measurement = outcome
        tally.faults_in_a_row = 0
        if flight.sent is not flight.positions:  # recorded where the reference image says it was measured
            measurement = replace(measurement, positions=measurement.positions - (flight.sent - flight.positions))
        timings = StepTimings(decide_s=flight.decide_s, measure_s=flight.measured_s)
        tally.n_recorded = self.recorder.record_measurement(decision, measurement, timings)
        if self.safety is not None and not self.pipeline:
            self.safety.commit(measurement.positions)
        self.candidates.mark_measured(indices)
        self.policy.tell(indices, measurement.spectra)
        if self.on_step is not None:
            self.on_step(StepReport(decision, measurement, timings, tally.n_recorded, self.spectral_axis))
        return None

    def _track(self, drift: DriftTracker, tally: _Tally) -> None:
        """Acquire a tracking frame and register it; a frame that fails is recorded and moves nothing."""
        t0 = self.clock.monotonic()
        try:
            image = self.instrument.acquire_image(drift.channel)
        except FAULTS as exc:
            estimate = drift.failed(tally.step, tally.n_recorded, f"{type(exc).__name__}: {exc}", t0)
        else:
            estimate = drift.register(image, tally.step, tally.n_recorded, t0)
        if self.on_drift is not None:
            self.on_drift(estimate)

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
class _Flight:
    """A command sent (or about to be): its decision, positions (reference ``(q, d)`` and sent), timings."""

    decision: Decision
    positions: NDArray[np.float64]
    sent: NDArray[np.float64]
    decide_s: float
    sent_at: float
    future: Future[Measurement] | None = None
    failed: BaseException | None = None
    measured_s: float = float("nan")


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
