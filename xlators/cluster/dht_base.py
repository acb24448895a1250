"""cluster/distribute: the shared machinery of the translator's mixins.

Resolution of a name (:meth:`DhtBase._locate`): look on the child the name hashes to;
a directory is then looked up on every child (a missing copy is created: directory
self-heal); a link file is followed to the child it names; a miss is final when the
directory's layout is committed (``lookup-unhashed auto``), else every other child is asked
once, and a file found there gets a link file on the hashed child so that the next lookup
goes straight to it.

Child inodes: every child inode this translator holds while an operation runs has a
``refs`` reference (taken by :meth:`_child_lookup` and friends, given back by
:meth:`_drop`); volume inodes hold ``nlookup`` references on theirs (see dht_inodes).
"""
from __future__ import annotations

import errno
import logging
import stat
import time
from typing import Any, NamedTuple, Optional

import trio

from ..core.errors import FopError
from ..core.frame import system_frame
from ..core.inode import Inode, Loc
from ..core.translator import Translator
from ..core.types import Attr, Entry, SetAttr
from .dht_inodes import INDEX_SHIFT, DNode, ident, root_frame
from .dht_layout import (LAYOUT_XATTR, VOLUME_XATTR, Layout, LayoutError, parse_volume,
                         volume_value)
from .dht_linkfile import link_target, may_be_linkfile, parse_target

log = logging.getLogger("xlfs.cluster.distribute")

#: Hidden directory at the root of every child where a rebalance stages copies.
STAGING = b".xlfs-dht"
_NOXATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


class Found(NamedTuple):
    """Where a name is: the data's child and its entry there (a directory: child 0's
    copy, with every copy in ``copies``), and the child holding a link file for it."""
    index: int
    entry: Entry
    link: Optional[int] = None
    copies: Optional[list] = None

    @property
    def is_dir(self) -> bool:
        return self.copies is not None


class DhtBase(Translator):
    tables: list
    _volume_children = 0

    # -- child inodes --------------------------------------------------------------------
    async def _drop(self, index: int, inode: Optional[Inode]) -> None:
        """Give back an operation's hold on a child inode (forgotten when unused)."""
        if inode is None:
            return
        inode.refs -= 1
        if self.tables[index].purge(inode):
            await self.children[index].forget(system_frame(), inode)

    async def _unref(self, index: int, inode: Optional[Inode]) -> None:
        """Give back a volume inode's ``nlookup`` on a child inode."""
        if inode is not None and self.tables[index].forget(inode, 1):
            await self.children[index].forget(system_frame(), inode)

    async def _child_lookup(self, frame: Any, index: int, pdn: DNode,
                            name: bytes) -> Optional[Entry]:
        """Lookup in one child; None for ENOENT; the inode is held (``_drop`` it)."""
        parent = pdn.subs[index]
        if parent is None:
            return None
        try:
            e = await self.children[index].lookup(frame, Loc(parent, name))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        e.inode.refs += 1
        return e

    def _dn(self, inode: Optional[Inode]) -> DNode:
        dn = inode.ctx.get(self) if inode is not None else None
        if dn is None:
            raise FopError(errno.ESTALE)
        return dn

    def _pdn(self, inode: Optional[Inode]) -> DNode:
        """The DNode of a directory a name is resolved in (ENOTDIR for anything else)."""
        dn = self._dn(inode)
        if not dn.is_dir:
            raise FopError(errno.ENOTDIR)
        return dn

    def _attr(self, index: int, attr: Attr, is_dir: bool = False) -> Attr:
        if index == 0 or is_dir:
            return attr
        a = attr
        return Attr(a.ino ^ (index << INDEX_SHIFT), a.size, a.blocks, a.atime_ns, a.mtime_ns,
                    a.ctime_ns, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.blksize)

    async def _adopt(self, index: int, entry: Entry) -> Entry:
        """The volume entry for a file's (non-directory's) child entry."""
        ci = entry.inode
        inode = self.itable.link(ident(index, ci.ino, False))
        dn = inode.ctx.get(self)
        if dn is None or dn.is_dir:
            inode.ctx[self] = DNode(False, index, [ci])
            ci.nlookup += 1
        elif dn.subs[0] is not ci or dn.index != index:
            old, oldi = dn.subs[0], dn.index
            dn.subs[0], dn.index = ci, index
            ci.nlookup += 1
            await self._unref(oldi, old)
        return Entry(inode, self._attr(index, entry.attr))

    def _merge_dir_attrs(self, attrs: list) -> Attr:
        """A directory's attributes: child 0's copy's, with the latest times of all copies
        (a name made on any child changes the directory's mtime and ctime there)."""
        first = attrs[0]
        rest = [a for a in attrs[1:] if a is not None]
        if not rest:
            return first
        a = Attr(first.ino, first.size, first.blocks, first.atime_ns, first.mtime_ns,
                 first.ctime_ns, first.mode, first.nlink, first.uid, first.gid, first.rdev,
                 first.blksize)
        for b in rest:
            if b.mtime_ns > a.mtime_ns:
                a.mtime_ns = b.mtime_ns
            if b.ctime_ns > a.ctime_ns:
                a.ctime_ns = b.ctime_ns
            if b.atime_ns > a.atime_ns:
                a.atime_ns = b.atime_ns
        return a

    async def _adopt_dir(self, copies: list) -> Entry:
        """The volume entry for a directory's copies (child 0's must be there)."""
        first = copies[0]
        inode = self.itable.link(first.inode.ino)
        dn = inode.ctx.get(self)
        if dn is None or not dn.is_dir:
            dn = DNode(True, 0, [None] * len(self.children))
            inode.ctx[self] = dn
        for i, e in enumerate(copies):
            ci = e.inode if e is not None else None
            if dn.subs[i] is not ci:
                old = dn.subs[i]
                dn.subs[i] = ci
                if ci is not None:
                    ci.nlookup += 1
                await self._unref(i, old)
        return Entry(inode, self._merge_dir_attrs([e.attr if e is not None else None
                                                   for e in copies]))

    # -- the volume and layouts ------------------------------------------------------------
    async def _volume(self, frame: Any) -> int:
        """K, the children the default layout spreads over (read once, written on a fresh
        volume)."""
        if self._volume_children:
            return self._volume_children
        async with self._volume_lock:
            if self._volume_children:
                return self._volume_children
            n = len(self.children)
            root = self.tables[0].root
            rf = root_frame(frame)
            try:
                k = parse_volume(await self.children[0].getxattr(rf, root, VOLUME_XATTR))
            except OSError as exc:
                if exc.errno not in _NOXATTR:
                    raise
                k = n
                try:
                    await self.children[0].setxattr(rf, root, VOLUME_XATTR, volume_value(n), 0)
                except OSError as exc2:
                    self.log.warning("%s: cannot record the volume's child count on %s: %s",
                                     self.name, self.children[0].name, exc2)
            except LayoutError as exc:
                self.log.error("%s: %s on the root of %s", self.name, exc,
                               self.children[0].name)
                raise FopError(errno.EIO) from None
            if k > n:
                self.log.error("%s: the volume was made with %d children, the volfile names "
                               "%d: children can only be appended", self.name, k, n)
                raise FopError(errno.EIO)
            self._volume_children = k
            return k

    async def _layout(self, frame: Any, dn: DNode) -> Layout:
        layout = dn.layout
        if layout is None:
            layout = dn.layout = await self._read_layout(frame, dn)
        return layout

    async def _read_layout(self, frame: Any, dn: DNode) -> Layout:
        k = await self._volume(frame)
        n = len(self.children)
        copy = dn.subs[0]
        if copy is not None:
            try:
                value = await self.children[0].getxattr(root_frame(frame), copy, LAYOUT_XATTR)
            except OSError as exc:
                if exc.errno not in _NOXATTR:
                    raise
            else:
                try:
                    layout = Layout.parse(value)
                except LayoutError as exc:
                    self.log.error("%s: directory %#x: %s; looking everywhere until a "
                                   "rebalance fixes it", self.name, copy.ino, exc)
                    return Layout.even(n, n, committed=False)
                if len(layout.ranges) > n:
                    self.log.error("%s: directory %#x has a layout for %d children",
                                   self.name, copy.ino, len(layout.ranges))
                    return Layout.even(n, n, committed=False)
                layout.ranges += [None] * (n - len(layout.ranges))
                return layout
        return Layout.even(k, n)

    def _everywhere(self, layout: Layout) -> bool:
        mode = self.opts.lookup_unhashed
        return mode == "on" or (mode == "auto" and not layout.committed)

    # -- resolution -----------------------------------------------------------------------
    async def _linkfile_target(self, index: int, inode: Inode) -> Optional[int]:
        try:
            target = await self.children[index].readlink(system_frame(), inode)
        except OSError:
            return None
        t = parse_target(bytes(target))
        return t if t is not None and t < len(self.children) else None

    async def _locate(self, frame: Any, pdn: DNode, name: bytes) -> Found:
        """Where ``name`` is in directory ``pdn`` (FopError ENOENT when nowhere).  The
        entries in the result are held: release them with :meth:`_release`."""
        if pdn is self._root_dn and name == STAGING:
            raise FopError(errno.ENOENT)
        layout = await self._layout(frame, pdn)
        h = layout.child_for(name)
        e = await self._child_lookup(frame, h, pdn, name)
        stale_link = None
        if e is not None:
            if e.attr.kind == stat.S_IFDIR:
                return await self._locate_dir(frame, pdn, name, h, e)
            target = await self._linkfile_target(h, e.inode) if may_be_linkfile(e.attr) \
                else None
            if target is None:
                return Found(h, e)
            await self._drop(h, e.inode)
            if target != h:
                te = await self._child_lookup(frame, target, pdn, name)
                if te is not None:
                    if te.attr.kind != stat.S_IFDIR and not may_be_linkfile(te.attr):
                        return Found(target, te, h)
                    await self._drop(target, te.inode)
            stale_link = h
        elif not self._everywhere(layout):
            raise FopError(errno.ENOENT)
        for i in range(len(self.children)):
            if i == h:
                continue
            e = await self._child_lookup(frame, i, pdn, name)
            if e is None:
                continue
            if e.attr.kind == stat.S_IFDIR:
                return await self._locate_dir(frame, pdn, name, i, e)
            if may_be_linkfile(e.attr) and await self._linkfile_target(i, e.inode) is not None:
                await self._drop(i, e.inode)
                continue
            try:
                await self._put_linkfile(frame, pdn, name, h, i, replace=stale_link is not None)
            except OSError as exc:
                self.log.warning("%s: cannot make a link file for %r on %s: %s", self.name,
                                 name, self.children[h].name, exc)
            else:
                self.stats["linkfiles-made"] += 1
            self.stats["lookups-unhashed-found"] += 1
            return Found(i, e, h)
        raise FopError(errno.ENOENT)

    async def _locate_dir(self, frame: Any, pdn: DNode, name: bytes, h: int,
                          eh: Entry) -> Found:
        """Every copy of directory ``name``; missing copies are created (self-heal)."""
        n = len(self.children)
        copies: list = [None] * n
        copies[h] = eh
        for i in range(n):
            if i == h:
                continue
            e = await self._child_lookup(frame, i, pdn, name)
            if e is not None and e.attr.kind != stat.S_IFDIR:
                self.log.warning("%s: %r is a directory on %s but not on %s", self.name,
                                 name, self.children[h].name, self.children[i].name)
                await self._drop(i, e.inode)
                e = None
            copies[i] = e
        missing = [i for i in range(n) if copies[i] is None]
        if missing:
            await self._heal_dir(frame, pdn, name, copies, missing)
        if copies[0] is None:
            await self._release_all(copies)
            raise FopError(errno.EIO, f"directory {name!r} cannot be made on "
                                      f"{self.children[0].name}")
        return Found(0, copies[0], None, copies)

    async def _heal_dir(self, frame: Any, pdn: DNode, name: bytes, copies: list,
                        missing: list) -> None:
        ref = next(e for e in copies if e is not None).attr
        rf = root_frame(frame)
        for i in missing:
            if pdn.subs[i] is None:
                continue
            try:
                e = await self.children[i].mkdir(rf, Loc(pdn.subs[i], name),
                                                 stat.S_IFDIR | (ref.mode & 0o7777), 0)
                e.inode.refs += 1
                await self.children[i].setattr(rf, e.inode, SetAttr(
                    mode=ref.mode & 0o7777, uid=ref.uid, gid=ref.gid))
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    copies[i] = await self._child_lookup(frame, i, pdn, name)
                    continue
                self.log.warning("%s: cannot heal directory %r on %s: %s", self.name, name,
                                 self.children[i].name, exc)
                continue
            copies[i] = e
            self.stats["directory-heals"] += 1
            self.log.info("%s: healed directory %r on %s", self.name, name,
                          self.children[i].name)

    async def _release(self, found: Found) -> None:
        if found.copies is not None:
            await self._release_all(found.copies)
        else:
            await self._drop(found.index, found.entry.inode)

    async def _release_all(self, copies: list) -> None:
        for i, e in enumerate(copies):
            if e is not None:
                await self._drop(i, e.inode)

    # -- link files -------------------------------------------------------------------------
    async def _put_linkfile(self, frame: Any, pdn: DNode, name: bytes, at: int, target: int,
                            replace: bool = False) -> None:
        """A link file ``name`` on child ``at`` pointing to child ``target``; with
        ``replace``, whatever non-directory has the name there is replaced atomically."""
        rf = root_frame(frame)
        child = self.children[at]
        parent = pdn.subs[at]
        if parent is None:
            raise FopError(errno.EIO, f"the directory has no copy on {child.name}")
        try:
            e = await child.symlink(rf, link_target(target), Loc(parent, name))
        except OSError as exc:
            if exc.errno != errno.EEXIST or not replace:
                raise
            tmp = b".xlfs-dht-link.%d.%x" % (target, time.monotonic_ns())
            e = await child.symlink(rf, link_target(target), Loc(parent, tmp))
            e.inode.refs += 1
            try:
                await child.rename(rf, Loc(parent, tmp), Loc(parent, name), 0)
            except OSError:
                await child.unlink(rf, Loc(parent, tmp))
                raise
            finally:
                await self._drop(at, e.inode)
            return
        e.inode.refs += 1
        await self._drop(at, e.inode)

    async def _remove_linkfile(self, frame: Any, pdn: DNode, name: bytes, at: int) -> None:
        """Remove link file ``name`` on child ``at`` (only if it is one)."""
        e = await self._child_lookup(frame, at, pdn, name)
        if e is None:
            return
        try:
            if may_be_linkfile(e.attr) and \
                    await self._linkfile_target(at, e.inode) is not None:
                await self.children[at].unlink(root_frame(frame), Loc(pdn.subs[at], name))
        finally:
            await self._drop(at, e.inode)

    # -- placement ---------------------------------------------------------------------------
    async def _place(self, frame: Any, hashed: int) -> int:
        """The child a new file goes to: the hashed one, unless it is below
        ``min-free-disk`` and another child is not."""
        if not self._min_free:
            return hashed
        if not await self._is_full(frame, hashed):
            return hashed
        best, best_free = hashed, -1
        for i in range(len(self.children)):
            if i != hashed and not await self._is_full(frame, i):
                free = self._free[i][1]
                if free > best_free:
                    best, best_free = i, free
        if best != hashed:
            self.stats["min-free-disk-diversions"] += 1
        return best

    async def _is_full(self, frame: Any, index: int) -> bool:
        at, free, full = self._free[index]
        if time.monotonic() - at > self.opts.min_free_disk_interval:
            await self._statfs_child(frame, index)
            at, free, full = self._free[index]
        return full

    async def _statfs_child(self, frame: Any, index: int) -> Any:
        sv = await self.children[index].statfs(root_frame(frame), self.tables[index].root)
        kind, value = self._min_free
        free = sv.bavail * sv.frsize
        if kind == "percent":
            full = sv.blocks > 0 and free < sv.blocks * sv.frsize * value / 100
        else:
            full = free < value
        self._free[index] = (time.monotonic(), free, full)
        return sv

    def _volume_lock_init(self) -> None:
        self._volume_lock = trio.Lock()
