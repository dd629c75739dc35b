"""Inverse design: asynchronous batch Bayesian optimisation of simulated structures.

Designs are points of a pool in the unit cube (``(m, d)``, e.g. Sobol points of a design space);
a ``BOPolicy`` over that pool proposes the next design whenever an
evaluation slot is free, with every design still being evaluated marked pending (kriging
believers), so parallel evaluations never wait for each other: a new candidate as soon as one
worker finishes. Evaluations go through an ``Executor`` (in-process, a thread pool here; a pool
of simulator servers or a Dask cluster at the composition root). An evaluation that fails is
released and may be proposed again (once by default), and recorded as such. Pure decision code plus threads; no I/O.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.decisions import Decision, Proposal, StepTimings
from engine.protocols import Clock, Policy, Recorder
from engine.types import Measurement

Simulate = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""A simulator: design ``(d,)`` in the unit cube → spectrum ``(c,)``."""


@dataclass(frozen=True)
class Outcome:
    """One finished evaluation: the pool index, its spectrum ``(c,)`` or the error it raised.

    Attributes:
        index: the key the design was submitted under (its pool index).
        spectrum: its spectrum ``(c,)``, or None when it failed.
        error: what went wrong, as ``Type: message`` (None on success).

    Examples:
        >>> evaluate(simulate, 3, pool[3]).spectrum.shape
        (50,)
        >>> evaluate(lambda d: 1 / 0, 3, pool[3]).error
        'ZeroDivisionError: division by zero'
    """

    index: int
    spectrum: NDArray[np.float64] | None
    error: str | None = None


class Executor(Protocol):
    """Runs evaluations concurrently and hands back whichever finishes first.

    Examples:
        >>> executor: Executor = InlineExecutor(simulate)  # InlineExecutor, ThreadExecutor, DaskExecutor, a server pool
        >>> executor.submit(5, pool[5])
        >>> executor.next_outcome().index
        5
        >>> executor.close()
    """

    def submit(self, index: int, design: NDArray[np.float64]) -> None:
        """Start evaluating ``design (d,)``, known as pool ``index``."""
        ...

    def next_outcome(self) -> Outcome:
        """Block until an evaluation finishes; its outcome."""
        ...

    def close(self) -> None:
        """Stop accepting work and release the workers."""
        ...


class InlineExecutor:
    """Evaluates at submission, in the caller's thread (one worker, reproducible).

    Args:
        simulate: design ``(d',)`` → spectrum ``(c,)``.

    Examples:
        >>> executor = InlineExecutor(simulate)
        >>> executor.submit(0, pool[0])
        >>> executor.next_outcome().spectrum.shape
        (50,)
    """

    def __init__(self, simulate: Simulate):
        self._simulate = simulate
        self._done: list[Outcome] = []

    def submit(self, index: int, design: NDArray[np.float64]) -> None:
        """Evaluate now."""
        self._done.append(evaluate(self._simulate, index, design))

    def next_outcome(self) -> Outcome:
        """The oldest finished evaluation."""
        return self._done.pop(0)

    def close(self) -> None:
        """Nothing to release."""


class ThreadExecutor:
    """A pool of ``workers`` threads (simulators that release the GIL in numpy, or that wait on I/O).

    Args:
        simulate: design ``(d',)`` → spectrum ``(c,)``.
        workers: threads.

    Examples:
        >>> executor = ThreadExecutor(simulate, workers=2)
        >>> for i in range(4):
        ...     executor.submit(i, pool[i])
        >>> sorted(executor.next_outcome().index for _ in range(4))  # in completion order
        [0, 1, 2, 3]
        >>> executor.close()
    """

    def __init__(self, simulate: Simulate, workers: int):
        self._simulate = simulate
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dualscope-design")
        self._done: queue.Queue[Outcome] = queue.Queue()

    def submit(self, index: int, design: NDArray[np.float64]) -> None:
        """Queue an evaluation on the pool."""
        future: Future[Outcome] = self._pool.submit(evaluate, self._simulate, index, design)
        future.add_done_callback(lambda f: self._done.put(f.result()))

    def next_outcome(self) -> Outcome:
        """Whichever evaluation finishes first."""
        return self._done.get()

    def close(self) -> None:
        """Wait for running evaluations and stop the threads."""
        self._pool.shutdown(wait=True)


def evaluate(simulate: Simulate, index: int, design: NDArray[np.float64]) -> Outcome:
    """Run ``simulate(design)`` and wrap the spectrum, or the error, as an ``Outcome`` (runs in workers).

    Args:
        simulate: design ``(d',)`` → spectrum ``(c,)``.
        index: the key of the design (returned in the outcome).
        design: what ``simulate`` takes ``(d',)``.

    Returns:
        The spectrum, or the error (also for a spectrum with NaN or infinite values).

    Examples:
        >>> outcome = evaluate(simulate, 7, pool[7])
        >>> outcome.index, outcome.error
        (7, None)
    """
    try:
        spectrum = np.asarray(simulate(design), dtype=np.float64)
    except Exception as exc:  # a failed evaluation is reported, not fatal
        return Outcome(index, None, f"{type(exc).__name__}: {exc}")
    if not np.isfinite(spectrum).all():
        return Outcome(index, None, "the simulator returned non-finite values")
    return Outcome(index, spectrum)


@dataclass
class DesignHistory:
    """What one search did, in completion order (``k`` successful evaluations).

    Attributes:
        method: the policy or optimiser name (``design-bo``, ``random``, ``differential-evolution``).
        designs: the evaluated designs, each ``(d,)`` in the unit cube.
        spectra: their spectra, each ``(c,)``.
        indices: pool index of each design, ``-1`` for designs outside the pool (differential evolution).
        model_versions: surrogate snapshot each design was proposed with (``-1``: none).
        failures: ``(pool index, reason)`` of every failed evaluation.
        resubmitted: pool indices re-submitted after a failure (once per failure that was retried).

    Examples:
        >>> history.method, len(history.designs), history.indices[:3] == [int(i) for i in history.indices[:3]]
        ('random', 8, True)
    """

    method: str = ""
    designs: list[NDArray[np.float64]] = field(default_factory=list)
    spectra: list[NDArray[np.float64]] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    model_versions: list[int] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    resubmitted: list[int] = field(default_factory=list)

    def add(self, index: int, design: NDArray[np.float64], spectrum: NDArray[np.float64], version: int) -> None:
        """Append one successful evaluation."""
        self.indices.append(index)
        self.designs.append(np.asarray(design, dtype=np.float64))
        self.spectra.append(spectrum)
        self.model_versions.append(version)


class DesignLog:
    """Streams a search's decisions and evaluations into a ``Recorder``.

    Each submission is a ``Decision`` (request id ``{prefix}-{step:06d}``),
    recorded before the evaluation starts; a success is a one-row measurement (position = the design
    in the unit cube, ``measure_s`` = seconds from submission to result); a failure is recorded as
    missing with what was done about it (re-submitted as which request, or given up). Without a
    recorder it only numbers the steps.

    Args:
        recorder: the run's recorder (None: record nothing).
        clock: stamps decisions.
        prefix: request ids are ``{prefix}-{step:06d}``.

    Examples:
        >>> from engine.clock import SystemClock
        >>> from engine.policy import RandomPolicy
        >>> log = DesignLog(None, SystemClock(), "random")  # None: number the steps, record nothing
        >>> history = run_design(RandomPolicy(np.random.default_rng(0)), candidates, InlineExecutor(simulate),
        ...                      budget=3, workers=1, log=log)
        >>> len(history.spectra)
        3
    """

    def __init__(self, recorder: Recorder | None, clock: Clock, prefix: str = "design"):
        self._recorder, self._clock, self._prefix = recorder, clock, prefix
        self._step = 0
        self._started: dict[str, float] = {}

    def decided(self, method: str, proposal: Proposal) -> Decision:
        """Stamp and record a decision (before its evaluation is submitted)."""
        decision = Decision(self._step, f"{self._prefix}-{self._step:06d}", method, proposal, self._clock.time())
        self._step += 1
        self._started[decision.request_id] = self._clock.monotonic()
        if self._recorder is not None:
            self._recorder.record_decision(decision)
        return decision

    def succeeded(self, decision: Decision, design: NDArray[np.float64], spectrum: NDArray[np.float64]) -> None:
        """Record the spectrum ``(c,)`` of ``design (d,)`` durably."""
        waited = self._clock.monotonic() - self._started.pop(decision.request_id, self._clock.monotonic())
        if self._recorder is None:
            return
        measurement = Measurement(
            decision.request_id,
            np.asarray(design, dtype=np.float64)[None, :],
            np.asarray(spectrum, dtype=np.float32)[None, :],
            np.array([self._clock.time()]),
            waited,
        )
        self._recorder.record_measurement(decision, measurement, StepTimings(0.0, waited))

    def failed(self, decision: Decision, reason: str) -> None:
        """Record that ``decision``'s evaluation produced nothing, and why / what was done."""
        self._started.pop(decision.request_id, None)
        if self._recorder is not None:
            self._recorder.record_missing(decision, reason)

    @classmethod
    def silent(cls) -> DesignLog:
        """A log that records nothing (only numbers the steps)."""
        return cls(None, SystemClock())

    @property
    def next_request_id(self) -> str:
        """The request id the next decision will get."""
        return f"{self._prefix}-{self._step:06d}"


class Dispatch:
    """The evaluations of one search in flight on an executor, recorded through a ``DesignLog``.

    Each submission is a recorded decision; a success is recorded as a measurement of ``design``
    (the point of the design cube; ``payload`` is what the executor was sent). A failure is recorded
    and the same payload re-submitted at once, as a new decision, until it has failed
    ``max_failures`` times; then it is given up. Failures go into ``history`` under the proposal's
    pool index (``-1`` outside a pool).

    Args:
        executor: where evaluations run.
        log: records decisions, results and failures.
        history: where results and failures are appended.
        max_failures: failed evaluations of one payload before it is given up.

    Examples:
        >>> from engine.clock import SystemClock
        >>> from engine.decisions import Proposal
        >>> dispatch = Dispatch(InlineExecutor(simulate), DesignLog(None, SystemClock()), DesignHistory("manual"))
        >>> dispatch.submit(0, Proposal(np.array([0]), np.array([np.nan])), pool[0], pool[0])
        >>> outcome, decision = dispatch.next()
        >>> outcome.index, outcome.spectrum.shape, decision.request_id
        (0, (50,), 'design-000000')
    """

    def __init__(self, executor: Executor, log: DesignLog, history: DesignHistory, max_failures: int = 2):
        self._executor, self._log, self._history, self._max_failures = executor, log, history, max_failures
        self._in_flight: dict[int, tuple[Decision, NDArray[np.float64], NDArray[np.float64]]] = {}
        self._failed: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._in_flight)

    def submit(self, key: int, proposal: Proposal, design: NDArray[np.float64], payload: NDArray[np.float64]) -> None:
        """Record a decision and send ``payload`` to the executor under ``key`` (unique among those in flight)."""
        decision = self._log.decided(self._history.method, proposal)
        self._in_flight[key] = (decision, design, payload)
        self._executor.submit(key, payload)

    def next(self) -> tuple[Outcome, Decision]:
        """The next evaluation that succeeded or was given up (failures in between are re-submitted)."""
        while True:
            outcome = self._executor.next_outcome()
            decision, design, payload = self._in_flight.pop(outcome.index)
            if outcome.spectrum is not None:
                self._log.succeeded(decision, design, outcome.spectrum)
                return outcome, decision
            reason = outcome.error or "failed"
            failures = self._failed[outcome.index] = self._failed.get(outcome.index, 0) + 1
            pool_index = int(decision.proposal.indices[0])
            self._history.failures.append((pool_index, reason))
            if failures >= self._max_failures:
                self._log.failed(decision, f"{reason}; given up after {failures} failed evaluations")
                return outcome, decision
            self._log.failed(decision, f"{reason}; re-submitted as {self._log.next_request_id}")
            self._history.resubmitted.append(pool_index)
            self.submit(outcome.index, decision.proposal, design, payload)

    def drain(self) -> None:
        """Wait out what is still in flight (a search that stopped early), recording it as not needed."""
        for decision, _, _ in self._in_flight.values():
            self._log.failed(decision, "not needed: the search stopped")
        for _ in range(len(self._in_flight)):
            self._executor.next_outcome()
        self._in_flight.clear()


def run_design(
    policy: Policy,
    pool: CandidateSet,
    executor: Executor,
    *,
    budget: int,
    workers: int,
    log: DesignLog | None = None,
    stop: Callable[[DesignHistory], bool] | None = None,
    on_outcome: Callable[[Outcome, DesignHistory], None] | None = None,
    max_failures: int = 2,
    designs: NDArray[np.float64] | None = None,
) -> DesignHistory:
    """Keep ``workers`` evaluations in flight until ``budget`` have finished (or ``stop`` says so).

    A design that fails (a worker died, the simulator raised, non-finite spectra) is re-submitted
    at once, as a new recorded decision, until it has failed ``max_failures`` times; then it is given
    up (marked measured, never proposed again). Either way the failure is recorded with what was
    done about it, and the campaign goes on. When ``stop`` ends the search, the evaluations still in
    flight are waited for and recorded as not needed, so the executor is free for the next search.

    Args:
        policy: proposes pool indices (its ``tell`` gets each spectrum ``(1, c)``).
        pool: the candidate designs ``(m, d)`` in ``positions``; pending/measured marks are kept here.
        executor: where evaluations run.
        budget: successful evaluations to make.
        workers: evaluations in flight at once.
        log: records decisions, spectra and failures (default: numbers steps, records nothing).
        stop: checked after each outcome once a result exists; ``True`` ends the loop (e.g. the target is reached).
        on_outcome: called after each design that succeeded or was given up (progress bars).
        max_failures: failed evaluations of one design before it is given up (a worker that died is
            worth a second try; a design the simulator cannot handle is not).
        designs: what the executor is sent for each pool index ``(m, d')`` (default ``pool.positions``;
            the latent design space sends sphere geometries while the GP sees latent coordinates).

    Returns:
        The search's history: designs, spectra, pool indices, model versions, failures.

    Examples:
        >>> history = run_design(RandomPolicy(np.random.default_rng(0)), candidates, InlineExecutor(simulate),
        ...                      budget=8, workers=1)  # as in the setup above
        >>> len(history.spectra), history.failures
        (8, [])
    """
    payload = pool.positions if designs is None else designs
    history = DesignHistory(method=policy.name)
    dispatch = Dispatch(executor, log if log is not None else DesignLog.silent(), history, max_failures)
    while len(history.indices) < budget:
        while len(dispatch) < workers and len(history.indices) + len(dispatch) < budget:
            proposal = policy.propose(pool, 1)
            if proposal.indices.size == 0:
                break
            pool.mark_pending(proposal.indices)
            index = int(proposal.indices[0])
            dispatch.submit(index, proposal, pool.positions[index], payload[index])
        if not len(dispatch):
            break
        outcome, decision = dispatch.next()
        idx = np.array([outcome.index], dtype=np.int64)
        pool.mark_measured(idx)  # a design given up is never proposed again
        if outcome.spectrum is not None:
            policy.tell(idx, outcome.spectrum[None, :].astype(np.float32))
            history.add(outcome.index, pool.positions[outcome.index], outcome.spectrum, decision.proposal.model_version)
        if on_outcome is not None:
            on_outcome(outcome, history)
        if stop is not None and history.spectra and stop(history):
            break
    dispatch.drain()
    return history
