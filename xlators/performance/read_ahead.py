"""performance/read-ahead: prefetch the pages after a sequential reader's position.

    volume ra
        type performance/read-ahead
        option page-count 4
        option page-size 128KB
        subvolumes posix
    end-volume

Each fd remembers where its last read ended.  A read that starts there is *sequential*:
it is answered (from prefetched pages when they hold it, else by the child) and then the
``page-count`` pages of ``page-size`` bytes that follow it are read from the child in the
background, one read per run of missing pages, by a trio task in the graph's nursery.
A read that finds its page still being fetched waits for that fetch.  A read elsewhere
(random access) drops the fd's pages and prefetches nothing.  Pages the reader has passed
are dropped, so an fd holds at most ``page-count`` pages.

Prefetched data never outlives a change: every fop that may change the file's contents
(a write, a size-changing setattr, a fallocate, a copy_file_range into the file, an open
with O_TRUNC...: read from the fop table, :mod:`xlators.performance.data_changes`),
through *any* fd of the inode, and an ``InvalidateInode`` upcall from below (storage/posix ``watch-brick``)
drop the pages of every fd of that inode and cancel their fetches in flight; a fetch that
completes after such a change is discarded (a generation number per fd).  ``release``
cancels the fd's fetches and waits for them before winding.

A read that reaches the end of the file as a prefetched page saw it is answered by the
child, never short from the page: the file may have grown since without any upcall (a
short READ also makes the kernel cut its idea of the file's size).

O_DIRECT fds, ``pass-through on`` and a harness without a nursery read straight through.
``force-atime-update on`` sends a setattr(atime=now) for every read answered from
prefetched pages (the child did not see that read).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import trio

from ..core.events import Event
from ..core.frame import system_frame
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import NOW, SetAttr
from ..core.upcall import InvalidateInode
from .data_changes import DataChangeInvalidation

_O_DIRECT = getattr(os, "O_DIRECT", 0)


class _Fetch:
    """Pages being read by one background task; readers wait on ``done``."""
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = trio.Event()


class _FdPages:
    """Read-ahead state of one fd."""
    __slots__ = ("fd", "expected", "pages", "gen", "scopes", "running", "idle")

    def __init__(self, fd: Any) -> None:
        self.fd = fd
        self.expected = 0                       # where the last read ended
        self.pages: dict[int, Any] = {}         # page index -> bytes | _Fetch
        self.gen = 0
        self.scopes: set[trio.CancelScope] = set()   # one per fetch in flight
        self.running = 0                        # background fetches in flight
        self.idle: Optional[trio.Event] = None  # set when running drops to 0


class ReadAhead(DataChangeInvalidation, Translator):
    """performance/read-ahead: prefetch pages ahead of sequential readers, per fd."""
    type = "performance/read-ahead"
    children_range = (1, 1)
    needs_flush = False
    options = (
        Option.int("page-count", default=4, min=1, max=16,
                   description="Number of pages prefetched ahead of a sequential reader."),
        Option.size("page-size", default="128KB", min=4096, max=1 << 20,
                    description="Size of a read-ahead page."),
        Option.bool("force-atime-update", default=False,
                    description="Send a setattr(atime=now) for reads answered from "
                                "prefetched pages (the child never saw them)."),
        Option.bool("pass-through", default=False,
                    description="Turn the translator off: every fop goes to the child."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.stats = {"hits": 0, "misses": 0, "prefetches": 0, "discards": 0}

    # -- state ------------------------------------------------------------------------
    def _can_spawn(self) -> bool:
        return self._nursery is not None or (self.graph is not None
                                             and self.graph.nursery is not None)

    def _track(self, fd: Any) -> Optional[_FdPages]:
        if (self.opts.pass_through or fd.flags & _O_DIRECT
                or fd.flags & os.O_ACCMODE == os.O_WRONLY):
            return None
        st = fd.ctx.get(self)
        if st is None:
            st = fd.ctx[self] = _FdPages(fd)
            fd.inode.ctx.setdefault(self, set()).add(st)
        return st

    def _discard(self, st: _FdPages) -> None:
        st.gen += 1
        for scope in st.scopes:
            scope.cancel()
        for p in st.pages.values():
            if isinstance(p, _Fetch):
                p.done.set()
        if st.pages:
            self.stats["discards"] += 1
        st.pages.clear()

    def _discard_inode(self, inode: Any) -> None:
        for st in inode.ctx.get(self, ()):
            self._discard(st)

    # -- reads ----------------------------------------------------------------------
    async def readv(self, frame, fd, size, offset, flags=None):
        st = fd.ctx.get(self) or (self._track(fd) if not self.opts.pass_through else None)
        if st is None or size <= 0:
            return await self.child.readv(frame, fd, size, offset, flags)
        sequential = offset == st.expected
        st.expected = offset + size
        if not sequential:
            self._discard(st)
            return await self.child.readv(frame, fd, size, offset, flags)
        data = await self._from_pages(st, size, offset)
        if data is None:
            self.stats["misses"] += 1
            data = await self.child.readv(frame, fd, size, offset, flags)
        else:
            self.stats["hits"] += 1
            if self.opts.force_atime_update:
                await self.child.setattr(frame, fd.inode, SetAttr(atime_ns=NOW), fd)
        if len(data) == size:                   # not at the end of the file
            self._prefetch(st, offset + size)
        return data

    async def _from_pages(self, st: _FdPages, size: int, offset: int) -> Optional[bytes]:
        ps = self.opts.page_size
        first, last = offset // ps, (offset + size - 1) // ps
        for i in [i for i in st.pages if i < first]:        # pages the reader passed
            if not isinstance(st.pages[i], _Fetch):
                del st.pages[i]
        gen = st.gen
        out = bytearray()
        for i in range(first, last + 1):
            p = st.pages.get(i)
            if isinstance(p, _Fetch):
                await p.done.wait()
                if st.gen != gen:
                    return None
                p = st.pages.get(i)
            if p is None or isinstance(p, _Fetch):
                return None
            if len(p) < ps and i * ps + len(p) < offset + size:
                # The end of the file as it was when the page was fetched: the file
                # may have grown since (another client, no upcall), and a short answer
                # would say it ends here.  The child answers reads across an end.
                return None
            out += p[offset - i * ps if i == first else 0:]
        return bytes(out[:size])

    def _prefetch(self, st: _FdPages, start: int) -> None:
        if not self._can_spawn():
            return
        ps, count = self.opts.page_size, self.opts.page_count
        first = start // ps
        run: list[int] = []
        for i in range(first, first + count):
            if i in st.pages:
                if run:
                    self._start(st, run)
                run = []
            else:
                run.append(i)
        if run:
            self._start(st, run)

    def _start(self, st: _FdPages, run: list[int]) -> None:
        fetch = _Fetch()
        for i in run:
            st.pages[i] = fetch
        try:
            self.spawn(self._fetch, st, run, fetch, st.gen)
        except RuntimeError:                    # the nursery is closing
            for i in run:
                del st.pages[i]
            fetch.done.set()
            return
        st.running += 1
        self.stats["prefetches"] += 1

    async def _fetch(self, st: _FdPages, run: list[int], fetch: _Fetch, gen: int) -> None:
        ps = self.opts.page_size
        scope = trio.CancelScope()
        st.scopes.add(scope)
        try:
            if st.gen != gen:
                return
            with scope:
                data = await self.child.readv(system_frame(), st.fd, len(run) * ps,
                                              run[0] * ps, None)
                if st.gen == gen:
                    for k, i in enumerate(run):
                        page = bytes(data[k * ps:(k + 1) * ps])
                        st.pages[i] = page
                        if len(page) < ps:      # end of file: nothing after it
                            for j in run[k + 1:]:
                                st.pages.pop(j, None)
                            break
        except Exception as exc:  # noqa: BLE001 - a failed prefetch is just not used
            self.log.debug("prefetch of ino %s failed: %s", st.fd.inode.ino, exc)
        finally:
            st.scopes.discard(scope)
            for i in run:
                if st.pages.get(i) is fetch:
                    del st.pages[i]
            fetch.done.set()
            st.running -= 1
            if st.running == 0 and st.idle is not None:
                st.idle.set()

    # -- changes: the prefetched pages of every fd of the inode go (DataChangeInvalidation)
    _data_changed = _discard_inode

    # -- the end of an fd ---------------------------------------------------------------
    async def release(self, frame, fd):
        st = fd.ctx.pop(self, None)
        if st is not None:
            self._discard(st)
            while st.running:
                st.idle = trio.Event()
                await st.idle.wait()
            states = fd.inode.ctx.get(self)
            if states is not None:
                states.discard(st)
                if not states:
                    del fd.inode.ctx[self]
        return await self.child.release(frame, fd)

    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        if event is Event.UPCALL and isinstance(data, InvalidateInode) \
                and data.offset >= 0 and data.inode is not None:
            self._discard_inode(data.inode)
        super().notify(event, data, source)

    def dump(self) -> dict[str, Any]:
        return {"page-count": self.opts.page_count, "page-size": self.opts.page_size,
                **self.stats}


