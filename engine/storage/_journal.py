"""An append-only, checksummed write-ahead journal.

Each entry is one ``os.write`` of::

    magic "DSJ1" | payload length u32 | crc32(payload) u32 | payload
    payload = meta length u32 | meta (UTF-8 JSON) | raw array bytes...

``meta["arrays"]`` lists ``[name, dtype, shape]`` of the arrays that follow, in
order. Reading stops at the first entry that is short or fails its checksum (a
torn write at a crash); everything before it is intact.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.storage._group_sync import GroupSync

MAGIC = b"DSJ1"
_HEADER = struct.Struct("<4sII")
_META_LEN = struct.Struct("<I")
_ALLOWED_KINDS = np.typecodes["AllInteger"] + np.typecodes["AllFloat"] + "?"


@dataclass(frozen=True)
class JournalEntry:
    """One decoded journal entry: JSON ``meta`` and named arrays."""

    meta: dict[str, Any]
    arrays: dict[str, NDArray[Any]]


def encode_entry(meta: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> bytes:
    """Encode one entry to bytes (pure)."""
    specs, buffers = [], []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.char not in _ALLOWED_KINDS:
            raise TypeError(f"journal array {name!r} has unsupported dtype {a.dtype}")
        specs.append((name, a.dtype.str, a.shape))
        buffers.append(a.tobytes())
    body = json.dumps(meta, separators=(",", ":"))
    meta_bytes = f'{body[:-1]}{"," if len(body) > 2 else ""}"arrays":{_specs_json(tuple(specs))}}}'.encode()
    payload = b"".join([_META_LEN.pack(len(meta_bytes)), meta_bytes, *buffers])
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@functools.lru_cache(maxsize=64)
def _specs_json(specs: tuple[tuple[str, str, tuple[int, ...]], ...]) -> str:
    """The ``arrays`` list of an entry's meta as JSON (the same for every row of a run: kept)."""
    return json.dumps([[name, dtype, list(shape)] for name, dtype, shape in specs], separators=(",", ":"))


def decode_entries(data: bytes) -> tuple[list[JournalEntry], int]:
    """Decode entries from ``data``; return them and the byte length of the valid prefix."""
    entries: list[JournalEntry] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if magic != MAGIC or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        (meta_len,) = _META_LEN.unpack_from(payload, 0)
        meta = json.loads(payload[_META_LEN.size : _META_LEN.size + meta_len])
        offset = _META_LEN.size + meta_len
        arrays: dict[str, NDArray[Any]] = {}
        for name, dtype, shape in meta.pop("arrays"):
            dt = np.dtype(dtype)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            arrays[name] = np.frombuffer(payload, dtype=dt, count=nbytes // dt.itemsize, offset=offset).reshape(shape)
            offset += nbytes
        entries.append(JournalEntry(meta, arrays))
        pos = end
    return entries, pos


def committing_path(path: Path) -> Path:
    """Where a journal's previous segment waits while its rows are committed to Zarr (``rotate``)."""
    return path.with_name(f"{path.stem}-committing{path.suffix}")


def read_journal(path: Path) -> tuple[list[JournalEntry], int, int]:
    """Read a journal: ``(entries, valid_bytes, total_bytes)``; a missing file is empty.

    The entries of a segment still being committed (``committing_path``, always complete) come
    first; the byte counts are those of ``path``, the segment being appended to.
    """
    earlier: list[JournalEntry] = []
    with contextlib.suppress(FileNotFoundError):
        earlier, _ = decode_entries(committing_path(path).read_bytes())
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return earlier, 0, 0
    entries, valid = decode_entries(data)
    return earlier + entries, valid, len(data)


def fsync_dir(path: Path) -> None:
    """Fsync a directory so that renames and new files in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Appends entries to ``path``; ``append`` with ``sync=True`` returns only once durable.

    With ``group_commit()`` on, ``append(sync=True)`` returns once the entry is written (safe from a
    process crash) and a syncer thread makes it durable (safe from a power cut) within about
    ``group_delay_s`` and one ``fdatasync``; ``durable`` says which entries are.
    """

    group_delay_s = 0.005
    """Group commit: how long the syncer gathers appends before each ``fdatasync`` (s). Longer syncs
    less often (each costs CPU in the guest kernel, beside the disk's time) and leaves more rows
    exposed to a power cut, which ``dualscope resume`` fetches back from the instrument."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._syncer: GroupSync | None = None
        self._appended = 0
        if not existed:
            fsync_dir(path.parent)

    def group_commit(self) -> None:
        """From now on, sync on a thread of its own (see the class docstring); idempotent."""
        if self._syncer is None:
            self._syncer = GroupSync(self._fd, delay_s=self.group_delay_s)

    def append(self, meta: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]], *, sync: bool) -> int:
        """Append one entry; with ``sync`` it is on stable storage when this returns (or soon, grouped).

        Returns:
            the entry's sequence number (for ``durable``).
        """
        data = encode_entry(meta, arrays)
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(f"short write to journal {self.path}: {written} of {len(data)} bytes")
        if self._syncer is not None:
            self._appended = self._syncer.wrote()
        else:
            self._appended += 1
            if sync:
                os.fdatasync(self._fd)
        return self._appended

    def durable(self, seq: int) -> bool:
        """Whether entry ``seq`` is on stable storage (always, for one appended with ``sync`` without group commit)."""
        return self._syncer is None or self._syncer.synced >= seq

    def wait_durable(self) -> None:
        """Block until every entry appended so far is on stable storage."""
        if self._syncer is not None:
            self._syncer.wait()
        else:
            os.fdatasync(self._fd)

    def rotate(self) -> None:
        """Start a new segment: this one, made durable, becomes ``committing_path`` (which must be gone).

        The writer then commits that segment's rows to Zarr on another thread and calls
        ``drop_committing``, while new entries go to the new segment.
        """
        committing = committing_path(self.path)
        if committing.exists():
            raise OSError(f"{committing} still exists: the last segment's rows are not committed yet")
        if self._syncer is not None:
            self._syncer.close()
        else:
            os.fdatasync(self._fd)
        os.rename(self.path, committing)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fsync_dir(self.path.parent)  # both names are durable before any entry goes to the new one
        os.close(self._fd)
        self._fd = fd
        if self._syncer is not None:
            self._syncer = GroupSync(self._fd, delay_s=self.group_delay_s)
        self._appended = 0

    def drop_committing(self) -> None:
        """Remove the segment ``rotate`` set aside, once its rows are committed (durably); idempotent."""
        committing = committing_path(self.path)
        if committing.exists():
            committing.unlink()
            fsync_dir(self.path.parent)

    def truncate(self, size: int = 0) -> None:
        """Cut the journal to ``size`` bytes (0 once its entries are committed) and make that durable."""
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        if self._syncer is not None:
            self._syncer.all_durable()

    def close(self) -> None:
        """Make everything durable, stop the syncer and close the file descriptor; idempotent."""
        if self._fd < 0:
            return
        try:
            if self._syncer is not None:
                self._syncer.close()
        finally:
            os.close(self._fd)
            self._fd = -1
