"""cluster/distribute: lookup and the fops that make and remove names (a mixin).

Files, symlinks and device nodes are made on the child the name hashes to (or, when that
child is below ``min-free-disk``, on the child with the most free space, after a link
file on the hashed child).  Directories are made on the hashed child first and then on
every other child; they are removed from every other child first and from the hashed one
last, and a failure part-way re-creates the copies already removed.
"""
from __future__ import annotations

import errno
import os
import stat
from contextlib import aclosing
from typing import Any

from ..core.errors import FopError
from ..core.inode import Fd, Loc
from ..core.types import Entry, SetAttr
from .dht_base import STAGING, DhtBase, Found
from .dht_inodes import root_frame
from .dht_linkfile import LINK_PREFIX, may_be_linkfile
from .dir_scan import dir_entries


_S_IFMT = 0o170000
_PLAIN = frozenset((stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK))


class DhtNamespace(DhtBase):

    async def lookup(self, frame, loc):
        name = loc.name
        if name is None:                          # revalidate a known inode
            return Entry(loc.inode, await self.getattr(frame, loc.inode))
        pdn = self._pdn(loc.parent)
        layout = pdn.layout
        if layout is not None and not (pdn is self._root_dn and name == STAGING):
            # the common case in one step: a plain file on its hashed child
            h = layout.child_for(name)
            try:
                e = await self.children[h].lookup(frame, Loc(pdn.subs[h], name))
            except OSError as exc:
                if exc.errno == errno.ENOENT and not self._everywhere(layout):
                    raise FopError(errno.ENOENT) from None
            else:
                if (e.attr.mode & _S_IFMT) in _PLAIN:
                    return await self._adopt(h, e)
        found = await self._locate(frame, pdn, name)
        try:
            if found.is_dir:
                return await self._adopt_dir(found.copies)
            return await self._adopt(found.index, found.entry)
        finally:
            await self._release(found)

    # -- making names ------------------------------------------------------------------------
    async def _target(self, frame: Any, pdn: Any, name: bytes) -> tuple[int, int]:
        if pdn is self._root_dn and name == STAGING:
            raise FopError(errno.EPERM, "a name reserved by cluster/distribute")
        layout = await self._layout(frame, pdn)
        h = layout.child_for(name)
        return h, await self._place(frame, h)

    async def _made(self, frame: Any, pdn: Any, name: bytes, h: int, t: int,
                    call: Any) -> Entry:
        """Run ``call(child, parent_copy)`` on child ``t`` after a link file on ``h``."""
        if t != h:
            await self._put_linkfile(frame, pdn, name, h, t)
        try:
            e = await call(self.children[t], pdn.subs[t])
        except BaseException:
            if t != h:
                await self._remove_linkfile(frame, pdn, name, h)
            raise
        return await self._adopt(t, e)

    async def mknod(self, frame, loc, mode, rdev, umask):
        pdn = self._pdn(loc.parent)
        h, t = await self._target(frame, pdn, loc.name)
        return await self._made(frame, pdn, loc.name, h, t, lambda c, p: c.mknod(
            frame, Loc(p, loc.name), mode, rdev, umask))

    async def symlink(self, frame, target, loc):
        if bytes(target).startswith(LINK_PREFIX):
            raise FopError(errno.EINVAL, "a symlink target reserved by cluster/distribute")
        pdn = self._pdn(loc.parent)
        h, t = await self._target(frame, pdn, loc.name)
        return await self._made(frame, pdn, loc.name, h, t, lambda c, p: c.symlink(
            frame, target, Loc(p, loc.name)))

    async def create(self, frame, loc, flags, mode, umask, fd):
        pdn = self._pdn(loc.parent)
        name = loc.name
        h, t = await self._target(frame, pdn, name)
        cfd = Fd(pdn.subs[t], flags, fd.pid, fh=fd.fh)
        cfd.lk_owner = fd.lk_owner

        async def call(child, parent):
            return await child.create(frame, Loc(parent, name), flags, mode, umask, cfd)
        try:
            entry = await self._made(frame, pdn, name, h, t, call)
        except OSError as exc:
            if exc.errno != errno.ELOOP or flags & os.O_EXCL:
                raise
            return await self._open_existing(frame, pdn, name, flags, fd)
        ci = entry.inode.ctx[self].subs[0]
        if stat.S_ISLNK(entry.attr.mode):         # created "over" a link file: open its data
            await self.children[t].release(frame, cfd)
            return await self._open_existing(frame, pdn, name, flags, fd)
        ci.refs += 1
        cfd.inode = ci
        fd.ctx[self] = (t, cfd)
        fd.open_flags |= cfd.open_flags
        return entry

    async def _open_existing(self, frame: Any, pdn: Any, name: bytes, flags: int,
                             fd: Fd) -> Entry:
        found = await self._locate(frame, pdn, name)
        try:
            if found.is_dir:
                raise FopError(errno.EISDIR)
            entry = await self._adopt(found.index, found.entry)
        finally:
            await self._release(found)
        await self.open(frame, entry.inode, flags & ~(os.O_CREAT | os.O_EXCL), fd)
        return entry

    async def mkdir(self, frame, loc, mode, umask):
        pdn = self._pdn(loc.parent)
        name = loc.name
        h, _ = await self._target(frame, pdn, name)
        n = len(self.children)
        copies: list = [None] * n
        order = [h] + [i for i in range(n) if i != h]
        try:
            for i in order:
                parent = pdn.subs[i]
                if parent is None:
                    raise FopError(errno.EIO, f"the parent has no copy on "
                                              f"{self.children[i].name}")
                if i == h:
                    e = await self.children[i].mkdir(frame, Loc(parent, name), mode, umask)
                else:
                    ref = copies[h].attr
                    e = await self.children[i].mkdir(frame, Loc(parent, name),
                                                     stat.S_IFDIR | (ref.mode & 0o7777), 0)
                    if (e.attr.mode, e.attr.uid, e.attr.gid) != (ref.mode, ref.uid, ref.gid):
                        e = Entry(e.inode, await self.children[i].setattr(
                            root_frame(frame), e.inode, SetAttr(
                                mode=ref.mode & 0o7777, uid=ref.uid, gid=ref.gid)))
                e.inode.refs += 1
                copies[i] = e
        except BaseException:
            await self._undo_mkdir(frame, pdn, name, copies)
            raise
        try:
            entry = await self._adopt_dir(copies)
        finally:
            await self._release_all(copies)
        entry.inode.ctx[self].layout = None
        return entry

    async def _undo_mkdir(self, frame: Any, pdn: Any, name: bytes, copies: list) -> None:
        rf = root_frame(frame)
        for i, e in enumerate(copies):
            if e is None:
                continue
            try:
                await self.children[i].rmdir(rf, Loc(pdn.subs[i], name))
            except OSError as exc:
                self.log.warning("%s: undoing mkdir of %r on %s: %s", self.name, name,
                                 self.children[i].name, exc)
            await self._drop(i, e.inode)

    async def link(self, frame, inode, newloc):
        dn = self._dn(inode)
        pdn = self._pdn(newloc.parent)        # ENOTDIR first, as on one brick
        if dn.is_dir:
            raise FopError(errno.EPERM)
        h, _ = await self._target(frame, pdn, newloc.name)
        s = dn.index
        return await self._made(frame, pdn, newloc.name, h, s, lambda c, p: c.link(
            frame, dn.subs[0], Loc(p, newloc.name)))

    # -- removing names ---------------------------------------------------------------------
    async def unlink(self, frame, loc):
        pdn = self._pdn(loc.parent)
        name = loc.name
        layout = pdn.layout
        if layout is not None and layout.committed and \
                not (pdn is self._root_dn and name == STAGING):
            # the common case in one step: a plain file on its hashed child
            h = layout.child_for(name)
            child, cloc = self.children[h], Loc(pdn.subs[h], name)
            try:
                e = await child.lookup(frame, cloc)
            except OSError as exc:
                if exc.errno == errno.ENOENT and not self._everywhere(layout):
                    raise FopError(errno.ENOENT) from None
            else:
                if (e.attr.mode & _S_IFMT) in _PLAIN:
                    e.inode.refs += 1
                    try:
                        await child.unlink(frame, cloc)
                    finally:
                        await self._drop(h, e.inode)
                    return None
                e.inode.refs += 1
                await self._drop(h, e.inode)
        found = await self._locate(frame, pdn, name)
        try:
            if found.is_dir:
                raise FopError(errno.EISDIR)
            i = found.index
            await self.children[i].unlink(frame, Loc(pdn.subs[i], loc.name))
        finally:
            await self._release(found)
        if found.link is not None:
            await self._remove_linkfile(frame, pdn, loc.name, found.link)
        if not (await self._layout(frame, pdn)).committed:
            await self._unlink_strays(frame, pdn, loc.name, found)

    async def _unlink_strays(self, frame: Any, pdn: Any, name: bytes, found: Found) -> None:
        """In a directory a rebalance has not finished, a move interrupted between copy
        and removal may have left a second copy: remove it too, or it would reappear."""
        for i in range(len(self.children)):
            if i == found.index or i == found.link:
                continue
            e = await self._child_lookup(frame, i, pdn, name)
            if e is None:
                continue
            try:
                if e.attr.kind != stat.S_IFDIR and not (may_be_linkfile(e.attr) and await
                                                        self._linkfile_target(i, e.inode)
                                                        is not None):
                    await self.children[i].unlink(root_frame(frame), Loc(pdn.subs[i], name))
                    self.log.info("%s: removed a stray copy of %r on %s", self.name, name,
                                  self.children[i].name)
            finally:
                await self._drop(i, e.inode)

    async def rmdir(self, frame, loc):
        pdn = self._pdn(loc.parent)
        name = loc.name
        if name == b".":
            raise FopError(errno.EINVAL)
        if name == b"..":
            raise FopError(errno.ENOTEMPTY)
        found = await self._locate(frame, pdn, name)
        try:
            if not found.is_dir:
                raise FopError(errno.ENOTDIR)
            await self._rmdir_copies(frame, pdn, name, found)
        finally:
            await self._release(found)

    async def _rmdir_copies(self, frame: Any, pdn: Any, name: bytes, found: Found) -> None:
        layout = await self._layout(frame, pdn)
        h = layout.child_for(name)
        n = len(self.children)
        # the hashed copy late (lookups find the directory there), child 0's last (it
        # gives the directory its number, so a failure part-way keeps it)
        order = [i for i in reversed(range(n)) if i not in (0, h)] + \
            ([h, 0] if h else [0])
        done: list[int] = []
        for i in order:
            loc = Loc(pdn.subs[i], name)
            try:
                try:
                    await self.children[i].rmdir(frame, loc)
                except OSError as exc:
                    if exc.errno != errno.ENOTEMPTY or not await self._clear_stale_links(
                            frame, i, found.copies[i].inode):
                        raise
                    await self.children[i].rmdir(frame, loc)
            except BaseException:
                await self._restore_copies(frame, pdn, name, found, done)
                raise
            done.append(i)

    async def _clear_stale_links(self, frame: Any, index: int, dir_inode: Any) -> bool:
        """A directory copy that holds nothing but link files: remove them (True)."""
        child = self.children[index]
        rf = root_frame(frame)
        names = []
        async with aclosing(dir_entries(child, rf, dir_inode, plus=True)) as entries:
            async for de in entries:
                e = de.entry
                if e is None or not may_be_linkfile(e.attr) or \
                        await self._linkfile_target(index, e.inode) is None:
                    names = None
                    break
                names.append(de.name)
        if not names:
            return False
        for nm in names:
            await child.unlink(rf, Loc(dir_inode, nm))
        return True

    async def _restore_copies(self, frame: Any, pdn: Any, name: bytes, found: Found,
                              removed: list) -> None:
        ref = found.entry.attr
        rf = root_frame(frame)
        for i in removed:
            try:
                e = await self.children[i].mkdir(rf, Loc(pdn.subs[i], name),
                                                 stat.S_IFDIR | (ref.mode & 0o7777), 0)
                await self.children[i].setattr(rf, e.inode, SetAttr(
                    mode=ref.mode & 0o7777, uid=ref.uid, gid=ref.gid))
                e.inode.refs += 1
                await self._drop(i, e.inode)
            except OSError as exc:
                self.log.error("%s: rmdir of %r failed part-way and its copy on %s could "
                               "not be restored: %s", self.name, name, self.children[i].name,
                               exc)
