"""performance/io-cache's memory: cached pages of every inode under one size limit.

Each cached file has a :class:`CachedFile` (its pages, the attributes they were read
under, a generation number).  One :class:`PageStore` holds every page in least recently
used order, one LRU list per priority; when the total passes ``limit`` the oldest pages
of the lowest priority go first.

The generation number makes fills safe against concurrent changes: a reader notes
``gen`` before winding its read and stores what it got only if ``gen`` is unchanged
afterwards; every invalidation increments it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional


class CachedFile:
    """The cache of one inode."""
    __slots__ = ("ino", "pages", "gen", "mtime_ns", "size", "checked_at", "priority")

    def __init__(self, ino: int, priority: int) -> None:
        self.ino = ino
        self.pages: dict[int, bytes] = {}     # page index -> data (short = end of file)
        self.gen = 0
        self.mtime_ns: Optional[int] = None   # attributes the pages belong to
        self.size: Optional[int] = None
        self.checked_at = float("-inf")       # when they were last confirmed (monotonic)
        self.priority = priority

    def matches(self, attr: Any) -> bool:
        return self.mtime_ns == attr.mtime_ns and self.size == attr.size


class PageStore:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lru: dict[int, OrderedDict] = {}    # priority -> (file, index) -> None
        self.hits = self.misses = self.evictions = 0

    def get(self, f: CachedFile, index: int) -> Optional[bytes]:
        data = f.pages.get(index)
        if data is not None:
            self._lru[f.priority].move_to_end((f, index))
        return data

    def put(self, f: CachedFile, index: int, data: bytes) -> None:
        if f.priority <= 0 or len(data) > self.limit:
            return
        old = f.pages.get(index)
        if old is not None:
            self.used -= len(old)
        f.pages[index] = data
        self.used += len(data)
        lru = self._lru.setdefault(f.priority, OrderedDict())
        lru[(f, index)] = None
        lru.move_to_end((f, index))
        self._shrink()

    def drop(self, f: CachedFile) -> None:
        """Forget every page of ``f`` and move to a new generation."""
        f.gen += 1
        if not f.pages:
            return
        lru = self._lru.get(f.priority)
        for index, data in f.pages.items():
            self.used -= len(data)
            if lru is not None:
                lru.pop((f, index), None)
        f.pages.clear()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._shrink()

    def _shrink(self) -> None:
        while self.used > self.limit:
            prio = min(p for p, lru in self._lru.items() if lru)
            (f, index), _ = self._lru[prio].popitem(last=False)
            self.used -= len(f.pages.pop(index))
            self.evictions += 1

    def pages(self) -> int:
        return sum(len(lru) for lru in self._lru.values())
