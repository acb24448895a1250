"""meta/meta's answers to what would change ``.meta``: a new name in it (or a second
``.meta`` in the root), a removal, a rename, an xattr change, a lock, an allocation, a
copy into it.  GlusterFS's meta refuses them with EPERM; a new ``.meta`` in the root is
EEXIST, since one is there.  On anything else these fops pass to the child.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Awaitable, Optional

from ..core.errors import FopError
from ..core.inode import Fd, Inode, Loc
from ..core.types import Entry
from ..debug.io_stats_dump import is_dump_key


class Refusals:
    """Mixed into meta/meta (which provides ``_dir_bytes``, ``itable``, ``child``,
    ``profiler``, ``graph_xlators()`` and ``log``)."""
    _dir_bytes: bytes
    itable: Any
    child: Any
    profiler: Any
    log: Any

    def graph_xlators(self) -> list:
        raise NotImplementedError

    def _meta(self, inode: Optional[Inode]) -> Any:
        return inode.ctx.get(self) if inode is not None else None

    def _is_meta_name(self, loc: Loc) -> bool:
        return loc.name == self._dir_bytes and loc.parent is self.itable.root

    def _touches_meta(self, loc: Optional[Loc]) -> bool:
        if loc is None:
            return False
        parent, inode = loc.parent, loc.inode       # _is_meta_name and _meta, inline
        if parent is not None and (parent.ctx.get(self) is not None or (
                parent is self.itable.root and loc.name == self._dir_bytes)):
            return True
        return inode is not None and inode.ctx.get(self) is not None

    def _refuse_new(self, loc: Loc) -> None:
        if self._is_meta_name(loc):
            raise FopError(errno.EEXIST)
        if self._meta(loc.parent) is not None:
            raise FopError(errno.EPERM)

    # The namespace fops every modifying request takes are plain functions that check,
    # then hand back the child's coroutine (as pass-through defaults do): no coroutine
    # of this layer's own per unlink, rename, mkdir...  The common case is spelled out:
    # a name outside the root, or any name but ``.meta`` in it, of a parent outside
    # ``.meta`` (``_refuse_new``, ``_touches_meta``).
    def mknod(self, frame: Any, loc: Loc, mode: int, rdev: int, umask: int
              ) -> Awaitable[Entry]:
        self._refuse_new(loc)
        return self.child.mknod(frame, loc, mode, rdev, umask)

    def mkdir(self, frame: Any, loc: Loc, mode: int, umask: int) -> Awaitable[Entry]:
        parent = loc.parent
        if parent is not None and (parent.ctx.get(self) is not None
                                   or parent is self.itable.root):
            self._refuse_new(loc)
        return self.child.mkdir(frame, loc, mode, umask)

    def symlink(self, frame: Any, target: bytes, loc: Loc) -> Awaitable[Entry]:
        self._refuse_new(loc)
        return self.child.symlink(frame, target, loc)

    def create(self, frame: Any, loc: Loc, flags: int, mode: int, umask: int,
               fd: Fd) -> Awaitable[Entry]:
        parent = loc.parent
        if parent is not None and (parent.ctx.get(self) is not None
                                   or parent is self.itable.root):
            self._refuse_new(loc)
        if self.profiler.on:
            return self._create_profiled(frame, loc, flags, mode, umask, fd)
        return self.child.create(frame, loc, flags, mode, umask, fd)

    async def _create_profiled(self, frame: Any, loc: Loc, flags: int, mode: int,
                               umask: int, fd: Fd) -> Entry:
        entry = await self.child.create(frame, loc, flags, mode, umask, fd)
        if self.profiler.on:
            self.profiler.named(entry.inode.nodeid, loc.parent.nodeid, loc.name)
            self.profiler.file(entry.inode.nodeid).opens += 1
        return entry

    def link(self, frame: Any, inode: Inode, newloc: Loc) -> Awaitable[Entry]:
        if self._meta(inode) is not None:
            raise FopError(errno.EPERM)
        self._refuse_new(newloc)
        return self.child.link(frame, inode, newloc)

    def unlink(self, frame: Any, loc: Loc) -> Awaitable[None]:
        if self._touches_meta(loc):
            raise FopError(errno.EPERM)
        return self.child.unlink(frame, loc)

    def rmdir(self, frame: Any, loc: Loc) -> Awaitable[None]:
        if self._touches_meta(loc):
            raise FopError(errno.EPERM)
        return self.child.rmdir(frame, loc)

    def rename(self, frame: Any, oldloc: Loc, newloc: Loc, flags: int = 0
               ) -> Awaitable[None]:
        if self._touches_meta(oldloc) or self._touches_meta(newloc):
            raise FopError(errno.EPERM)
        return self.child.rename(frame, oldloc, newloc, flags)

    async def setxattr(self, frame: Any, inode: Inode, name: bytes, value: bytes,
                       flags: int) -> None:
        if self._meta(inode) is not None:
            raise FopError(errno.EPERM)
        if is_dump_key(name) and not any(xl.type == "debug/io-stats"
                                         for xl in self.graph_xlators()):
            self.log.warning("%s: no debug/io-stats in the graph to dump", name)
            raise FopError(errno.EOPNOTSUPP)  # and the key never reaches the storage
        return await self.child.setxattr(frame, inode, name, value, flags)

    async def removexattr(self, frame: Any, inode: Inode, name: bytes) -> None:
        if self._meta(inode) is not None:
            raise FopError(errno.EPERM)
        return await self.child.removexattr(frame, inode, name)

    async def getxattr(self, frame: Any, inode: Inode, name: bytes) -> bytes:
        if self._meta(inode) is not None:
            raise FopError(errno.ENODATA)
        return await self.child.getxattr(frame, inode, name)

    async def listxattr(self, frame: Any, inode: Inode) -> list[bytes]:
        if self._meta(inode) is not None:
            return []
        return await self.child.listxattr(frame, inode)

    async def lk(self, frame: Any, fd: Fd, cmd: Any, lock: Any) -> Any:
        if fd.ctx.get(self) is not None:
            raise FopError(errno.ENOLCK)
        return await self.child.lk(frame, fd, cmd, lock)

    async def fallocate(self, frame: Any, fd: Fd, mode: int, offset: int,
                        length: int) -> None:
        if fd.ctx.get(self) is not None:
            raise FopError(errno.EPERM)
        return await self.child.fallocate(frame, fd, mode, offset, length)

    async def lseek(self, frame: Any, fd: Fd, offset: int, whence: int) -> int:
        mfd = fd.ctx.get(self)
        if mfd is None:
            return await self.child.lseek(frame, fd, offset, whence)
        if offset < 0:
            raise FopError(errno.ENXIO)
        if whence == os.SEEK_DATA and offset < len(mfd.content):
            return offset
        if whence == os.SEEK_HOLE and offset <= len(mfd.content):
            return len(mfd.content)
        raise FopError(errno.ENXIO)

    async def copy_file_range(self, frame: Any, fd_in: Fd, off_in: int, fd_out: Fd,
                              off_out: int, length: int, flags: int) -> int:
        if fd_out.ctx.get(self) is not None:
            raise FopError(errno.EPERM)
        if fd_in.ctx.get(self) is not None:
            raise FopError(errno.EXDEV)       # the kernel falls back to read + write
        return await self.child.copy_file_range(frame, fd_in, off_in, fd_out, off_out,
                                                length, flags)

