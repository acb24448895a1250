"""cluster/replicate's self-heal: copy good copies over accused ones.

``heal_inode`` heals one file of replicate's for every kind with accusations, from a
source (a child no one accuses) to each sink (an accused child that is up):

- entry (directories): names the sink has and the source lacks are removed from the sink
  (whole trees); names it lacks, or holds with another gfid or type, are copied from the
  source (whole trees: directories, files with contents, symlinks, devices, with gfid,
  owner, mode, times and user xattrs).  Runs under the directory's heal lock, so changes
  to it wait.
- data (regular files): the sink is truncated to nothing and refilled from the source in
  ``self-heal-window-size`` blocks of 128 KiB (all-zero blocks are left as holes), under
  the file's heal lock, so writers wait and never interleave with the copy.
- metadata: mode, owner, times and the user xattrs (replicate's own are left alone).

Afterwards the sinks' accusations of the kind are zeroed on every child that is up, and
open Fds of the file get their missing child Fds reopened.  Everything runs with a
system frame (uid 0).
"""
from __future__ import annotations

import errno
import os
import stat
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Optional

import trio

from ..core.errors import FopError
from ..core.frame import system_frame
from ..core.inode import Fd, Inode, Loc
from ..core.types import Entry, SetAttr
from . import afr_changelog as cl
from .afr_changelog import DATA, ENTRY, METADATA
from .afr_gfid import GFID_XATTR, ino_of
from .dir_scan import dir_entries

if TYPE_CHECKING:  # pragma: no cover
    from .replicate import Replicate

BLOCK = 128 * 1024
_ZEROS = bytes(BLOCK * 16)
HEAL_ORDER = (ENTRY, DATA, METADATA)
_ENABLED = {DATA: "data_self_heal", METADATA: "metadata_self_heal",
            ENTRY: "entry_self_heal"}


async def heal_inode(xl: "Replicate", inode: Inode) -> bool:
    """Heal what can be healed now; True when the file has no accusations left."""
    ctx = xl.ictx(inode)
    for i in range(xl.n):
        if xl.up[i] and ctx.children[i] is None:
            if not await xl.resolve_child(inode, i) and await unlinked(xl, ctx):
                forgive(ctx, i)
    for kind in HEAL_ORDER:
        if not getattr(xl.opts, _ENABLED[kind]):
            continue
        if kind not in ctx.changelog.pending_kinds():
            continue
        present = ctx.present()
        sources = ctx.changelog.sources(kind, present)
        if not sources:
            try:
                sources = set(await xl.resolve_split_brain(ctx, kind, inode))
            except FopError:
                return False
        src = next((s for s in sorted(sources) if xl.up[s]), None)
        if src is None:
            continue
        sinks = [y for y in present if y not in sources and xl.up[y]]
        if not sinks:
            continue
        lock = ctx.heal_lock = trio.Lock()
        try:
            async with lock:
                while ctx.inflight:      # modifications that started before the lock
                    ctx.drained = trio.Event()
                    await ctx.drained.wait()
                for y in sinks:
                    await heal_kind(xl, ctx.kind, kind, src, ctx.children[src], y,
                                    ctx.children[y])
                    xl.healed[cl.KIND_NAMES[kind]] += 1
                await clear(xl, ctx, kind, sinks, sources)
                if kind == ENTRY and len(sources) + len(sinks) == len(ctx.present()):
                    ctx.verified = True
                await reopen_fds(xl, inode)
        finally:
            ctx.heal_lock = None
    await reopen_fds(xl, inode)
    return not ctx.changelog.any_pending()


async def unlinked(xl: "Replicate", ctx: Any) -> bool:
    """Is the file gone from the namespace (no link left on the children holding it)?"""
    f = system_frame()
    for x in ctx.present():
        if xl.up[x]:
            try:
                if (await xl.children[x].getattr(f, ctx.children[x])).nlink > 0:
                    return False
            except OSError:
                return False
    return bool(ctx.present())


def forgive(ctx: Any, y: int) -> None:
    """Child y never held this (now unlinked) file: nothing of it is left to heal."""
    for row in ctx.changelog.pending:
        row[y] = [0, 0, 0]


async def clear(xl: "Replicate", ctx: Any, kind: int, sinks: list[int],
                sources: set[int]) -> None:
    """The sinks are healed for ``kind``: zero every accusation of them (and theirs of
    the sources), on the children that are up."""
    pend = ctx.changelog.pending
    touched: set[int] = set()
    for x in range(xl.n):
        for y in sinks:
            if x != y and pend[x][y][kind]:
                pend[x][y][kind] = 0
                touched.add(x)
    for y in sinks:
        for s in sources:
            if pend[y][s][kind]:
                pend[y][s][kind] = 0
                touched.add(y)
    for x in touched:
        if ctx.children[x] is not None and xl.up[x]:
            await xl.write_row(ctx, x, range(xl.n))


async def heal_kind(xl: "Replicate", ftype: int, kind: int, s: int, sci: Inode, y: int,
                    yci: Inode) -> None:
    if kind == ENTRY:
        if ftype == stat.S_IFDIR:
            await heal_entries(xl, s, sci, y, yci)
    elif kind == DATA:
        if ftype == stat.S_IFREG:
            await copy_data(xl, s, sci, y, yci)
            await copy_times(xl, s, sci, y, yci)
    else:
        await copy_metadata(xl, s, sci, y, yci)


# -- data and metadata ------------------------------------------------------------------
async def copy_data(xl: "Replicate", s: int, sci: Inode, y: int, yci: Inode) -> None:
    f = system_frame()
    src, dst = xl.children[s], xl.children[y]
    sfd = Fd(sci, os.O_RDONLY)
    await src.open(f, sci, os.O_RDONLY, sfd)
    try:
        yfd = Fd(yci, os.O_WRONLY)
        await dst.open(f, yci, os.O_WRONLY, yfd)
        try:
            size = (await src.getattr(f, sci, sfd)).size
            await dst.setattr(f, yci, SetAttr(size=0), yfd)
            await dst.setattr(f, yci, SetAttr(size=size), yfd)
            window = xl.opts.self_heal_window_size * BLOCK
            off = 0
            while off < size:
                data = await src.readv(f, sfd, min(window, size - off), off, 0)
                if not data:
                    break
                if len(data) > len(_ZEROS) or data != _ZEROS[:len(data)]:
                    await dst.writev(f, yfd, data, off, 0)
                off += len(data)
                await trio.lowlevel.checkpoint()
            await dst.flush(f, yfd)
        finally:
            await dst.release(f, yfd)
    finally:
        await src.release(f, sfd)


async def copy_times(xl: "Replicate", s: int, sci: Inode, y: int, yci: Inode) -> None:
    f = system_frame()
    a = await xl.children[s].getattr(f, sci)
    await xl.children[y].setattr(f, yci, SetAttr(atime_ns=a.atime_ns, mtime_ns=a.mtime_ns))


async def copy_metadata(xl: "Replicate", s: int, sci: Inode, y: int, yci: Inode) -> None:
    f = system_frame()
    src, dst = xl.children[s], xl.children[y]
    a = await src.getattr(f, sci)
    is_link = stat.S_ISLNK(a.mode)
    await dst.setattr(f, yci, SetAttr(uid=a.uid, gid=a.gid))
    if not is_link:
        await dst.setattr(f, yci, SetAttr(mode=stat.S_IMODE(a.mode)))
    try:
        want = {n for n in await src.listxattr(f, sci) if not cl.is_internal(n)}
        have = {n for n in await dst.listxattr(f, yci) if not cl.is_internal(n)}
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            raise
        want = have = set()
    for name in sorted(have - want):
        await dst.removexattr(f, yci, name)
    for name in sorted(want):
        value = await src.getxattr(f, sci, name)
        try:
            if name in have and await dst.getxattr(f, yci, name) == value:
                continue
        except OSError:
            pass
        await dst.setxattr(f, yci, name, value, 0)
    await dst.setattr(f, yci, SetAttr(atime_ns=a.atime_ns, mtime_ns=a.mtime_ns))


# -- entries ------------------------------------------------------------------------------
async def list_names(xl: "Replicate", i: int, dci: Inode) -> list[bytes]:
    async with aclosing(dir_entries(xl.children[i], system_frame(), dci)) as entries:
        return [de.name async for de in entries]


async def heal_entries(xl: "Replicate", s: int, sci: Inode, y: int, yci: Inode) -> None:
    f = system_frame()
    src, dst = xl.children[s], xl.children[y]
    want = await list_names(xl, s, sci)
    have = set(await list_names(xl, y, yci))
    wanted = set(want)
    for name in sorted(have - wanted):
        await remove_tree(xl, y, yci, name)
    made: dict[bytes, Inode] = {}
    for name in want:
        se = await src.lookup(f, Loc(sci, name))
        try:
            sg, _ = await xl.read_meta(s, se.inode)
            if name in have:
                ye = await dst.lookup(f, Loc(yci, name))
                try:
                    yg, _ = await xl.read_meta(y, ye.inode)
                    same = (yg == sg and sg is not None
                            and stat.S_IFMT(ye.attr.mode) == stat.S_IFMT(se.attr.mode))
                finally:
                    await xl.drop_child_inode(y, ye.inode)
                if same:
                    continue
                await remove_tree(xl, y, yci, name)
            await copy_tree(xl, s, se, y, yci, name, sg, made)
        finally:
            await xl.drop_child_inode(s, se.inode)


async def copy_tree(xl: "Replicate", s: int, se: Entry, y: int, ydir: Inode, name: bytes,
                    gfid: Optional[bytes], made: dict[bytes, Inode]) -> None:
    """Create ``name`` in ``ydir`` on child y as a copy of child s's ``se`` (recursively)."""
    f = system_frame()
    src, dst = xl.children[s], xl.children[y]
    mode = se.attr.mode
    kind = stat.S_IFMT(mode)
    loc = Loc(ydir, name)
    ours = xl.itable.find(ino_of(gfid)) if gfid is not None else None
    octx = ours.ctx.get(xl) if ours is not None else None
    if octx is not None and octx.gfid != gfid:
        octx = None
    existing = made.get(gfid) if gfid is not None else None
    if existing is None and octx is not None and kind != stat.S_IFDIR:
        existing = octx.children[y]
    if existing is not None and kind != stat.S_IFDIR:
        ye = await dst.link(f, existing, loc)          # another name of a copied file
        if ye.inode.ctx.get(xl) is None:
            await xl.drop_child_inode(y, ye.inode)
        return
    if kind == stat.S_IFDIR:
        ye = await dst.mkdir(f, loc, mode, 0)
    elif kind == stat.S_IFREG:
        fd = Fd(ydir, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        ye = await dst.create(f, loc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, 0, fd)
        fd.inode = ye.inode
        await dst.release(f, fd)
    elif kind == stat.S_IFLNK:
        ye = await dst.symlink(f, await src.readlink(f, se.inode), loc)
    else:
        ye = await dst.mknod(f, loc, mode, se.attr.rdev, 0)
    try:
        if gfid is not None:
            await dst.setxattr(f, ye.inode, GFID_XATTR, gfid, 0)
            made[gfid] = ye.inode
        if kind == stat.S_IFREG:
            await copy_data(xl, s, se.inode, y, ye.inode)
        elif kind == stat.S_IFDIR:
            for child_name in await list_names(xl, s, se.inode):
                ce = await src.lookup(f, Loc(se.inode, child_name))
                try:
                    cg, _ = await xl.read_meta(s, ce.inode)
                    await copy_tree(xl, s, ce, y, ye.inode, child_name, cg, made)
                finally:
                    await xl.drop_child_inode(s, ce.inode)
        await copy_metadata(xl, s, se.inode, y, ye.inode)
    finally:
        if octx is not None and ours is not None:
            old = xl.adopt(ours, octx, y, ye.inode)
            if old is not None:
                await xl.drop_child_inode(y, old)
        else:
            await xl.drop_child_inode(y, ye.inode)


async def remove_tree(xl: "Replicate", y: int, dci: Inode, name: bytes) -> None:
    f = system_frame()
    child = xl.children[y]
    try:
        e = await child.lookup(f, Loc(dci, name))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise
    try:
        if stat.S_ISDIR(e.attr.mode):
            for n in await list_names(xl, y, e.inode):
                await remove_tree(xl, y, e.inode, n)
            await child.rmdir(f, Loc(dci, name, e.inode))
        else:
            await child.unlink(f, Loc(dci, name, e.inode))
    finally:
        ours = e.inode.ctx.get(xl)
        if ours is not None:
            octx = ours.ctx.get(xl)
            if octx is not None and octx.children[y] is e.inode:
                octx.children[y] = None
            del e.inode.ctx[xl]
        await xl.drop_child_inode(y, e.inode)


async def reopen_fds(xl: "Replicate", inode: Inode) -> None:
    """Open the Fds of ``inode`` on children that are up and readable again."""
    ctx = xl.ictx(inode)
    if not ctx.fds:
        return
    accused = set()
    for k in (DATA, METADATA, ENTRY):
        accused |= ctx.changelog.accused(k)
    f = system_frame()
    for fd in list(ctx.fds):
        afd = fd.ctx.get(xl)
        if afd is None:
            continue
        for y in range(xl.n):
            ci = ctx.children[y]
            if afd.children[y] is not None or ci is None or not xl.up[y] or y in accused:
                continue
            flags = fd.flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL)
            cfd = Fd(ci, flags, fd.pid, is_dir=fd.is_dir, fh=fd.fh)
            cfd.lk_owner = fd.lk_owner
            try:
                if fd.is_dir:
                    await xl.children[y].opendir(f, ci, cfd)
                else:
                    await xl.children[y].open(f, ci, flags, cfd)
            except OSError as exc:
                xl.failed(y, exc)
                continue
            afd.children[y] = cfd
