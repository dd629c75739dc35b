"""Refits on a Dask worker (``policy.training = "dask"``), with the local thread as the fallback.

Microscope control PCs are modest; a lab's GPU workstation or cluster next door can train the dual
VAE while the loop stays at the microscope. Each refit is one task carrying its ``RefitJob`` (the
data cut and the feature model's weights); the worker trains on its own device and sends back the
snapshot with the new weights. As with the background thread, decisions never wait for it: the
policy polls, and uses the latest snapshot that came back.

When the cluster fails (the scheduler cannot be reached at the start, the worker running a refit
dies, the task is lost or cancelled, or a refit does not come back within ``timeout_s``), training
falls back to the local trainer for the rest of the run: the lost refit is run again there, the
campaign carries on with the last snapshot meanwhile, and ``on_fallback`` is told why, once (the
campaign records it in the run). A refit that itself raises (a numerical failure) is counted as a
failure, as with the other trainers, and does not end remote training.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from engine.dask_cluster import dask_client, import_distributed
from engine.policy._trainer import Trainer

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")


def _infrastructure_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that say the cluster failed, not the refit (a dead worker, a closed connection, a timeout)."""
    distributed = import_distributed()
    return (
        distributed.KilledWorker,
        OSError,  # CommClosedError is one
        TimeoutError,
        asyncio.CancelledError,
        concurrent.futures.CancelledError,
    )


class DaskTrainer(Generic[T]):
    """Runs each job as one task on a Dask cluster; falls back to ``fallback`` for good if the cluster fails.

    One job at a time: ``submit`` while a task is out is refused, never queued (as ``ThreadTrainer``).
    Jobs must pickle (``engine.policy.RefitJob`` does); the worker needs dualscope installed.

    Args:
        client: a connected ``distributed.Client``; None when the scheduler could not be reached (then
            ``unreachable`` says why and every job runs on ``fallback``).
        fallback: the local trainer that takes over (a ``ThreadTrainer``).
        where: the scheduler's address, for the records (``tcp://HOST:8786``, ``local``).
        timeout_s: seconds a task may stay out before it counts as lost, s.
        clock: monotonic seconds (injected; the timeout is measured on it).
        on_fallback: told the reason once, when training falls back (it may be called from ``__init__``).
        unreachable: why there is no client (the connection error), when ``client`` is None.
        resources: closed by ``close`` (the client and cluster this trainer opened), if any.

    Examples:
        >>> from functools import partial
        >>> from engine.dask_cluster import dask_client
        >>> with dask_client(None, workers=1) as client:  # a loopback LocalCluster of one process
        ...     trainer = DaskTrainer(client, ThreadTrainer(), "local")
        ...     trainer.submit(partial(sum, range(10)))  # a job that pickles
        ...     trainer.wait(60.0)
        ...     print(trainer.poll(), trainer.fell_back)
        ...     trainer.close()
        True
        45 None
    """

    def __init__(
        self,
        client: Client | None,
        fallback: Trainer[T],
        where: str,
        *,
        timeout_s: float = 600.0,
        clock: Callable[[], float] | None = None,
        on_fallback: Callable[[str], None] | None = None,
        unreachable: str = "",
        resources: ExitStack | None = None,
    ):
        import time

        self._client: Any = client  # a distributed.Client (untyped)
        self._fallback, self.where = fallback, where
        self._timeout_s, self._clock = timeout_s, clock or time.monotonic
        self._on_fallback, self._resources = on_fallback, resources
        self._lock = threading.Lock()
        self._job: Callable[[], T] | None = None  # the job out, until its outcome is taken
        self._future: Any = None  # its distributed.Future (untyped), once sent
        self._courier: threading.Thread | None = None
        self._outcome: tuple[str, Any] | None = None  # ("done", result) | ("failed", message) | ("lost", reason)
        self._generation = 0  # a courier whose task was given up writes nothing
        self._sent_at = 0.0
        self._result: T | None = None
        self._failures: list[str] = []
        self.fell_back: str | None = None
        """Why training fell back to the local trainer (None: it still runs on the cluster)."""
        if client is None:
            self._fall_back(f"the Dask scheduler {where} could not be reached: {unreachable or 'no client'}")

    # ------------------------------------------------------------------ the protocol
    def submit(self, job: Callable[[], T]) -> bool:
        """Send ``job`` to the cluster unless a task is out (or run it on the fallback, after a failure).

        A courier thread pickles and sends the job, waits for the task and brings its result back
        (transfer and unpickling included), so the caller (the loop) never waits for any of it.
        """
        self._harvest()
        if self.fell_back is not None:
            return self._fallback.submit(job)
        if self._job is not None:
            return False
        with self._lock:
            self._generation += 1
            self._job, self._future, self._outcome, self._sent_at = job, None, None, self._clock()
        self._courier = threading.Thread(
            target=self._carry, args=(job, self._generation), name="dualscope-dask-courier", daemon=True
        )
        self._courier.start()
        return True

    def _carry(self, job: Callable[[], T], generation: int) -> None:
        """In the courier thread: send ``job``, wait for it, and leave its outcome for ``_harvest``."""
        outcome: tuple[str, Any]
        future = None
        try:
            future = self._client.submit(job, pure=False, key=f"dualscope-refit-{uuid.uuid4().hex}")
            with self._lock:
                if generation == self._generation:
                    self._future = future
            outcome = ("done", future.result())
        except _infrastructure_errors() as exc:  # a dead worker, a closed connection: the cluster failed
            outcome = ("lost", f"the worker of {self.where} failed during a refit: {type(exc).__name__}: {exc}")
        except Exception as exc:
            status = getattr(future, "status", "not sent")
            if status in ("cancelled", "lost", "not sent"):
                outcome = ("lost", f"the refit task on {self.where} was {status}: {type(exc).__name__}: {exc}")
            else:  # the refit itself raised: the previous snapshot stays, as with the thread
                outcome = ("failed", f"{type(exc).__name__}: {exc}")
        with self._lock:
            if generation == self._generation:
                self._outcome = outcome

    def poll(self) -> T | None:
        """The latest result that came back (from the cluster or, after a fallback, the local trainer), once."""
        self._harvest()
        with self._lock:
            result, self._result = self._result, None
        if result is not None:
            return result
        return self._fallback.poll() if self.fell_back is not None else None

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the task out (if any) comes back or counts as lost, at most ``timeout_s`` seconds."""
        courier = self._courier
        if self._job is not None and courier is not None:
            left = max(0.0, self._timeout_s - (self._clock() - self._sent_at))
            courier.join(left if timeout_s is None else min(timeout_s, left))
        self._harvest(expired=timeout_s is None)
        if self.fell_back is not None:
            self._fallback.wait(timeout_s)

    @property
    def failures(self) -> list[str]:
        """Messages of the jobs that raised (on the cluster or on the fallback)."""
        with self._lock:
            own = list(self._failures)
        return own + self._fallback.failures

    def close(self) -> None:
        """Cancel a task still out, stop the fallback, and close the client and cluster this trainer opened."""
        with self._lock:
            self._generation += 1
            future, self._future, self._job = self._future, None, None
        self._cancel(future)
        if self._courier is not None:
            self._courier.join(self._timeout_s)
        self._fallback.close()
        if self._resources is not None:
            self._resources.close()
            self._resources = None

    # ------------------------------------------------------------------ internals
    def _harvest(self, *, expired: bool = False) -> None:
        """Take the outcome the courier left, or give the task up if it is overdue."""
        job = self._job
        if job is None:
            return
        with self._lock:
            outcome, future = self._outcome, self._future
        if outcome is None:  # still being sent, running, or coming back
            if expired or self._clock() - self._sent_at >= self._timeout_s:
                with self._lock:
                    self._generation += 1
                    self._job, self._future = None, None
                self._cancel(future)
                self._lose(job, f"the refit sent to {self.where} did not come back within {self._timeout_s:g} s")
            return
        with self._lock:
            self._job, self._future, self._outcome = None, None, None
        kind, value = outcome
        if kind == "done":
            with self._lock:
                self._result = value
        elif kind == "failed":
            with self._lock:
                self._failures.append(value)
        else:
            self._lose(job, value)

    def _cancel(self, future: Any) -> None:
        if future is not None and self._client is not None:
            with contextlib.suppress(Exception):  # the connection is gone already: nothing to cancel
                self._client.cancel([future])

    def _lose(self, job: Callable[[], T], reason: str) -> None:
        """Fall back, and run the lost job locally (its data is not lost: the job carries it)."""
        self._fall_back(reason)
        self._fallback.submit(job)

    def _fall_back(self, reason: str) -> None:
        if self.fell_back is not None:
            return
        self.fell_back = f"{reason}; training continues on this machine"
        if self._on_fallback is not None:
            self._on_fallback(self.fell_back)


def open_dask_trainer(
    scheduler: str,
    fallback: Trainer[T],
    *,
    connect_timeout_s: float = 10.0,
    timeout_s: float = 600.0,
    clock: Callable[[], float] | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> DaskTrainer[T]:
    """A ``DaskTrainer`` on the scheduler at ``scheduler`` (``local``: a new loopback LocalCluster of one worker).

    A scheduler that does not answer within ``connect_timeout_s`` is not an error: the trainer starts
    on ``fallback`` and ``on_fallback`` is told why. The trainer owns the client (and the local
    cluster) and closes them in ``close``.

    Args:
        scheduler: ``tcp://HOST:8786`` or ``local``.
        fallback: the local trainer.
        connect_timeout_s: seconds to wait for the scheduler, s.
        timeout_s: seconds a refit may stay out before it counts as lost, s.
        clock: monotonic seconds (injected).
        on_fallback: told why, if training falls back.

    Returns:
        The trainer.

    Examples:
        >>> reasons = []
        >>> trainer = open_dask_trainer("tcp://127.0.0.1:9", ThreadTrainer(), connect_timeout_s=0.5,
        ...                             on_fallback=reasons.append)  # nothing listens on port 9
        >>> trainer.fell_back is not None and "could not be reached" in reasons[0]
        True
        >>> trainer.close()
    """
    stack = ExitStack()
    try:
        client = stack.enter_context(
            dask_client(None if scheduler == "local" else scheduler, 1, connect_timeout_s=connect_timeout_s)
        )
    except (OSError, TimeoutError) as exc:
        stack.close()
        return DaskTrainer(
            None, fallback, scheduler, timeout_s=timeout_s, clock=clock, on_fallback=on_fallback,
            unreachable=f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
    return DaskTrainer(
        client, fallback, scheduler, timeout_s=timeout_s, clock=clock, on_fallback=on_fallback, resources=stack
    )
