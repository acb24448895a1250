"""cluster/replicate's background work: the heal index, the healer and the child probe
(a mixin of Replicate).

The heal index holds every inode of replicate's known to carry accusations; each is
pinned in the inode table (``refs``) until healed, so its child inodes stay known even
after the kernel forgot it.  The healer task (on the graph's nursery; started at
PARENT_UP, or at the first need when the nursery comes later) runs a pass over the index
when woken -- a file found stale by lookup/open, a child back up -- and every
``heal-timeout`` seconds.  A pass heals directories first and repeats while it makes
progress (a directory's entry heal creates the files that the next round heals).

With ``heal-crawl-on-start`` the task also walks the whole volume once at start, looking
every name up, so that accusations a previous run left on the children are found.

Local children send no CHILD_UP of their own after a failure, so the probe task asks
every failed child for a statfs of its root every ``child-probe-interval`` seconds; the
first answer brings the child back (and wakes the healer).
"""
from __future__ import annotations

import errno
import stat
from typing import Optional

import trio

from ..core.frame import system_frame
from ..core.inode import Inode, Loc
from .afr_changelog import ENTRY
from .afr_heal import heal_inode


class AfrHealer:
    def _healer_init(self) -> None:
        self._heal_event = trio.Event()
        self._probe_event = trio.Event()
        self._tasks_started = False
        self._task_scope: Optional[trio.CancelScope] = None

    def _healer_start(self) -> None:
        self._ensure_tasks()

    def _healer_stop(self) -> None:
        if self._task_scope is not None:
            self._task_scope.cancel()

    def _ensure_tasks(self) -> None:
        if self._tasks_started:
            return
        nursery = self._nursery or (self.graph.nursery if self.graph is not None else None)
        if nursery is None:
            return
        self._tasks_started = True
        nursery.start_soon(self._background)

    async def _background(self) -> None:
        with trio.CancelScope() as scope:
            self._task_scope = scope
            async with trio.open_nursery() as n:
                n.start_soon(self._heal_loop)
                n.start_soon(self._probe_loop)
                if self.opts.heal_crawl_on_start:
                    n.start_soon(self.crawl)

    async def crawl(self) -> int:
        """Look up every name in the volume once, so that accusations a previous run left
        on the children are found and healed (the heal index lives in memory).  Inodes
        the kernel does not hold are released again as the walk goes.  Returns the
        number of names visited."""
        from .afr_heal import list_names
        seen = 0
        stack = [self.itable.root]
        while stack:
            d = stack.pop()
            ctx = d.ctx.get(self)
            if ctx is None:
                continue
            try:
                i = await self.read_child(ctx, ENTRY, d)
                names = await list_names(self, i, ctx.children[i])
            except OSError as exc:
                self.log.warning("%s: crawl: cannot list gfid %s: %s", self.name,
                                 ctx.gfid.hex(), exc)
                continue
            for name in names:
                try:
                    e = await self.lookup(system_frame(), Loc(d, name))
                except OSError:
                    continue
                seen += 1
                if stat.S_ISDIR(e.attr.mode):
                    e.inode.refs += 1            # held while queued for the walk
                    stack.append(e.inode)
                elif self.itable.purge(e.inode):
                    await self._forget_inode(e.inode)
            if d is not self.itable.root:
                d.refs -= 1
                if self.itable.purge(d):
                    await self._forget_inode(d)
            await trio.lowlevel.checkpoint()
        self.log.info("%s: crawl done: %d names, %d files to heal", self.name, seen,
                      len(self.heal_index))
        self.heal_wake()
        return seen

    async def _forget_inode(self, inode: Inode) -> None:
        if self.graph is not None:
            await self.graph.forget(inode)
        else:
            await self.forget(system_frame(), inode)

    def heal_wake(self) -> None:
        self._ensure_tasks()
        self._heal_event.set()

    def probe_wake(self) -> None:
        self._ensure_tasks()
        self._probe_event.set()

    def queue_heal(self, inode: Inode) -> None:
        """Remember ``inode`` as needing heal (pinned until healed)."""
        if inode.ino not in self.heal_index:
            self.heal_index[inode.ino] = inode
            inode.refs += 1
        if self.opts.self_heal_daemon:
            ctx = inode.ctx.get(self)
            if ctx is not None and all(self.up[i] for i in ctx.present()):
                self.heal_wake()

    async def _unpin(self, inode: Inode) -> None:
        if self.heal_index.pop(inode.ino, None) is None:
            return
        inode.refs = max(0, inode.refs - 1)
        if self.itable.purge(inode):
            await self._forget_inode(inode)

    # -- the healer ------------------------------------------------------------------------
    async def _heal_loop(self) -> None:
        while True:
            with trio.move_on_after(self.opts.heal_timeout):
                await self._heal_event.wait()
            self._heal_event = trio.Event()
            if self.opts.self_heal_daemon:
                await self.heal_pass()

    async def heal_pass(self) -> int:
        """Heal what the index holds, as far as possible now; the number left."""
        for _ in range(16):
            progress = False
            items = sorted(self.heal_index.values(), key=lambda ino: 0 if (
                ino.ctx.get(self) is not None and ino.ctx[self].kind == stat.S_IFDIR) else 1)
            for inode in items:
                if inode.ctx.get(self) is None:
                    await self._unpin(inode)
                    continue
                try:
                    healed = await heal_inode(self, inode)
                except OSError as exc:
                    self.heal_failures += 1
                    self.log.warning("%s: heal of gfid %s failed: %s", self.name,
                                     inode.ctx[self].gfid.hex(), exc)
                    continue
                except Exception:
                    self.heal_failures += 1
                    self.log.exception("%s: heal of %r failed", self.name, inode)
                    continue
                if healed:
                    await self._unpin(inode)
                    progress = True
            if not progress or not self.heal_index:
                break
        return len(self.heal_index)

    async def resolve_child(self, inode: Inode, i: int, depth: int = 0) -> bool:
        """Find child i's inode for ``inode`` by its last known name (a child that was
        down when the file was looked up).  False when the name is missing there (its
        directory is then accused, so entry heal makes it)."""
        ctx = self.ictx(inode)
        if ctx.children[i] is not None:
            return True
        parent = ctx.parent() if ctx.parent is not None else None
        if parent is None or ctx.name is None or depth > 64:
            return False
        pctx = parent.ctx.get(self)
        if pctx is None or (pctx.children[i] is None
                            and not await self.resolve_child(parent, i, depth + 1)):
            return False
        try:
            e = await self.children[i].lookup(system_frame(), Loc(pctx.children[i], ctx.name))
        except OSError as exc:
            self.failed(i, exc)
            if exc.errno == errno.ENOENT:
                holders = [x for x in pctx.present() if x != i and self.up[x]]
                if holders and not any(pctx.changelog.pending[x][i][ENTRY] for x in holders):
                    await self.accuse(parent, holders, [i], (ENTRY,))
            return False
        try:
            gfid, rows = await self.read_meta(i, e.inode)
        except OSError as exc:
            self.failed(i, exc)
            await self.drop_child_inode(i, e.inode)
            return False
        if gfid != ctx.gfid:
            await self.drop_child_inode(i, e.inode)
            return False
        self.adopt(inode, ctx, i, e.inode)
        if not ctx.changelog.known[i]:
            from .afr_changelog import parse_row
            parse_row(self.child_names, rows, i, ctx.changelog)
        return True

    # -- the probe -------------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        while True:
            if all(self.up):
                await self._probe_event.wait()
                self._probe_event = trio.Event()
                continue
            await trio.sleep(self.opts.child_probe_interval)
            await self.probe_now()

    async def probe_now(self) -> list[int]:
        """Probe every failed child once; the ones that answered (now up)."""
        back = []
        for i, child in enumerate(self.children):
            if self.up[i]:
                continue
            try:
                await child.statfs(system_frame(), child.itable.root)
            except OSError:
                continue
            self._child_up(i)
            back.append(i)
        return back
