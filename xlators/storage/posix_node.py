"""storage/posix: what posix keeps of each inode (a :class:`Node`: its ``O_PATH``
descriptor) and how a stat result becomes the table's inode (a mixin of the Posix
translator).

Identity is the inode number: ``_entry`` finds or links the table's inode for what a
stat describes and gives it a Node, opening a descriptor only for an inode that has
none; ``forget`` closes it; ``resolve`` finds a forgotten inode again by its export key
(posix_handle).  Inodes of another filesystem mounted inside the brick get its device
folded into the top 8 bits of the number (option ``submounts``).
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Any, Optional

from xlators.core.errors import FopError
from xlators.core.types import Attr, Entry

from . import posix_handle, posix_lk
from .posix_sys import lookup_at

O_LOOKUP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
S_IFMT = stat.S_IFMT
S_IFDIR = stat.S_IFDIR
# Entry(inode, attr) without the namedtuple's __new__, a Python function (half the cost):
# once per LOOKUP and per new object
_tuple_new = tuple.__new__


class Node:
    """posix's context of one inode: its O_PATH descriptor and small per-inode state."""
    __slots__ = ("fd", "kind", "ino", "devbits", "mode", "opens", "locks", "lock_pids",
                 "noacl_ctime")

    def __init__(self, fd: int, mode: int, ino: int, devbits: int) -> None:
        self.fd = fd
        self.kind = S_IFMT(mode)
        self.ino = ino
        self.devbits = devbits        # folded into d_ino of entries listed in this dir
        self.mode = mode              # last mode seen (writev's kill-suid decision)
        self.opens = 0                # open Fds (lock descriptors go with the last one)
        self.locks: Optional[dict] = None       # (owner, flock) -> descriptor
        self.lock_pids: Optional[dict] = None   # owner -> pid
        self.noacl_ctime = -1         # ctime at which "no access ACL" was verified

    def __repr__(self) -> str:
        return f"<posix.Node fd={self.fd} ino={self.ino} mode={self.mode:o}>"


class PosixNodes:
    """Nodes and the inode table for Posix (needs its _live, _devs, _dev, _root,
    _handles, _watch, _root_stat)."""

    def _node(self, inode: Any) -> Node:
        node = inode.ctx.get(self) if inode is not None else None
        if node is None:
            raise FopError(errno.ESTALE)
        return node


    def _known_ino(self, st: os.stat_result) -> Optional[int]:
        """The table's inode number for ``st`` (the device folded in as ``_devbits``
        does), or None for a device posix has not met: nothing is registered."""
        if st.st_dev == self._dev:
            return st.st_ino
        idx = self._devs.get(st.st_dev)
        return None if idx is None else st.st_ino | idx << 56

    def _devbits(self, dev: int, ino: int) -> int:
        idx = self._devs.get(dev)
        if idx is None:
            if not self.opts.submounts or len(self._devs) >= 255:
                raise FopError(errno.EXDEV)
            idx = self._devs[dev] = len(self._devs) + 1
        if ino >> 56:
            raise FopError(errno.EOVERFLOW)
        return idx << 56

    def _entry(self, st: os.stat_result, fd: int = -1, iofd: int = -1, pfd: int = -1,
               name: bytes = b"") -> Entry:
        """Entry for what ``st`` describes: the table's inode, with posix's context.

        When the inode has no descriptor yet, it gets ``fd`` (a fresh O_PATH descriptor,
        closed otherwise), else a reopening of ``iofd`` (an open descriptor of it), else
        an O_PATH open of ``name`` in directory ``pfd`` (``st`` came from a plain stat:
        if the name changed in between, the new file is the answer)."""
        bits = 0
        if st.st_dev != self._dev:
            try:
                bits = self._devbits(st.st_dev, st.st_ino)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                raise
        ino = st.st_ino | bits
        inode = self.itable.by_ino.get(ino)
        node = inode.ctx.get(self) if inode is not None else None
        if node is None:
            node = self._live.get(ino)
            if node is None:
                if fd < 0:
                    if iofd >= 0:
                        fd = os.open(f"/proc/self/fd/{iofd}", os.O_PATH | os.O_CLOEXEC)
                    else:
                        fd, st2 = lookup_at(pfd, name)
                        if st2.st_ino != st.st_ino or st2.st_dev != st.st_dev:
                            return self._entry(st2, fd)
                node = self._live[ino] = Node(fd, st.st_mode, ino, bits)
                fd = -1
                if self._watch is not None:
                    self._watch.new_node(node, st.st_nlink)
            if inode is None:
                handles = self._handles
                key = handles.key(node.fd) if handles is not None and not bits else 0
                inode = self.itable.link(ino, key)
            inode.ctx[self] = node
        if fd >= 0:
            os.close(fd)
        node.mode = st.st_mode
        return _tuple_new(Entry, (inode, Attr.from_stat(st, ino)))

    async def forget(self, frame, inode):
        node = inode.ctx.pop(self, None)
        if node is None or node is self._root:
            if node is not None:
                inode.ctx[self] = node
            return None
        ino = node.ino
        current = self.itable.by_ino.get(ino)
        if current is not None and current is not inode and current.ctx.get(self) is node:
            return None          # a newer Inode for the same file shares the descriptor
        live = self._live
        if live.get(ino) is node:
            del live[ino]
        if node.locks:
            posix_lk.drop_all(node)
        if self._watch is not None:
            self._watch.forget(node)
        os.close(node.fd)
        return None

    async def resolve(self, frame, nodeid):
        """The object whose brick file handle is ``nodeid`` (see posix_handle): ESTALE
        when it is gone, has no name left, or is a directory outside the brick."""
        handles = self._handles
        if handles is None:
            raise FopError(errno.ESTALE)
        try:
            fd = handles.open(nodeid)
        except OSError:
            raise FopError(errno.ESTALE) from None
        try:
            st = os.fstat(fd)
            # ext4 skips the generation check for generation 0: the handle read back
            # must be the key asked for
            if (st.st_dev != self._dev or st.st_nlink == 0 or handles.key(fd) != nodeid
                    or (S_IFMT(st.st_mode) == S_IFDIR
                        and not posix_handle.inside(fd, self._root_stat))):
                raise FopError(errno.ESTALE)
        except BaseException:
            os.close(fd)
            raise
        return self._entry(st, fd)
