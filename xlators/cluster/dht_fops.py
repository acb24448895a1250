"""cluster/distribute: fops on one object, sent to the child that holds it (a mixin).

A file's fops go to the child holding its data (an open file carries ``(index, child
Fd)``).  A directory's reads go to its copy on child 0; its changes (setattr, xattrs) go
to every copy, child 0's first, whose answer is returned.  The ``trusted.xlfs.dht.``
attributes are distribute's own: hidden from listxattr, refused to setxattr/removexattr
(EPERM), readable with getxattr for inspection.
"""
from __future__ import annotations

import errno
from typing import Any

from ..core.errors import FopError
from ..core.inode import Fd
from ..core.types import StatFs
from .dht_base import DhtBase
from .dht_layout import XATTR_PREFIX

_COPY_CHUNK = 1 << 20


class DirFd:
    """distribute's context of an open directory: the child Fd of every copy."""
    __slots__ = ("fds",)

    def __init__(self, fds: list) -> None:
        self.fds = fds


class DhtFops(DhtBase):

    def _fd(self, fd: Fd) -> tuple[int, Fd]:
        c = fd.ctx.get(self)
        if c is None or c.__class__ is DirFd:
            raise FopError(errno.EBADF)
        return c

    # -- open files ----------------------------------------------------------------------
    async def open(self, frame, inode, flags, fd):
        dn = self._dn(inode)
        i = dn.index
        ci = dn.subs[0]
        cfd = Fd(ci, flags, fd.pid, fh=fd.fh)
        cfd.lk_owner = fd.lk_owner
        await self.children[i].open(frame, ci, flags, cfd)
        ci.refs += 1
        fd.ctx[self] = (i, cfd)
        fd.open_flags |= cfd.open_flags

    async def release(self, frame, fd):
        c = fd.ctx.pop(self, None)
        if c is None or c.__class__ is DirFd:
            return None
        i, cfd = c
        try:
            await self.children[i].release(frame, cfd)
        finally:
            await self._drop(i, cfd.inode)

    async def readv(self, frame, fd, size, offset, flags=None):
        i, cfd = self._fd(fd)
        return await self.children[i].readv(frame, cfd, size, offset, flags)

    async def writev(self, frame, fd, data, offset, flags=None):
        i, cfd = self._fd(fd)
        return await self.children[i].writev(frame, cfd, data, offset, flags)

    async def flush(self, frame, fd):
        c = fd.ctx.get(self)
        if c is None or c.__class__ is DirFd:
            return None
        i, cfd = c
        cfd.lk_owner = fd.lk_owner
        return await self.children[i].flush(frame, cfd)

    async def fsync(self, frame, fd, datasync):
        i, cfd = self._fd(fd)
        return await self.children[i].fsync(frame, cfd, datasync)

    async def lk(self, frame, fd, cmd, lock):
        c = fd.ctx.get(self)
        if c is None:
            raise FopError(errno.EBADF)
        if c.__class__ is DirFd:
            i, cfd = 0, c.fds[0]
        else:
            i, cfd = c
        cfd.lk_owner = fd.lk_owner
        return await self.children[i].lk(frame, cfd, cmd, lock)

    async def fallocate(self, frame, fd, mode, offset, length):
        i, cfd = self._fd(fd)
        return await self.children[i].fallocate(frame, cfd, mode, offset, length)

    async def lseek(self, frame, fd, offset, whence):
        i, cfd = self._fd(fd)
        return await self.children[i].lseek(frame, cfd, offset, whence)

    async def copy_file_range(self, frame, fd_in, off_in, fd_out, off_out, length, flags):
        i, cin = self._fd(fd_in)
        j, cout = self._fd(fd_out)
        if i == j:
            return await self.children[i].copy_file_range(frame, cin, off_in, cout, off_out,
                                                           length, flags)
        if flags:
            raise FopError(errno.EINVAL)
        done = 0                       # two children: copy through here
        while done < length:
            data = await self.children[i].readv(frame, cin, min(_COPY_CHUNK, length - done),
                                                off_in + done, 0)
            if not data:
                break
            wrote = await self.children[j].writev(frame, cout, data, off_out + done, 0)
            done += wrote
            if wrote < len(data):
                break
        return done

    # -- attributes ----------------------------------------------------------------------
    async def getattr(self, frame, inode, fd=None):
        c = fd.ctx.get(self) if fd is not None else None
        if c is not None and c.__class__ is not DirFd:
            i, cfd = c
            return self._attr(i, await self.children[i].getattr(frame, cfd.inode, cfd))
        dn = self._dn(inode)
        if dn.is_dir:
            return self._merge_dir_attrs([await self.children[i].getattr(frame, ci)
                                          if ci is not None else None
                                          for i, ci in enumerate(dn.subs)])
        i = dn.index
        return self._attr(i, await self.children[i].getattr(frame, dn.subs[0]))

    async def setattr(self, frame, inode, changes, fd=None):
        c = fd.ctx.get(self) if fd is not None else None
        if c is not None and c.__class__ is not DirFd:
            i, cfd = c
            return self._attr(i, await self.children[i].setattr(frame, cfd.inode, changes,
                                                                cfd))
        dn = self._dn(inode)
        if not dn.is_dir:
            i = dn.index
            return self._attr(i, await self.children[i].setattr(frame, dn.subs[0], changes))
        attr = await self.children[0].setattr(frame, dn.subs[0], changes)
        return self._merge_dir_attrs([attr] + await self._on_other_copies(
            frame, dn, "setattr", changes))

    async def _on_other_copies(self, frame: Any, dn: Any, fop: str, *args: Any) -> list:
        """Repeat a change made on child 0's copy of a directory on the other copies;
        their answers (None where there is no copy or it failed)."""
        out = []
        for i in range(1, len(self.children)):
            ci = dn.subs[i]
            result = None
            if ci is not None:
                try:
                    result = await getattr(self.children[i], fop)(frame, ci, *args)
                except OSError as exc:
                    self.log.warning("%s: %s of a directory's copy on %s failed: %s",
                                     self.name, fop, self.children[i].name, exc)
            out.append(result)
        return out

    async def access(self, frame, inode, mask):
        dn = self._dn(inode)
        return await self.children[dn.index].access(frame, dn.subs[0], mask)

    async def readlink(self, frame, inode):
        dn = self._dn(inode)
        return await self.children[dn.index].readlink(frame, dn.subs[0])

    async def statfs(self, frame, inode):
        parts = [await self._statfs_child(frame, i) for i in range(len(self.children))]
        frsize = parts[0].frsize or parts[0].bsize or 4096

        def blocks(sv: StatFs, n: int) -> int:
            return n * (sv.frsize or sv.bsize or 4096) // frsize
        return StatFs(sum(blocks(p, p.blocks) for p in parts),
                      sum(blocks(p, p.bfree) for p in parts),
                      sum(blocks(p, p.bavail) for p in parts),
                      sum(p.files for p in parts), sum(p.ffree for p in parts),
                      parts[0].bsize, min(p.namelen for p in parts), frsize)

    # -- extended attributes ---------------------------------------------------------------
    async def setxattr(self, frame, inode, name, value, flags):
        if bytes(name).startswith(XATTR_PREFIX):
            raise FopError(errno.EPERM, "an attribute reserved by cluster/distribute")
        dn = self._dn(inode)
        await self.children[dn.index].setxattr(frame, dn.subs[0], name, value, flags)
        if dn.is_dir:
            await self._on_other_copies(frame, dn, "setxattr", name, value, 0)

    async def removexattr(self, frame, inode, name):
        if bytes(name).startswith(XATTR_PREFIX):
            raise FopError(errno.EPERM, "an attribute reserved by cluster/distribute")
        dn = self._dn(inode)
        await self.children[dn.index].removexattr(frame, dn.subs[0], name)
        if dn.is_dir:
            await self._on_other_copies(frame, dn, "removexattr", name)

    async def getxattr(self, frame, inode, name):
        dn = self._dn(inode)
        return await self.children[dn.index].getxattr(frame, dn.subs[0], name)

    async def listxattr(self, frame, inode):
        dn = self._dn(inode)
        names = await self.children[dn.index].listxattr(frame, dn.subs[0])
        return [n for n in names if not bytes(n).startswith(XATTR_PREFIX)]

    # -- the rest ------------------------------------------------------------------------------
    async def forget(self, frame, inode):
        dn = inode.ctx.pop(self, None)
        if dn is None or inode is self.itable.root:
            if dn is not None:
                inode.ctx[self] = dn
            return None
        if dn.is_dir:
            for i, ci in enumerate(dn.subs):
                await self._unref(i, ci)
        else:
            await self._unref(dn.index, dn.subs[0])
        return None

    async def ipc(self, frame, op, xdata=None):
        raise FopError(errno.EOPNOTSUPP)
