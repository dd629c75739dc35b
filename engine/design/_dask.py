"""Evaluations of inverse design on a Dask distributed cluster (the ``dask`` extra).

``DaskExecutor`` submits each design as one task and hands back whichever finishes first.
``dask_client`` connects to a running scheduler (``tcp://HOST:8786``) or starts a
``LocalCluster`` of worker processes on loopback. On the local cluster the scheduler's
``allowed-failures`` is 0, so a worker that dies mid-evaluation fails its task at once
(``KilledWorker``) and the design loop re-submits it and records that it did; on a scheduler you
run yourself, its own ``distributed.scheduler.allowed-failures`` applies (Dask retries silently up
to that many times before the loop sees the failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from engine.design._loop import Outcome, Simulate, evaluate
from engine.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(
            "the dask executor needs Dask distributed: pip install 'dualscope[dask]' (or dask[distributed])"
        ) from exc
    return distributed


@contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a new loopback ``LocalCluster`` of ``workers`` processes.

    Each local worker has one thread (one evaluation at a time). Everything is closed on exit.

    Args:
        scheduler: ``tcp://HOST:8786``, or None for a loopback LocalCluster.
        workers: processes of the LocalCluster (ignored with a scheduler).

    Yields:
        The client; it and the cluster are closed on exit.

    Raises:
        ConfigError: Dask distributed is not installed (the ``dask`` extra).

    Examples:
        >>> with dask_client(None, workers=1) as client:
        ...     print(client.submit(sum, [1, 2, 3]).result())
        6
    """
    distributed = _import_distributed()
    import dask

    if scheduler:
        with distributed.Client(scheduler, timeout="20s") as client:
            yield client
        return
    config = {"distributed.scheduler.allowed-failures": 0, "distributed.worker.daemon": False}
    with (
        dask.config.set(config),
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


class DaskExecutor:
    """Runs ``simulate`` on a Dask cluster: one task per design, results in completion order.

    Args:
        client: a connected ``distributed.Client`` (see ``dask_client``).
        simulate: design ``(d',)`` → spectrum ``(c,)``; must pickle (a module-level function or object).

    Examples:
        >>> with dask_client(None, workers=1) as client:  # a loopback LocalCluster of 1 process
        ...     executor = DaskExecutor(client, simulate)
        ...     executor.submit(2, pool[2])
        ...     print(executor.next_outcome().index)
        ...     executor.close()
        2
    """

    def __init__(self, client: Client, simulate: Simulate):
        distributed = _import_distributed()
        self._client, self._simulate = client, simulate
        self._completed = distributed.as_completed()
        self._index: dict[object, int] = {}

    def submit(self, index: int, design: NDArray[np.float64]) -> None:
        """Send ``design (d,)`` as a task (never cached: each submission is a new evaluation)."""
        future = self._client.submit(evaluate, self._simulate, index, np.asarray(design), pure=False)
        self._index[future.key] = index
        self._completed.add(future)

    def next_outcome(self) -> Outcome:
        """The next finished task; a task whose worker died is an outcome with the error."""
        future = next(self._completed)
        index = self._index.pop(future.key)
        if future.status != "finished":
            exc = future.exception()
            return Outcome(index, None, f"{type(exc).__name__}: {exc}")
        outcome: Outcome = future.result()
        return outcome

    def close(self) -> None:
        """Cancel what is still queued (the client and cluster belong to whoever opened them)."""
        self._completed.clear()
