"""performance/readdir-ahead: read a directory's stream ahead, in the background.

    volume readdir-ahead
        type performance/readdir-ahead
        option rda-request-size 128KB
        option rda-high-wmark 128KB
        option rda-cache-limit 10MB
        subvolumes posix
    end-volume

The first readdir or readdirp of an open directory is wound as usual (a listing that
fits one reply is never read ahead).  The next request that continues the stream starts a
background task that keeps reading it, with that request's fop (readdir or readdirp) in
requests of ``rda-request-size`` bytes, into a per-fd buffer until the buffer holds
``rda-high-wmark`` bytes, the whole cache (every fd) holds ``rda-cache-limit`` bytes, or
the directory ends.  Later requests that continue the stream (their offset is the cookie
of the last entry handed out) are answered from the buffer; when it falls below
``rda-low-wmark`` the task reads on.  The kernel mixes the two kinds (READDIRPLUS at
offset 0 and after lookups, READDIR otherwise): a request of the other kind is wound as
is and the buffered entries it covered are skipped.  Offsets are the child's own
cookies, so a request at any other offset (seekdir, rewinddir) discards the buffer, is
wound as is and the prefetch resumes after it.  Sizes are counted as the kernel packs
entries (a READDIRPLUS entry takes 152 bytes plus its name), so a reply never carries
more than fits; a wound request's reply is cut to what fits too (storage/posix may
answer one entry past the budget, which the bridge would drop: the stream would then
not continue where the kernel asks next, and every request was discarded and wound).

What discards a buffer (reading resumes at the same offset, from the child):

- a modifying fop through this graph on the directory or on one of its names, or on an
  inode whose entry (with attributes, readdirp) is in the buffer, as the fop table says
  (:mod:`xlators.performance.fop_targets`); ``open`` with O_TRUNC too;
- an upcall from below (storage/posix ``watch-brick``) about the directory, a name in it
  or a buffered inode;
- a background read that fails: the error is given to the request that would have used
  its entries (and the next one reads from the child again);
- the release of a passthrough writer of a buffered inode (below).

A change of an inode that comes while a background read is under way (the read may have
stat'ed it before the change) marks the inode for that read: its entry in the reply is
buffered without inode and attributes (the bridge sends such an entry with nodeid 0,
from which the kernel keeps nothing: it looks the name up when it needs the file).

Inodes of discarded readdirp entries were never given to the kernel: the ones nobody else
holds are forgotten again below, so storage/posix closes their descriptors.

FUSE passthrough: readdir-ahead never touches file data, so it declares
``passes_data_through`` and a stack of it over posix lets the kernel read and write the
brick files itself.  Those WRITEs pass no translator, so an entry read ahead (readdirp)
may carry a size and times older than the kernel's writes to the file.  readdir-ahead
sees the bridge ask ``passthrough_fd`` for each fd and counts the writable ones that get
a brick file on their inode until they are released (as md-cache does); then:

- while an inode has such a writer open, its buffered entries are handed out without
  inode and attributes (as above), whenever they were read;
- the writer's release discards the buffers that hold the inode (its last writes may
  postdate their entries), and marks it for a background read under way.

A READDIRPLUS reply therefore never gives the kernel a passthrough writer's size from
before a write that had returned when the kernel asked for it.  Plain readdir entries
carry no attributes and are served from the buffer as before.

Without a nursery (a harness without ``attach_nursery``) everything is wound as is.
``parallel-readdir`` is accepted and changes nothing: in GlusterFS it fans readdirs out
over the subvolumes of cluster/distribute; one child has nothing to fan out to.
"""
from __future__ import annotations

from typing import Any, Optional

from ..core.events import Event
from ..core.frame import system_frame
from ..core.dir_batch import PlusBatch
from ..core.inode import Inode
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import DirEntry
from ..core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode
from .fop_targets import MODIFYING_FOPS, Changes, changes_of
from .passthrough_writers import PassthroughWriters
from .readdir_ahead_stream import Stream, fitting, last_cookie


class ReaddirAhead(PassthroughWriters, Translator):
    """performance/readdir-ahead: read a directory's stream ahead, in the background."""
    type = "performance/readdir-ahead"
    children_range = (1, 1)
    needs_flush = False
    passes_data_through = True   # FUSE passthrough: see the module docstring
    options = (
        Option.size("rda-request-size", default="131072", min=4096, max=131072,
                    description="Size of each background readdir(p) request."),
        Option.size("rda-low-wmark", default="4096", min=0, max=10 << 20,
                    description="Read on when an fd's buffer falls below this."),
        Option.size("rda-high-wmark", default="128KB", min=0, max=100 << 20,
                    description="Stop reading ahead when an fd's buffer holds this much."),
        Option.size("rda-cache-limit", default="10MB", min=0, max=1 << 30,
                    description="Most bytes buffered over all open directories."),
        Option.bool("parallel-readdir", default=False,
                    description="Accepted for compatibility; changes nothing over one "
                                "child (see the module documentation)."),
        Option.bool("pass-through", default=False,
                    description="Read nothing ahead: every fop goes to the child."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._streams: dict[int, Stream] = {}     # id(fd) -> stream
        self._orphans: list[Inode] = []
        self._pt_writers = 0        # open passthrough writers, all inodes (a fast test)
        self.stats = dict(hits=0, misses=0, discards=0, prefetched=0, unattributed=0)

    def init(self) -> None:
        self._check(self.opts)

    def _check(self, opts: Any) -> None:
        if opts.rda_low_wmark > opts.rda_high_wmark:
            raise ValueError(f"volume '{self.name}': rda-low-wmark ({opts.rda_low_wmark}) "
                             f"is above rda-high-wmark ({opts.rda_high_wmark})")

    def reconfigured(self, old: Any) -> None:
        try:
            self._check(self.opts)
        except ValueError:
            self.opts = old
            raise

    # -- helpers ------------------------------------------------------------------------
    def _total(self) -> int:
        return sum(s.bytes for s in self._streams.values())

    def _can_spawn(self) -> bool:
        return not self.opts.pass_through and (
            self._nursery is not None or (self.graph is not None
                                          and self.graph.nursery is not None))

    def _start_fill(self, st: Stream) -> None:
        if st.filling or st.eof or st.error is not None:
            return
        if st.bytes >= self.opts.rda_high_wmark or self._total() >= self.opts.rda_cache_limit:
            return
        try:
            self.spawn(self._fill, st)
        except RuntimeError:                       # no (open) nursery: no prefetch
            return
        st.filling = True

    async def _fill(self, st: Stream) -> None:
        try:
            while (not st.eof and st.error is None and id(st.fd) in self._streams
                   and st.bytes < self.opts.rda_high_wmark
                   and self._total() < self.opts.rda_cache_limit):
                gen, at = st.gen, st.fetch_at
                st.touched.clear()
                fop = self.child.readdirp if st.plus else self.child.readdir
                try:
                    batch = await fop(system_frame(), st.fd, at, self.opts.rda_request_size)
                except Exception as exc:  # noqa: BLE001 - handed to the next request
                    if gen == st.gen:
                        st.error = exc
                    break
                if gen != st.gen or id(st.fd) not in self._streams:
                    self._orphan(batch)            # discarded while it was being read
                    continue
                if not batch:
                    st.eof = True
                if st.touched and st.plus:
                    batch = self._unattributed(batch, st.touched.__contains__)
                st.push(batch)
                self.stats["prefetched"] += len(batch)
                st.wake()
        finally:
            st.filling = False
            st.touched.clear()                     # (holds inodes: let them go)
            st.wake()
            await self._reap()

    def _unattributed(self, entries: list[DirEntry], stale: Any) -> list[DirEntry]:
        """``entries`` with those whose inode is ``stale`` (a predicate) stripped to
        what plain readdir gives: name, number, type, no inode and no attributes.  The
        bridge sends them with nodeid 0, from which the kernel keeps nothing (it asks
        LOOKUP when it needs the file); their inodes were not handed out and are
        forgotten below if nobody holds them."""
        out = []
        for e in entries:
            if e.entry is not None and stale(e.entry.inode):
                self._orphans.append(e.entry.inode)
                e = e._replace(entry=None)
                self.stats["unattributed"] += 1
            out.append(e)
        return out

    def _fit(self, reply: Any, size: int, plus: bool) -> Any:
        """The part of a child's ``reply`` that a reply of ``size`` bytes holds: what the
        kernel receives, so that the stream continues where the kernel will ask."""
        n = fitting(reply, size, plus)
        if n == len(reply):
            return reply
        if type(reply) is PlusBatch and reply.unread():
            kept, rest = reply.split(n)
            self._orphans.extend(rest)
            return kept
        if plus:
            self._orphan(reply[n:])
        return reply[:n]

    def _writing(self, inode: Inode) -> bool:
        """``inode`` has an fd open for writing whose WRITEs the kernel does itself."""
        return bool(inode.ctx.get(self))

    def _orphan(self, entries: list[DirEntry]) -> None:
        self._orphans.extend(e.entry.inode for e in entries if e.entry is not None)

    async def _reap(self) -> None:
        """Forget (below) the inodes of discarded entries that nobody holds."""
        while self._orphans:
            inode = self._orphans.pop()
            if self.itable.purge(inode):
                await self.child.forget(system_frame(), inode)

    def _skip(self, st: Stream, reply: list[DirEntry]) -> None:
        """A request of the other kind was wound at ``st.pos`` and answered ``reply``:
        drop the buffered entries it covered (up to its last cookie)."""
        if not reply:
            self._discard(st)
            st.eof = True
            return
        last = last_cookie(reply)
        covered = []
        while st.entries:
            e = st.take(1, st.plus)[0]
            covered.append(e)
            if e.off == last:
                if st.plus:
                    self._orphan(covered)
                return
        if st.plus:
            self._orphan(covered)
        st.pos = last                              # the buffer did not reach it
        self._discard(st)

    def _discard(self, st: Stream) -> None:
        self._orphan(st.discard())
        self.stats["discards"] += 1

    def _affected(self, inodes: tuple, dirs: tuple = ()) -> None:
        targets = [i for i in inodes + dirs if isinstance(i, Inode)]
        if not targets:
            return
        for st in list(self._streams.values()):
            if any(st.holds(i) for i in targets):
                self._discard(st)
            elif st.filling:               # its reply may carry them as they were
                st.touched.update(targets)

    def _apply_changes(self, ch: Changes) -> None:
        self._affected(ch.inodes + tuple(p for p, _ in ch.names), ch.dirs)

    # -- FUSE passthrough (PassthroughWriters) ------------------------------------------
    def _writer_opened(self, inode: Any) -> None:
        """A writable fd the kernel writes itself: counted on its inode until released."""
        inode.ctx[self] = inode.ctx.get(self, 0) + 1
        self._pt_writers += 1

    def _writer_released(self, inode: Any) -> None:
        left = inode.ctx.get(self, 1) - 1
        if left:
            inode.ctx[self] = left
        else:
            inode.ctx.pop(self, None)
        self._pt_writers -= 1
        self._affected((inode,))   # entries read while it wrote are stale

    # -- events -------------------------------------------------------------------------
    def notify(self, event: Event, data: Any = None, source: Any = None) -> None:
        if event is Event.UPCALL:
            if isinstance(data, InvalidateInode):
                self._affected((data.inode,))
            elif isinstance(data, (InvalidateEntry, DeleteEntry)):
                self._affected((data.parent,) + ((data.child,) if isinstance(
                    data, DeleteEntry) else ()))
        elif event is Event.CHILD_DOWN:
            for st in list(self._streams.values()):
                self._discard(st)
        super().notify(event, data, source)

    # -- fops ---------------------------------------------------------------------------
    async def readdir(self, frame: Any, fd: Any, offset: int, size: int) -> list[DirEntry]:
        return await self._read(frame, fd, offset, size, False)

    async def readdirp(self, frame: Any, fd: Any, offset: int, size: int) -> list[DirEntry]:
        return await self._read(frame, fd, offset, size, True)

    async def _read(self, frame: Any, fd: Any, offset: int, size: int,
                    plus: bool) -> list[DirEntry]:
        if self._orphans:
            await self._reap()
        st: Optional[Stream] = self._streams.get(id(fd))
        if st is not None and st.pos != offset:
            self._discard(st)                      # seekdir/rewinddir: start again
            del self._streams[id(fd)]
            st = None
        fop = self.child.readdirp if plus else self.child.readdir
        if st is None:
            reply = self._fit(await fop(frame, fd, offset, size), size, plus)
            self.stats["misses"] += 1
            if reply and self._can_spawn():
                self._streams[id(fd)] = Stream(fd, None, last_cookie(reply))
            return reply
        if st.plus is None:                        # the second request sets the kind
            st.plus = plus
            self._start_fill(st)
        elif st.plus != plus:                      # the other kind: wind it, skip ahead
            reply = self._fit(await fop(frame, fd, offset, size), size, plus)
            self.stats["misses"] += 1
            self._skip(st, reply)
            return reply
        while not st.entries:
            if st.error is not None:
                exc, st.error = st.error, None
                raise exc
            if st.eof:
                return []
            self._start_fill(st)
            if not st.filling:                     # could not read ahead: wind it
                reply = self._fit(await fop(frame, fd, offset, size), size, plus)
                st.pos = st.fetch_at = last_cookie(reply) if reply else st.pos
                st.eof = not reply
                return reply
            await st.changed.wait()
            if self._streams.get(id(fd)) is not st:
                return await self._read(frame, fd, offset, size, plus)
        out = st.take(size, plus)
        if plus and self._pt_writers:
            out = self._unattributed(out, self._writing)
        self.stats["hits"] += 1
        if st.bytes < self.opts.rda_low_wmark:
            self._start_fill(st)
        return out

    async def releasedir(self, frame: Any, fd: Any) -> None:
        st = self._streams.pop(id(fd), None)
        if st is not None:
            self._discard(st)
            while st.filling:              # the child must not close what it reads
                await st.changed.wait()
        try:
            return await self.child.releasedir(frame, fd)
        finally:
            await self._reap()

    async def open(self, frame: Any, inode: Inode, flags: int, fd: Any) -> None:
        try:
            return await self.child.open(frame, inode, flags, fd)
        finally:
            self._apply_changes(changes_of("open", (inode, flags, fd)))

    def dump(self) -> dict[str, Any]:
        return dict(self.stats, streams=len(self._streams), bytes=self._total(),
                    passthrough_writers=self._pt_writers)


def _discarding(fop_name: str):
    async def fop(self: ReaddirAhead, frame: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.child, fop_name)(frame, *args, **kwargs)
        finally:
            self._apply_changes(changes_of(fop_name, args, kwargs))
    fop.__name__ = fop.__qualname__ = fop_name
    fop.__doc__ = f"{fop_name}: wind, then discard the buffers it made stale."
    return fop


for _fop in MODIFYING_FOPS:
    setattr(ReaddirAhead, _fop.name, _discarding(_fop.name))
del _fop
