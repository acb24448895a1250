"""cluster/distribute: rename (a mixin).

A file's data never moves in a rename: the file is renamed on the child that holds it,
and when the new name hashes to another child that child gets a link file for it (the
old name's link file, if any, is removed).  So the inode number survives and no data is
copied.  Order: the link file of the new name first (a crash leaves at worst a dangling
link file, never a file without a way to it), then the rename, then the clean-up; except
when another file's data sits under the new name on its hashed child: that one is
replaced only after the rename succeeded.

A directory is renamed on every child, child 0 first (its answer decides: permissions,
moving a directory into itself, a non-empty target); a failure on another child renames
the copies already done back.  A target directory must be empty on every child.

RENAME_EXCHANGE: two files on one child are exchanged there; on two children each is
renamed on its own child and the link files are set to match; two directories are
exchanged on every child; a directory and a file are exchanged on the file's child and
the directory's other copies renamed.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Optional

from ..core.errors import FopError
from ..core.inode import Fd, Loc
from .dht_base import DhtBase, Found
from .dht_inodes import root_frame

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _same(a: Found, b: Found) -> bool:
    return a.index == b.index and a.entry.inode is b.entry.inode


class DhtRename(DhtBase):

    async def rename(self, frame, oldloc, newloc, flags=0):
        flags = flags or 0
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or \
                flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise FopError(errno.EINVAL)
        if oldloc.name in (b".", b"..") or newloc.name in (b".", b".."):
            raise FopError(errno.EBUSY)
        opdn, npdn = self._pdn(oldloc.parent), self._pdn(newloc.parent)
        src = await self._locate(frame, opdn, oldloc.name)
        dst: Optional[Found] = None
        try:
            try:
                dst = await self._locate(frame, npdn, newloc.name)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
            if dst is not None and _same(src, dst):
                return None
            if flags & RENAME_NOREPLACE and dst is not None:
                raise FopError(errno.EEXIST)
            if flags & RENAME_EXCHANGE:
                if dst is None:
                    raise FopError(errno.ENOENT)
                await self._exchange(frame, oldloc, newloc, src, dst)
            elif src.is_dir:
                await self._rename_dir(frame, oldloc, newloc, src, dst)
            else:
                await self._rename_file(frame, oldloc, newloc, src, dst, flags)
            self.stats["renames"] += 1
        finally:
            await self._release(src)
            if dst is not None:
                await self._release(dst)

    # -- files ---------------------------------------------------------------------------
    async def _rename_file(self, frame: Any, oldloc: Loc, newloc: Loc, src: Found,
                           dst: Optional[Found], flags: int) -> None:
        opdn, npdn = self._pdn(oldloc.parent), self._pdn(newloc.parent)
        s = src.index
        if dst is not None and dst.is_dir:
            raise FopError(errno.EISDIR)
        hd = (await self._layout(frame, npdn)).child_for(newloc.name)
        data_at_hd = dst is not None and dst.index == hd and hd != s
        if hd != s and not data_at_hd:
            await self._put_linkfile(frame, npdn, newloc.name, hd, s, replace=True)
        try:
            await self.children[s].rename(frame, Loc(opdn.subs[s], oldloc.name),
                                          Loc(npdn.subs[s], newloc.name),
                                          flags & RENAME_NOREPLACE)
        except BaseException:
            if hd != s and not data_at_hd:
                await self._remove_linkfile(frame, npdn, newloc.name, hd)
            raise
        if hd != s:
            self.stats["renames-to-other-child"] += 1
        if data_at_hd:
            await self._put_linkfile(frame, npdn, newloc.name, hd, s, replace=True)
        elif dst is not None and dst.index != s:
            await self._unlink_quietly(frame, npdn, newloc.name, dst.index)
        if src.link is not None and not (src.link == hd and npdn is opdn and
                                         newloc.name == oldloc.name):
            await self._remove_linkfile(frame, opdn, oldloc.name, src.link)

    async def _unlink_quietly(self, frame: Any, pdn: Any, name: bytes, index: int) -> None:
        try:
            await self.children[index].unlink(root_frame(frame), Loc(pdn.subs[index], name))
        except OSError as exc:
            self.log.warning("%s: removing the replaced %r on %s: %s", self.name, name,
                             self.children[index].name, exc)

    # -- directories ------------------------------------------------------------------------
    async def _rename_dir(self, frame: Any, oldloc: Loc, newloc: Loc, src: Found,
                          dst: Optional[Found]) -> None:
        if dst is not None:
            if not dst.is_dir:
                raise FopError(errno.ENOTDIR)
            for i in range(1, len(self.children)):
                if dst.copies[i] is not None and not await self._empty_copy(
                        frame, i, dst.copies[i].inode):
                    raise FopError(errno.ENOTEMPTY)
        await self._on_every_copy(frame, oldloc, newloc, 0)

    async def _on_every_copy(self, frame: Any, oldloc: Loc, newloc: Loc, flags: int,
                             skip: Optional[int] = None) -> None:
        """Rename (or exchange) a directory's copies on every child, child 0 first."""
        opdn, npdn = self._pdn(oldloc.parent), self._pdn(newloc.parent)
        done: list[int] = []
        for i in range(len(self.children)):
            if i == skip:
                continue
            old, new = Loc(opdn.subs[i], oldloc.name), Loc(npdn.subs[i], newloc.name)
            try:
                await self.children[i].rename(frame if not done else root_frame(frame),
                                              old, new, flags)
            except BaseException as exc:
                if not done:
                    raise
                self.log.error("%s: renaming a directory's copy on %s failed (%s); undoing",
                               self.name, self.children[i].name, exc)
                for j in reversed(done):
                    try:
                        await self.children[j].rename(
                            root_frame(frame), Loc(npdn.subs[j], newloc.name),
                            Loc(opdn.subs[j], oldloc.name), flags)
                    except OSError as exc2:
                        self.log.error("%s: undoing on %s failed: %s", self.name,
                                       self.children[j].name, exc2)
                raise
            done.append(i)

    async def _empty_copy(self, frame: Any, index: int, inode: Any) -> bool:
        """Is a directory's copy empty (link files that point nowhere aside)?"""
        child = self.children[index]
        rf = root_frame(frame)
        fd = Fd(inode, os.O_RDONLY, is_dir=True)
        await child.opendir(rf, inode, fd)
        try:
            batch = await child.readdir(rf, fd, 0, 4096)
        finally:
            await child.releasedir(rf, fd)
        if all(de.name in (b".", b"..") for de in batch):
            return True
        return await self._clear_stale_links(frame, index, inode)

    # -- exchange ---------------------------------------------------------------------------
    async def _exchange(self, frame: Any, oldloc: Loc, newloc: Loc, src: Found,
                        dst: Found) -> None:
        opdn, npdn = self._pdn(oldloc.parent), self._pdn(newloc.parent)
        if src.is_dir and dst.is_dir:
            await self._on_every_copy(frame, oldloc, newloc, RENAME_EXCHANGE)
            return
        if src.is_dir or dst.is_dir:
            if src.is_dir:
                await self._exchange_dir_file(frame, oldloc, newloc, dst)
            else:
                await self._exchange_dir_file(frame, newloc, oldloc, src)
            return
        sa, sb = src.index, dst.index
        if sa == sb:
            await self.children[sa].rename(frame, Loc(opdn.subs[sa], oldloc.name),
                                           Loc(npdn.subs[sa], newloc.name), RENAME_EXCHANGE)
            return
        await self.children[sa].rename(frame, Loc(opdn.subs[sa], oldloc.name),
                                       Loc(npdn.subs[sa], newloc.name), 0)
        await self.children[sb].rename(frame, Loc(npdn.subs[sb], newloc.name),
                                       Loc(opdn.subs[sb], oldloc.name), 0)
        hb = (await self._layout(frame, npdn)).child_for(newloc.name)
        if hb != sa:
            await self._put_linkfile(frame, npdn, newloc.name, hb, sa, replace=True)
        ha = (await self._layout(frame, opdn)).child_for(oldloc.name)
        if ha != sb:
            await self._put_linkfile(frame, opdn, oldloc.name, ha, sb, replace=True)

    async def _exchange_dir_file(self, frame: Any, dloc: Loc, floc: Loc,
                                 file: Found) -> None:
        """Exchange directory ``dloc`` with the file at ``floc``."""
        dpdn, fpdn = self._pdn(dloc.parent), self._pdn(floc.parent)
        s = file.index
        await self.children[s].rename(frame, Loc(dpdn.subs[s], dloc.name),
                                      Loc(fpdn.subs[s], floc.name), RENAME_EXCHANGE)
        if file.link is not None:
            await self._remove_linkfile(frame, fpdn, floc.name, file.link)
        rf = root_frame(frame)
        for i in range(len(self.children)):
            if i == s:
                continue
            try:
                await self.children[i].rename(rf, Loc(dpdn.subs[i], dloc.name),
                                              Loc(fpdn.subs[i], floc.name), 0)
            except OSError as exc:
                self.log.error("%s: exchange: renaming a directory's copy on %s: %s",
                               self.name, self.children[i].name, exc)
        h = (await self._layout(frame, dpdn)).child_for(dloc.name)
        if h != s:
            await self._put_linkfile(frame, dpdn, dloc.name, h, s, replace=True)
