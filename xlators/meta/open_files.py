"""The fops of meta/meta on open files and directories: what an open of a ``.meta``
file holds (its text, fixed at open) and what a listing of a ``.meta`` directory shows;
opens of everything else pass through (counted when profiling is on).

A mixin of :class:`xlators.meta.meta.Meta` (kept apart to keep each module short); it
relies on the translator's ``child``, ``profiler``, ``itable``, ``dir_name``, ``graph``
and its ``_text``, ``_entry``, ``_ino`` and ``_key``.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Any, Awaitable, Optional

from ..core.errors import FopError
from ..core.host import host_of
from ..core.inode import Fd, Inode
from ..core.types import DirEntry, dirent_type
from .tree import Dir, File, Node


class MetaFd:
    """What one open of a ``.meta`` file or directory holds."""
    __slots__ = ("content", "entries")

    def __init__(self) -> None:
        self.content = b""
        self.entries: list[tuple[str, Node]] = []


class OpenFiles:
    """open, read, write, flush, fsync and release of ``.meta`` files; opendir, readdir(p),
    fsyncdir and releasedir of its directories."""

    async def open(self, frame: Any, inode: Inode, flags: int, fd: Fd) -> None:
        mi = inode.ctx.get(self)
        if mi is None:
            if self.profiler.on:
                self.profiler.file(inode.nodeid).opens += 1
            return await self.child.open(frame, inode, flags, fd)
        node = mi.node
        if isinstance(node, Dir):
            raise FopError(errno.EISDIR)
        if not isinstance(node, File):
            raise FopError(errno.ELOOP)
        if flags & os.O_ACCMODE != os.O_RDONLY and node.write is None:
            raise FopError(errno.EPERM)
        mfd = MetaFd()
        snap = mi.snapshot
        if snap is not None and not self._direct_io():
            mfd.content = snap.data       # the size the kernel was last told
        else:
            mfd.content = self._text(mi)
        fd.ctx[self] = mfd
        fd.open_flags.add("direct_io")
        return None

    def _direct_io(self) -> bool:
        host = host_of(self.graph)
        try:
            return bool(host.direct_io()) if host is not None else True
        except Exception:
            return True

    def readv(self, frame: Any, fd: Fd, size: int, offset: int,
              flags: Optional[int] = None) -> Awaitable[bytes]:
        if fd.ctx.get(self) is None and not self.profiler.on:
            return self.child.readv(frame, fd, size, offset, flags)
        return self._readv(frame, fd, size, offset, flags)

    async def _readv(self, frame: Any, fd: Fd, size: int, offset: int,
                     flags: Optional[int]) -> bytes:
        mfd = fd.ctx.get(self)
        if mfd is None:
            data = await self.child.readv(frame, fd, size, offset, flags)
            if self.profiler.on:
                f = self.profiler.file(fd.inode.nodeid)
                f.reads += 1
                f.read_bytes += len(data)
            return data
        return mfd.content[offset:offset + size]

    def writev(self, frame: Any, fd: Fd, data: Any, offset: int,
               flags: Optional[int] = None) -> Awaitable[int]:
        if fd.ctx.get(self) is None and not self.profiler.on:
            return self.child.writev(frame, fd, data, offset, flags)
        return self._writev(frame, fd, data, offset, flags)

    async def _writev(self, frame: Any, fd: Fd, data: Any, offset: int,
                      flags: Optional[int]) -> int:
        mfd = fd.ctx.get(self)
        if mfd is None:
            n = await self.child.writev(frame, fd, data, offset, flags)
            if self.profiler.on:
                f = self.profiler.file(fd.inode.nodeid)
                f.writes += 1
                f.write_bytes += n
            return n
        mi = fd.inode.ctx.get(self)
        node = mi.node if mi is not None else None
        if not isinstance(node, File) or node.write is None:
            raise FopError(errno.EPERM)
        try:
            await node.write(bytes(data), mfd)
        except (ValueError, TypeError) as exc:
            self.log.warning("%s/%s: refused %r: %s", self.dir_name, "/".join(node.path),
                             bytes(data)[:64], exc)
            raise FopError(errno.EINVAL) from None
        mi.snapshot = None                # the next open shows the change
        return len(data)

    async def flush(self, frame: Any, fd: Fd) -> None:
        if fd.ctx.get(self) is None:
            return await self.child.flush(frame, fd)
        return None

    async def fsync(self, frame: Any, fd: Fd, datasync: Any) -> None:
        if fd.ctx.get(self) is None:
            return await self.child.fsync(frame, fd, datasync)
        return None

    async def release(self, frame: Any, fd: Fd) -> None:
        if fd.ctx.pop(self, None) is None:
            return await self.child.release(frame, fd)
        return None

    # -- directories -------------------------------------------------------------------------
    async def opendir(self, frame: Any, inode: Inode, fd: Fd) -> None:
        mi = inode.ctx.get(self)
        if mi is None:
            return await self.child.opendir(frame, inode, fd)
        if not isinstance(mi.node, Dir):
            raise FopError(errno.ENOTDIR)
        mfd = MetaFd()
        mfd.entries = list(mi.node.entries().items())
        fd.ctx[self] = mfd
        return None

    def _dir_entries(self, fd: Fd, mfd: MetaFd, offset: int, plus: bool) -> list[DirEntry]:
        mi = fd.inode.ctx[self]
        out: list[DirEntry] = []
        names: list[tuple[bytes, Optional[Node]]] = [(b".", None), (b"..", None)]
        names += [(os.fsencode(n), node) for n, node in mfd.entries]
        for i in range(max(0, offset), len(names)):
            name, node = names[i]
            if node is None:
                ino = fd.inode.ino if name == b"." else (
                    self._ino(mi.node.path[:-1]) if mi.node.path else self.itable.root.ino)
                out.append(DirEntry(name, ino, dirent_type(stat.S_IFDIR), i + 1))
                continue
            entry = self._entry(node) if plus else None
            ino = entry.inode.ino if entry is not None else self._ino(self._key(node))
            mode = {"dir": stat.S_IFDIR, "link": stat.S_IFLNK}.get(node.kind, stat.S_IFREG)
            out.append(DirEntry(name, ino, dirent_type(mode), i + 1, entry))
        return out

    async def readdir(self, frame: Any, fd: Fd, offset: int, size: int) -> list[DirEntry]:
        mfd = fd.ctx.get(self)
        if mfd is None:
            return await self.child.readdir(frame, fd, offset, size)
        return self._dir_entries(fd, mfd, offset, False)

    async def readdirp(self, frame: Any, fd: Fd, offset: int, size: int) -> list[DirEntry]:
        mfd = fd.ctx.get(self)
        if mfd is None:
            entries = await self.child.readdirp(frame, fd, offset, size)
            if self.profiler.on:
                parent = fd.inode.nodeid
                for e in entries:
                    if e.entry is not None:
                        self.profiler.named(e.entry.inode.nodeid, parent, e.name)
            return entries
        return self._dir_entries(fd, mfd, offset, True)

    async def fsyncdir(self, frame: Any, fd: Fd, datasync: Any) -> None:
        if fd.ctx.get(self) is None:
            return await self.child.fsyncdir(frame, fd, datasync)
        return None

    async def releasedir(self, frame: Any, fd: Fd) -> None:
        if fd.ctx.pop(self, None) is None:
            return await self.child.releasedir(frame, fd)
        return None

    def passthrough_fd(self, fd: Fd) -> Optional[int]:
        if fd.ctx.get(self) is not None:
            return None                   # a text made here: no brick file behind it
        return super().passthrough_fd(fd)
