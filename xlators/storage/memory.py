"""storage/memory: a complete POSIX filesystem in memory (a tmpfs-like brick).

The default leaf of the test harness, and a brick for scratch volumes.  Everything a
kernel can ask for is here: regular files (sparse, chunked: SEEK_DATA/SEEK_HOLE,
punch-hole, zero-range), directories with readdir cookies that stay valid while entries
come and go, symlinks, device nodes, fifos and sockets (mknod), hard links, rename with
RENAME_NOREPLACE / RENAME_EXCHANGE and POSIX's rules, timestamps as POSIX says (relatime
for atime), user/trusted/security xattrs, copy_file_range, statfs with a capacity and an
inode limit, and permission checks for non-root callers (owner/group/other with the
caller's supplementary groups, sticky directories, setgid directories; uid 0 passes as
with CAP_DAC_OVERRIDE).  Locks are features/locks' job: ``lk`` fails with ENOSYS.

Nothing survives the process.  The data model and the permission rules are in
memory_node.py, the fops on open files (open, read, write, readdir, fallocate, lseek,
copy_file_range, ...) in memory_io.py, setattr and the xattr fops in memory_attrs.py.

    volume brick
        type storage/memory
        option size 2GB
        option inodes 100000
    end-volume
"""
from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from typing import Any, Optional

from ..core.bounds import open_flags
from ..core.errors import FopError
from ..core.inode import Fd, Inode, Loc
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import Attr, Entry, StatFs
from .memory_attrs import MemoryAttrs
from .memory_io import MemoryIo
from .memory_node import (BLOCK, NAME_MAX, PATH_MAX, W_OK, X_OK, FileData, Node, check,
                          check_name, check_sticky, in_group, may)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
LINK_MAX = 65000


def _phys_mem() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 32


class Memory(MemoryIo, MemoryAttrs, Translator):
    """storage/memory: a complete POSIX filesystem in memory (tmpfs-like)."""
    type = "storage/memory"
    children_range = (0, 0)
    needs_flush = False      # its flush only checks the handle
    options = (
        Option.size("size", default=0,
                    description="Capacity in bytes (file data; 1024-based units: 512MB, "
                                "2GB).  Writes and fallocate beyond it fail with ENOSPC.  "
                                "0: half of the RAM, as tmpfs's default."),
        Option.int("inodes", default=0, min=0,
                   description="Most files, directories and links that may exist at once "
                               "(ENOSPC beyond).  0: unlimited."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._inos = itertools.count(1)
        self.nodes: dict[int, Node] = {}
        self.used = 0               # bytes of file data allocated
        self.root = Node(next(self._inos), stat.S_IFDIR | 0o755, 0, 0)
        self.nodes[self.root.ino] = self.root

    def init(self) -> None:
        self.itable.set_root_ino(self.root.ino)
        self.ctx_set(self.itable.root, self.root)

    def capacity(self) -> int:
        """Bytes of file data the brick may hold: ``size``, or half of the RAM."""
        return self.opts.size or _phys_mem() // 2

    def dump(self) -> dict[str, Any]:
        return {"inodes": len(self.nodes), "used_bytes": self.used,
                "size": self.opts.size or f"{self.capacity()} (half of the RAM)",
                "inode_limit": self.opts.inodes or "unlimited"}

    # -- resolution ------------------------------------------------------------------
    def _node(self, inode: Inode) -> Node:
        node = inode.ctx.get(self)
        if node is None:
            node = self.nodes.get(inode.ino)
            if node is None:
                raise FopError(errno.ESTALE)
            inode.ctx[self] = node
        return node

    def _fd_node(self, fd: Fd) -> Node:
        node = fd.ctx.get(self)
        if node is None:
            raise FopError(errno.EBADF)
        return node

    def _dir(self, inode: Optional[Inode]) -> Node:
        if inode is None:
            raise FopError(errno.EINVAL)
        node = self._node(inode)
        if not node.is_dir:
            raise FopError(errno.ENOTDIR)
        if node.nlink == 0:
            raise FopError(errno.ENOENT)      # removed directory
        return node

    def _entry(self, node: Node) -> Entry:
        inode = self.itable.link(node.ino, node.ino)   # inode numbers are never reused
        inode.ctx[self] = node
        return Entry(inode, node.attr())

    def _drop_if_unused(self, node: Node) -> None:
        """A node with no name and no open file is gone (its attributes stay readable
        through the kernel's inode until forget)."""
        if node.nlink <= 0 and node.opens <= 0 and self.nodes.get(node.ino) is node:
            del self.nodes[node.ino]
            if isinstance(node.data, FileData):
                self.used -= node.data.alloc
                node.data.clear()

    # -- creating --------------------------------------------------------------------
    def _lookup_parent(self, frame: Any, loc: Loc) -> tuple[Node, bytes]:
        parent = self._dir(loc.parent)
        check(frame, parent, X_OK)
        return parent, check_name(loc.name)

    def _make(self, frame: Any, loc: Loc, mode: int, umask: int, rdev: int = 0,
              target: bytes = b"") -> Node:
        parent, name = self._lookup_parent(frame, loc)
        if parent.data.get(name) is not None or name in (b".", b".."):
            raise FopError(errno.EEXIST)
        check(frame, parent, W_OK | X_OK)
        limit = self.opts.inodes
        if limit and len(self.nodes) >= limit:
            raise FopError(errno.ENOSPC)
        kind = stat.S_IFMT(mode)
        perm = mode & ~umask & 0o7777
        gid = frame.gid
        if parent.mode & stat.S_ISGID:
            gid = parent.gid
            if kind == stat.S_IFDIR:
                perm |= stat.S_ISGID
            elif (perm & stat.S_ISGID and perm & stat.S_IXGRP and frame.uid != 0
                  and not in_group(frame, gid)):
                perm &= ~stat.S_ISGID
        now = time.time_ns()
        node = Node(next(self._inos), kind | perm, frame.uid, gid, rdev, now,
                    parent if kind == stat.S_IFDIR else None)
        if kind == stat.S_IFLNK:
            node.data = target
        parent.data.add(name, node)
        if kind == stat.S_IFDIR:
            parent.nlink += 1
        parent.touch(now)
        self.nodes[node.ino] = node
        return node

    async def mknod(self, frame: Any, loc: Loc, mode: int, rdev: int, umask: int) -> Entry:
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind == stat.S_IFDIR:
            raise FopError(errno.EPERM)
        if kind not in (stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO,
                        stat.S_IFSOCK):
            raise FopError(errno.EINVAL)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            if frame.uid != 0:
                raise FopError(errno.EPERM)
        else:
            rdev = 0
        node = self._make(frame, loc, kind | (mode & 0o7777), umask, rdev)
        return self._entry(node)

    async def mkdir(self, frame: Any, loc: Loc, mode: int, umask: int) -> Entry:
        node = self._make(frame, loc, stat.S_IFDIR | (mode & 0o7777), umask)
        return self._entry(node)

    async def symlink(self, frame: Any, target: bytes, loc: Loc) -> Entry:
        if not target:
            raise FopError(errno.ENOENT)
        if len(target) >= PATH_MAX:
            raise FopError(errno.ENAMETOOLONG)
        node = self._make(frame, loc, stat.S_IFLNK | 0o777, 0, target=bytes(target))
        return self._entry(node)

    async def create(self, frame: Any, loc: Loc, flags: int, mode: int, umask: int,
                     fd: Fd) -> Entry:
        flags = open_flags(flags)
        parent, name = self._lookup_parent(frame, loc)
        node = parent.data.get(name)
        if node is not None:
            if flags & os.O_EXCL:
                raise FopError(errno.EEXIST)
            if node.is_dir:
                raise FopError(errno.EISDIR)
            self._open(frame, node, flags, fd)
        else:
            node = self._make(frame, loc, stat.S_IFREG | (mode & 0o7777), umask)
            self.ctx_set(fd, node)
            node.opens += 1
        return self._entry(node)

    async def link(self, frame: Any, inode: Inode, newloc: Loc) -> Entry:
        node = self._node(inode)
        parent, name = self._lookup_parent(frame, newloc)
        if node.is_dir:
            raise FopError(errno.EPERM)
        if parent.data.get(name) is not None or name in (b".", b".."):
            raise FopError(errno.EEXIST)
        check(frame, parent, W_OK | X_OK)
        if node.nlink == 0:
            raise FopError(errno.ENOENT)
        if node.nlink >= LINK_MAX:
            raise FopError(errno.EMLINK)
        now = time.time_ns()
        parent.data.add(name, node)
        parent.touch(now)
        node.nlink += 1
        node.ctime_ns = now
        self.nodes[node.ino] = node
        return self._entry(node)

    # -- looking ---------------------------------------------------------------------
    async def lookup(self, frame: Any, loc: Loc) -> Entry:
        parent = self._dir(loc.parent)
        if frame.uid != 0:
            check(frame, parent, X_OK)
        name = loc.name
        if name == b".":
            node = parent
        elif name == b"..":
            node = parent.data.parent or parent
        else:
            if name is None or len(name) > NAME_MAX:
                raise FopError(errno.ENAMETOOLONG if name else errno.EINVAL)
            node = parent.data.entries.get(name)
            if node is None:
                raise FopError(errno.ENOENT)
        return self._entry(node)

    async def getattr(self, frame: Any, inode: Inode, fd: Optional[Fd] = None) -> Attr:
        node = inode.ctx.get(self) if fd is None else fd.ctx.get(self)
        if node is None:
            node = self._node(inode)
        return node.attr()

    async def access(self, frame: Any, inode: Inode, mask: int) -> None:
        node = self._node(inode)
        if mask & 7 and not may(frame, node, mask & 7):
            raise FopError(errno.EACCES)

    async def readlink(self, frame: Any, inode: Inode) -> bytes:
        node = self._node(inode)
        if not node.is_link:
            raise FopError(errno.EINVAL)
        return node.data

    async def statfs(self, frame: Any, inode: Inode) -> StatFs:
        blocks = max(self.capacity(), self.used) // BLOCK
        bfree = max(0, blocks - (self.used + BLOCK - 1) // BLOCK)
        files = self.opts.inodes or max(_phys_mem() // (2 * BLOCK), len(self.nodes))
        ffree = max(0, files - len(self.nodes))
        return StatFs(blocks, bfree, bfree, files, ffree, BLOCK, NAME_MAX, BLOCK)

    # -- removing and renaming ---------------------------------------------------------
    def _victim(self, frame: Any, loc: Loc) -> tuple[Node, bytes, Node]:
        parent, name = self._lookup_parent(frame, loc)
        node = parent.data.get(name)
        if node is None:
            raise FopError(errno.ENOENT)
        check(frame, parent, W_OK | X_OK)
        check_sticky(frame, parent, node)
        return parent, name, node

    async def unlink(self, frame: Any, loc: Loc) -> None:
        parent, name, node = self._victim(frame, loc)
        if node.is_dir:
            raise FopError(errno.EISDIR)
        now = time.time_ns()
        parent.data.remove(name)
        parent.touch(now)
        node.nlink -= 1
        node.ctime_ns = now
        self._drop_if_unused(node)

    async def rmdir(self, frame: Any, loc: Loc) -> None:
        if loc.name == b".":
            raise FopError(errno.EINVAL)
        if loc.name == b"..":
            raise FopError(errno.ENOTEMPTY)
        parent, name, node = self._victim(frame, loc)
        if not node.is_dir:
            raise FopError(errno.ENOTDIR)
        if len(node.data):
            raise FopError(errno.ENOTEMPTY)
        now = time.time_ns()
        parent.data.remove(name)
        parent.nlink -= 1
        parent.touch(now)
        node.nlink = 0
        node.ctime_ns = now
        self._drop_if_unused(node)

    async def rename(self, frame: Any, oldloc: Loc, newloc: Loc,
                     flags: Optional[int] = 0) -> None:
        flags = flags or 0
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
                RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise FopError(errno.EINVAL)
        op, oname = self._lookup_parent(frame, oldloc)
        np, nname = self._lookup_parent(frame, newloc)
        if oname in (b".", b"..") or nname in (b".", b".."):
            raise FopError(errno.EBUSY)
        node = op.data.get(oname)
        if node is None:
            raise FopError(errno.ENOENT)
        target = np.data.get(nname)
        exchange = bool(flags & RENAME_EXCHANGE)
        if exchange and target is None:
            raise FopError(errno.ENOENT)
        if flags & RENAME_NOREPLACE and target is not None:
            raise FopError(errno.EEXIST)
        if node.is_dir and _within(np, node):
            raise FopError(errno.EINVAL)          # a directory into its own subtree
        if exchange and target.is_dir and _within(op, target):
            raise FopError(errno.EINVAL)
        if target is node:
            return                                # POSIX: same file, nothing to do
        check(frame, op, W_OK | X_OK)
        check_sticky(frame, op, node)
        if np is not op:
            check(frame, np, W_OK | X_OK)
        if target is not None:
            check_sticky(frame, np, target)
            if not exchange:
                if node.is_dir and not target.is_dir:
                    raise FopError(errno.ENOTDIR)
                if not node.is_dir and target.is_dir:
                    raise FopError(errno.EISDIR)
                if target.is_dir and len(target.data):
                    raise FopError(errno.ENOTEMPTY)
        if np is not op and frame.uid != 0:
            # moving a directory to another parent rewrites its ".."
            if node.is_dir:
                check(frame, node, W_OK)
            if exchange and target.is_dir:
                check(frame, target, W_OK)
        now = time.time_ns()
        if exchange:
            op.data.add(oname, target)            # both names keep their cookies
            np.data.add(nname, node)
            if np is not op:
                _reparent(node, op, np)
                _reparent(target, np, op)
            target.ctime_ns = now
        else:
            if target is not None:
                target.nlink = 0 if target.is_dir else target.nlink - 1
                if target.is_dir:
                    np.nlink -= 1
                target.ctime_ns = now
            np.data.add(nname, node)
            op.data.remove(oname)
            if np is not op:
                _reparent(node, op, np)
            if target is not None:
                self._drop_if_unused(target)
        node.ctime_ns = now
        op.touch(now)
        np.touch(now)

    # -- the rest ------------------------------------------------------------------------
    async def lk(self, frame: Any, fd: Fd, cmd: Any, lock: Any) -> Any:
        raise FopError(errno.ENOSYS)        # locks are features/locks' job

    async def resolve(self, frame: Any, nodeid: int) -> Entry:
        """A file handle's object: the inode number is the export key, and a node is
        kept while it has a name (ESTALE after the last unlink, even while open)."""
        node = self.nodes.get(nodeid)
        if node is None or node.nlink <= 0:
            raise FopError(errno.ESTALE)
        return self._entry(node)

    async def forget(self, frame: Any, inode: Inode) -> None:
        self.ctx_del(inode)

    async def ipc(self, frame: Any, op: Any, xdata: Any = None) -> Any:
        raise FopError(errno.EOPNOTSUPP)


def _within(node: Node, ancestor: Node) -> bool:
    """Is directory ``node`` ``ancestor`` or inside it?"""
    while node is not None:
        if node is ancestor:
            return True
        node = node.data.parent
    return False


def _reparent(node: Node, old: Node, new: Node) -> None:
    if node.is_dir:
        node.data.parent = new
        old.nlink -= 1
        new.nlink += 1
