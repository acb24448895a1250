"""What performance/write-behind answers for the attributes of a file with queued writes:
the size they leave (``_grown``), and getattr, lookup, link and readdirp waiting for them
(a reply made below before a queued write landed has the old size and times, and a cache
above would keep them).  The same for ``security.capability`` (getxattr, listxattr): a
storage that ``kills_privileges`` ends it where a write lands, and md-cache, which caches
it for ``md-cache-timeout``, must not keep the value from before.

A mixin of :class:`xlators.performance.write_behind.WriteBehind` (kept apart to keep each
module short); it relies on the translator's ``child``, ``_active`` (inodes with queued
writes or errors), ``_landed`` (writes landed so far) and ``_drain``.
"""
from __future__ import annotations

from typing import Any

from ..core.types import DirEntry, Entry

_CAPABILITY = b"security.capability"


class QueuedAttrs:
    """Attributes as the queued writes leave them."""

    def _grown(self, inode: Any, attr: Any, end: int) -> Any:
        st = inode.ctx.get(self)
        if st is not None and st.pending:
            end = max(end, st.max_end())
        if end > attr.size:
            attr = attr.copy()
            attr.size = end
        return attr

    async def _settled(self, frame: Any, inode: Any, attr: Any, since: int) -> Any:
        """``attr`` of ``inode`` from a reply made below while writes of it were queued
        here, or landed after ``since`` (the count of landed writes when the request was
        wound): its size, mtime and ctime may be from before they land, and a cache above
        (md-cache, the kernel) would keep them.  Wait for them, then ask again.  Writes
        queued meanwhile (by another request) add their size."""
        st = inode.ctx.get(self)
        if st is None or not (st.pending or st.landed_at > since):
            return attr
        if st.pending:
            await self._drain(st)
        attr = await self.child.getattr(frame, inode, None)
        return self._grown(inode, attr, 0)

    async def getattr(self, frame, inode, fd=None):
        st = inode.ctx.get(self)
        if st is not None and st.pending:
            # A write sets mtime and ctime (and, by anyone but root, clears set-id bits)
            # where it lands: stat answers after the queued writes, as GlusterFS's does.
            await self._drain(st)
        return await self.child.getattr(frame, inode, fd)

    def getxattr(self, frame, inode, name):
        """security.capability of an inode with queued writes: as they leave it (each ends
        it where it lands, as a local write does).  Any other name, or no queued write:
        the child's coroutine, as a pass-through."""
        st = inode.ctx.get(self)
        if st is not None and st.pending and (name == _CAPABILITY
                                              or name == "security.capability"):
            return self._capability(st, frame, inode, name)
        return self.child.getxattr(frame, inode, name)

    async def _capability(self, st: Any, frame: Any, inode: Any, name: Any) -> Any:
        # ENODATA (the usual answer: the kernel asks before writes) stays true when the
        # writes land (a write never makes a capability) and passes at once; a value
        # waits for the writes queued before this request, then is asked again.
        await self.child.getxattr(frame, inode, name)
        if st.pending:
            await self._drain(st)
        return await self.child.getxattr(frame, inode, name)

    def listxattr(self, frame, inode):
        """As getxattr: a list naming security.capability is asked again after the
        queued writes of the inode."""
        st = inode.ctx.get(self)
        if st is not None and st.pending:
            return self._listed(st, frame, inode)
        return self.child.listxattr(frame, inode)

    async def _listed(self, st: Any, frame: Any, inode: Any) -> Any:
        names = await self.child.listxattr(frame, inode)
        if _CAPABILITY not in names and "security.capability" not in names:
            return names
        if st.pending:
            await self._drain(st)
        return await self.child.listxattr(frame, inode)

    async def lookup(self, frame, loc):
        since = self._landed
        entry = await self.child.lookup(frame, loc)
        if self._active or self._landed != since:
            attr = await self._settled(frame, entry.inode, entry.attr, since)
            if attr is not entry.attr:
                return Entry(entry.inode, attr)
        return entry

    async def link(self, frame, inode, newloc):
        since = self._landed
        entry = await self.child.link(frame, inode, newloc)
        if self._active or self._landed != since:
            attr = await self._settled(frame, entry.inode, entry.attr, since)
            if attr is not entry.attr:
                return Entry(entry.inode, attr)
        return entry

    async def readdirp(self, frame, fd, offset, size):
        since = self._landed
        entries = await self.child.readdirp(frame, fd, offset, size)
        if not self._active and self._landed == since:
            return entries
        out = []
        for d in entries:
            e = d.entry
            if e is not None and self in e.inode.ctx:
                attr = await self._settled(frame, e.inode, e.attr, since)
                if attr is not e.attr:
                    d = DirEntry(d.name, d.ino, d.type, d.off, Entry(e.inode, attr))
            out.append(d)
        return out
