"""md-cache's records: storing, serving and dropping what it knows of inodes.

:class:`MdRecords` is mixed into the translator (``xlators.performance.md_cache``): the
fops there decide *when* to cache or invalidate, the methods here *how*, on the
per-inode :class:`~.md_cache_state.MdState` records.  They use the translator's
``clock``, ``timeout``, ``xattr_names``, generation counter ``_gen``, ``stats``,
``opts`` and ``itable``.

A reply is stored only if its inode was not invalidated since the fop was wound (the
generation ``since`` the fop read before winding): it may carry the old state.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..core.inode import Inode
from ..core.types import Attr, Entry, StatFs
from ..core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode
from .fop_targets import Changes
from .md_cache_state import MdState, XattrSelection


class MdRecords:
    """md-cache's record keeping (a mixin before Translator in the bases)."""
    clock: Callable[[], float]
    timeout: float
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

    def _fresh(self, stamp: float) -> bool:
        return self.clock() - stamp < self.timeout

    def _caching(self) -> bool:
        return self.timeout > 0 and not self.opts.pass_through

    def _invalidate(self, inode: Any, names: bool = False) -> None:
        """Drop ``inode``'s attributes and xattrs; with ``names`` (an upcall about a
        directory: any of its entries may have changed) its entries too, and the
        attributes of every inode they held (their link counts may have changed: an
        entry upcall that follows would no longer find them)."""
        st = inode.ctx.get(self) if isinstance(inode, Inode) else None
        if st is None:
            return
        self._gen += 1
        if names and st.names:
            for ino, _ in list(st.names.values()):
                child = self.itable.find(ino)
                cst = child.ctx.get(self) if child is not None else None
                if cst is not None:
                    cst.drop(self._gen, names=False)
        st.drop(self._gen, names)
        self.stats["invalidations"] += 1

    def _invalidate_name(self, parent: Any, name: bytes) -> None:
        """The entry ``name`` of ``parent`` changed: drop it and the inode it held."""
        st = parent.ctx.get(self) if isinstance(parent, Inode) else None
        if st is None:
            return
        held = st.names.pop(name, None)
        if held is not None:
            child = self.itable.find(held[0])
            if child is not None:
                self._invalidate(child)

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
        if not self._caching() or not isinstance(attr, Attr):
            return
        st = self._state(inode)
        if st.inval_gen > since:
            return
        st.attr = attr.copy()
        st.attr_time = self.clock()

    def _store_entry(self, parent: Inode, name: bytes, entry: Entry, since: int) -> None:
        if not self._caching():
            return
        self._store_attr(entry.inode, entry.attr, since)
        pst = self._state(parent)
        if pst.inval_gen > since:
            return
        pst.names[name] = (entry.inode.ino, self.clock())

    def _cached_attr(self, inode: Inode) -> Optional[Attr]:
        st = inode.ctx.get(self)
        if st is None or st.attr is None or st.passthrough_writers \
                or not self._fresh(st.attr_time):
            return None
        return st.attr

    def _cached_entry(self, parent: Inode, name: bytes) -> Optional[Entry]:
        pst = parent.ctx.get(self)
        if pst is None:
            return None
        held = pst.names.get(name)
        if held is None or not self._fresh(held[1]):
            return None
        inode = self.itable.find(held[0])
        if inode is None:
            return None
        attr = self._cached_attr(inode)
        if attr is None:
            return None
        return Entry(inode, attr.copy())

    def _store_xattr(self, inode: Inode, name: bytes, value: Optional[bytes],
                     since: int) -> None:
        st = self._state(inode)
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
