"""The fops of storage/memory that change a node's attributes: setattr (mode, owner,
size, times, with POSIX's permission rules and set-id clearing) and the xattr fops.

A mixin of :class:`xlators.storage.memory.Memory` (kept apart to keep each module short);
it relies on the translator's ``used`` counter and ``_node``.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from typing import Any, Optional

from ..core.bounds import new_size, xattr_flags
from ..core.errors import FopError
from ..core.inode import Fd, Inode
from ..core.types import NOW, Attr, SetAttr
from .memory_node import (CAPS, MAX_FILE_SIZE, W_OK, XATTR_SIZE_MAX, check, in_group,
                          is_owner, kill_suid, may, visible_xattr, xattr_check)

XATTR_CREATE = 1
XATTR_REPLACE = 2


class MemoryAttrs:
    """setattr and the xattr fops of storage/memory."""

    async def setattr(self, frame: Any, inode: Inode, changes: SetAttr,
                      fd: Optional[Fd] = None) -> Attr:
        node = (fd.ctx.get(self) if fd is not None else None) or self._node(inode)
        c = changes
        if c.size is not None:
            c = c._replace(size=new_size(c.size, MAX_FILE_SIZE))
        root = frame.uid == 0
        mode = node.mode
        # -- validate everything first: a refused setattr changes nothing --
        if c.mode is not None and not is_owner(frame, node):
            # The kernel (without handle_killpriv) clears set-id bits after a write or
            # truncate by a non-owner with a SETATTR of the mode from that caller: allow
            # a mode that only drops those bits of a regular file the caller may write.
            new, cur = c.mode & 0o7777, mode & 0o7777
            privs = stat.S_ISUID | stat.S_ISGID
            if not (node.is_reg and new != cur and (new | privs) == (cur | privs)
                    and not new & ~cur and may(frame, node, W_OK)):
                raise FopError(errno.EPERM)
            # the kernel decided which bits go (set-group-ID by group membership too)
        if c.uid is not None and not root and not (c.uid == node.uid == frame.uid):
            raise FopError(errno.EPERM)
        if c.gid is not None and not root and not (
                frame.uid == node.uid and (c.gid == node.gid or in_group(frame, c.gid))):
            raise FopError(errno.EPERM)
        if c.size is not None:
            if node.is_dir:
                raise FopError(errno.EISDIR)
            if not node.is_reg:
                raise FopError(errno.EINVAL)
            if fd is None:
                check(frame, node, W_OK)
        times = (c.atime_ns, c.mtime_ns)
        if any(t is not None and t != NOW for t in times):
            # ctime comes only from a writeback-cache kernel flushing its own times
            # after a write, truncate or touch by any writer: allowed to writers.
            if not is_owner(frame, node) and not (c.ctime_ns is not None and (
                    (fd is not None and fd.flags & os.O_ACCMODE != os.O_RDONLY)
                    or may(frame, node, W_OK))):
                raise FopError(errno.EPERM)
        elif any(t == NOW for t in times):
            if not is_owner(frame, node) and not may(frame, node, W_OK):
                raise FopError(errno.EACCES)
        # -- apply --
        now = time.time_ns()
        if c.mode is not None:
            mode = stat.S_IFMT(mode) | (c.mode & 0o7777)
            gid = node.gid if c.gid is None else c.gid
            if not root and not in_group(frame, gid):
                mode &= ~stat.S_ISGID
        if c.uid is not None or c.gid is not None:
            if not node.is_dir:
                mode = kill_suid(mode)
            if c.uid is not None:
                node.uid = c.uid
            if c.gid is not None:
                node.gid = c.gid
        if c.size is not None:
            data = node.data
            before = data.alloc
            data.truncate(c.size)
            self.used += data.alloc - before
            node.touch(now)
            if not root:
                mode = kill_suid(mode, frame, node.gid)
            if node.xattrs:
                node.xattrs.pop(CAPS, None)     # truncating ends file capabilities
        if c.kill_suidgid:
            mode = kill_suid(mode, frame, node.gid)
        node.mode = mode
        if c.atime_ns is not None:
            node.atime_ns = now if c.atime_ns == NOW else c.atime_ns
        if c.mtime_ns is not None:
            node.mtime_ns = now if c.mtime_ns == NOW else c.mtime_ns
        node.ctime_ns = now if c.ctime_ns is None else c.ctime_ns
        return node.attr()


    async def setxattr(self, frame: Any, inode: Inode, name: bytes, value: bytes,
                       flags: int) -> None:
        flags = xattr_flags(flags or 0)
        node = self._node(inode)
        xattr_check(frame, node, name, True)
        if len(value) > XATTR_SIZE_MAX:
            raise FopError(errno.E2BIG)
        xattrs = node.xattrs
        exists = xattrs is not None and name in xattrs
        if flags & XATTR_CREATE and exists:
            raise FopError(errno.EEXIST)
        if flags & XATTR_REPLACE and not exists:
            raise FopError(errno.ENODATA)
        if xattrs is None:
            xattrs = node.xattrs = {}
        xattrs[bytes(name)] = bytes(value)
        node.ctime_ns = time.time_ns()

    async def getxattr(self, frame: Any, inode: Inode, name: bytes) -> bytes:
        node = self._node(inode)
        xattr_check(frame, node, name, False)
        value = node.xattrs.get(name) if node.xattrs else None
        if value is None:
            raise FopError(errno.ENODATA)
        return value

    async def listxattr(self, frame: Any, inode: Inode) -> list[bytes]:
        node = self._node(inode)
        return [n for n in (node.xattrs or ()) if visible_xattr(frame, n)]

    async def removexattr(self, frame: Any, inode: Inode, name: bytes) -> None:
        node = self._node(inode)
        if not (name == CAPS and may(frame, node, W_OK)):
            # The kernel removes file capabilities after a write or truncate, as the
            # writer; nobody else gets that far without CAP_SETFCAP.
            xattr_check(frame, node, name, True)
        if not node.xattrs or name not in node.xattrs:
            raise FopError(errno.ENODATA)
        del node.xattrs[name]
        node.ctime_ns = time.time_ns()

