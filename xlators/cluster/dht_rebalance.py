"""cluster/distribute: rebalance, after children were appended (``xlfsctl rebalance``).

Offline: it runs over the volfile's graph with no mount (nothing else may change the
bricks meanwhile).  Directory by directory, from the root down:

1. the directory's missing copies are created (a new child has none);
2. a layout spreading the hash space evenly over every child is written, *uncommitted*
   (``commit=0``: lookups look on every child), on every copy, child 0's last;
3. every file not on its hashed child is moved there: copied into the hidden directory
   ``.xlfs-dht`` at the root of the target child (data, symlink target or device number,
   owner, mode, times, xattrs), renamed into place over any link file, then removed from
   the old child.  A file with several hard links stays and gets a link file;
4. link files that point nowhere or are not on their name's hashed child are removed;
5. the layout is written again, committed.

Finally the volume's child count (``trusted.xlfs.dht.volume``) becomes the number of
children, so new directories spread over all of them.  Interrupted at any point and run
again it finishes the job: a directory not yet committed is done again, a file copied but
not yet removed from its old child is copied again (its hashed copy wins meanwhile, in
lookups and listings alike), a half-written copy in ``.xlfs-dht`` is thrown away.
A moved file gets a new inode number (see dht_inodes); its contents do not change.
"""
from __future__ import annotations

import os
import stat
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import trio

from ..core.frame import system_frame
from ..core.inode import Fd, Loc
from ..core.types import SetAttr
from .dht_base import STAGING
from .dht_inodes import DNode
from .dht_layout import LAYOUT_XATTR, VOLUME_XATTR, XATTR_PREFIX, Layout, volume_value
from .dht_linkfile import may_be_linkfile
from .dir_scan import dir_entries

_CHUNK = 1 << 20
_DT_DIR = stat.S_IFDIR >> 12


@dataclass
class RebalanceStats:
    directories: int = 0
    files_moved: int = 0
    bytes_moved: int = 0
    links_removed: int = 0
    skipped_hardlinked: int = 0
    errors: list = field(default_factory=list)


class Rebalancer:
    def __init__(self, dist: Any, progress: Optional[Callable[[str], None]] = None,
                 stop_after: Optional[int] = None) -> None:
        self.dist = dist
        self.n = len(dist.children)
        self.frame = system_frame()
        self.stats = RebalanceStats()
        self.progress = progress or (lambda msg: None)
        self.stop_after = stop_after          # tests: give up after this many moves

    async def run(self) -> RebalanceStats:
        d = self.dist
        await d._volume(self.frame)
        await self._clear_staging()
        await self._directory(d._root_dn, b"/")
        root = d.tables[0].root
        await d.children[0].setxattr(self.frame, root, VOLUME_XATTR, volume_value(self.n), 0)
        d._volume_children = self.n
        await self._clear_staging()
        return self.stats

    # -- directories ---------------------------------------------------------------------
    async def _directory(self, dn: DNode, path: bytes) -> None:
        d = self.dist
        current = await d._layout(self.frame, dn)
        target = Layout.even(self.n, explicit=True)
        if not (current.explicit and current.committed and current.ranges == target.ranges):
            await self._write_layout(dn, Layout(target.ranges, committed=False))
            await self._place_files(dn, path, target)
            await self._write_layout(dn, target)
        self.stats.directories += 1
        self.progress(f"{path.decode(errors='replace')}: laid out over {self.n} children")
        for name in await self._subdirs(dn):
            found = await d._locate(self.frame, dn, name)
            try:
                if not found.is_dir:
                    continue
                entry = await d._adopt_dir(found.copies)
            finally:
                await d._release(found)
            await self._directory(entry.inode.ctx[d], path.rstrip(b"/") + b"/" + name)

    async def _write_layout(self, dn: DNode, layout: Layout) -> None:
        value = layout.format()
        for i in list(range(1, self.n)) + [0]:
            if dn.subs[i] is not None:
                await self.dist.children[i].setxattr(self.frame, dn.subs[i], LAYOUT_XATTR,
                                                     value, 0)
        dn.layout = Layout(layout.ranges, layout.committed, True)

    async def _list(self, index: int, inode: Any) -> list:
        """(name, type, child Entry) of a directory copy, the entries held."""
        out = []
        async with aclosing(dir_entries(self.dist.children[index], self.frame, inode,
                                        plus=True)) as entries:
            async for de in entries:
                if de.entry is not None:
                    de.entry.inode.refs += 1
                out.append((de.name, de.type, de.entry))
        return out

    async def _subdirs(self, dn: DNode) -> list:
        names = []
        for name, t, e in await self._list(0, dn.subs[0]):
            if e is not None:
                await self.dist._drop(0, e.inode)
            if t == _DT_DIR and not (dn is self.dist._root_dn and name == STAGING):
                names.append(name)
        return names

    # -- files ---------------------------------------------------------------------------
    async def _place_files(self, dn: DNode, path: bytes, layout: Layout) -> None:
        d = self.dist
        data: dict[bytes, dict[int, Any]] = {}
        links: dict[bytes, dict[int, Optional[int]]] = {}
        held = []
        for i in range(self.n):
            if dn.subs[i] is None:
                continue
            for name, t, e in await self._list(i, dn.subs[i]):
                if e is None:
                    continue
                held.append((i, e.inode))
                if t == _DT_DIR or e.attr.kind == stat.S_IFDIR:
                    continue
                target = await d._linkfile_target(i, e.inode) \
                    if may_be_linkfile(e.attr) else None
                if target is not None:
                    links.setdefault(name, {})[i] = target
                else:
                    data.setdefault(name, {})[i] = e
        try:
            for name, where in data.items():
                h = layout.child_for(name)
                if h in where:
                    for i in where:                  # a copy left by an interrupted move
                        if i != h:
                            await self._unlink(dn, i, name)
                    final = h
                else:
                    i, e = next(iter(where.items()))
                    if e.attr.nlink > 1:
                        self.stats.skipped_hardlinked += 1
                        final = i
                    else:
                        await self._move(dn, name, i, h, e)
                        final = h
                have = links.get(name, {})
                if final != h and have.get(h) != final:
                    await d._put_linkfile(self.frame, dn, name, h, final, replace=True)
                for i in have:
                    if i != h:
                        await self._unlink(dn, i, name)
                        self.stats.links_removed += 1
            for name, have in links.items():
                if name not in data:                 # pointing nowhere
                    for i in have:
                        await self._unlink(dn, i, name)
                        self.stats.links_removed += 1
        finally:
            for i, ci in held:
                await d._drop(i, ci)

    async def _unlink(self, dn: DNode, index: int, name: bytes) -> None:
        await self.dist.children[index].unlink(self.frame, Loc(dn.subs[index], name))

    async def _staging(self, index: int) -> Any:
        child = self.dist.children[index]
        root = self.dist.tables[index].root
        try:
            e = await child.lookup(self.frame, Loc(root, STAGING))
        except OSError:
            e = await child.mkdir(self.frame, Loc(root, STAGING), stat.S_IFDIR | 0o700, 0)
        return e.inode

    async def _clear_staging(self) -> None:
        for i in range(self.n):
            child = self.dist.children[i]
            root = self.dist.tables[i].root
            try:
                e = await child.lookup(self.frame, Loc(root, STAGING))
            except OSError:
                continue
            e.inode.refs += 1
            try:
                for name, _t, ce in await self._list(i, e.inode):
                    if ce is not None:
                        await self.dist._drop(i, ce.inode)
                    await child.unlink(self.frame, Loc(e.inode, name))
                await child.rmdir(self.frame, Loc(root, STAGING))
            finally:
                await self.dist._drop(i, e.inode)

    async def _move(self, dn: DNode, name: bytes, src: int, dst: int, e: Any) -> None:
        if self.stop_after is not None and self.stats.files_moved >= self.stop_after:
            raise KeyboardInterrupt("rebalance stopped (stop_after)")
        d = self.dist
        f = self.frame
        sc, dc = d.children[src], d.children[dst]
        staging = await self._staging(dst)
        staging.refs += 1
        tmp = b"%d.%x" % (src, e.inode.ino)
        attr = e.attr
        kind = stat.S_IFMT(attr.mode)
        try:
            try:
                await dc.unlink(f, Loc(staging, tmp))
            except OSError:
                pass
            if kind == stat.S_IFREG:
                new = await self._copy_data(sc, dc, e.inode, staging, tmp, attr)
            elif kind == stat.S_IFLNK:
                new = await dc.symlink(f, await sc.readlink(f, e.inode), Loc(staging, tmp))
            else:
                new = await dc.mknod(f, Loc(staging, tmp), attr.mode, attr.rdev, 0)
            new.inode.refs += 1
            try:
                for xname in await sc.listxattr(f, e.inode):
                    if not bytes(xname).startswith(XATTR_PREFIX):
                        value = await sc.getxattr(f, e.inode, xname)
                        await dc.setxattr(f, new.inode, xname, value, 0)
                changes = SetAttr(uid=attr.uid, gid=attr.gid, atime_ns=attr.atime_ns,
                                  mtime_ns=attr.mtime_ns)
                if kind != stat.S_IFLNK:
                    changes = changes._replace(mode=attr.mode & 0o7777)
                await dc.setattr(f, new.inode, changes)
                await dc.rename(f, Loc(staging, tmp), Loc(dn.subs[dst], name), 0)
            finally:
                await d._drop(dst, new.inode)
            await sc.unlink(f, Loc(dn.subs[src], name))
        finally:
            await d._drop(dst, staging)
        self.stats.files_moved += 1
        self.stats.bytes_moved += attr.size if kind == stat.S_IFREG else 0

    async def _copy_data(self, sc: Any, dc: Any, inode: Any, staging: Any, tmp: bytes,
                         attr: Any) -> Any:
        f = self.frame
        sfd = Fd(inode, os.O_RDONLY)
        await sc.open(f, inode, os.O_RDONLY, sfd)
        try:
            dfd = Fd(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL)
            new = await dc.create(f, Loc(staging, tmp), os.O_RDWR | os.O_CREAT | os.O_EXCL,
                                  stat.S_IFREG | 0o600, 0, dfd)
            try:
                offset = 0
                while offset < attr.size:
                    chunk = await sc.readv(f, sfd, _CHUNK, offset, 0)
                    if not chunk:
                        break
                    await dc.writev(f, dfd, chunk, offset, 0)
                    offset += len(chunk)
                if offset < attr.size:
                    await dc.setattr(f, new.inode, SetAttr(size=attr.size), dfd)
                await dc.fsync(f, dfd, 0)
            finally:
                await dc.release(f, dfd)
        finally:
            await sc.release(f, sfd)
        return new


async def rebalance(dist: Any, progress: Optional[Callable[[str], None]] = None,
                    stop_after: Optional[int] = None) -> RebalanceStats:
    """Lay out every directory over all of ``dist``'s children and move the files."""
    return await Rebalancer(dist, progress, stop_after).run()


def rebalance_graph(graph: Any, volume: Optional[str] = None,
                    progress: Optional[Callable[[str], None]] = None) -> dict:
    """Initialise ``graph`` (no mount), rebalance its distribute volumes (or the one named
    ``volume``), tear it down.  Returns the stats per volume."""
    from .distribute import Distribute
    targets = [xl for _, xl in graph.walk() if isinstance(xl, Distribute)
               and (volume is None or xl.name == volume)]
    if not targets:
        what = f"no cluster/distribute volume named '{volume}'" if volume else \
            "no cluster/distribute volume"
        raise ValueError(f"the volfile has {what}")
    graph.init()
    try:
        graph.activate()
        out = {}

        async def main() -> None:
            for xl in dict.fromkeys(targets):
                out[xl.name] = await rebalance(xl, progress)
        trio.run(main)
        return out
    finally:
        graph.fini()
