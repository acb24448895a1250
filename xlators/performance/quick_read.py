"""performance/quick-read: read small files whole at lookup, serve their reads from memory.

    volume qr
        type performance/quick-read
        option max-file-size 64KB
        option cache-size 128MB
        option cache-timeout 1
        option cache-invalidation off
        subvolumes posix
    end-volume

When a lookup finds a regular file of at most ``max-file-size`` bytes whose content is
not cached (or was cached under another mtime or size, or ctime with
``ctime-invalidation on``), quick-read reads the whole file from the child right away
(open, one read, release, with the caller's credentials; a failure just means "not
cached").  GlusterFS asks the brick to put the content in the lookup reply; xlfs's lookup
has no such extra, so the content is read by the translator itself.

Reads of a cached file are answered from memory while the content is *fresh*:

- ``cache-invalidation off`` (default): for ``cache-timeout`` seconds after it was read or
  last confirmed by a lookup reply with the same attributes;
- ``cache-invalidation on``: until something says it changed (no timeout).

The content is dropped by any change of it through the mount (writev, any setattr, fallocate, copy_file_range into the file, create, an open with O_TRUNC, through
any fd: read from the fop table, :mod:`xlators.performance.data_changes`), by an
``InvalidateInode`` upcall from below (storage/posix ``watch-brick``), by a lookup reply whose
attributes differ, and by ``forget``.  A file read while any of these happens is not
cached (a generation number per inode).  So a change made directly in the brick is seen
at once with ``watch-brick on``, and otherwise within ``cache-timeout`` seconds (with
``cache-invalidation on`` and no upcalls: at the next lookup that sees new attributes).

All contents share ``cache-size``; past it the least recently used go first.
O_DIRECT and write-only fds and ``pass-through on`` go to the child.
"""
from __future__ import annotations

import os
import stat
import time
from collections import OrderedDict
from typing import Any, Optional

from ..core.events import Event
from ..core.inode import Fd
from ..core.options import Option, Opts
from ..core.translator import Translator
from ..core.upcall import InvalidateInode
from .data_changes import DataChangeInvalidation

_O_DIRECT = getattr(os, "O_DIRECT", 0)


class _Content:
    """What quick-read knows about one inode."""
    __slots__ = ("ino", "data", "mtime_ns", "ctime_ns", "size", "fresh_at", "gen")

    def __init__(self, ino: int) -> None:
        self.ino = ino
        self.data: Optional[bytes] = None
        self.mtime_ns = self.ctime_ns = self.size = -1
        self.fresh_at = float("-inf")
        self.gen = 0


class QuickRead(DataChangeInvalidation, Translator):
    """performance/quick-read: small whole files read at lookup and served from memory."""
    type = "performance/quick-read"
    forget_needs_context = True  # what it caches of a file is inode.ctx[self]
    children_range = (1, 1)
    needs_flush = False
    options = (
        Option.size("max-file-size", default="64KB", min=0, max=1 << 20,
                    description="Largest file whose content is cached."),
        Option.size("cache-size", default="128MB", min=0, max=32 << 30,
                    aliases=("quick-read-cache-size",),
                    description="Total memory for cached file contents."),
        Option.int("cache-timeout", default=1, min=1, max=60,
                   aliases=("quick-read-cache-timeout",),
                   description="Seconds a content is served after it was read or confirmed "
                               "by a lookup (with cache-invalidation off)."),
        Option.bool("cache-invalidation", default=False,
                    aliases=("quick-read-cache-invalidation",),
                    description="Trust contents until an upcall or a change says otherwise "
                                "(no timeout): needs upcalls from below, e.g. storage/posix "
                                "watch-brick."),
        Option.bool("ctime-invalidation", default=False,
                    description="Also compare ctime (not only mtime and size) to decide "
                                "that a cached content is out of date."),
        Option.bool("pass-through", default=False,
                    description="Turn the translator off: every fop goes to the child."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._lru: OrderedDict[_Content, None] = OrderedDict()
        self.used = 0
        self.stats = {"hits": 0, "misses": 0, "fetches": 0, "evictions": 0}

    def reconfigured(self, old: Opts) -> None:
        self._shrink()

    # -- the cache ----------------------------------------------------------------------
    def _drop(self, c: Optional[_Content]) -> None:
        if c is None:
            return
        c.gen += 1
        if c.data is not None:
            self.used -= len(c.data)
            c.data = None
            self._lru.pop(c, None)

    def _drop_inode(self, inode: Any) -> None:
        self._drop(inode.ctx.get(self))

    def _store(self, c: _Content, data: bytes, attr: Any) -> None:
        self._drop(c)
        if len(data) > self.opts.cache_size:
            return
        c.data, c.mtime_ns, c.ctime_ns, c.size = data, attr.mtime_ns, attr.ctime_ns, attr.size
        c.fresh_at = time.monotonic()
        self.used += len(data)
        self._lru[c] = None
        self._shrink()

    def _shrink(self) -> None:
        while self.used > self.opts.cache_size and self._lru:
            c, _ = self._lru.popitem(last=False)
            self.used -= len(c.data)
            c.data = None
            c.gen += 1
            self.stats["evictions"] += 1

    def _same(self, c: _Content, attr: Any) -> bool:
        return (c.mtime_ns == attr.mtime_ns and c.size == attr.size
                and (not self.opts.ctime_invalidation or c.ctime_ns == attr.ctime_ns))

    def _fresh(self, c: _Content) -> bool:
        return self.opts.cache_invalidation or \
            time.monotonic() - c.fresh_at < self.opts.cache_timeout

    # -- lookup: confirm or (re)read the content ------------------------------------------
    async def lookup(self, frame, loc):
        entry = await self.child.lookup(frame, loc)
        attr = entry.attr
        if (self.opts.pass_through or not stat.S_ISREG(attr.mode)
                or attr.size > self.opts.max_file_size):
            self._drop_inode(entry.inode)
            return entry
        c = entry.inode.ctx.get(self)
        if c is None:
            c = entry.inode.ctx[self] = _Content(entry.inode.ino)
        if c.data is not None and self._same(c, attr):
            c.fresh_at = time.monotonic()
            self._lru.move_to_end(c)
            return entry
        if attr.size == 0:
            self._store(c, b"", attr)       # nothing to read: spare open, read, release
        else:
            await self._fetch(frame, entry.inode, c, attr)
        return entry

    async def _fetch(self, frame: Any, inode: Any, c: _Content, attr: Any) -> None:
        self._drop(c)
        gen = c.gen
        # A lookup is no read by the application: leave the file's atime alone (a
        # utimes just before must stand).
        flags = os.O_RDONLY | os.O_NOATIME
        fd = Fd(inode, flags, frame.pid)
        try:
            await self.child.open(frame, inode, flags, fd)
        except OSError:
            return
        try:
            data = await self.child.readv(frame, fd, attr.size + 1, 0, None)
        except OSError:
            return
        finally:
            try:
                await self.child.release(frame, fd)
            except OSError:
                pass
        self.stats["fetches"] += 1
        if c.gen == gen and len(data) == attr.size:
            self._store(c, bytes(data), attr)

    # -- reads --------------------------------------------------------------------------
    async def readv(self, frame, fd, size, offset, flags=None):
        c = fd.inode.ctx.get(self)
        if (c is not None and c.data is not None and not self.opts.pass_through
                and not fd.flags & _O_DIRECT and fd.flags & os.O_ACCMODE != os.O_WRONLY
                and self._fresh(c)):
            self.stats["hits"] += 1
            self._lru.move_to_end(c)
            return c.data[offset:offset + size]
        self.stats["misses"] += 1
        return await self.child.readv(frame, fd, size, offset, flags)

    # -- changes: the inode's content goes (DataChangeInvalidation) -----------------------
    _data_changed = _drop_inode

    async def setattr(self, frame, inode, changes, fd=None):
        # As GlusterFS's quick-read: a chmod or utimes drops the content too, so its
        # reply is a chance to see a change made below without an upcall.
        self._drop_inode(inode)
        return await super().setattr(frame, inode, changes, fd)

    async def forget(self, frame, inode):
        self._drop(inode.ctx.pop(self, None))
        return await self.child.forget(frame, inode)

    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        if event is Event.UPCALL and isinstance(data, InvalidateInode) \
                and data.inode is not None:
            self._drop_inode(data.inode)
        super().notify(event, data, source)

    def dump(self) -> dict[str, Any]:
        return {"cache-size": self.opts.cache_size, "cache-used": self.used,
                "files": len(self._lru), **self.stats}
