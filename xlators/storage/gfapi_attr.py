"""storage/gfapi's attribute fops: setattr, access, statfs and the xattr fops (see
gfapi for the translator and its volfile).

The kernel asks for ``security.capability`` before every write(2) (to clear it), which
would be one round trip to the bricks per write; GlusterFS's own FUSE client answers it
with ENODATA itself unless mounted ``--capability``.  Here the capabilities stay real:
an answer "no security.capability" (ENODATA from the bricks, or a file this client just
created with O_EXCL) is remembered per inode for ``CAPS_ABSENT_TTL`` seconds, the same
bound as the kernel's default attribute timeout.  It is forgotten at once when this
client sets or removes that xattr, and when an upcall says another client changed the
file; GlusterFS sends no upcall for another client's setxattr of it (its upcall filter
passes only xattrs a client registered), so that change shows within the bound.  A
write or truncate only ever removes capabilities, so they never make "absent" wrong.

A set-id-clearing chmod the kernel sends after another user's write or truncate is
done as root (the bricks would refuse it: not the owner), since the kernel decided.
Non-root callers cannot read or change ``trusted.*`` xattrs, nor change ``security.*``
ones, as on a local filesystem; GlusterFS's own internal xattrs stay hidden from them.
"""
from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import Any, Optional

from ..core.errors import FopError
from ..core.types import NOW, SetAttr, StatFs

S_IFMT = 0o170000
S_IFREG = 0o100000
PRIVS = 0o6000            # set-user-ID and set-group-ID
CAPS = b"security.capability"
CAPS_ABSENT_TTL = 1.0     # seconds an absent security.capability is remembered


class GfapiAttr:
    """Mixed into storage/gfapi's translator class."""

    async def setattr(self, frame, inode, changes: SetAttr, fd=None):
        node = self._node(inode)
        b = self._b
        fs = self._fsp()
        glfd = self._glfd_or_none(fd)
        c = changes
        st = b.Stat()
        valid = 0
        if c.mode is not None:
            st.st_mode, valid = c.mode & 0o7777, valid | b.SET_ATTR_MODE
        if c.uid is not None:
            st.st_uid, valid = c.uid, valid | b.SET_ATTR_UID
        if c.gid is not None:
            st.st_gid, valid = c.gid, valid | b.SET_ATTR_GID
        for field, value, bit in (("st_atim", c.atime_ns, b.SET_ATTR_ATIME),
                                  ("st_mtim", c.mtime_ns, b.SET_ATTR_MTIME)):
            if value is not None:
                ns = time.time_ns() if value == NOW else value
                ts = getattr(st, field)
                ts.tv_sec, ts.tv_nsec = divmod(ns, 1_000_000_000)
                valid |= bit
        if c.size is not None and c.size < 0:
            raise FopError(errno.EINVAL)
        if c.size is not None:
            self._drop_ahead(node)

        drop_privs = (c.mode is not None and frame is not None and frame.uid != 0
                      and valid == b.SET_ATTR_MODE)

        def run() -> Any:
            if drop_privs and self._only_drops_privs(node, c.mode & 0o7777):
                # the kernel clears set-id bits after a write or truncate by another
                # user with a SETATTR of the mode from that user: the bricks would
                # refuse it (not the owner); the kernel decided, so do it as root
                b.set_credentials(0, 0, ())
            if c.size is not None:
                if glfd:
                    b.check(b.lib.glfs_ftruncate(glfd, c.size, None, None), "ftruncate")
                else:
                    b.check(b.lib.glfs_h_truncate(fs, node.obj, c.size), "truncate")
            if valid:
                b.check(b.lib.glfs_h_setattrs(fs, node.obj, ctypes.byref(st), valid),
                        "setattrs")
            out = b.Stat()
            b.check(b.lib.glfs_h_stat(fs, node.obj, ctypes.byref(out)), "stat")
            return out
        try:
            return self._attr(await self._call(frame, run), node)
        finally:
            if c.size is not None:
                self._drop_ahead(node)

    def _only_drops_privs(self, node: Any, new: int) -> bool:
        b = self._b
        st = b.Stat()
        if b.lib.glfs_h_stat(self._fsp(), node.obj, ctypes.byref(st)) != 0:
            return False
        cur = st.st_mode & 0o7777
        return (st.st_mode & S_IFMT == S_IFREG and new != cur
                and (new | PRIVS) == (cur | PRIVS) and not new & ~cur)

    async def access(self, frame, inode, mask):
        node = self._node(inode)
        b = self._b
        await self._call(frame, lambda: b.check(
            b.lib.glfs_h_access(self._fsp(), node.obj, mask), "access"))

    async def statfs(self, frame, inode):
        node = self._node(inode) if inode is not None and inode.ctx.get(self) else \
            self._node(self.itable.root)
        b = self._b

        def run() -> Any:
            sv = b.StatVfs()
            b.check(b.lib.glfs_h_statfs(self._fsp(), node.obj, ctypes.byref(sv)), "statfs")
            return sv
        sv = await self._call(frame, run)
        return StatFs(sv.f_blocks, sv.f_bfree, sv.f_bavail, sv.f_files, sv.f_ffree,
                      sv.f_bsize, sv.f_namemax or 255, sv.f_frsize or sv.f_bsize)

    # -- xattrs ------------------------------------------------------------------------
    def _xattr_allowed(self, frame: Any, name: Any, modify: bool) -> bytes:
        if isinstance(name, str):
            name = os.fsencode(name)
        if not name or len(name) > 255:
            raise FopError(errno.ERANGE if name else errno.EINVAL)
        if frame is not None and frame.uid and name.startswith((b"trusted.", b"security.")):
            if modify or name.startswith(b"trusted."):
                raise FopError(errno.EPERM if modify else errno.ENODATA)
        return name

    async def getxattr(self, frame, inode, name):
        node = self._node(inode)
        name = self._xattr_allowed(frame, name, False)
        if name != CAPS:
            return await self._call(frame, self._getx, node.obj, name)
        if node.caps_absent_until > time.monotonic():
            raise FopError(errno.ENODATA)
        try:
            return await self._call(frame, self._getx, node.obj, name)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                self._caps_absent(node)
            raise

    def _caps_absent(self, node: Any) -> None:
        """Remember that ``node`` has no security.capability (see the module doc)."""
        node.caps_absent_until = time.monotonic() + CAPS_ABSENT_TTL

    async def listxattr(self, frame, inode):
        node = self._node(inode)
        raw = await self._call(frame, self._getx, node.obj, None)
        names = [n for n in raw.split(b"\0") if n]
        if frame is not None and frame.uid:
            names = [n for n in names if not n.startswith(b"trusted.")]
        return names

    def _getx(self, obj: int, name: Optional[bytes]) -> bytes:
        b = self._b
        fs = self._fsp()
        what = "getxattr" if name else "listxattr"
        for _ in range(4):
            size = b.check(b.lib.glfs_h_getxattrs(fs, obj, name, None, 0), what)
            if size == 0:
                return b""
            buf = ctypes.create_string_buffer(size)
            try:
                n = b.check(b.lib.glfs_h_getxattrs(fs, obj, name, buf, size), what)
            except OSError as exc:
                if exc.errno == errno.ERANGE:       # it grew in between
                    continue
                raise
            return buf.raw[:n]
        raise FopError(errno.ERANGE)

    async def setxattr(self, frame, inode, name, value, flags):
        node = self._node(inode)
        name = self._xattr_allowed(frame, name, True)
        b = self._b
        value = bytes(value)
        node.caps_absent_until = 0.0
        await self._call(frame, lambda: b.check(b.lib.glfs_h_setxattrs(
            self._fsp(), node.obj, name, value, len(value), flags or 0), "setxattr"))

    async def removexattr(self, frame, inode, name):
        node = self._node(inode)
        b = self._b
        if isinstance(name, str):
            name = os.fsencode(name)
        if name == CAPS and frame is not None and frame.uid != 0:
            # The kernel removes file capabilities after a write or truncate, as the
            # writer (a caller cannot ask for it otherwise: the kernel refuses without
            # CAP_SETFCAP).  Allowed to whoever may write the file, as on a local disk;
            # done as root, since the bricks refuse security.* to others.
            fs = self._fsp()

            def kill_caps() -> None:
                b.check(b.lib.glfs_h_access(fs, node.obj, os.W_OK), "access")
                b.set_credentials(0, 0, ())
                b.check(b.lib.glfs_h_removexattrs(fs, node.obj, name), "removexattr")
            node.caps_absent_until = 0.0
            await self._call(frame, kill_caps)
            return
        name = self._xattr_allowed(frame, name, True)
        node.caps_absent_until = 0.0
        await self._call(frame, lambda: b.check(b.lib.glfs_h_removexattrs(
            self._fsp(), node.obj, name), "removexattr"))
