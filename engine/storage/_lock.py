"""The writer lock: one process writes a run; readers and repair can tell whether it is alive.

The lock is an ``flock`` on ``journal/writer.lock``. The kernel releases it when the process
exits for any reason (SIGKILL and power loss included), so a stale lock cannot outlive its
writer. The file holds who took it (process id, host, time) for the messages.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from engine.errors import RunInUse
from engine.protocols import Clock
from engine.storage._layout import LOCK_PATH

_TRIES = 50
"""Attempts to take the lock while readers probe it (``live_writer`` holds it shared for a moment)."""


class WriterLock:
    """The exclusive writer lock of the run at ``root``; ``acquire`` raises ``RunInUse`` if taken."""

    def __init__(self, fd: int):
        self._fd = fd

    @classmethod
    def acquire(cls, root: Path, clock: Clock) -> WriterLock:
        """Take the lock without waiting.

        Raises:
            RunInUse: another live process holds it (the message names it).
        """
        path = root.joinpath(*LOCK_PATH)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        for _ in range(_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if live_writer(root) is not None:  # a writer, not a reader's brief shared probe
                    os.close(fd)
                    raise RunInUse(in_use_message(root)) from None
        else:
            os.close(fd)
            raise RunInUse(in_use_message(root))
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": clock.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        return cls(fd)

    def close(self) -> None:
        """Release the lock; idempotent."""
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1


def live_writer(root: Path) -> dict[str, Any] | None:
    """Who holds the writer lock of the run at ``root`` (``pid``, ``host``, ``since``), or ``None`` if nobody.

    Args:
        root: the run directory.

    Returns:
        The holder's record, or ``None`` when no live process writes the run.

    Examples:
        >>> live_writer(run_path) is None  # a closed run: nobody writes it
        True
    """
    path = root.joinpath(*LOCK_PATH)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner: dict[str, Any] = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                owner = {}
            return owner
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def in_use_message(root: Path) -> str:
    """The message for a run that a live process is writing."""
    owner = live_writer(root) or {}
    who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}"
    return (
        f"{root} is being written by {who} (a running campaign); stop it first "
        f"(`dualscope ctl {root} stop`, or Ctrl-C in its terminal), then try again"
    )
