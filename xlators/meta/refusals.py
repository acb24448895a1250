"""meta/meta's answers to what would change ``.meta``: a new name in it (or a second
``.meta`` in the root), a removal, a rename, an xattr change, a lock, an allocation, a
copy into it.  GlusterFS's meta refuses them with EPERM; a new ``.meta`` in the root is
EEXIST, since one is there.  On anything else these fops pass to the child.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Optional

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
        return (self._is_meta_name(loc) or self._meta(loc.parent) is not None
                or self._meta(loc.inode) is not None)

    def _refuse_new(self, loc: Loc) -> None:
        if self._is_meta_name(loc):
            raise FopError(errno.EEXIST)
        if self._meta(loc.parent) is not None:
            raise FopError(errno.EPERM)

    async def mknod(self, frame: Any, loc: Loc, mode: int, rdev: int, umask: int) -> Entry:
        self._refuse_new(loc)
        return await self.child.mknod(frame, loc, mode, rdev, umask)

    async def mkdir(self, frame: Any, loc: Loc, mode: int, umask: int) -> Entry:
        self._refuse_new(loc)
        return await self.child.mkdir(frame, loc, mode, umask)

    async def symlink(self, frame: Any, target: bytes, loc: Loc) -> Entry:
        self._refuse_new(loc)
        return await self.child.symlink(frame, target, loc)

    async def create(self, frame: Any, loc: Loc, flags: int, mode: int, umask: int,
                     fd: Fd) -> Entry:
        self._refuse_new(loc)
        entry = await self.child.create(frame, loc, flags, mode, umask, fd)
        if self.profiler.on:
            self.profiler.named(entry.inode.nodeid, loc.parent.nodeid, loc.name)
            self.profiler.file(entry.inode.nodeid).opens += 1
        return entry

    async def link(self, frame: Any, inode: Inode, newloc: Loc) -> Entry:
        if self._meta(inode) is not None:
            raise FopError(errno.EPERM)
        self._refuse_new(newloc)
        return await self.child.link(frame, inode, newloc)

    async def unlink(self, frame: Any, loc: Loc) -> None:
        if self._touches_meta(loc):
            raise FopError(errno.EPERM)
        return await self.child.unlink(frame, loc)

    async def rmdir(self, frame: Any, loc: Loc) -> None:
        if self._touches_meta(loc):
            raise FopError(errno.EPERM)
        return await self.child.rmdir(frame, loc)

    async def rename(self, frame: Any, oldloc: Loc, newloc: Loc, flags: int = 0) -> None:
        if self._touches_meta(oldloc) or self._touches_meta(newloc):
            raise FopError(errno.EPERM)
        return await self.child.rename(frame, oldloc, newloc, flags)

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

