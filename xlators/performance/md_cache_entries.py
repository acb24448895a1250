"""md-cache's fops that make, remove or replace entries.

:class:`MdEntryFops` is mixed into the translator (``xlators.performance.md_cache``).
Each fop winds, then (whatever its outcome) drops the entry it changed, the inode that
entry held and the directory's attributes; a fop that makes an entry then caches the
entry and attributes of its reply.  None of these can be answered from the cache, so
the cost of each is kept to one coroutine frame and a few dictionary operations on the
records of the directory and the inode.

unlink, rmdir and rename remove or replace the inode a name held.  The bridge's
locations carry no inode, so md-cache finds it by the name: from the entry it cached,
or, for a name it does not know, with one lookup before winding (the inode's cached
attributes, e.g. the link count of a hard-linked file or of a file still open, would
go stale).  A name that a lookup just found missing (the kernel's LOOKUP before a
rename or mkdir) is known too: it holds nothing.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from ..core.frame import system_frame
from ..core.inode import Inode, Loc
from ..core.types import Entry
from .md_cache_records import MdRecords
from .md_cache_state import ABSENT, CAPABILITY as _CAPABILITY
_O_EXCL = os.O_EXCL


class MdEntryFops(MdRecords):
    """create, mknod, mkdir, symlink, link, unlink, rmdir, rename (a mixin before
    Translator in md-cache's bases)."""
    _capability_cached: bool      # security.capability is among the cached xattrs

    async def create(self, frame: Any, loc: Loc, flags: int, mode: int, umask: int,
                     fd: Any) -> Entry:
        try:
            entry = await self.child.create(frame, loc, flags, mode, umask, fd)
        except BaseException:
            self._entry_changed(loc)
            raise
        st = self._made_entry(loc, entry)
        if flags & _O_EXCL and st is not None and self._capability_cached:
            # A file an exclusive create made has no file capability (nothing sets one
            # at creation): the kernel's question before the first write is answered
            # here.  (Without O_EXCL the storage may have opened an existing file.)
            # Stored as of now, as the entry's attributes are.
            xattrs = st.xattrs
            if not xattrs or self.clock() - st.xattr_time >= self.timeout:
                xattrs.clear()
                st.xattr_time = self.clock()
            xattrs[_CAPABILITY] = ABSENT
        return entry

    async def _making(self, loc: Loc, fop: Any, *args: Any) -> Entry:
        """Wind the child's ``fop`` that makes the entry ``loc`` and cache what it
        made; the name is dropped whatever the outcome."""
        try:
            entry = await fop(*args)
        except BaseException:
            self._entry_changed(loc)
            raise
        self._made_entry(loc, entry)
        return entry

    def mknod(self, frame: Any, loc: Loc, mode: int, rdev: int, umask: int) -> Any:
        return self._making(loc, self.child.mknod, frame, loc, mode, rdev, umask)

    def mkdir(self, frame: Any, loc: Loc, mode: int, umask: int) -> Any:
        return self._making(loc, self.child.mkdir, frame, loc, mode, umask)

    def symlink(self, frame: Any, target: bytes, loc: Loc) -> Any:
        return self._making(loc, self.child.symlink, frame, target, loc)

    async def link(self, frame: Any, inode: Inode, newloc: Loc) -> Entry:
        since = self._gen
        try:
            entry = await self.child.link(frame, inode, newloc)
        except BaseException:
            self._entry_changed(newloc)
            self._invalidate(inode)
            raise
        st = inode.ctx.get(self)
        # a write returned meanwhile (with no record to mark, it only moved the counter)
        crossed = self._gen > since if st is None else st.inval_gen > since
        self._invalidate(inode)                 # its link count
        self._made_entry(newloc, entry)
        if crossed:                             # the reply's attributes may predate it
            self._invalidate(inode)
        return entry

    # unlink and rmdir hand back _removing's coroutine (as mknod, mkdir and symlink
    # hand back _making's): one coroutine frame per request, not two
    def unlink(self, frame: Any, loc: Loc) -> Any:
        return self._removing(frame, loc, self.child.unlink)

    def rmdir(self, frame: Any, loc: Loc) -> Any:
        return self._removing(frame, loc, self.child.rmdir)

    async def _removing(self, frame: Any, loc: Loc, fop: Any) -> None:
        """Wind an unlink or rmdir (``fop``), then drop the name and the victim's
        cached attributes (its link count changed)."""
        victim = None
        if self._on and not self._name_known(loc):
            victim = await self._victim(frame, loc)
        try:
            return await fop(frame, loc)
        finally:
            self._entry_changed(loc)
            if victim is not None:
                self._invalidate(victim)

    async def rename(self, frame: Any, oldloc: Loc, newloc: Loc, flags: int = 0) -> None:
        moved = replaced = None
        if self._on:
            if not self._name_known(oldloc):
                moved = await self._victim(frame, oldloc)
            if not self._name_known(newloc):
                replaced = await self._victim(frame, newloc)
        try:
            return await self.child.rename(frame, oldloc, newloc, flags)
        finally:
            self._entry_changed(oldloc)
            self._entry_changed(newloc)
            if moved is not None:
                self._invalidate(moved)
            if replaced is not None:
                self._invalidate(replaced)

    async def _victim(self, frame: Any, loc: Loc) -> Optional[Inode]:
        """The inode with a record of md-cache's that the name of ``loc`` holds (one
        lookup; for a name md-cache does not know, see the module docstring).  An
        inode this lookup brought into the table (no one else holds it) is forgotten
        again."""
        if loc.name is None:
            return None
        try:
            entry = await self.child.lookup(frame, Loc(loc.parent, loc.name))
        except OSError:
            return None
        if not isinstance(entry, Entry):
            return None
        if entry.inode.ctx.get(self) is not None:
            return entry.inode
        if self.itable.purge(entry.inode):
            await self.child.forget(system_frame(), entry.inode)
        return None
