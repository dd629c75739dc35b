"""Crash-safe Zarr runs: a write-ahead journal in front of chunk-sized Zarr appends.

See :mod:`engine.storage.layout` for what a run holds and
:mod:`engine.storage.writer` for the commit protocol.
"""

from engine.storage.reader import RunData, read_run
from engine.storage.recovery import RecoveryReport, recover_run
from engine.storage.writer import RunWriter

__all__ = ["RecoveryReport", "RunData", "RunWriter", "read_run", "recover_run"]
