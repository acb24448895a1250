"""storage/gfapi's namespace fops: lookup, getattr, readlink, mknod, mkdir, symlink,
unlink, rmdir, rename, link (see gfapi for the translator and its volfile).

Each is one worker-thread call of libgfapi's handle API (``glfs_h_*``) as the caller.
libgfapi has no renameat2: RENAME_EXCHANGE is EINVAL and RENAME_NOREPLACE is a lookup
then the rename.  ``glfs_h_unlink`` picks unlink or rmdir by the entry's type, so the
type is checked first (from the name's known inode, else by a lookup in the same call).
"""
from __future__ import annotations

import ctypes
import errno
import os
from typing import Any, Callable

from ..core.errors import FopError
from ..core.types import Entry
from .gfapi_nodes import MAX_NAMES, S_IFMT

S_IFDIR = 0o040000
NAME_MAX = 255
RENAME_NOREPLACE = 1


def _name(loc: Any) -> bytes:
    name = loc.name
    if isinstance(name, str):
        name = os.fsencode(name)
    if not name:
        raise FopError(errno.ENOENT)
    if b"/" in name or b"\0" in name:
        raise FopError(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > NAME_MAX:
        raise FopError(errno.ENAMETOOLONG)
    return name


class GfapiNames:
    """Mixed into storage/gfapi's translator class."""

    def _made(self, what: str) -> Callable[..., Any]:
        """A creating handle call returning (object, stat) or raising OSError."""
        b = self._b

        def run(fn: Callable[..., Any], *args: Any) -> tuple[int, Any]:
            st = b.Stat()
            obj = fn(*args, ctypes.byref(st))
            b.check_ptr(obj, what)
            return obj, st
        return run

    async def lookup(self, frame, loc):
        if loc.name is None:
            return Entry(loc.inode, await self.getattr(frame, loc.inode))
        pnode = self._node(loc.parent)
        name = _name(loc)
        b = self._b
        fs = self._fsp()

        def run() -> tuple[int, Any]:
            st = b.Stat()
            obj = b.lib.glfs_h_lookupat(fs, pnode.obj, name, ctypes.byref(st), 0)
            return b.check_ptr(obj, "lookup"), st
        obj, st = await self._call(frame, run)
        if name in (b".", b".."):
            return self._entry(obj, st)
        return self._named(self._entry(obj, st), pnode, name)

    async def getattr(self, frame, inode, fd=None):
        b = self._b
        glfd = self._glfd_or_none(fd)

        def run() -> Any:
            st = b.Stat()
            if glfd:
                b.check(b.lib.glfs_fstat(glfd, ctypes.byref(st)), "fstat")
                return st
            if b.lib.glfs_h_stat(self._fsp(), node.obj, ctypes.byref(st)) == 0:
                return st
            err = ctypes.get_errno()
            for of in list(node.opens):       # deleted while open: ask an open file
                if err in (errno.ENOENT, errno.ESTALE) and \
                        b.lib.glfs_fstat(of.glfd, ctypes.byref(st)) == 0:
                    return st
            raise OSError(err or errno.EIO, "stat")
        node = self._node(inode)
        return self._attr(await self._call(frame, run), node)

    async def readlink(self, frame, inode):
        node = self._node(inode)
        b = self._b

        def run() -> bytes:
            buf = ctypes.create_string_buffer(4097)
            n = b.check(b.lib.glfs_h_readlink(self._fsp(), node.obj, buf, 4096), "readlink")
            return buf.raw[:n] if n else buf.value
        return await self._call(frame, run)

    async def mknod(self, frame, loc, mode, rdev, umask):
        pnode, name = self._node(loc.parent), _name(loc)
        b = self._b
        perm = mode & 0o7777 & ~(umask or 0)
        obj, st = await self._call(frame, self._made("mknod"), b.lib.glfs_h_mknod,
                                   self._fsp(), pnode.obj, name, (mode & S_IFMT) | perm,
                                   rdev or 0)
        return self._named(self._entry(obj, st), pnode, name)

    async def mkdir(self, frame, loc, mode, umask):
        pnode, name = self._node(loc.parent), _name(loc)
        b = self._b
        obj, st = await self._call(frame, self._made("mkdir"), b.lib.glfs_h_mkdir,
                                   self._fsp(), pnode.obj, name,
                                   mode & 0o7777 & ~(umask or 0))
        return self._named(self._entry(obj, st), pnode, name)

    async def symlink(self, frame, target, loc):
        pnode, name = self._node(loc.parent), _name(loc)
        if isinstance(target, str):
            target = os.fsencode(target)
        if b"\0" in target:
            raise FopError(errno.EINVAL)
        b = self._b
        obj, st = await self._call(frame, self._made("symlink"), b.lib.glfs_h_symlink,
                                   self._fsp(), pnode.obj, name, target)
        return self._named(self._entry(obj, st), pnode, name)

    async def unlink(self, frame, loc):
        await self._remove(frame, loc, False)

    async def rmdir(self, frame, loc):
        await self._remove(frame, loc, True)

    async def _remove(self, frame: Any, loc: Any, is_dir: bool) -> None:
        pnode, name = self._node(loc.parent), _name(loc)
        if name in (b".", b".."):
            raise FopError(errno.EINVAL if is_dir else errno.EISDIR)
        b = self._b
        fs = self._fsp()
        known = self._by_name.get((pnode.ino, name))
        if known is not None and self._live.get(known.ino) is known:
            if is_dir != (known.kind == S_IFDIR):
                raise FopError(errno.ENOTDIR if is_dir else errno.EISDIR)
            self._removing(known.ino)
            try:
                await self._call(frame, lambda: b.check(
                    b.lib.glfs_h_unlink(fs, pnode.obj, name), "unlink"))
            except BaseException:
                self._removing(known.ino, False)
                raise
            self._unnamed(pnode, name)
            return

        def run() -> None:
            # glfs_h_unlink picks unlink or rmdir by the entry's type: check it first
            st = b.Stat()
            obj = b.check_ptr(b.lib.glfs_h_lookupat(fs, pnode.obj, name,
                                                    ctypes.byref(st), 0), "lookup")
            b.lib.glfs_h_close(obj)
            if is_dir and st.st_mode & S_IFMT != S_IFDIR:
                raise FopError(errno.ENOTDIR)
            if not is_dir and st.st_mode & S_IFMT == S_IFDIR:
                raise FopError(errno.EISDIR)
            self._removing(st.st_ino)         # before: the bricks' notice may come first
            if b.lib.glfs_h_unlink(fs, pnode.obj, name) < 0:
                self._removing(st.st_ino, False)
                b.check(-1, "unlink")
        await self._call(frame, run)
        self._unnamed(pnode, name)

    def _removing(self, ino: int, removing: bool = True) -> None:
        """This client is removing a name of object ``ino`` (False: it failed): when
        the bricks then forget the object, gfapi_upcall drops their notice of it."""
        if self._upcalls is not None:
            self._upcalls.removed(ino, removing)

    async def rename(self, frame, oldloc, newloc, flags=None):
        if flags and flags != RENAME_NOREPLACE:
            raise FopError(errno.EINVAL, "libgfapi has no RENAME_EXCHANGE")
        op, old = self._node(oldloc.parent), _name(oldloc)
        np, new = self._node(newloc.parent), _name(newloc)
        b = self._b
        fs = self._fsp()
        moved = self._by_name.get((op.ino, old))
        direct = self._direct_rename
        if flags or moved is None or self._live.get(moved.ino) is not moved or \
                (np.ino, new) in self._by_name:
            # not a name whose object this client knows, or a rename over a file this
            # client knows: glfs_h_rename passes the target's inode (distribute and
            # shard remove its data through it), gfapi_rename cannot
            direct = None

        def run() -> None:
            if flags:
                # libgfapi has no renameat2: NOREPLACE is a lookup, then the rename
                # (not atomic against another client creating the name in between)
                st = b.Stat()
                obj = b.lib.glfs_h_lookupat(fs, np.obj, new, ctypes.byref(st), 0)
                if obj:
                    b.lib.glfs_h_close(obj)
                    raise FopError(errno.EEXIST)
                if ctypes.get_errno() != errno.ENOENT:
                    b.check(-1, "lookup")
            if direct is not None and direct.rename(op.obj, old, moved.obj, np.obj, new):
                return
            b.check(b.lib.glfs_h_rename(fs, op.obj, old, np.obj, new), "rename")
        await self._call(frame, run)
        self._unnamed(op, old)
        self._unnamed(np, new)
        if moved is not None and len(moved.names) < MAX_NAMES:
            moved.names.add((np.ino, new))
            self._by_name[(np.ino, new)] = moved

    async def link(self, frame, inode, newloc):
        node = self._node(inode)
        np, name = self._node(newloc.parent), _name(newloc)
        if node.kind == S_IFDIR:
            raise FopError(errno.EPERM)
        b = self._b
        fs = self._fsp()

        def run() -> Any:
            b.check(b.lib.glfs_h_link(fs, node.obj, np.obj, name), "link")
            st = b.Stat()
            b.check(b.lib.glfs_h_stat(fs, node.obj, ctypes.byref(st)), "stat")
            return st
        return Entry(inode, self._attr(await self._call(frame, run), node))
