"""Where a crashed campaign stood, read back from its run: what ``dualscope resume`` restores.

After recovery (``engine.storage.recover_run``) a run holds every measured row (with its
step and candidate), every missing outcome (refused, vetoed, failed: released or given up), the
policy state stored with the latest settled decision, and the one decision whose outcome may be
unknown (in flight at the crash: one, or two in a pipelined campaign). ``plan_resume`` turns that into a ``ResumePlan``;
``apply_plan`` puts the candidates, the safety limits and the policy back where they were;
``reconcile`` asks the instrument what it did with the decision in flight. Pure bookkeeping:
the run data and the instrument are passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.decisions import Decision, Proposal
from engine.errors import BadRequest, InstrumentConnectionError, InstrumentError, InstrumentTimeout, ResumeError
from engine.protocols import Instrument, Policy, Recalls, Resumable
from engine.safety import SafetyLimits

Told = list[tuple[NDArray[np.int64], NDArray[np.float32]]]
ROWS_TOLD = "rows_told"
"""The key the campaign adds to each stored policy state: rows told to the policy when it was taken."""


@dataclass(frozen=True)
class ResumePlan:
    """What the run says about where its campaign stood.

    Attributes:
        n_recorded: rows recorded.
        next_step: the step number of the next new decision (after every settled and in-flight one).
        state_step: the step whose stored policy state is restored (-1: none stored).
        policy_state: that state (JSON), or ``None``.
        told_before: measurements of the steps before ``state_step``, per step in order
            (candidate indices ``(k,)``, spectra ``(k, c)``).
        told_after: measurements from ``state_step`` on (told to the policy after the restore).
        measured: candidate indices with a recorded spectrum ``(n,)``.
        retired: candidates never to propose again (refused, vetoed, given up) ``(r,)``.
        failures: failed measurements per candidate (for the fault retry count).
        positions: recorded probe positions in order ``(n, d)`` (the dose budget's history).
        in_flight: the decisions whose outcome is unknown, by step, carried out first (one in a
            sequential campaign; up to two in a pipelined one, whose last goes back in flight).
        untraced: steps before ``next_step`` that left nothing in the run (no row, no missing entry, no
            decision): a power cut took them before they were durable (``fetch_lost_steps``).

    Examples:
        >>> plan = plan_resume(run.attrs, run.columns)
        >>> plan.n_recorded == run.n, plan.in_flight
        (True, ())
    """

    n_recorded: int
    next_step: int
    state_step: int
    policy_state: Mapping[str, Any] | None
    told_before: Told
    told_after: Told
    measured: NDArray[np.int64]
    retired: NDArray[np.int64]
    failures: dict[int, int]
    positions: NDArray[np.float64]
    in_flight: tuple[Decision, ...] = field(default=())
    untraced: tuple[int, ...] = field(default=())


def plan_resume(attrs: Mapping[str, Any], columns: Mapping[str, NDArray[Any]]) -> ResumePlan:
    """The ``ResumePlan`` of a recovered run, from its attributes and committed row columns.

    Args:
        attrs: the run's ``dualscope`` attribute (``missing``, ``resume_point``, ``in_flight``).
        columns: the committed rows: ``step (n,)``, ``candidate_index (n,)``, ``spectra (n, c)``,
            ``positions (n, d)``.

    Returns:
        Where the campaign stood: the next step, what to tell the policy, what is measured or retired,
        and the decision in flight at the crash, if any.

    Examples:
        >>> plan = plan_resume(run.attrs, run.columns)
        >>> plan.next_step == int(run.columns["step"].max()) + 1
        True
    """
    steps = np.asarray(columns["step"], dtype=np.int64)
    index = np.asarray(columns["candidate_index"], dtype=np.int64)
    spectra = np.asarray(columns["spectra"], dtype=np.float32)
    missing = list(attrs.get("missing", []))
    points: list[tuple[int, Mapping[str, Any] | None]] = [(int(m["step"]), m.get("policy_state")) for m in missing]
    if (rp := attrs.get("resume_point")) is not None:
        points.append((int(rp["step"]), rp.get("policy_state")))
    flight = attrs.get("in_flight") or []
    flight = [flight] if isinstance(flight, Mapping) else list(flight)  # format 2 kept one decision
    settled = {int(s) for s in steps} | {int(m["step"]) for m in missing}
    in_flight = tuple(sorted((_decision(f) for f in flight if int(f["step"]) not in settled), key=lambda d: d.step))
    points += [(d.step, d.policy_state) for d in in_flight]
    state_step, state = max(points, key=lambda p: p[0], default=(-1, None))
    if state is None:
        state_step = -1
    rows_told = state.get(ROWS_TOLD) if state is not None else None
    if rows_told is not None:  # the rows told when the state was taken (pipelined: not the one in flight)
        told_before, told_after = _told(steps, index, spectra, int(rows_told), by_rows=True)
    else:  # a run of format 2: every row of an earlier step
        told_before, told_after = _told(steps, index, spectra, state_step)
    released = Counter(int(c) for m in missing if m.get("released") for c in m["candidates"])
    retired = sorted({int(c) for m in missing if not m.get("released") for c in m["candidates"]})
    last = max([*settled, *(d.step for d in in_flight)], default=-1) + 1
    untraced = sorted(set(range(last)) - settled - {d.step for d in in_flight})
    return ResumePlan(
        n_recorded=int(steps.size),
        next_step=last,
        state_step=state_step,
        policy_state=state,
        told_before=told_before,
        told_after=told_after,
        measured=index,
        retired=np.asarray(retired, dtype=np.int64),
        failures=dict(released),
        positions=np.asarray(columns["positions"], dtype=np.float64),
        in_flight=in_flight,
        untraced=tuple(untraced),
    )


def _told(
    steps: NDArray[np.int64], index: NDArray[np.int64], spectra: NDArray[np.float32], split: int, by_rows: bool = False
) -> tuple[Told, Told]:
    """Rows grouped by step, in order: those told before a state, and the rest.

    Before: the steps before step ``split`` (``by_rows``: the groups in the first ``split`` rows); all
    rows are after when ``split`` is -1.
    """
    before: Told = []
    after: Told = []
    if steps.size == 0:
        return before, after
    if np.any(np.diff(steps) < 0):
        raise ResumeError("the run's rows are not in step order; it cannot be resumed (was it imported?)")
    bounds = np.flatnonzero(np.diff(steps)) + 1
    for rows in np.split(np.arange(steps.size), bounds):
        group = (index[rows], spectra[rows])
        first = int(rows[0]) if by_rows else int(steps[rows[0]])
        (before if split >= 0 and first < split else after).append(group)
    return before, after


def _decision(meta: Mapping[str, Any]) -> Decision:
    """The decision a journal entry (kept as ``in_flight``) describes."""
    indices = np.asarray(meta["candidates"], dtype=np.int64)
    proposal = Proposal(indices, np.full(indices.size, np.nan))
    return Decision(
        int(meta["step"]),
        str(meta["request_id"]),
        str(meta["policy"]),
        proposal,
        float(meta["decided_at"]),
        meta.get("policy_state"),
    )


def apply_plan(plan: ResumePlan, candidates: CandidateSet, policy: Policy, safety: SafetyLimits | None) -> None:
    """Put the candidates, the safety limits' history and a freshly built policy where the run left them.

    A policy without a stored state (or one that cannot restore) is told every measurement instead:
    it learns the same data, but its random choices start again from the seed.

    Raises:
        ResumeError: the stored state does not fit the policy or the data (another configuration?).

    Args:
        plan: the run's ``ResumePlan``.
        candidates: the run's candidates, marked measured and retired here.
        policy: the policy built afresh from the stored configuration; restored or told here.
        safety: the safety limits, whose dose history is replayed from the recorded positions (None: no limits).

    Examples:
        >>> from engine.policy import RandomPolicy
        >>> from engine.storage import read_candidates
        >>> candidates = read_candidates(run_path)
        >>> plan = plan_resume(run.attrs, run.columns)
        >>> apply_plan(plan, candidates, RandomPolicy(np.random.default_rng(0)), None)
        >>> int(candidates.measured.sum()) == run.n
        True
    """
    done = np.union1d(plan.measured, plan.retired).astype(np.int64)
    if done.size and (done.min() < 0 or done.max() >= len(candidates)):
        raise ResumeError(f"the run names candidates outside its {len(candidates)} candidates")
    candidates.mark_measured(done)
    if safety is not None and plan.positions.size:
        for row in plan.positions:
            safety.commit(row[None, :])
    if plan.policy_state is not None and isinstance(policy, Resumable):
        state = {k: v for k, v in plan.policy_state.items() if k != ROWS_TOLD}
        try:
            policy.restore(state, plan.told_before)
        except (KeyError, ValueError, TypeError) as exc:
            raise ResumeError(f"cannot restore the policy's state: {exc}") from exc
        told = plan.told_after
    else:
        told = plan.told_before + plan.told_after
    for indices, spectra in told:
        policy.tell(indices, spectra)


@dataclass(frozen=True)
class Reconciliation:
    """What the instrument said about the decision in flight.

    Attributes:
        state: ``done`` (measured: its reply is fetched, nothing is repeated), ``running``,
            ``unknown`` (never received: measured now, for the first time) or ``forgotten``
            (another instrument instance, or one that cannot say: measured now, possibly again).
        repeat_note: why the measurement may repeat one made before the crash, or ``None``.

    Examples:
        >>> Reconciliation("done", None).repeat_note is None  # measured before the crash: fetched, not repeated
        True
    """

    state: str
    repeat_note: str | None


def reconcile(instrument: Instrument, decision: Decision, last_instance: str | None) -> Reconciliation:
    """Ask ``instrument`` what it did with ``decision``'s request id (before it is carried out again).

    Args:
        instrument: the instrument, connected again.
        decision: the decision in flight at the crash.
        last_instance: the instrument instance the run talked to before the crash (``None``: unknown).

    Returns:
        What the instrument said, and a note when the measurement may repeat one made before the crash.

    Examples:
        >>> from engine.decisions import Decision, Proposal
        >>> from instruments.local import LocalInstrument
        >>> from simulators.synthetic import SyntheticOptions, synthetic_microscope
        >>> scope = LocalInstrument(synthetic_microscope(SyntheticOptions(), SystemClock()))
        >>> proposal = Proposal(np.array([7]), np.array([np.nan]))
        >>> decision = Decision(7, "run-000007", "random", proposal, 1.7e9)  # in practice: ResumePlan.in_flight
        >>> reconcile(scope, decision, None).state  # an in-process instrument cannot say
        'forgotten'
    """
    rid = decision.request_id
    if not isinstance(instrument, Recalls):
        note = f"request {rid}: the instrument cannot say whether it measured it before the crash; measured again"
        return Reconciliation("forgotten", note)
    answer = instrument.recall(rid)
    state, instance = str(answer.get("state")), answer.get("instance")
    if state in ("done", "running"):
        return Reconciliation(state, None)
    if last_instance is not None and instance == last_instance:
        return Reconciliation("unknown", None)
    note = (
        f"request {rid}: the instrument restarted since the crash (instance {instance}, was {last_instance}) "
        "and cannot say whether it measured it; measured again"
    )
    return Reconciliation("forgotten", note)


@dataclass(frozen=True)
class LostSteps:
    """What the instrument still held of the steps a power cut took from the run (``fetch_lost_steps``).

    Attributes:
        measured: decisions rebuilt from what the instrument measured (candidates from its positions),
            by step: carried out with their own request ids, so the replies come from its cache.
        failed: steps whose measurement the instrument answered with an error, and the error: recorded
            as missing (their candidates are not known).
        note: why fetching stopped early, or ``None``.

    Examples:
        >>> LostSteps().measured, LostSteps().note  # a resume after a SIGKILL: the run lost nothing
        ((), None)
    """

    measured: tuple[Decision, ...] = ()
    failed: tuple[tuple[Decision, str], ...] = ()
    note: str | None = None


def fetch_lost_steps(
    instrument: Instrument,
    plan: ResumePlan,
    request_prefix: str,
    candidates: CandidateSet,
    drift_track: Sequence[Mapping[str, Any]],
) -> LostSteps:
    """Ask the instrument for the steps the run lost: its untraced steps, then every step from ``next_step`` on.

    With group commit (a pipelined campaign) the loop tells the policy a row before a syncer makes
    it durable, so a power cut can take the last few steps from the run; the instrument's reply cache
    still holds them under their request ids ``f"{request_prefix}-{step:06d}"``. Fetching goes on
    from ``plan.next_step`` until the instrument has nothing for a step; each measured position,
    less the drift shift in force at its step, must be a candidate's.

    Args:
        instrument: the instrument, connected again (one that cannot ``fetch`` gives nothing back).
        plan: the run's ``ResumePlan``.
        request_prefix: the campaign's request-id prefix (``run_id[:12]``).
        candidates: the run's candidates ``(m, d)``.
        drift_track: the run's ``drift_track`` entries (``step``, ``shift``), in order.

    Returns:
        The decisions to carry out again (in step order) and the failures to record.

    Examples:
        >>> from engine.storage import read_candidates
        >>> from instruments.local import LocalInstrument
        >>> from simulators.synthetic import SyntheticOptions, synthetic_microscope
        >>> scope = LocalInstrument(synthetic_microscope(SyntheticOptions(), SystemClock()))
        >>> plan = plan_resume(run.attrs, run.columns)
        >>> fetch_lost_steps(scope, plan, "run", read_candidates(run_path), []).measured  # it measured none of them
        ()
    """
    if not isinstance(instrument, Recalls):
        return LostSteps()
    measured: list[Decision] = []
    failed: list[tuple[Decision, str]] = []
    steps = [*plan.untraced, *range(plan.next_step, plan.next_step + 1_000_000)]
    for step in steps:
        rid = f"{request_prefix}-{step:06d}"
        try:
            found = instrument.fetch(rid)
        except (InstrumentTimeout, InstrumentConnectionError):
            raise  # the instrument cannot be asked: nothing is decided on a guess
        except BadRequest as exc:  # a server that does not know `fetch` (an older one)
            note = f"the instrument cannot hand back a measurement by request id ({exc}); fetching stopped there"
            return LostSteps(tuple(measured), tuple(failed), note)
        except InstrumentError as exc:  # it measured that step and failed
            failed.append((_lost(step, rid, np.zeros(0, dtype=np.int64)), f"{type(exc).__name__}: {exc}"))
            continue
        if found is None:
            if step >= plan.next_step:
                break
            continue
        shift = _shift_at(drift_track, step, found.positions.shape[1])
        indices = _candidates_at(candidates, found.positions - shift[None, :])
        if indices is None:
            note = (
                f"request {rid}: the instrument measured {found.positions.tolist()}, which is no candidate's "
                "position (less the drift shift); fetching stopped there"
            )
            return LostSteps(tuple(measured), tuple(failed), note)
        measured.append(_lost(step, rid, indices, float(found.timestamps[0]) if found.timestamps.size else 0.0))
    return LostSteps(tuple(measured), tuple(failed))


def _lost(step: int, rid: str, indices: NDArray[np.int64], decided_at: float = 0.0) -> Decision:
    """A decision rebuilt from the instrument (the policy's own record of it was lost)."""
    return Decision(step, rid, LOST_POLICY, Proposal(indices, np.full(indices.size, np.nan)), decided_at, None)


LOST_POLICY = "recovered-from-instrument"
"""The policy name recorded for a step fetched back from the instrument after a power cut."""


def _shift_at(track: Sequence[Mapping[str, Any]], step: int, d: int) -> NDArray[np.float64]:
    """The drift shift ``(d,)`` in force at ``step``: the last tracking entry used from that step or before."""
    shift = np.zeros(d)
    for entry in track:
        if int(entry["step"]) <= step and entry.get("shift") is not None:
            shift = np.asarray([np.nan if v is None else v for v in entry["shift"]], dtype=np.float64)
    return np.nan_to_num(shift)


def _candidates_at(candidates: CandidateSet, positions: NDArray[np.float64]) -> NDArray[np.int64] | None:
    """The candidate at each position ``(k, d)`` (within 1e-6 of the axes' units), or ``None`` if one is none."""
    pos = candidates.positions
    out = np.empty(positions.shape[0], dtype=np.int64)
    for k, p in enumerate(positions):
        dist = np.abs(pos - p[None, :]).max(axis=1)
        j = int(np.argmin(dist))
        if dist[j] > 1e-6:
            return None
        out[k] = j
    return out
