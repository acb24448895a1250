"""readdir-ahead's per-directory-fd stream: the prefetched entries and their bookkeeping."""
from __future__ import annotations

from collections import deque
from typing import Any, Optional

import trio

from ..core.dir_batch import PlusBatch
from ..core.types import DirEntry

DIRENT_COST = 24        # struct fuse_dirent before the name
DIRENTPLUS_COST = 152   # struct fuse_direntplus before the name


def name_cost(name: bytes, plus: bool) -> int:
    """Bytes an entry named ``name`` takes in a READDIR(PLUS) reply (padded as the
    kernel packs it)."""
    return ((DIRENTPLUS_COST if plus else DIRENT_COST) + len(name) + 7) & ~7


def entry_cost(e: DirEntry, plus: bool) -> int:
    """Bytes ``e`` takes in a READDIR(PLUS) reply."""
    return name_cost(e.name, plus)


def fitting(entries: Any, size: int, plus: bool) -> int:
    """How many of ``entries``, from the first, a reply of ``size`` bytes holds (at least
    one): a child may answer one entry past the budget, which the bridge then drops.
    An unread PlusBatch is measured from its name column (no DirEntry made, so the
    bridge keeps its columnar path for the reply)."""
    names = (entries.entry_names() if type(entries) is PlusBatch and entries.unread()
             else [e.name for e in entries])
    total = 0
    for k, name in enumerate(names):
        total += name_cost(name, plus)
        if total > size and k:
            return k
    return len(names)


def last_cookie(entries: Any) -> int:
    """The cookie of the last of ``entries`` (not empty), read from the column of an
    unread PlusBatch."""
    if type(entries) is PlusBatch and entries.unread():
        return entries.last_off()
    return entries[-1].off


class Stream:
    """The prefetched part of one open directory's stream.

    ``pos`` is the offset (cookie) the next entry handed out follows; ``fetch_at`` is the
    offset the next background read starts at (the cookie of the last buffered entry).
    ``gen`` changes whenever the buffer is discarded: a background read that was started
    before that drops what it got.  ``touched`` holds the inodes changed while a
    background read is under way (their entries in its reply may predate the change)."""

    def __init__(self, fd: Any, plus: bool, pos: int) -> None:
        self.fd = fd
        self.plus = plus
        self.pos = pos
        self.fetch_at = pos
        self.entries: deque[DirEntry] = deque()
        self.bytes = 0
        self.eof = False
        self.error: Optional[BaseException] = None
        self.filling = False
        self.gen = 0
        self.touched: set[Any] = set()
        self.changed = trio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def push(self, batch: list[DirEntry]) -> None:
        for e in batch:
            self.entries.append(e)
            self.bytes += entry_cost(e, self.plus)
        if batch:
            self.fetch_at = batch[-1].off

    def take(self, size: int, plus: bool) -> list[DirEntry]:
        """Entries for a reply of ``size`` bytes (at least one when any is buffered),
        counted as a READDIRPLUS reply when ``plus``, else as a READDIR one (then the
        entries are handed out without their inode and attributes)."""
        out: list[DirEntry] = []
        budget = size
        while self.entries:
            cost = entry_cost(self.entries[0], plus)
            if out and cost > budget:
                break
            e = self.entries.popleft()
            self.bytes -= entry_cost(e, self.plus)
            budget -= cost
            out.append(e)
        if out:
            self.pos = out[-1].off
        return out

    def discard(self) -> list[DirEntry]:
        """Drop the buffer; reading resumes at ``pos``.  Returns the dropped entries."""
        dropped = list(self.entries)
        self.entries.clear()
        self.bytes = 0
        self.eof = False
        self.error = None
        self.fetch_at = self.pos
        self.gen += 1
        self.wake()
        return dropped

    def holds(self, inode: Any) -> bool:
        if self.fd.inode is inode:
            return True
        return self.plus and any(e.entry is not None and e.entry.inode is inode
                                 for e in self.entries)
