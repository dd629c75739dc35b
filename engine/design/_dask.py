"""Evaluations of inverse design on a Dask distributed cluster (the ``dask`` extra).

``DaskExecutor`` submits each design as one task and hands back whichever finishes first; the
client comes from ``engine.dask_cluster.dask_client`` (a running scheduler or a loopback
``LocalCluster``). A worker that dies mid-evaluation fails its task (``KilledWorker``) and the
design loop re-submits it and records that it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from engine.dask_cluster import import_distributed
from engine.design._loop import Outcome, Simulate, evaluate

if TYPE_CHECKING:
    from distributed import Client


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
        distributed = import_distributed()
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
