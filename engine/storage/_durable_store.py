"""A Zarr ``LocalStore`` whose writes reach the disk before their names do.

Zarr's ``LocalStore`` writes a key to a temporary file and renames it over the old one, but does
not fsync the temporary file first. A power cut after the rename reached the disk and before the
data did can then leave the key empty or torn (ext4 in writeback mode, XFS and btrfs may order it
so): for ``zarr.json`` that is the whole run's metadata. Here every write is fsynced before the
rename, so a name on disk always holds complete bytes: the old ones or the new ones. The rename
itself is made durable by the writer's fsync of the directory (batched per commit).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import zarr.storage
from zarr.core.buffer import Buffer


def durable_put(path: Path, data: Buffer, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file fsynced before it replaces ``path``.

    Args:
        path: the key's file; missing parent directories are created.
        data: the bytes.
        exclusive: fail with ``FileExistsError`` if ``path`` exists (Zarr's ``set_if_not_exists``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")  # recovery removes leftovers by this suffix
    try:
        with tmp.open("wb") as f:
            f.write(data.as_buffer_like())
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # raises FileExistsError instead of replacing
            tmp.unlink()
        else:
            tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class DurableLocalStore(zarr.storage.LocalStore):
    """``LocalStore`` with ``durable_put`` for every write (see the module's docstring)."""

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key`` (data durable before the name)."""
        await self._durable_set(key, value, exclusive=False)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key`` unless it exists."""
        with contextlib.suppress(FileExistsError):
            await self._durable_set(key, value, exclusive=True)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Blocking ``set``."""
        self._ensure_open_sync()
        self._check_writable()
        durable_put(self.root / key, value)

    async def _durable_set(self, key: str, value: Buffer, *, exclusive: bool) -> None:
        # On Zarr's event loop itself, not one thread-pool task per key as ``LocalStore`` does: a
        # commit writes a chunk of every column (14 keys a block), and the pool's threads then pass
        # the GIL among themselves at every system call. That cost 8 times the futex calls and about
        # a third more CPU per commit, taken from the campaign's thread (decision 0017). A run's
        # writes come from one writer, so there is no concurrency to lose.
        if not self._is_open:
            await self._open()
        self._check_writable()
        durable_put(self.root / key, value, exclusive=exclusive)
