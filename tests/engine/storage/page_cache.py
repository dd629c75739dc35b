"""A model of the page cache: what a power cut leaves of a directory tree, given the fsyncs made so far.

SIGKILL keeps every write (the kernel still holds the page cache and writes it out later); a power
cut keeps only what was made durable. As in SQLite's crash tests, the model wraps the process's
``os.fsync`` and ``os.fdatasync``: at each call it records what becomes durable (a file's bytes,
by inode; a directory's entries, by inode) and, before the real call, lets the test take a
*crash image*, the tree as a power cut at that moment could leave it:

* ``strict``: every write not yet fsynced is dropped. Files hold their bytes as of their last
  fsync (empty if never fsynced); directories hold their entries as of their last fsync (a rename
  or a new file not followed by an fsync of its directory never happened).
* ``reordered``: the file system may also have written some metadata and data on its own, in any
  order, as ext4 (writeback), XFS and btrfs may: each directory holds either its last fsynced
  entries or its current ones; a file never fsynced is empty, torn (a prefix) or whole; an
  appended file keeps its fsynced bytes plus any prefix of what was appended since.

Durable states change only at fsyncs, so crash images taken just before each fsync cover every
moment of the run (in ``strict``); ``reordered`` draws its choices from the test's seeded RNG.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

Entries = dict[str, tuple[int, bool]]
"""A directory's entries: name → (inode, is a directory)."""


def _entries(path: Path) -> Entries:
    return {e.name: (e.inode(), e.is_dir(follow_symlinks=False)) for e in os.scandir(path)}


@dataclass
class PageCache:
    """Tracks what is durable under ``root`` (an empty directory when the model starts)."""

    root: Path
    pins: Path
    """A directory beside ``root`` (same file system) holding a hard link to every file seen, so that no
    inode number is freed and reused while a durable directory entry may still name it."""
    data: dict[int, bytes] = field(default_factory=dict)
    """Per file inode: its bytes as of its last fsync."""
    listings: dict[int, Entries] = field(default_factory=dict)
    """Per directory inode: its entries as of its last fsync."""

    def __post_init__(self) -> None:
        self.pins.mkdir(exist_ok=True)
        self.listings[os.stat(self.root).st_ino] = _entries(self.root)

    def record(self, fd: int) -> None:
        """What ``fsync(fd)`` makes durable."""
        st = os.fstat(fd)
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if stat.S_ISDIR(st.st_mode):
            listing = _entries(path)
            self.listings[st.st_ino] = listing
            for name, (ino, is_dir) in listing.items():
                if not is_dir:
                    self._pin(path / name, ino)
        elif stat.S_ISREG(st.st_mode) and os.stat(path).st_ino == st.st_ino:
            self._pin(path, st.st_ino)
            self.data[st.st_ino] = path.read_bytes()

    def _pin(self, path: Path, inode: int) -> None:
        pin = self.pins / str(inode)
        if not pin.exists():
            with contextlib.suppress(FileNotFoundError):  # renamed or removed since: nothing to pin
                os.link(path, pin)

    def crash_image(self, dest: Path, mode: str, rng: np.random.Generator) -> None:
        """Write into ``dest`` (absent) the tree a power cut now could leave (``strict`` or ``reordered``)."""
        self._copy(self.root, os.stat(self.root).st_ino, dest, mode, rng)

    def _copy(self, here: Path, inode: int, dest: Path, mode: str, rng: np.random.Generator) -> None:
        dest.mkdir()
        listing = self.listings.get(inode, {})
        if mode == "reordered" and here.is_dir() and rng.random() < 0.5:
            listing = _entries(here)  # the directory's current entries reached the disk on their own
        for name, (ino, is_dir) in listing.items():
            if is_dir:
                self._copy(here / name, ino, dest / name, mode, rng)
            else:
                (dest / name).write_bytes(self._file_bytes(here / name, ino, mode, rng))

    def _file_bytes(self, path: Path, inode: int, mode: str, rng: np.random.Generator) -> bytes:
        durable = self.data.get(inode, b"")
        if mode == "strict":
            return durable
        try:
            now = path.read_bytes() if os.stat(path).st_ino == inode else durable
        except FileNotFoundError:  # the name is gone now: only its durable bytes remain
            return durable
        if now == durable:
            return durable
        base = durable if now.startswith(durable) else b""  # appended since the fsync, or rewritten
        cut = int(rng.integers(len(base), len(now) + 1))  # some prefix of the unsynced bytes was written
        return now[:cut]


@contextmanager
def page_cache(
    root: Path, monkeypatch: pytest.MonkeyPatch, at_sync: Callable[[PageCache], None]
) -> Iterator[PageCache]:
    """Model the page cache under ``root``; ``at_sync`` is called before every fsync (a crash point)."""
    cache = PageCache(root, root.parent / f"{root.name}-pins")
    real_fsync, real_fdatasync = os.fsync, os.fdatasync
    one_at_a_time = threading.Lock()  # zarr writes chunks from worker threads: fsyncs may race

    def wrap(real: Callable[[int], None]) -> Callable[[int], None]:
        def synced(fd: int) -> None:
            with one_at_a_time:
                at_sync(cache)
                real(fd)
                cache.record(fd)

        return synced

    monkeypatch.setattr(os, "fsync", wrap(real_fsync))
    monkeypatch.setattr(os, "fdatasync", wrap(real_fdatasync))
    try:
        yield cache
    finally:
        monkeypatch.setattr(os, "fsync", real_fsync)
        monkeypatch.setattr(os, "fdatasync", real_fdatasync)
