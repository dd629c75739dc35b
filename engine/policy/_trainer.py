"""Where model refits run (inline, on a background thread, on a Dask worker) and on which torch device.

Inline is deterministic (tests and benchmarks); the Dask trainer is in ``engine.policy._dask_trainer``.

A policy submits a refit job (a function of a copy of the data, returning an immutable snapshot)
and polls for the latest finished result; with ``ThreadTrainer`` it never waits for one, so
the instrument never waits for training. A job that raises leaves the previous snapshot in force;
the failure is counted and its message kept. The job must not share mutable state with the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import torch

from engine.errors import ConfigError

T = TypeVar("T")


def resolve_device(request: str) -> torch.device:
    """The torch device a ``[training] device`` value names, on the machine this runs on.

    Called where the refit runs (the loop's machine, or a Dask worker), so ``auto`` means "this
    worker's GPU if it has one".

    Args:
        request: ``auto`` (CUDA if available here, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device.

    Raises:
        ConfigError: CUDA asked for on a machine without it (the machine named).

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(request)
    if device.type == "cuda" and not torch.cuda.is_available():
        import socket

        raise ConfigError(
            f"training device {request!r}, but {socket.gethostname()} has no CUDA device; use device = 'auto' or 'cpu'"
        )
    return device


class Trainer(Protocol[T]):
    """Runs refit jobs and hands back the latest finished result.

    Examples:
        >>> trainer: Trainer[int] = InlineTrainer()  # or ThreadTrainer(): the same protocol
        >>> trainer.submit(lambda: 42), trainer.poll(), trainer.poll()
        (True, 42, None)
    """

    def submit(self, job: Callable[[], T]) -> bool:
        """Start ``job`` unless one is running; returns whether it was started."""
        ...

    def poll(self) -> T | None:
        """The latest finished result not yet returned, or ``None``."""
        ...

    @property
    def failures(self) -> list[str]:
        """Messages of the jobs that raised."""
        ...

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the running job (if any) finishes."""
        ...

    def close(self) -> None:
        """Wait for a running job and stop; idempotent."""
        ...


class InlineTrainer(Generic[T]):
    """Runs each job at once, in the caller's thread: reproducible, and the caller waits.

    Examples:
        >>> trainer = InlineTrainer()
        >>> trainer.submit(lambda: 1 / 0)  # a failing job is recorded, not raised
        True
        >>> trainer.poll() is None, len(trainer.failures)
        (True, 1)
    """

    def __init__(self) -> None:
        self._result: T | None = None
        self._failures: list[str] = []

    def submit(self, job: Callable[[], T]) -> bool:
        """Run ``job`` now; always started."""
        try:
            self._result = job()
        except Exception as exc:  # a failed refit keeps the previous snapshot
            self._failures.append(f"{type(exc).__name__}: {exc}")
        return True

    def poll(self) -> T | None:
        """The result of the last successful job, once."""
        result, self._result = self._result, None
        return result

    @property
    def failures(self) -> list[str]:
        """Messages of the jobs that raised."""
        return list(self._failures)

    def wait(self, timeout_s: float | None = None) -> None:
        """Nothing runs in the background: jobs are done when ``submit`` returns."""

    def close(self) -> None:
        """Nothing to stop."""


class ThreadTrainer(Generic[T]):
    """Runs one job at a time on a daemon thread; ``submit`` while busy is refused, never queued.

    Args:
        name: the thread's name.

    Examples:
        >>> trainer = ThreadTrainer()
        >>> trainer.submit(lambda: sum(range(10)))
        True
        >>> trainer.wait(10.0)
        >>> trainer.poll()
        45
        >>> trainer.close()
    """

    def __init__(self, name: str = "dualscope-trainer") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._result: T | None = None
        self._failures: list[str] = []

    def submit(self, job: Callable[[], T]) -> bool:
        """Start ``job`` on a new worker thread unless one is still running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._thread = threading.Thread(target=self._run, args=(job,), name=self._name, daemon=True)
            self._thread.start()
        return True

    def _run(self, job: Callable[[], T]) -> None:
        try:
            result = job()
        except Exception as exc:  # a failed refit keeps the previous snapshot
            with self._lock:
                self._failures.append(f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            self._result = result

    def poll(self) -> T | None:
        """The latest finished result, once."""
        with self._lock:
            result, self._result = self._result, None
        return result

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the running job (if any) finishes (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    @property
    def failures(self) -> list[str]:
        """Messages of the jobs that raised."""
        with self._lock:
            return list(self._failures)

    def close(self) -> None:
        """Wait for the running job, then drop it."""
        self.wait()
