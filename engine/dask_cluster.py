"""Connecting to a Dask distributed cluster (the ``dask`` extra): shared by inverse design and remote training.

``dask_client`` connects to a running scheduler (``tcp://HOST:8786``) or starts a ``LocalCluster``
of worker processes on loopback. On the local cluster the scheduler's ``allowed-failures`` is 0, so
a worker that dies mid-task fails its task at once (``KilledWorker``) and the caller decides what to
do (the design loop re-submits, remote training falls back to the local thread); on a scheduler you
run yourself, its own ``distributed.scheduler.allowed-failures`` applies (Dask retries silently up to
that many times before the caller sees the failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client


def import_distributed() -> Any:
    """The ``distributed`` module, or a ``ConfigError`` that says which extra installs it.

    Examples:
        >>> import_distributed().__name__
        'distributed'
    """
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(
            "Dask needs its distributed scheduler: pip install 'dualscope[dask]' (or dask[distributed])"
        ) from exc
    return distributed


@contextmanager
def dask_client(scheduler: str | None, workers: int, *, connect_timeout_s: float = 20.0) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a new loopback ``LocalCluster`` of ``workers`` processes.

    Each local worker has one thread (one task at a time). Everything is closed on exit.

    Args:
        scheduler: ``tcp://HOST:8786``, or None for a loopback LocalCluster.
        workers: processes of the LocalCluster (ignored with a scheduler).
        connect_timeout_s: seconds to wait for the scheduler to answer, s.

    Yields:
        The client; it and the cluster are closed on exit.

    Raises:
        ConfigError: Dask distributed is not installed (the ``dask`` extra).
        OSError: the scheduler did not answer within ``connect_timeout_s`` (``TimeoutError`` is one).

    Examples:
        >>> with dask_client(None, workers=1) as client:
        ...     print(client.submit(sum, [1, 2, 3]).result())
        6
    """
    distributed = import_distributed()
    import dask

    if scheduler:
        with distributed.Client(scheduler, timeout=f"{connect_timeout_s}s") as client:
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
            # no dashboard; the scheduler's small HTTP server (health, metrics) on a random loopback port
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
