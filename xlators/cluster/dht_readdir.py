"""cluster/distribute: directory listings merged from the children (a mixin).

A listing reads child 0's copy to its end, then child 1's, and so on.  The offset (cookie)
of an entry is the child's own cookie (below 2^55) with the child's index in bits 55..62,
so a listing resumes at any offset it handed out (telldir/seekdir, a kernel that asks
again) exactly where it left off, with no state kept here; child 0's entries pass
through unchanged.  Each entry is
listed exactly once:

- "." and ".." and directories come from child 0 only (directories exist on every child);
- link files are never listed (DT_LNK entries are checked with a readlink);
- in a directory whose layout is not committed (a rebalance is moving its files, or was
  interrupted), a file on a child other than its name's hashed child is listed only
  when the hashed child has nothing by that name or a link file pointing to that child
  (a copy left behind by an interrupted move is not listed twice: the hashed child's
  copy wins, as in lookup).  In a committed directory no name has data on two children,
  so no such check is needed.

readdirp hands out files with their inodes; directories go without one (the kernel
looks them up, which finds every copy).
"""
from __future__ import annotations

import errno
import stat
from typing import Any, Optional

from ..core.errors import FopError
from ..core.inode import Fd
from ..core.types import DirEntry
from .dht_base import STAGING
from .dht_fops import DhtFops, DirFd
from .dht_inodes import INDEX_SHIFT, root_frame
from .dht_linkfile import may_be_linkfile

_DT_DIR = stat.S_IFDIR >> 12
_DT_LNK = stat.S_IFLNK >> 12
_OFF_BITS = 55                       # a child's own offset; its index above (8 bits)
_OFF_MASK = (1 << _OFF_BITS) - 1


class DhtReaddir(DhtFops):

    async def opendir(self, frame, inode, fd):
        dn = self._dn(inode)
        if not dn.is_dir:
            raise FopError(errno.ENOTDIR)
        fds: list[Optional[Fd]] = []
        try:
            for i, ci in enumerate(dn.subs):
                if ci is None:
                    fds.append(None)
                    continue
                cfd = Fd(ci, fd.flags, fd.pid, is_dir=True, fh=fd.fh)
                await self.children[i].opendir(frame if i == 0 else root_frame(frame), ci,
                                               cfd)
                ci.refs += 1
                fds.append(cfd)
        except BaseException:
            await self._close_dir_fds(frame, fds)
            raise
        fd.ctx[self] = DirFd(fds)

    async def releasedir(self, frame, fd):
        c = fd.ctx.pop(self, None)
        if c is not None and c.__class__ is DirFd:
            await self._close_dir_fds(frame, c.fds)

    async def _close_dir_fds(self, frame: Any, fds: list) -> None:
        for i, cfd in enumerate(fds):
            if cfd is None:
                continue
            try:
                await self.children[i].releasedir(frame, cfd)
            finally:
                await self._drop(i, cfd.inode)

    async def fsyncdir(self, frame, fd, datasync):
        c = fd.ctx.get(self)
        if c is None or c.__class__ is not DirFd:
            raise FopError(errno.EBADF)
        for i, cfd in enumerate(c.fds):
            if cfd is not None:
                await self.children[i].fsyncdir(frame, cfd, datasync)

    async def readdir(self, frame, fd, offset, size):
        return await self._merged(frame, fd, offset, size, False)

    async def readdirp(self, frame, fd, offset, size):
        return await self._merged(frame, fd, offset, size, True)

    async def _merged(self, frame: Any, fd: Fd, offset: int, size: int,
                      plus: bool) -> list[DirEntry]:
        c = fd.ctx.get(self)
        if c is None or c.__class__ is not DirFd:
            raise FopError(errno.EBADF)
        dn = self._dn(fd.inode)
        layout = await self._layout(frame, dn)
        at_root = dn is self._root_dn
        # In a committed directory every file is on its hashed child or has a link file
        # there, so no name has data on two children; only an interrupted rebalance
        # (which leaves the layout uncommitted) can leave a second copy behind.
        check = not layout.committed
        n = len(self.children)
        i, coff = offset >> _OFF_BITS, offset & _OFF_MASK
        plain = not plus
        out: list[DirEntry] = []
        while i < n:
            cfd = c.fds[i]
            if cfd is None:
                i, coff = i + 1, 0
                continue
            child = self.children[i]
            shift = i << INDEX_SHIFT
            tag = i << _OFF_BITS
            batch = await (child.readdirp if plus else child.readdir)(frame, cfd, coff, size)
            if not batch:
                i, coff = i + 1, 0
                continue
            held = [de.entry.inode for de in batch if de.entry is not None]
            for ci in held:
                ci.refs += 1
            try:
                if batch[-1].off > _OFF_MASK:
                    raise FopError(errno.EOVERFLOW, f"{child.name}: directory offset "
                                                    f"{batch[-1].off} too large to merge")
                for de in batch:
                    name = de.name
                    t = de.type
                    if t == _DT_DIR:                 # "." and ".." too
                        if i == 0 and not (at_root and name == STAGING):
                            out.append(de if plain else DirEntry(name, de.ino, t, de.off))
                        continue
                    if name == b"." or name == b"..":
                        if i == 0:
                            out.append(de)
                        continue
                    if (t == _DT_LNK or t == 0 or check) and \
                            not await self._listed_here(frame, dn, layout, i, de):
                        continue
                    if de.entry is not None:
                        entry = await self._adopt(i, de.entry)
                        out.append(DirEntry(name, entry.attr.ino, t, de.off | tag, entry))
                    elif i == 0:
                        out.append(de)               # child 0's entries pass as they are
                    else:
                        out.append(DirEntry(name, de.ino ^ shift, t, de.off | tag))
                coff = batch[-1].off
            finally:
                table = self.tables[i]
                for ci in held:
                    ci.refs -= 1
                    if not ci.nlookup and not ci.refs and table.purge(ci):
                        await child.forget(frame, ci)
            if out:
                return out
        return out

    async def _listed_here(self, frame: Any, dn: Any, layout: Any, i: int,
                           de: DirEntry) -> bool:
        """Is this non-directory entry of child ``i`` the one to list for its name?"""
        name = de.name
        if de.type == _DT_LNK or de.type == 0:
            if await self._is_linkfile(frame, dn, i, de):
                return False
        if layout.committed:
            return True
        h = layout.child_for(name)
        if h == i:
            return True
        e = await self._child_lookup(frame, h, dn, name)
        if e is None:
            return True
        try:
            if e.attr.kind == stat.S_IFDIR or not may_be_linkfile(e.attr):
                return False
            return await self._linkfile_target(h, e.inode) == i
        finally:
            await self._drop(h, e.inode)

    async def _is_linkfile(self, frame: Any, dn: Any, i: int, de: DirEntry) -> bool:
        if de.entry is not None:
            e, held = de.entry, False
        else:
            e, held = await self._child_lookup(frame, i, dn, de.name), True
            if e is None:
                return True                       # gone since: do not list it
        try:
            return may_be_linkfile(e.attr) and \
                await self._linkfile_target(i, e.inode) is not None
        finally:
            if held:
                await self._drop(i, e.inode)

