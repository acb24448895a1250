"""storage/gfapi's inode bookkeeping (see gfapi for the translator and its volfile).

Each inode of the table carries a :class:`Node`: its libgfapi handle (``glfs_object``,
which holds the gfid), GlusterFS's inode number (the gfid's low 64 bits) and its type.
One handle per live inode: a second handle for an inode already known is closed.
Upcalls carry gfids, not names, so the names this client looked up are remembered per
node (at most ``MAX_NAMES``) to send entry invalidations when another client removes or
renames the file.  ``forget`` closes the handle.
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from ..core.errors import FopError
from ..core.inode import Inode
from ..core.types import Attr, Entry

S_IFMT = 0o170000
_new_object = object.__new__
MAX_NAMES = 8             # names remembered per inode for entry invalidations


class Node:
    """gfapi's context of one inode: its libgfapi handle."""
    __slots__ = ("obj", "ino", "kind", "names", "opens", "caps_absent_until", "seen",
                 "opened")

    def __init__(self, obj: int, ino: int, mode: int) -> None:
        self.obj = obj
        self.ino = ino
        self.kind = mode & S_IFMT
        self.names: set[tuple[int, bytes]] = set()   # (parent ino, name) looked up
        self.opens: list[Any] = []    # open files (fstat of a file deleted while open)
        self.caps_absent_until = 0.0  # no security.capability until then (gfapi_attr)
        # (mtime, ctime, size) in the last attributes answered, and at the last open
        # (None: never opened, or changed by another client since): gfapi_io.keep_cache
        self.seen: Optional[tuple[int, int, int]] = None
        self.opened: Optional[tuple[int, int, int]] = None

    def __repr__(self) -> str:
        return f"<gfapi.Node ino={self.ino} obj={self.obj:#x}>"


class GfapiNodes:
    """Mixed into storage/gfapi's translator class."""

    def _node(self, inode: Any) -> Node:
        node = inode.ctx.get(self) if inode is not None else None
        if node is None:
            raise FopError(errno.ESTALE)
        return node

    def _attr(self, st: Any, node: Optional[Node] = None) -> Attr:
        """The Attr of a stat; remembered as what ``node`` last looked like.  Once per
        reply with attributes and per listed entry: the fields come from one unpack
        and fill the slots directly (measured: half the cost of reading the ctypes
        fields and calling Attr's constructor)."""
        (_dev, ino, nlink, mode, uid, gid, _pad, rdev, size, blksize, blocks,
         a, an, m, mn, c, cn) = self._b.STAT_STRUCT.unpack_from(st)
        attr = _new_object(Attr)
        attr.ino = ino
        attr.size = size
        attr.blocks = blocks
        attr.atime_ns = a * 1_000_000_000 + an
        attr.mtime_ns = mtime = m * 1_000_000_000 + mn
        attr.ctime_ns = ctime = c * 1_000_000_000 + cn
        attr.mode = mode
        attr.nlink = nlink
        attr.uid = uid
        attr.gid = gid
        attr.rdev = rdev
        attr.blksize = blksize or 4096    # some replies (glfs_h_stat) leave it out
        if node is not None:
            node.seen = (mtime, ctime, size)
        return attr

    def _entry(self, obj: int, st: Any) -> Entry:
        """The table's inode for handle ``obj`` (closed when the inode has one)."""
        attr = self._attr(st)
        ino = attr.ino
        inode = self.itable.find(ino)
        node = inode.ctx.get(self) if inode is not None else None
        if node is None:
            node = self._live.get(ino)
            if node is None:
                node = self._live[ino] = Node(obj, ino, attr.mode)
                obj = 0
            if inode is None:
                inode = self.itable.link(ino)
            inode.ctx[self] = node
        if obj:
            self._b.lib.glfs_h_close(obj)
        node.seen = (attr.mtime_ns, attr.ctime_ns, attr.size)
        return Entry(inode, attr)

    def _named(self, entry: Entry, pnode: Node, name: bytes) -> Entry:
        """Remember a name of the entry's object (upcalls carry no names)."""
        node = entry.inode.ctx.get(self)
        if node is not None and len(node.names) < MAX_NAMES:
            key = (pnode.ino, name)
            node.names.add(key)
            self._by_name[key] = node
        return entry

    def _unnamed(self, pnode: Node, name: bytes) -> None:
        node = self._by_name.pop((pnode.ino, name), None)
        if node is not None:
            node.names.discard((pnode.ino, name))

    def names_of(self, inode: Any) -> set[tuple[int, bytes]]:
        node = inode.ctx.get(self)
        return node.names if node is not None else set()

    async def forget(self, frame, inode: Inode):
        node = inode.ctx.pop(self, None)
        if node is None or inode is self.itable.root:
            if node is not None:
                inode.ctx[self] = node
            return None
        current = self.itable.find(node.ino)
        if current is not None and current is not inode and current.ctx.get(self) is node:
            return None
        if self._live.get(node.ino) is node:
            del self._live[node.ino]
        for key in node.names:
            if self._by_name.get(key) is node:
                del self._by_name[key]
        if self._fs is not None:
            self._b.lib.glfs_h_close(node.obj)
        return None
