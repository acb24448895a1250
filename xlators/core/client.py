"""What one client holds of a graph: the node and handle tables, and the reference counts
that decide when an inode leaves the table.

A *client* is whoever hands inodes and open files out to a kernel-like consumer: the FUSE
bridge (``fuse_bridge.client.FuseClient`` adds what INIT negotiates) or the test harness
(``xlators.testing.Harness``).  Both count references the same way, here:

- ``nlookup`` (``Inode.nlookup``): one per entry the consumer *received* (a LOOKUP, CREATE,
  MKNOD, MKDIR, SYMLINK, LINK reply, a READDIRPLUS entry): :meth:`ClientState.count_lookup`,
  called once the reply went out; a FORGET takes them back (:meth:`ClientState.forget`);
- ``refs``: one per open handle (:meth:`ClientState.new_fh` / :meth:`ClientState.drop_fh`)
  and one per :class:`~xlators.core.inode.LinkPins` hold while a request runs;
- an inode with neither leaves the table (``InodeTable.purge``) and ``forget`` goes down
  the graph (:meth:`ClientState.purge`).  What a failed request linked but never handed
  out leaves again through :meth:`ClientState.unpin` and :meth:`ClientState.purge_all`.

``--lru-limit``: every entry handed out by name is remembered in handout order; past the
limit the oldest are passed to ``invalidate(parent, name)`` (the bridge sends the kernel
INVAL_ENTRY, so it drops the name and FORGETs the inode), as GlusterFS's lru-limit does.

The active graph is held in one place, :meth:`ClientState.set_graph` (``graph``, ``top``,
``itable`` change together).
"""
from __future__ import annotations

import errno
import logging
from collections import deque
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Optional

import trio

from .errors import FopError
from .frame import system_frame
from .inode import Fd, Inode, InodeTable, LinkPins, pins_by_task

log = logging.getLogger("xlfs.client")

#: ``invalidate(parent, name)``: tell the consumer to drop the name (LRU eviction).
Invalidate = Callable[[Inode, bytes], None]


class ClientState:
    """The node table (``itable``, by nodeid), the handle table (``fds``, by fh) and the
    reference counting of one client over one graph (or a bare translator stack)."""

    def __init__(self, top: Any, itable: Optional[InodeTable] = None, *,
                 graph: Any = None, lru_limit: int = 0) -> None:
        self.graph: Any = None
        self.top: Any = None
        self.itable: InodeTable = itable if itable is not None else top.itable
        self.nodes: dict[int, Inode] = self.itable.by_nodeid
        self.set_graph(graph, top, self.itable)
        self.fds: dict[int, Fd] = {}
        self._next_fh = 1
        # a plain dict: its insertion order is the handout order (pop and re-insert
        # moves a name last), at two thirds of an OrderedDict's cost per count_lookup
        self.lru: dict[int, tuple[Inode, bytes]] = {}
        self.lru_limit = lru_limit          # 0: no limit
        self.invalidate: Optional[Invalidate] = None
        self.lru_invalidations = 0
        # Forgets taken but not applied yet (defer_forgets): [pairs, how many left] in
        # arrival order, and the inodes that left the table (settle_forgets) whose
        # forget the graph has yet to hear (apply_forgets); forgets_pending counts both.
        self._deferred: deque[list[Any]] = deque()
        self.forgets_pending = 0
        self._forgets_gone: list[Inode] = []

    def set_graph(self, graph: Any, top: Any = None, itable: Optional[InodeTable] = None
                  ) -> None:
        """Make ``graph`` (or a bare ``top`` translator) the one requests go to."""
        self.graph = graph
        self.top = top if top is not None else graph.top
        self.itable = itable if itable is not None else (
            graph.itable if graph is not None else self.top.itable)
        self.nodes = self.itable.by_nodeid

    # -- nodes -------------------------------------------------------------------------
    def inode(self, nodeid: int) -> Inode:
        """The live inode ``nodeid`` names; ESTALE when the table has none."""
        inode = self.nodes.get(nodeid)
        if inode is None:
            raise FopError(errno.ESTALE)
        return inode

    def count_lookup(self, inode: Inode, parent: Inode, name: bytes) -> None:
        """The consumer received ``inode`` as ``name`` in ``parent``: one more lookup to
        forget (remembered for the LRU unless the name is "." or "..")."""
        inode.nlookup += 1
        if name != b"." and name != b"..":
            lru = self.lru
            nodeid = inode.nodeid
            lru.pop(nodeid, None)            # (re)inserted last: the newest handout
            lru[nodeid] = (parent, name)
            limit = self.lru_limit
            if limit and len(lru) > limit and self.invalidate is not None:
                self._lru_evict(len(lru) - limit + limit // 16)

    def count_listed(self, parent: Inode, inodes: list[Inode], names: list[bytes]
                     ) -> None:
        """:meth:`count_lookup` of each of ``inodes`` as the name of ``names`` at the
        same index in ``parent`` (the entries of a READDIRPLUS reply), in one loop:
        the same counts and LRU order."""
        if self.lru_limit and self.invalidate is not None:
            for inode, name in zip(inodes, names):   # (evictions as each name comes)
                self.count_lookup(inode, parent, name)
            return
        lru = self.lru
        lru_pop = lru.pop
        for inode, name in zip(inodes, names):
            inode.nlookup += 1
            if name != b"." and name != b"..":
                nodeid = inode.nodeid
                lru_pop(nodeid, None)        # (re)inserted last: the newest handout
                lru[nodeid] = (parent, name)

    async def forget(self, nodeid: int, n: int) -> None:
        """FORGET: the consumer drops ``n`` lookups of ``nodeid`` (unknown: ignored)."""
        inode = self.forgotten(nodeid, n)
        if inode is not None:
            graph = self.graph
            if graph is not None:           # _forget_down, one coroutine fewer
                await graph.forget(inode)
            else:
                await self._forget_down(inode)

    async def forget_many(self, forgets: Iterable[tuple[int, int]]) -> None:
        """Forgets applied at once (the test harness's; the FUSE bridge defers
        BATCH_FORGET): :meth:`forget` each ``(nodeid, n)``, after any forgets still
        deferred, the graph told of the inodes that left with one system
        frame for all (:meth:`defer_forgets` then :meth:`apply_forgets`)."""
        pairs = list(forgets)
        self.defer_forgets(iter(pairs), len(pairs))
        await self.apply_forgets()

    def forgotten(self, nodeid: int, n: int) -> Optional[Inode]:
        """A FORGET's bookkeeping: drop ``n`` lookups of ``nodeid``; the inode when it
        left the table (the caller then tells the graph), else None."""
        inode = self.nodes.get(nodeid)
        if inode is None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("FORGET of unknown nodeid %d", nodeid)
            return None
        left = inode.nlookup - n            # InodeTable.forget, its first half inline
        inode.nlookup = left if left > 0 else 0
        if left <= 0 and not inode.refs and self.itable.purge(inode):
            self.lru.pop(nodeid, None)
            return inode
        return None

    # -- deferred forgets (the FUSE bridge's: fuse_bridge.forget_backlog) ----------------
    def defer_forgets(self, pairs: Iterator[tuple[int, int]], count: int) -> None:
        """Take ``count`` forgets ``(nodeid, n)`` now and apply them later, in order
        (:meth:`apply_forgets`).  Meanwhile the inodes stay in the table with the lookups
        being forgotten still counted: a lookup that hands one out again adds one, which
        the forget then takes back (counting commutes), and its translators' state
        (descriptors, cached attributes) serves it rather than being dropped and rebuilt."""
        if count > 0:
            self._deferred.append([pairs, count])
            self.forgets_pending += count

    def settle_forgets(self, limit: int = -1) -> None:
        """Apply up to ``limit`` deferred forgets (all: -1), oldest first, to the table
        and the LRU: exact counts again.  The inodes that left the table wait for the
        graph's forget in the next :meth:`apply_forgets` (``forgets_pending`` counts
        them until then)."""
        deferred = self._deferred
        nodes = self.nodes
        table_purge = self.itable.purge
        lru_pop = self.lru.pop
        gone = self._forgets_gone
        settled = len(gone)
        while deferred and limit:
            slot = deferred[0]
            take = slot[1] if limit < 0 or limit >= slot[1] else limit
            done = 0
            for nodeid, n in islice(slot[0], take):   # forgotten(), inline
                done += 1
                inode = nodes.get(nodeid)
                if inode is None:
                    self.forgotten(nodeid, n)         # (logs it)
                    continue
                left = inode.nlookup - n              # InodeTable.forget, inline
                if left > 0:
                    inode.nlookup = left
                    continue
                inode.nlookup = 0
                if not inode.refs and table_purge(inode):
                    lru_pop(nodeid, None)
                    gone.append(inode)
            slot[1] -= take
            self.forgets_pending -= take
            if done < take or not slot[1]:           # (a short iterator: count was high)
                self.forgets_pending -= slot[1]
                deferred.popleft()
            if limit > 0:
                limit -= take
        self.forgets_pending += len(gone) - settled

    async def apply_forgets(self, limit: int = -1) -> None:
        """:meth:`settle_forgets` (``limit``), then tell the graph of every inode that
        left the table, with one system frame for all."""
        self.settle_forgets(limit)
        gone = self._forgets_gone
        if gone:
            self._forgets_gone = []
            try:
                await self._forget_down(*gone)
            finally:
                self.forgets_pending -= len(gone)      # (counted until the graph knows)

    async def purge(self, inode: Inode) -> None:
        """Unlink ``inode`` if nothing references it, and tell the graph."""
        if self.itable.purge(inode):
            self.lru.pop(inode.nodeid, None)
            await self._forget_down(inode)

    def unpin(self, pins: LinkPins, also: Iterable[Inode] = ()) -> list[Inode]:
        """End a request's ``pins``; the inodes it linked (and those in ``also``) that
        nothing references now, the consumer included: the caller purges them with
        :meth:`purge_all` (``if dead: await client.purge_all(dead)``: most requests
        leave none, and then no coroutine is made)."""
        held = pins.release()
        dead = [i for i in held if not (i.nlookup or i.refs)] if held else []
        if also:
            dead += [i for i in also if not (i.nlookup or i.refs)]
        return dead

    @staticmethod
    def unhold(task: Any, held: list[Inode], outer: Optional[list]
               ) -> Optional[list[Inode]]:
        """:meth:`unpin` for pins held without a LinkPins object (``held``, registered
        as ``task``'s entry in the pins registry in place of ``outer``:
        fuse_bridge.ops_entry): end the entry, drop the holds; the inodes nothing
        references now (None when there are none: most requests)."""
        if pins_by_task.get(task) is held:          # end_pins(task, held, outer), inline
            if outer is None:
                del pins_by_task[task]
            else:
                pins_by_task[task] = outer
        if not held:                # linked nothing (a negative LOOKUP, a failure)
            return None
        for inode in held:
            inode.refs -= 1
        dead = None
        for inode in held:          # (no list comprehension: a function call in 3.11)
            if not (inode.nlookup or inode.refs):
                if dead is None:
                    dead = [inode]
                else:
                    dead.append(inode)
        return dead

    async def purge_all(self, inodes: Iterable[Inode]) -> None:
        """:meth:`purge` each of ``inodes``.  Shielded: it runs on the way out of an
        interrupted request too."""
        with trio.CancelScope(shield=True):
            for inode in inodes:
                await self.purge(inode)

    async def _forget_down(self, *inodes: Inode) -> None:
        if self.graph is not None:
            await self.graph.forget(*inodes)
            return
        frame = system_frame()
        for inode in inodes:
            try:
                await self.top.forget(frame, inode)
            except Exception:
                log.exception("forget of %r failed", inode)

    # -- handles -----------------------------------------------------------------------
    def new_fh(self, fd: Fd) -> int:
        """Number ``fd`` in the handle table; it holds its inode until :meth:`drop_fh`."""
        fh = self._next_fh
        self._next_fh = fh + 1
        fd.fh = fh
        self.fds[fh] = fd
        fd.inode.refs += 1
        return fh

    def fd(self, fh: int) -> Fd:
        """The open handle ``fh``; EBADF when there is none."""
        fd = self.fds.get(fh)
        if fd is None:
            raise FopError(errno.EBADF)
        return fd

    async def drop_fh(self, fh: int) -> None:
        """Forget handle ``fh`` (released); its inode may leave the table."""
        fd = self.fds.pop(fh, None)
        if fd is not None:
            inode = fd.inode
            inode.refs -= 1
            if not (inode.nlookup or inode.refs):   # else purge() would keep it
                await self.purge(inode)

    # -- the LRU -----------------------------------------------------------------------
    def _lru_evict(self, count: int) -> None:
        lru = self.lru
        if self.forgets_pending:        # names the kernel dropped already go first
            before = len(lru)
            self.settle_forgets()
            count -= before - len(lru)
            if count <= 0:
                return
        nodes = self.nodes
        for nodeid in list(islice(lru, count)):          # the oldest ``count``
            parent, name = lru.pop(nodeid)
            if nodeid in nodes:
                self.invalidate(parent, name)
                self.lru_invalidations += 1

    @property
    def inodes_held(self) -> int:
        """Inodes the table holds, and those that left it with a deferred forget whose
        graph has not heard yet (posix still holds their descriptors)."""
        return len(self.nodes) + len(self._forgets_gone)

    def dump(self) -> dict[str, Any]:
        """Statedump lines.  Reading them settles the deferred forgets first (so the
        counts are exact): the table changes, as if they had been applied then."""
        self.settle_forgets()
        return {"lru-limit-effective": self.lru_limit, "lru-entries": len(self.lru),
                "lru-invalidations": self.lru_invalidations, "open-fds": len(self.fds),
                "inodes": len(self.itable), "forgets-pending": self.forgets_pending}
