"""md-cache's records: storing, serving and dropping what it knows of inodes.

:class:`MdRecords` is mixed into the translator (``xlators.performance.md_cache``): the
fops there decide *when* to cache or invalidate, the methods here *how*, on the
per-inode :class:`~.md_cache_state.MdState` records.  They use the translator's
``clock``, ``timeout``, ``_on`` (caching at all), ``xattr_names``, generation counter
``_gen``, ``stats``, ``opts`` and ``itable``.

A reply is stored only if its inode was not invalidated since the fop was wound (the
generation ``since`` the fop read before winding): it may carry the old state.  An
inode without a record cannot be marked; its first record is only filled from a reply
if nothing at all was invalidated while that fop was under way.

These run on every request md-cache sees, so they are written for the common case:
one context lookup, no copies, one clock reading per reply (per readdirp batch).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

from ..core.inode import Inode
from ..core.types import Attr, DirEntry, Entry, StatFs
from ..core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode
from .fop_targets import Changes
from .md_cache_state import ABSENT, CAPABILITY, MdState, XattrSelection


class MdRecords:
    """md-cache's record keeping (a mixin before Translator in the bases)."""
    clock: Callable[[], float]
    timeout: float
    _on: bool
    xattr_names: XattrSelection
    _gen: int
    _statfs: Optional[tuple[float, StatFs]]
    stats: dict[str, int]

    # -- the records --------------------------------------------------------------------
    def _state(self, inode: Inode) -> MdState:
        st = inode.ctx.get(self)
        if st is None:
            st = inode.ctx[self] = MdState()
        return st

    def _new_record(self, inode: Inode, attr: Optional[Attr], now: float,
                    since: int) -> MdState:
        """A first record for ``inode`` from a reply to a fop wound at generation
        ``since``.  An invalidation meanwhile found no record to mark (it may have been
        about this inode): then the reply is not cached, and the record starts as
        invalidated now."""
        if since == self._gen:
            st = inode.ctx[self] = MdState(attr, now)
        else:
            st = inode.ctx[self] = MdState()
            st.inval_gen = self._gen
        return st

    def _fresh(self, stamp: float) -> bool:
        return self.clock() - stamp < self.timeout

    def _caching(self) -> bool:
        return self._on

    def _invalidate(self, inode: Any, names: bool = False) -> None:
        """Drop ``inode``'s attributes and xattrs; with ``names`` (an upcall about a
        directory: any of its entries may have changed) its entries too, and the
        attributes of every inode they held (their link counts may have changed: an
        entry upcall that follows would no longer find them)."""
        st = inode.ctx.get(self) if isinstance(inode, Inode) else None
        if st is None:
            self._gen += 1          # a reply under way must not start its record
            return
        self._gen = gen = self._gen + 1
        if names:
            if st.names:
                for ino, _ in list(st.names.values()):
                    child = self.itable.find(ino)
                    cst = child.ctx.get(self) if child is not None else None
                    if cst is not None:
                        cst.drop(gen, names=False)
            st.drop(gen, True)
            return
        st.attr = None                          # MdState.drop, inline: the common case
        if st.xattrs:
            st.xattrs.clear()
        st.inval_gen = gen

    def _written(self, inode: Any) -> None:
        """A write changed ``inode``'s data (through md-cache, or past it by the kernel
        with a passthrough writer): drop its attributes and xattrs as
        :meth:`_invalidate` does, except a cached absence of ``security.capability``.
        A write can only end a file capability (kill-privileges), never make one, so
        "none" stays true; it keeps its time (``md-cache-timeout`` still bounds it)."""
        st = inode.ctx.get(self) if isinstance(inode, Inode) else None
        if st is None:
            self._gen += 1          # a reply under way must not start its record
            return
        self._gen = gen = self._gen + 1
        st.attr = None
        xattrs = st.xattrs
        if xattrs:
            if xattrs.get(CAPABILITY, xattrs) is not ABSENT:
                xattrs.clear()
            elif len(xattrs) > 1:               # the absence alone is left as it is
                xattrs.clear()
                xattrs[CAPABILITY] = ABSENT
        st.inval_gen = gen

    def _invalidate_name(self, parent: Any, name: bytes) -> None:
        """The entry ``name`` of ``parent`` changed: drop it and the inode it held."""
        st = parent.ctx.get(self) if isinstance(parent, Inode) else None
        if st is None:
            self._gen += 1          # a reply under way must not start its record
            return
        absent = st.absent
        if absent is not None and absent[0] == name:
            st.absent = None
        held = st.names.pop(name, None)
        if held is not None:
            child = self.itable.find(held[0])
            if child is not None:
                self._invalidate(child)

    def _entry_changed(self, loc: Any) -> Optional[MdState]:
        """A fop made, removed or replaced the entry of ``loc``: drop the entry, the inode
        it held (``loc.inode`` too, when the caller knew it) and the directory's
        attributes (its mtime, and its link count for a directory entry).  Returns the
        directory's record (None when it has none)."""
        if loc.inode is not None:
            self._invalidate(loc.inode)
        pst = loc.parent.ctx.get(self)
        if pst is None:
            self._gen += 1          # a reply under way must not start its record
            return None
        self._gen = gen = self._gen + 1
        name = loc.name
        if name is not None:
            if name.__class__ is not bytes:
                name = os.fsencode(name)
            pst.absent = None
            held = pst.names.pop(name, None)
            if held is not None:
                child = self.itable.by_ino.get(held[0])
                cst = child.ctx.get(self) if child is not None else None
                if cst is not None:             # MdState.drop, inline
                    cst.attr = None
                    if cst.xattrs:
                        cst.xattrs.clear()
                    cst.inval_gen = gen
        pst.attr = None
        if pst.xattrs:
            pst.xattrs.clear()
        pst.inval_gen = gen
        return pst

    def _made_entry(self, loc: Any, entry: Any) -> Optional[MdState]:
        """A fop made the entry of ``loc`` (create, mkdir, ...): drop what it changed
        (:meth:`_entry_changed`), then cache the reply's entry and attributes (as of
        now: a reply to a change is fresher than any invalidation before it).  Returns
        the new inode's record (None when nothing is cached)."""
        pst = self._entry_changed(loc)
        name = loc.name
        if not self._on or not name or entry.__class__ is not Entry:
            return None
        if name.__class__ is not bytes:
            name = os.fsencode(name)
        inode = entry.inode
        attr = entry.attr
        now = self.clock()
        st = inode.ctx.get(self)
        if isinstance(attr, Attr):
            if st is None:
                st = inode.ctx[self] = MdState(attr, now)
            else:
                st.attr = attr
                st.attr_time = now
        if pst is None:
            pst = loc.parent.ctx[self] = MdState()
        pst.names[name] = (inode.ino, now)
        return st

    def _drop_all(self) -> None:
        self._gen += 1
        for inode in self.itable:
            st = inode.ctx.get(self)
            if st is not None:
                st.drop(self._gen, names=True)
        self._statfs = None

    def _apply_changes(self, ch: Changes) -> None:
        for parent, name in ch.names:
            self._invalidate_name(parent, name)
        for inode in ch.inodes + ch.dirs:      # changed names were dropped above
            self._invalidate(inode)

    def _store_attr(self, inode: Inode, attr: Attr, since: int) -> None:
        """Cache ``attr`` for ``inode`` from a reply to a fop wound at generation
        ``since`` (unless the inode was invalidated after that)."""
        if not self._on or not isinstance(attr, Attr):
            return
        st = inode.ctx.get(self)
        if st is None:
            self._new_record(inode, attr, self.clock(), since)
        elif st.inval_gen <= since:
            st.attr = attr
            st.attr_time = self.clock()

    def _store_entry(self, parent: Inode, name: bytes, entry: Entry, since: int) -> None:
        """Cache the entry ``name`` of ``parent`` and its attributes from a reply to a fop
        wound at generation ``since`` (what was invalidated after that is not)."""
        if not self._on or entry.__class__ is not Entry:
            return
        inode = entry.inode
        now = self.clock()
        st = inode.ctx.get(self)
        if st is None:
            attr = entry.attr
            if isinstance(attr, Attr):
                self._new_record(inode, attr, now, since)
        elif st.inval_gen <= since:
            attr = entry.attr
            if isinstance(attr, Attr):
                st.attr = attr
                st.attr_time = now
        pst = parent.ctx.get(self)
        if pst is None:
            pst = self._new_record(parent, None, now, since)
        if pst.inval_gen > since:
            return
        pst.names[name] = (inode.ino, now)

    def _store_entries(self, parent: Inode, entries: Iterable[DirEntry], since: int) -> None:
        """A readdirp batch: each entry's attributes and name, with one clock reading."""
        now = self.clock()
        pst = parent.ctx.get(self)
        if pst is None:
            pst = self._new_record(parent, None, now, since)
        names = pst.names if pst.inval_gen <= since else None
        for e in entries:
            entry = e.entry
            if entry is None:
                continue
            name = e.name
            if name == b"." or name == b"..":
                continue
            inode = entry.inode
            st = inode.ctx.get(self)
            if st is None:
                self._new_record(inode, entry.attr, now, since)
            elif st.inval_gen <= since:
                st.attr = entry.attr
                st.attr_time = now
            if names is not None:
                names[name] = (inode.ino, now)

    def _cached_attr(self, inode: Inode) -> Optional[Attr]:
        st = inode.ctx.get(self)
        if st is None:
            return None
        attr = st.attr
        if attr is None or st.passthrough_writers \
                or self.clock() - st.attr_time >= self.timeout:
            return None
        return attr

    def _cached_entry(self, parent: Inode, name: bytes) -> Optional[Entry]:
        pst = parent.ctx.get(self)
        if pst is None:
            return None
        held = pst.names.get(name)
        return None if held is None else self._entry_hit(held)

    def _entry_hit(self, held: tuple[int, float]) -> Optional[Entry]:
        """The entry a directory's ``names`` record ``held`` gives, if it and the
        attributes of its inode are fresh."""
        now = self.clock()
        if now - held[1] >= self.timeout:
            return None
        inode = self.itable.find(held[0])
        if inode is None:
            return None
        st = inode.ctx.get(self)
        if st is None:
            return None
        attr = st.attr
        if attr is None or st.passthrough_writers or now - st.attr_time >= self.timeout:
            return None
        return Entry(inode, attr)

    def _name_known(self, loc: Any) -> bool:
        """md-cache knows what the name of ``loc`` holds: an entry it saw (the inode
        whose record a change of the name must drop), or a fresh lookup that found the
        name missing."""
        pst = loc.parent.ctx.get(self)
        if pst is None:
            return False
        name = loc.name
        if name in pst.names:
            return True
        absent = pst.absent
        return absent is not None and absent[0] == name \
            and self.clock() - absent[1] < self.timeout

    def _store_xattr(self, inode: Inode, name: bytes, value: Optional[bytes],
                     since: int) -> None:
        st = inode.ctx.get(self)
        if st is None:
            st = self._new_record(inode, None, self.clock(), since)
        if st.inval_gen > since:
            return
        if not st.xattrs or not self._fresh(st.xattr_time):
            st.xattrs.clear()
            st.xattr_time = self.clock()
        st.xattrs[name] = value

    # -- upcalls -----------------------------------------------------------------------
    def _upcall(self, msg: Any) -> None:
        if isinstance(msg, InvalidateInode):
            self._invalidate(msg.inode, names=True)
        elif isinstance(msg, (InvalidateEntry, DeleteEntry)):
            self._invalidate_name(msg.parent, msg.name)
            self._invalidate(msg.parent)
            if isinstance(msg, DeleteEntry):
                self._invalidate(msg.child)
