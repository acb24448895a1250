"""cluster/replicate: lookup and the namespace fops (a mixin of Replicate).

Lookup asks every child that is up, takes the answer of the children readable for the
parent's entries, and maps each child's inode to replicate's by gfid.  A child whose copy
has no gfid gets the answer's (and is accused of missing data and metadata, so it heals);
a name no child has a gfid for gets a fresh one (an existing brick being mirrored).  A
child holding another gfid under the name, or a good child lacking the name, leaves the
parent accused so entry self-heal repairs it.  A name good children resolve to different
gfids is an entry split brain (EIO unless the favorite-child policy picks one).

Creating fops make the object on every child that is up and set the new gfid on each.
"""
from __future__ import annotations

import errno
import stat
import weakref
from typing import Optional

from ..core.errors import FopError
from ..core.frame import system_frame
from ..core.inode import Fd, Inode, Loc
from ..core.types import Entry
from . import afr_changelog as cl
from .afr_changelog import DATA, ENTRY, METADATA
from .afr_gfid import GFID_XATTR, ino_of, new_gfid, valid_gfid
from .afr_state import AfrFd, AfrInode

XATTR_CREATE = 1


class AfrEntryOps:
    # -- reading a child's identity --------------------------------------------------
    async def read_meta(self, i: int, ci: Inode) -> tuple[Optional[bytes], dict[bytes, bytes]]:
        """(gfid or None, replicate's changelog xattrs) of child inode ``ci`` on child i."""
        child = self.children[i]
        frame = system_frame()
        names = await child.listxattr(frame, ci)
        gfid: Optional[bytes] = None
        values: dict[bytes, bytes] = {}
        for name in names:
            if name == GFID_XATTR:
                value = await child.getxattr(frame, ci, name)
                gfid = value if valid_gfid(value) else None
            elif name.startswith(cl.PREFIX):
                values[name] = await child.getxattr(frame, ci, name)
        return gfid, values

    async def set_gfid(self, i: int, ci: Inode, gfid: bytes) -> bytes:
        """Give child i's inode ``ci`` the gfid, unless it has one: the gfid it has."""
        child = self.children[i]
        try:
            await child.setxattr(system_frame(), ci, GFID_XATTR, gfid, XATTR_CREATE)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                try:
                    have = await child.getxattr(system_frame(), ci, GFID_XATTR)
                    if valid_gfid(have):
                        return have
                    await child.setxattr(system_frame(), ci, GFID_XATTR, gfid, 0)
                except OSError as exc2:
                    exc = exc2
                else:
                    return gfid
            self.failed(i, exc)
            self.log.warning("%s: cannot set the gfid on %s: %s", self.name,
                             self.child_names[i], exc)
        return gfid

    async def drop_child_inode(self, i: int, ci: Inode) -> None:
        """Release a child inode replicate does not keep (posix holds a descriptor)."""
        if ci is None or ci.ctx.get(self) is not None:
            return
        table = self.children[i].itable
        if table.purge(ci):
            try:
                await self.children[i].forget(system_frame(), ci)
            except OSError:
                pass

    def adopt(self, inode: Inode, ctx: AfrInode, i: int, ci: Inode) -> Optional[Inode]:
        """Map child i's inode ``ci`` to ``inode``; returns the child inode it replaces."""
        old = ctx.children[i]
        ctx.children[i] = ci
        ci.ctx[self] = inode
        if old is not None and old is not ci:
            if old.ctx.get(self) is inode:
                del old.ctx[self]
            return old
        return None

    def link_inode(self, gfid: bytes, mode: int, parent: Optional[Inode],
                   name: Optional[bytes]) -> tuple[Inode, AfrInode, bool]:
        inode = self.itable.link(ino_of(gfid))
        ctx = inode.ctx.get(self)
        new = ctx is None or ctx.gfid != gfid
        if new:
            ctx = AfrInode(gfid, self.n, stat.S_IFMT(mode))
            self.ctx_set(inode, ctx)
        if parent is not None and name is not None:
            ctx.parent = weakref.ref(parent)
            ctx.name = name
        return inode, ctx, new

    # -- lookup -------------------------------------------------------------------------
    async def lookup(self, frame, loc):
        name = loc.name
        if name is None:
            return Entry(loc.inode, await self.getattr(frame, loc.inode))
        parent = loc.parent
        pctx = self.ictx(parent)
        if name in (b".", b".."):
            return await self._lookup_dot(frame, parent, pctx, name)
        found: dict[int, Entry] = {}
        errors: dict[int, OSError] = {}
        targets = self.targets(pctx)
        if (len(targets) > 1 and not pctx.changelog.any_pending()
                and self.pick_attr(targets) == targets[0]):
            # Every change goes through replicate, so with nothing pending in the
            # directory the first child speaks for all: a name it lacks, the others
            # lack; a file it holds that replicate knows on every child that is up,
            # with nothing pending, the others hold too.
            i = targets[0]
            try:
                e = await self.children[i].lookup(frame, Loc(pctx.children[i], name))
            except OSError as exc:
                if exc.errno == errno.ENOENT and pctx.verified:
                    raise               # the others lack it too
                errors[i] = exc
                self.failed(i, exc)
            else:
                found[i] = e
                known = self._known_everywhere(e, i, targets)
                if known is not None:
                    return known
            targets = targets[1:]
        for i in targets:
            try:
                found[i] = await self.children[i].lookup(frame, Loc(pctx.children[i], name))
            except OSError as exc:
                errors[i] = exc
                self.failed(i, exc)
        if found and not errors:
            known = self._known_answer(pctx, found)
            if known is not None:
                return known
        try:
            good = await self.readable(pctx, ENTRY, parent)
        except FopError as exc:
            if exc.errno not in (errno.EIO, errno.ENOTCONN):
                raise
            good = self.targets(pctx)       # degraded: answer from the children up
        try:
            return await self._lookup_answer(parent, pctx, name, found, errors, good)
        finally:
            for i, e in found.items():
                await self.drop_child_inode(i, e.inode)

    def _known_everywhere(self, e: Entry, i: int, targets: list[int]) -> Optional[Entry]:
        ours = e.inode.ctx.get(self)
        ctx = ours.ctx.get(self) if ours is not None else None
        if ctx is None or ctx.children[i] is not e.inode or ctx.changelog.any_pending():
            return None
        children = ctx.children
        for t in targets:
            if children[t] is None:
                return None
        return Entry(ours, self.map_attr(e.attr, ours))

    def _known_answer(self, pctx: AfrInode, found: dict[int, Entry]) -> Optional[Entry]:
        """The fast path of a lookup: every child found the file replicate already knows,
        with nothing pending on it or its directory."""
        inode = None
        for i, e in found.items():
            ours = e.inode.ctx.get(self)
            if ours is None or (inode is not None and ours is not inode):
                return None
            inode = ours
        ctx = inode.ctx.get(self)
        if ctx is None or ctx.changelog.any_pending() or pctx.changelog.any_pending():
            return None
        children = ctx.children
        for i, e in found.items():
            if children[i] is not e.inode:
                return None
        i = self.pick_attr(list(found))
        return Entry(inode, self.map_attr(found[i].attr, inode))

    async def _lookup_answer(self, parent: Inode, pctx: AfrInode, name: bytes,
                             found: dict[int, Entry], errors: dict[int, OSError],
                             good: list[int]) -> Entry:
        good_found = [i for i in good if i in found]
        if not good_found:
            real = [errors[i] for i in good if i in errors
                    and errors[i].errno not in (errno.ENOENT, errno.ENOTCONN)]
            if real:
                raise real[0]
            if any(i in errors and errors[i].errno == errno.ENOENT for i in good):
                raise FopError(errno.ENOENT)
            raise FopError(errno.ENOTCONN if not found else errno.ENOENT)
        gfids: dict[int, Optional[bytes]] = {}
        rows: dict[int, dict[bytes, bytes]] = {}
        for i, e in found.items():
            mapped = e.inode.ctx.get(self)
            mctx = mapped.ctx.get(self) if mapped is not None else None
            if mctx is not None and mctx.children[i] is e.inode:
                gfids[i] = mctx.gfid
                continue
            try:
                gfids[i], rows[i] = await self.read_meta(i, e.inode)
            except OSError as exc:
                self.failed(i, exc)
                gfids[i] = None
        choices = {gfids[i] for i in good_found if gfids[i] is not None}
        if len(choices) > 1:
            gfid = await self.resolve_entry_split_brain(parent, pctx, name, found, gfids,
                                                        good_found)
        elif choices:
            gfid = choices.pop()
        else:
            gfid = new_gfid()
        first = good_found[0]
        for i in good_found:
            if gfids[i] == gfid:
                first = i
                break
        attr = found[first].attr
        inode, ctx, new = self.link_inode(gfid, attr.mode, parent, name)
        fresh: list[int] = []          # children that got the gfid just now
        drop: list[tuple[int, Inode]] = []
        for i, e in found.items():
            if gfids[i] is None and stat.S_IFMT(e.attr.mode) == ctx.kind:
                await self.set_gfid(i, e.inode, gfid)
                gfids[i] = gfid
                fresh.append(i)
            if gfids[i] != gfid:
                continue
            old = self.adopt(inode, ctx, i, e.inode)
            if old is not None:
                drop.append((i, old))
            if not ctx.changelog.known[i]:
                cl.parse_row(self.child_names, rows.get(i, {}), i, ctx.changelog)
        for i, old in drop:
            await self.drop_child_inode(i, old)
        if fresh and len(fresh) < len([i for i in found if gfids[i] == gfid]):
            holders = [i for i in found if gfids[i] == gfid and i not in fresh]
            await self.accuse(inode, holders, fresh, (DATA, METADATA))
        elif fresh and len(fresh) > 1 and ctx.kind == stat.S_IFREG:
            base = found[first].attr
            differ = [i for i in fresh if i != first and (
                found[i].attr.size != base.size or found[i].attr.mtime_ns != base.mtime_ns)]
            if differ:
                await self.accuse(inode, [first], differ, (DATA, METADATA))
        lacking = [i for i in good if i not in found or gfids.get(i) != gfid]
        if lacking and not any(pctx.changelog.pending[x][y][ENTRY]
                               for x in good for y in lacking):
            await self.accuse(parent, [i for i in good if i not in lacking], lacking,
                              (ENTRY,))
        if ctx.changelog.any_pending():
            self.queue_heal(inode)
        try:
            good = await self.readable(ctx, DATA if ctx.kind == stat.S_IFREG else METADATA,
                                       inode)
            good = [i for i in good if i in found]
            attr = found[self.pick_attr(good)].attr if good else attr
        except FopError as exc:
            if exc.errno == errno.EIO:
                raise
        return Entry(inode, self.map_attr(attr, inode))

    async def _lookup_dot(self, frame, parent: Inode, pctx: AfrInode, name: bytes) -> Entry:
        async def one(i: int) -> Entry:
            return await self.children[i].lookup(frame, Loc(pctx.children[i], name))
        e = await self.read_from(parent, ENTRY, one)
        ours = e.inode.ctx.get(self)
        if ours is None:
            for i, child in enumerate(self.children):
                if child.itable.find(e.inode.ino) is e.inode:
                    await self.drop_child_inode(i, e.inode)
            raise FopError(errno.ESTALE)
        return Entry(ours, self.map_attr(e.attr, ours))

    # -- creating -----------------------------------------------------------------------
    async def _make(self, frame, loc: Loc, make) -> Entry:
        """Create an object on every up child (``make(i, child_loc) -> Entry``)."""
        parent = loc.parent
        pctx = self.ictx(parent)
        fresh = new_gfid()
        made: dict[int, Entry] = {}
        gfids: dict[int, bytes] = {}

        async def one(i: int) -> Entry:
            e = await make(i, Loc(pctx.children[i], loc.name))
            made[i] = e
            # an existing file (create without O_EXCL) keeps the gfid it has
            gfids[i] = await self.set_gfid(i, e.inode, gfids[min(gfids)] if gfids else fresh)
            return e

        first, e, _ = await self.txn(parent, (ENTRY,), one)
        # an existing file (create without O_EXCL) found by a good child keeps its gfid
        stale = pctx.changelog.accused(ENTRY)
        good = [i for i in made if i not in stale] or list(made)
        gfid = next((gfids[i] for i in good if gfids[i] != fresh), gfids[good[0]])
        if gfids[first] != gfid:
            first = next(i for i in good if gfids[i] == gfid)
            e = made[first]
        inode, ctx, new = self.link_inode(gfid, e.attr.mode, parent, loc.name)
        odd = []
        for i, ce in made.items():
            if gfids[i] != gfid:
                odd.append(i)
                continue
            old = self.adopt(inode, ctx, i, ce.inode)
            if old is not None:
                await self.drop_child_inode(i, old)
            if new or gfid == fresh:
                ctx.changelog.known[i] = True
        if gfid == fresh and ctx.kind == stat.S_IFDIR:
            ctx.verified = True
        for i in odd:
            await self.drop_child_inode(i, made[i].inode)
        if odd:
            await self.accuse(parent, [i for i in good if i not in odd], odd, (ENTRY,))
        return Entry(inode, self.map_attr(e.attr, inode))

    async def mknod(self, frame, loc, mode, rdev, umask):
        return await self._make(frame, loc, lambda i, cl_: self.children[i].mknod(
            frame, cl_, mode, rdev, umask))

    async def mkdir(self, frame, loc, mode, umask):
        return await self._make(frame, loc, lambda i, cl_: self.children[i].mkdir(
            frame, cl_, mode, umask))

    async def symlink(self, frame, target, loc):
        return await self._make(frame, loc, lambda i, cl_: self.children[i].symlink(
            frame, target, cl_))

    async def create(self, frame, loc, flags, mode, umask, fd):
        afd = AfrFd(self.n)

        async def make(i: int, cloc: Loc) -> Entry:
            cfd = Fd(cloc.parent, flags, fd.pid, fh=fd.fh)
            cfd.lk_owner = fd.lk_owner
            e = await self.children[i].create(frame, cloc, flags, mode, umask, cfd)
            cfd.inode = e.inode
            afd.children[i] = cfd
            if not fd.open_flags and cfd.open_flags:
                fd.open_flags.update(cfd.open_flags)
            return e

        entry = await self._make(frame, loc, make)
        self.ctx_set(fd, afd)
        self.ictx(entry.inode).fds.add(fd)
        return entry

    async def link(self, frame, inode, newloc):
        ctx = self.ictx(inode)
        pctx = self.ictx(newloc.parent)
        targets = [i for i in self.targets(pctx) if ctx.children[i] is not None]

        async def one(i: int) -> Entry:
            return await self.children[i].link(frame, ctx.children[i],
                                               Loc(pctx.children[i], newloc.name))
        first, e, _ = await self.txn(newloc.parent, (ENTRY,), one, targets)
        return Entry(inode, self.map_attr(e.attr, inode))

    # -- removing and renaming -----------------------------------------------------------
    def _child_loc(self, pctx: AfrInode, loc: Loc, i: int) -> Loc:
        inode = None
        if loc.inode is not None:
            ictx = loc.inode.ctx.get(self)
            inode = ictx.children[i] if ictx is not None else None
        return Loc(pctx.children[i], loc.name, inode)

    async def unlink(self, frame, loc):
        pctx = self.ictx(loc.parent)
        await self.txn(loc.parent, (ENTRY,), lambda i: self.children[i].unlink(
            frame, self._child_loc(pctx, loc, i)))

    async def rmdir(self, frame, loc):
        pctx = self.ictx(loc.parent)
        await self.txn(loc.parent, (ENTRY,), lambda i: self.children[i].rmdir(
            frame, self._child_loc(pctx, loc, i)))

    async def rename(self, frame, oldloc, newloc, flags=None):
        octx = self.ictx(oldloc.parent)
        nctx = self.ictx(newloc.parent)
        targets = [i for i in self.targets(octx) if nctx.children[i] is not None]

        async def one(i: int) -> None:
            await self.children[i].rename(frame, self._child_loc(octx, oldloc, i),
                                          self._child_loc(nctx, newloc, i), flags)
        _, _, done = await self.txn(oldloc.parent, (ENTRY,), one, targets)
        if newloc.parent is not oldloc.parent and len(done) < self.n:
            await self.accuse(newloc.parent, done, [i for i in range(self.n)
                                                    if i not in done], (ENTRY,))
        moved = oldloc.inode.ctx.get(self) if oldloc.inode is not None else None
        if moved is not None:
            moved.parent = weakref.ref(newloc.parent)
            moved.name = newloc.name
        return None
