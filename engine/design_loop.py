"""Inverse design: asynchronous batch Bayesian optimisation of simulated structures.

Designs are points of a pool in the unit cube (``(m, d)``, e.g. Sobol points of a design space);
a :class:`~engine.bo_policy.BOPolicy` over that pool proposes the next design whenever an
evaluation slot is free, with every design still being evaluated marked pending (kriging
believers), so parallel evaluations never wait for each other: a new candidate as soon as one
worker finishes. Evaluations go through an :class:`Executor` (in-process, a thread pool here; a pool
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
from engine.protocols import Policy

Simulate = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""A simulator: design ``(d,)`` in the unit cube → spectrum ``(c,)``."""


@dataclass(frozen=True)
class Outcome:
    """One finished evaluation: the pool index, its spectrum ``(c,)`` or the error it raised."""

    index: int
    spectrum: NDArray[np.float64] | None
    error: str | None = None


class Executor(Protocol):
    """Runs evaluations concurrently and hands back whichever finishes first."""

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
    """Evaluates at submission, in the caller's thread (one worker, reproducible)."""

    def __init__(self, simulate: Simulate):
        self._simulate = simulate
        self._done: list[Outcome] = []

    def submit(self, index: int, design: NDArray[np.float64]) -> None:
        """Evaluate now."""
        self._done.append(_evaluate(self._simulate, index, design))

    def next_outcome(self) -> Outcome:
        """The oldest finished evaluation."""
        return self._done.pop(0)

    def close(self) -> None:
        """Nothing to release."""


class ThreadExecutor:
    """A pool of ``workers`` threads (simulators that release the GIL in numpy, or that wait on I/O)."""

    def __init__(self, simulate: Simulate, workers: int):
        self._simulate = simulate
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dualscope-design")
        self._done: queue.Queue[Outcome] = queue.Queue()

    def submit(self, index: int, design: NDArray[np.float64]) -> None:
        """Queue an evaluation on the pool."""
        future: Future[Outcome] = self._pool.submit(_evaluate, self._simulate, index, design)
        future.add_done_callback(lambda f: self._done.put(f.result()))

    def next_outcome(self) -> Outcome:
        """Whichever evaluation finishes first."""
        return self._done.get()

    def close(self) -> None:
        """Wait for running evaluations and stop the threads."""
        self._pool.shutdown(wait=True)


def _evaluate(simulate: Simulate, index: int, design: NDArray[np.float64]) -> Outcome:
    try:
        spectrum = np.asarray(simulate(design), dtype=np.float64)
    except Exception as exc:  # a failed evaluation is reported, not fatal
        return Outcome(index, None, f"{type(exc).__name__}: {exc}")
    if not np.isfinite(spectrum).all():
        return Outcome(index, None, "the simulator returned non-finite values")
    return Outcome(index, spectrum)


@dataclass
class DesignHistory:
    """What the loop did, in completion order."""

    indices: list[int] = field(default_factory=list)
    spectra: list[NDArray[np.float64]] = field(default_factory=list)
    model_versions: list[int] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    resubmitted: list[int] = field(default_factory=list)


def run_design(
    policy: Policy,
    pool: CandidateSet,
    executor: Executor,
    *,
    budget: int,
    workers: int,
    stop: Callable[[DesignHistory], bool] | None = None,
    on_outcome: Callable[[Outcome, DesignHistory], None] | None = None,
    max_failures: int = 2,
) -> DesignHistory:
    """Keep ``workers`` evaluations in flight until ``budget`` have finished (or ``stop`` says so).

    Args:
        policy: proposes pool indices (its ``tell`` gets each spectrum ``(1, c)``).
        pool: the candidate designs ``(m, d)`` in ``positions``; pending/measured marks are kept here.
        executor: where evaluations run.
        budget: successful evaluations to make.
        workers: evaluations in flight at once.
        stop: checked after each outcome; ``True`` ends the loop (e.g. the target is reached).
        on_outcome: called after each outcome (progress, recording).
        max_failures: evaluations of one design that may fail before it is given up (a worker
            that died is worth a second try; a design the simulator cannot handle is not).
    """
    history = DesignHistory()
    versions: dict[int, int] = {}
    in_flight = 0
    failed: dict[int, int] = {}
    while len(history.indices) < budget:
        while in_flight < workers and len(history.indices) + in_flight < budget:
            proposal = policy.propose(pool, 1)
            if proposal.indices.size == 0:
                break
            index = int(proposal.indices[0])
            pool.mark_pending(proposal.indices)
            versions[index] = proposal.model_version
            executor.submit(index, pool.positions[index])
            in_flight += 1
        if in_flight == 0:
            break
        outcome = executor.next_outcome()
        in_flight -= 1
        idx = np.array([outcome.index], dtype=np.int64)
        if outcome.spectrum is None:
            failed[outcome.index] = failed.get(outcome.index, 0) + 1
            history.failures.append((outcome.index, outcome.error or "failed"))
            if failed[outcome.index] < max_failures:
                pool.release(idx)  # may be proposed again: recorded as resubmittable
                history.resubmitted.append(outcome.index)
            else:
                pool.mark_measured(idx)  # given up: never proposed again
        else:
            pool.mark_measured(idx)
            policy.tell(idx, outcome.spectrum[None, :].astype(np.float32))
            history.indices.append(outcome.index)
            history.spectra.append(outcome.spectrum)
            history.model_versions.append(versions.pop(outcome.index, -1))
        if on_outcome is not None:
            on_outcome(outcome, history)
        if stop is not None and stop(history):
            break
    return history
