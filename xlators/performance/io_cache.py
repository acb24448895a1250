"""performance/io-cache: keep file data in memory, in pages, per inode.

    volume ioc
        type performance/io-cache
        option cache-size 32MB
        option cache-timeout 1
        option priority *.db:2,*.log:0
        option max-file-size 64MB
        subvolumes posix
    end-volume

Reads are served in pages of 128 KiB (GlusterFS's IOC_PAGE_SIZE) from a cache shared by
every fd of the inode; a missing page is read from the child (one read for a run of
missing pages) and kept.  All files share ``cache-size``; past it the least recently used
pages of the lowest ``priority`` are dropped first, and files of priority 0 are never
cached.  Files smaller than ``min-file-size`` or larger than ``max-file-size`` (0: no
limit), O_DIRECT fds and ``pass-through on`` read through.

Coherence (what makes a cached page go away):

- its own changes, through *any* fd of the file: every fop that may change the file's
  contents (writev, a setattr that changes the size, fallocate and its discard/zerofill
  forms, copy_file_range into the file, create, an open with O_TRUNC: read from the fop
  table, :mod:`xlators.performance.data_changes`) drops every page of the inode (an
  O_APPEND write lands where the storage says, so no range is trusted);
- an upcall from below (``InvalidateInode`` from storage/posix ``watch-brick``, or any
  translator): data invalidations drop the pages at once, attribute-only ones force a
  revalidation; the message then goes on up to the bridge;
- revalidation: the pages belong to the mtime and size they were read under.  A lookup,
  getattr, chmod or chown reply that disagrees drops them, and so does a utimes (it
  replaces the mtime a change below would show); an open forces the next read to check; and a read
  more than ``cache-timeout`` seconds after the last check asks the child (getattr) and
  drops the pages if the file changed.  So a change made behind xlfs's back without an
  upcall is seen within ``cache-timeout`` seconds (0: every read checks); with
  ``watch-brick on`` it is seen as soon as the upcall arrives (posix coalesces inotify
  events for 10 ms).

A fill is stored only if no invalidation happened while its read was in flight (a
generation number per inode), so a read racing a write never leaves old data behind.
"""
from __future__ import annotations

import os
import stat
import time
from typing import Any, Optional

from ..core.events import Event
from ..core.options import Option, Opts
from ..core.translator import Translator
from ..core.upcall import InvalidateInode
from .data_changes import DataChangeInvalidation
from .io_cache_pages import CachedFile, PageStore
from .priority import DEFAULT_PRIORITY, parse_priority, priority_of

PAGE_SIZE = 128 * 1024
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_NO_CACHE = "no-cache"


class IoCache(DataChangeInvalidation, Translator):
    """performance/io-cache: cache file data in pages, revalidated by mtime and size."""
    type = "performance/io-cache"
    forget_needs_context = True  # its pages of a file hang off inode.ctx[self]
    children_range = (1, 1)
    needs_flush = False
    options = (
        Option.size("cache-size", default="32MB", min=4 << 20, max=32 << 30,
                    description="Total memory for cached pages of all files."),
        Option.int("cache-timeout", default=1, min=0, max=60,
                   aliases=("force-revalidate-timeout",),
                   description="Seconds a file's pages are trusted before the next read "
                               "checks the file's mtime and size with the child (0: every "
                               "read checks)."),
        Option.str("priority", default="", parser=parse_priority,
                   description="PATTERN:PRIORITY,... by file name (shell wildcards); other "
                               "files have priority 1. Lower priorities are dropped first "
                               "when the cache is full; 0 means never cache."),
        Option.size("min-file-size", default="0",
                    description="Files smaller than this are not cached."),
        Option.size("max-file-size", default="0",
                    description="Files larger than this are not cached (0: no limit)."),
        Option.bool("pass-through", default=False,
                    description="Turn the translator off: every fop goes to the child."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.store = PageStore(self.opts.cache_size)
        self._check_sizes(self.opts)

    def _check_sizes(self, o: Opts) -> None:
        if o.max_file_size and o.min_file_size > o.max_file_size:
            raise ValueError(f"volume '{self.name}': min-file-size ({o.min_file_size}) is "
                             f"more than max-file-size ({o.max_file_size})")

    def reconfigured(self, old: Opts) -> None:
        try:
            self._check_sizes(self.opts)
        except ValueError:
            self.opts = old
            raise
        self.store.set_limit(self.opts.cache_size)

    # -- per-inode state --------------------------------------------------------------
    def _file(self, inode: Any, name: Optional[bytes] = None) -> CachedFile:
        f = inode.ctx.get(self)
        if f is None:
            prio = priority_of(self.opts.priority, name) if name is not None \
                else DEFAULT_PRIORITY
            f = inode.ctx[self] = CachedFile(inode.ino, prio)
        return f

    def _invalidate(self, inode: Any) -> None:
        f = inode.ctx.get(self)
        if f is not None:
            self.store.drop(f)
            f.mtime_ns = f.size = None

    _data_changed = _invalidate

    def _revalidate_with(self, inode: Any, attr: Any) -> None:
        """Attributes seen in a reply: pages read under other attributes are dropped."""
        f = inode.ctx.get(self)
        if f is None or f.mtime_ns is None:
            return
        if f.matches(attr):
            f.checked_at = time.monotonic()
        else:
            self.store.drop(f)
            f.mtime_ns = f.size = None

    # -- reads --------------------------------------------------------------------------
    def _cacheable(self, fd: Any, f: CachedFile) -> bool:
        o = self.opts
        if f.priority <= 0 or fd.ctx.get(self) == _NO_CACHE or f.size is None:
            return False
        return f.size >= o.min_file_size and not (o.max_file_size and f.size > o.max_file_size)

    async def _validate(self, frame: Any, fd: Any, f: CachedFile) -> None:
        now = time.monotonic()
        if f.mtime_ns is not None and now - f.checked_at < self.opts.cache_timeout:
            return
        gen = f.gen
        attr = await self.child.getattr(frame, fd.inode, fd)
        if f.gen != gen:            # changed while we asked: let the next read check
            return
        if f.mtime_ns is not None and not f.matches(attr):
            self.store.drop(f)
        f.mtime_ns, f.size, f.checked_at = attr.mtime_ns, attr.size, now

    async def readv(self, frame, fd, size, offset, flags=None):
        if self.opts.pass_through or size <= 0 or fd.inode.ctx.get(self) is None:
            return await self.child.readv(frame, fd, size, offset, flags)
        f = fd.inode.ctx[self]
        if f.priority <= 0 or fd.ctx.get(self) == _NO_CACHE:
            return await self.child.readv(frame, fd, size, offset, flags)
        await self._validate(frame, fd, f)
        if not self._cacheable(fd, f):
            return await self.child.readv(frame, fd, size, offset, flags)
        first, last = offset // PAGE_SIZE, (offset + size - 1) // PAGE_SIZE
        pages: dict[int, bytes] = {}
        missing = None
        for i in range(first, last + 1):
            data = self.store.get(f, i)
            if data is None:
                missing = i
                break
            pages[i] = data
            if len(data) < PAGE_SIZE:           # end of file
                break
        if missing is not None:
            self.store.misses += 1
            gen = f.gen
            start = missing * PAGE_SIZE
            got = await self.child.readv(frame, fd, (last + 1) * PAGE_SIZE - start, start,
                                         flags)
            keep = f.gen == gen
            for k, i in enumerate(range(missing, last + 1)):
                data = bytes(got[k * PAGE_SIZE:(k + 1) * PAGE_SIZE])
                pages[i] = data
                if keep:
                    self.store.put(f, i, data)
                if len(data) < PAGE_SIZE:
                    break
        else:
            self.store.hits += 1
        out = bytearray()
        for i in range(first, last + 1):
            data = pages.get(i)
            if data is None:
                break
            out += data[offset - i * PAGE_SIZE if i == first else 0:]
            if len(data) < PAGE_SIZE:
                break
        return bytes(out[:size])

    # -- revalidation points ----------------------------------------------------------
    async def lookup(self, frame, loc):
        entry = await self.child.lookup(frame, loc)
        if not self.opts.pass_through and stat.S_ISREG(entry.attr.mode):
            if entry.inode.ctx.get(self) is None:
                self._file(entry.inode, loc.name)
            else:
                self._revalidate_with(entry.inode, entry.attr)
        return entry

    async def open(self, frame, inode, flags, fd):
        result = await super().open(frame, inode, flags, fd)    # O_TRUNC: pages dropped
        f = self._file(inode)
        f.checked_at = float("-inf")            # the next read checks mtime and size
        if flags & _O_DIRECT:
            fd.ctx[self] = _NO_CACHE
        return result

    async def create(self, frame, loc, flags, mode, umask, fd):
        entry = await super().create(frame, loc, flags, mode, umask, fd)
        self._file(entry.inode, loc.name)
        if flags & _O_DIRECT:
            fd.ctx[self] = _NO_CACHE
        return entry

    async def getattr(self, frame, inode, fd=None):
        attr = await self.child.getattr(frame, inode, fd)
        self._revalidate_with(inode, attr)
        return attr

    # -- own changes: every page goes (DataChangeInvalidation) ---------------------------
    async def setattr(self, frame, inode, changes, fd=None):
        attr = await super().setattr(frame, inode, changes, fd)
        if changes.size is None:
            if changes.mtime_ns is not None:
                # A utimes changes no data, but it replaces the mtime the pages are
                # checked by: a change made below before it could no longer be seen.
                self._invalidate(inode)
            else:                               # chmod, chown, atime: the mtime stays
                self._revalidate_with(inode, attr)
        return attr

    async def forget(self, frame, inode):
        f = inode.ctx.pop(self, None)
        if f is not None:
            self.store.drop(f)
        return await self.child.forget(frame, inode)

    # -- upcalls from below --------------------------------------------------------------
    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        if event is Event.UPCALL and isinstance(data, InvalidateInode):
            f = data.inode.ctx.get(self) if data.inode is not None else None
            if f is not None:
                if data.offset < 0:
                    f.checked_at = float("-inf")
                else:
                    self.store.drop(f)
                    f.mtime_ns = f.size = None
        super().notify(event, data, source)

    def dump(self) -> dict[str, Any]:
        s = self.store
        return {"cache-size": s.limit, "cache-used": s.used, "pages": s.pages(),
                "hits": s.hits, "misses": s.misses, "evictions": s.evictions,
                "page-size": PAGE_SIZE}
