"""cluster/replicate: attributes, xattrs, open files, data, listings, locks, forget
(a mixin of Replicate).

Reads go to one readable child (failing over on ENOTCONN); modifications go through
``Replicate.txn`` (every up child, accusations for the ones that missed it).  An open Fd
holds one child Fd per child it could be opened on; a child that comes back gets its
Fds reopened by the healer after the file healed.  A directory listing reads one child
(chosen at offset 0: offsets are that child's cookies) and reports gfid inode numbers.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Any

from ..core.errors import FopError
from ..core.frame import system_frame
from ..core.inode import Fd, Loc
from ..core.types import DirEntry, Entry, LK_GET
from . import afr_changelog as cl
from .afr_changelog import DATA, ENTRY, METADATA
from .afr_gfid import GFID_XATTR, ino_of, valid_gfid
from .afr_state import AfrFd

COPY_CHUNK = 1 << 20


def pick_error(errors: dict[int, OSError]) -> OSError:
    """The error to report when every child failed: a real one over ENOTCONN."""
    real = [e for e in errors.values() if e.errno != errno.ENOTCONN]
    if real:
        return real[0]
    return FopError(errno.ENOTCONN)


class AfrIOOps:
    def _data_kind(self, inode) -> int:
        return DATA if self.ictx(inode).kind == stat.S_IFREG else METADATA

    def fdctx(self, fd: Fd) -> AfrFd:
        ctx = fd.ctx.get(self)
        if ctx is None:
            raise FopError(errno.EBADF)
        return ctx

    def fd_targets(self, afd: AfrFd) -> list[int]:
        up = self.up
        return [i for i, c in enumerate(afd.children) if c is not None and up[i]]

    # -- attributes ---------------------------------------------------------------------
    async def getattr(self, frame, inode, fd=None):
        afd = self.fdctx(fd) if fd is not None else None
        ctx = self.ictx(inode)

        async def one(i: int):
            cfd = afd.children[i] if afd is not None else None
            return await self.children[i].getattr(frame, ctx.children[i], cfd)
        attr = await self.read_from(inode, self._data_kind(inode), one,
                                    afd.children if afd is not None else None, attrs=True)
        return self.map_attr(attr, inode)

    async def setattr(self, frame, inode, changes, fd=None):
        ctx = self.ictx(inode)
        afd = self.fdctx(fd) if fd is not None else None
        kinds = (METADATA, DATA) if changes.size is not None else (METADATA,)
        targets = self.fd_targets(afd) if afd is not None else None

        async def one(i: int):
            cfd = afd.children[i] if afd is not None else None
            return await self.children[i].setattr(frame, ctx.children[i], changes, cfd)
        _, attr, _ = await self.txn(inode, kinds, one, targets)
        return self.map_attr(attr, inode)

    async def access(self, frame, inode, mask):
        ctx = self.ictx(inode)
        return await self.read_from(inode, METADATA, lambda i: self.children[i].access(
            frame, ctx.children[i], mask))

    async def readlink(self, frame, inode):
        ctx = self.ictx(inode)
        return await self.read_from(inode, METADATA, lambda i: self.children[i].readlink(
            frame, ctx.children[i]))

    async def statfs(self, frame, inode):
        """The fullest child's numbers: a file must fit on every child."""
        ctx = self.ictx(inode)
        best = None
        for i in self.targets(ctx):
            try:
                sf = await self.children[i].statfs(frame, ctx.children[i])
            except OSError as exc:
                self.failed(i, exc)
                continue
            if best is None or sf.bavail * sf.frsize < best.bavail * best.frsize:
                best = sf
        if best is None:
            raise FopError(errno.ENOTCONN)
        return best

    # -- extended attributes -----------------------------------------------------------
    async def setxattr(self, frame, inode, name, value, flags):
        if cl.is_internal(name):
            raise FopError(errno.EPERM, f"{name!r} belongs to cluster/replicate")
        ctx = self.ictx(inode)
        await self.txn(inode, (METADATA,), lambda i: self.children[i].setxattr(
            frame, ctx.children[i], name, value, flags))

    async def removexattr(self, frame, inode, name):
        if cl.is_internal(name):
            raise FopError(errno.EPERM, f"{name!r} belongs to cluster/replicate")
        ctx = self.ictx(inode)
        await self.txn(inode, (METADATA,), lambda i: self.children[i].removexattr(
            frame, ctx.children[i], name))

    async def getxattr(self, frame, inode, name):
        if cl.is_internal(name):
            raise FopError(errno.ENODATA)
        ctx = self.ictx(inode)
        return await self.read_from(inode, METADATA, lambda i: self.children[i].getxattr(
            frame, ctx.children[i], name))

    async def listxattr(self, frame, inode):
        ctx = self.ictx(inode)
        names = await self.read_from(inode, METADATA, lambda i: self.children[i].listxattr(
            frame, ctx.children[i]))
        return [n for n in names if not cl.is_internal(n)]

    # -- open files ---------------------------------------------------------------------
    async def _open_all(self, frame, inode, fd, flags: int, opener: str) -> None:
        ctx = self.ictx(inode)
        afd = AfrFd(self.n)

        async def one(i: int) -> None:
            cfd = Fd(ctx.children[i], flags, fd.pid, is_dir=fd.is_dir, fh=fd.fh)
            cfd.lk_owner = fd.lk_owner
            if opener == "open":
                await self.children[i].open(frame, ctx.children[i], flags, cfd)
            else:
                await self.children[i].opendir(frame, ctx.children[i], cfd)
            afd.children[i] = cfd
            if not fd.open_flags and cfd.open_flags:
                fd.open_flags.update(cfd.open_flags)

        if opener == "open" and flags & os.O_TRUNC:
            await self.txn(inode, (DATA,), one)
        else:
            good = set(self.targets(ctx))      # reads check readability, open does not
            errors: dict[int, OSError] = {}
            for i in self.targets(ctx):
                try:
                    await one(i)
                except OSError as exc:
                    errors[i] = exc
                    self.failed(i, exc)
            if not any(afd.children[i] is not None for i in good):
                for i, c in enumerate(afd.children):
                    if c is not None:
                        await self._release_child(i, c, opener == "opendir")
                raise pick_error({i: e for i, e in errors.items() if i in good} or errors)
        self.ctx_set(fd, afd)
        ctx.fds.add(fd)
        if ctx.changelog.any_pending():
            self.queue_heal(inode)

    async def open(self, frame, inode, flags, fd):
        await self._open_all(frame, inode, fd, flags, "open")

    async def opendir(self, frame, inode, fd):
        await self._open_all(frame, inode, fd, fd.flags, "opendir")

    async def _release_child(self, i: int, cfd: Fd, is_dir: bool) -> None:
        try:
            if is_dir:
                await self.children[i].releasedir(system_frame(), cfd)
            else:
                await self.children[i].release(system_frame(), cfd)
        except OSError:
            pass

    async def release(self, frame, fd):
        afd = self.ctx_del(fd)
        ctx = fd.inode.ctx.get(self)
        if ctx is not None:
            ctx.fds.discard(fd)
        if afd is not None:
            for i, cfd in enumerate(afd.children):
                if cfd is not None:
                    await self._release_child(i, cfd, fd.is_dir)

    async def releasedir(self, frame, fd):
        await self.release(frame, fd)

    async def _each_fd(self, frame, fd, fop: str, *args: Any, accuse: bool) -> None:
        afd = self.fdctx(fd)
        done: list[int] = []
        errors: dict[int, OSError] = {}
        for i in self.fd_targets(afd):
            try:
                await getattr(self.children[i], fop)(frame, afd.children[i], *args)
                done.append(i)
            except OSError as exc:
                errors[i] = exc
                self.failed(i, exc)
        if not done:
            if errors:
                raise pick_error(errors)
            raise FopError(errno.ENOTCONN)
        bad = [i for i, e in errors.items() if e.errno != errno.ENOTCONN]
        if bad and accuse:
            await self.accuse(fd.inode, done, bad, (DATA,))

    async def flush(self, frame, fd):
        await self._each_fd(frame, fd, "flush", accuse=False)

    async def fsync(self, frame, fd, datasync):
        await self._each_fd(frame, fd, "fsync", datasync, accuse=True)

    async def fsyncdir(self, frame, fd, datasync):
        await self._each_fd(frame, fd, "fsyncdir", datasync, accuse=False)

    # -- data -----------------------------------------------------------------------------
    async def readv(self, frame, fd, size, offset, flags=None):
        afd = self.fdctx(fd)
        return await self.read_from(fd.inode, DATA, lambda i: self.children[i].readv(
            frame, afd.children[i], size, offset, flags), afd.children)

    async def writev(self, frame, fd, data, offset, flags=None):
        afd = self.fdctx(fd)
        _, n, _ = await self.txn(fd.inode, (DATA,), lambda i: self.children[i].writev(
            frame, afd.children[i], data, offset, flags), self.fd_targets(afd))
        return n

    async def fallocate(self, frame, fd, mode, offset, length):
        afd = self.fdctx(fd)
        await self.txn(fd.inode, (DATA,), lambda i: self.children[i].fallocate(
            frame, afd.children[i], mode, offset, length), self.fd_targets(afd))

    async def lseek(self, frame, fd, offset, whence):
        afd = self.fdctx(fd)
        return await self.read_from(fd.inode, DATA, lambda i: self.children[i].lseek(
            frame, afd.children[i], offset, whence), afd.children)

    async def copy_file_range(self, frame, fd_in, off_in, fd_out, off_out, length, flags):
        """Read from a good copy, write to every child (a child-side copy could copy
        a stale child's data)."""
        done = 0
        while done < length:
            data = await self.readv(frame, fd_in, min(COPY_CHUNK, length - done),
                                    off_in + done, 0)
            if not data:
                break
            n = await self.writev(frame, fd_out, data, off_out + done, 0)
            done += n
            if n < len(data):
                break
        return done

    # -- listings -------------------------------------------------------------------------
    async def _list(self, frame, fd, offset: int, size: int,
                    plus: bool = False) -> tuple[int, list[DirEntry]]:
        afd = self.fdctx(fd)
        ctx = self.ictx(fd.inode)
        i = afd.read_child
        if offset == 0 or i is None or not self.up[i]:
            if offset != 0 and i is not None:
                raise FopError(errno.EIO, "the child this listing read from is down")
            i = await self.read_child(ctx, ENTRY, fd.inode, afd.children)
            afd.read_child = i
        child = self.children[i]
        try:
            if plus:
                return i, await child.readdirp(frame, afd.children[i], offset, size)
            return i, await child.readdir(frame, afd.children[i], offset, size)
        except OSError as exc:
            self.failed(i, exc)
            raise

    async def readdir(self, frame, fd, offset, size):
        i, entries = await self._list(frame, fd, offset, size)
        dctx = self.ictx(fd.inode)
        out = []
        for e in entries:
            if e.name == b".":
                ino = fd.inode.ino
            elif e.name == b"..":
                ino = await self._dotdot_ino(fd.inode, i, e.ino)
            else:
                ino = await self._entry_ino(i, dctx.children[i], e.name, e.ino)
            out.append(e._replace(ino=ino, entry=None))
        return out

    async def _dotdot_ino(self, dir_inode, i: int, fallback: int) -> int:
        if dir_inode is self.itable.root:
            return dir_inode.ino
        ctx = self.ictx(dir_inode)
        parent = ctx.parent() if ctx.parent is not None else None
        if parent is not None:
            return parent.ino
        return await self._entry_ino(i, ctx.children[i], b"..", fallback)

    async def _entry_ino(self, i: int, dci, name: bytes, fallback: int) -> int:
        try:
            ce = await self.children[i].lookup(system_frame(), Loc(dci, name))
        except OSError:
            return fallback
        ours = ce.inode.ctx.get(self)
        if ours is not None:
            return ours.ino
        return await self._gfid_ino(i, ce.inode, fallback)

    async def _gfid_ino(self, i: int, ci, fallback: int) -> int:
        """The gfid number of an entry replicate does not know (released afterwards)."""
        try:
            gfid = await self.children[i].getxattr(system_frame(), ci, GFID_XATTR)
            return ino_of(gfid) if valid_gfid(gfid) else fallback
        except OSError:
            return fallback
        finally:
            await self.drop_child_inode(i, ci)

    async def readdirp(self, frame, fd, offset, size):
        """Entries of files replicate knows everywhere, with nothing pending, come with
        their attributes; the others only with their gfid number (the kernel looks them
        up when it needs them), so a long listing does not pin an inode -- and a
        descriptor per child in storage/posix -- for every name in it."""
        i, entries = await self._list(frame, fd, offset, size, plus=True)
        out = []
        for e in entries:
            ce = e.entry
            if e.name in (b".", b"..") or ce is None:
                ino = (fd.inode.ino if e.name == b"." else
                       await self._dotdot_ino(fd.inode, i, e.ino) if e.name == b".." else e.ino)
                out.append(e._replace(ino=ino, entry=None))
                continue
            ours = ce.inode.ctx.get(self)
            if ours is None:
                out.append(e._replace(ino=await self._gfid_ino(i, ce.inode, e.ino),
                                      entry=None))
                continue
            ctx = ours.ctx.get(self)
            whole = (ctx is not None and ctx.children[i] is ce.inode
                     and not ctx.changelog.any_pending()
                     and all(c is not None for c in ctx.children))
            entry = Entry(ours, self.map_attr(ce.attr, ours)) if whole else None
            out.append(e._replace(ino=ours.ino, entry=entry))
        return out

    # -- locks ------------------------------------------------------------------------------
    async def lk(self, frame, fd, cmd, lock):
        """Locks on every child in child order; a refusal undoes the ones taken."""
        afd = self.fdctx(fd)
        if cmd == LK_GET:
            return await self.read_from(fd.inode, DATA, lambda i: self.children[i].lk(
                frame, afd.children[i], cmd, lock), afd.children)
        taken: list[int] = []
        result = None
        for i in self.fd_targets(afd):
            try:
                r = await self.children[i].lk(frame, afd.children[i], cmd, lock)
            except OSError as exc:
                self.failed(i, exc)
                if exc.errno == errno.ENOTCONN:
                    continue
                if lock.type != fcntl.F_UNLCK:
                    unlock = lock._replace(type=fcntl.F_UNLCK)
                    for j in taken:
                        try:
                            await self.children[j].lk(frame, afd.children[j], cmd, unlock)
                        except OSError:
                            pass
                raise
            taken.append(i)
            if result is None:
                result = r
        if not taken:
            raise FopError(errno.ENOTCONN)
        return result

    # -- forget -----------------------------------------------------------------------------
    async def forget(self, frame, inode):
        ctx = self.ctx_del(inode)
        if ctx is None:
            return None
        for i, ci in enumerate(ctx.children):
            if ci is not None and ci.ctx.get(self) is inode:
                del ci.ctx[self]
                await self.drop_child_inode(i, ci)
        return None

    async def ipc(self, frame, op, xdata=None):
        raise FopError(errno.EOPNOTSUPP)
