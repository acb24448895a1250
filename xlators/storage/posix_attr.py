"""storage/posix: attribute fops (a mixin of the Posix translator).

getattr (an fstat of the inode's descriptor), setattr (chown, chmod, truncate, utimens: in that order, so that a mode set together with
an owner is not undone by chown's clearing of set-id bits), access, statfs and the
extended attributes.  Everything runs with the caller's credentials except clearing
set-uid/set-gid bits after a write or truncate, which the kernel asks of the filesystem
on behalf of a writer who is not the owner.  Extended attributes go through
/proc/self/fd/N of the O_PATH handle, which names the inode itself (a symlink's own
attributes, never its target's).
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Any

from xlators.core.bounds import new_size, xattr_flags
from xlators.core.errors import FopError
from xlators.core.types import Attr, StatFs

from .posix_sys import faccessat, fchown_empty, utimens_empty

_PRIVS = stat.S_ISUID | stat.S_ISGID
_CAPS = b"security.capability"
_ACL_PREFIX = b"system.posix_acl_"


def killed_mode(st: os.stat_result, frame: Any) -> int:
    """The permission bits a write, truncate or chown by this caller leaves (Linux's
    setattr_should_drop_suidgid): set-user-ID goes; set-group-ID goes when group execute
    is set, or when the caller is neither in the file's group nor root."""
    cur = st.st_mode & 0o7777
    new = cur & ~stat.S_ISUID
    if cur & stat.S_IXGRP or not (frame.uid == 0 or frame.gid == st.st_gid
                                  or st.st_gid in frame.groups):
        new &= ~stat.S_ISGID
    return new


class PosixAttrOps:
    """getattr/setattr/access/statfs/xattrs for Posix."""

    async def getattr(self, frame, inode, fd=None):
        node = inode.ctx.get(self)
        if node is None:
            raise FopError(errno.ESTALE)
        # the _inline property, spelled out: this is the hottest fop
        if self._inline_always:
            st = os.fstat(node.fd)
        else:
            st = await self._thread(os.fstat, node.fd)
        node.mode = st.st_mode
        return Attr.from_stat(st, node.ino)

    async def setattr(self, frame, inode, changes, fd=None):
        node = self._node(inode)
        of = fd.ctx.get(self) if fd is not None else None
        if changes.size is not None:
            changes = changes._replace(size=new_size(changes.size))
        if changes.kill_suidgid or (changes.mode is not None and frame.uid != 0):
            changes = await self._kill_privs(frame, node, changes)
        wb_times = None
        if (changes.ctime_ns is not None and frame.uid != 0 and self._switch
                and (changes.atime_ns is not None or changes.mtime_ns is not None)
                and frame.uid != os.fstat(node.fd).st_uid):
            # A writeback-cache kernel (the only sender of ctime) flushes its own times
            # after a write, truncate or touch by any writer, as explicit times that
            # utimensat allows the owner alone: set them as the daemon for a caller who
            # has the file open for writing or may write it.
            wb_times = (changes.atime_ns, changes.mtime_ns)
            changes = changes._replace(atime_ns=None, mtime_ns=None)
            if not getattr(of, "writable", False):
                await self._do(frame, False, faccessat, node.fd, os.W_OK)
        if (changes.uid is not None or changes.gid is not None or changes.mode is not None
                or changes.size is not None or changes.atime_ns is not None
                or changes.mtime_ns is not None):
            await self._do(frame, False, self._setattr_sync, node, changes, of)
        if wb_times is not None:
            utimens_empty(node.fd, *wb_times)
        st = os.fstat(node.fd)
        node.mode = st.st_mode
        return Attr.from_stat(st, node.ino)

    async def _kill_privs(self, frame: Any, node: Any, ch: Any) -> Any:
        """Clearing set-uid/set-gid bits is what the kernel asks after a write or truncate
        by someone who is not the owner (kill_suidgid, or a mode that only drops those
        bits): done as the daemon for any caller who may write the file."""
        if node.kind != stat.S_IFREG:
            return ch._replace(kill_suidgid=False)
        st = os.fstat(node.fd)
        cur = st.st_mode & 0o7777
        if ch.mode is not None:
            new = ch.mode & 0o7777
            if (not self._switch or frame.uid == st.st_uid or new == cur
                    or (new | _PRIVS) != (cur | _PRIVS) or new & ~cur):
                return ch                 # not only dropping set-id bits: a plain chmod
        else:
            new = killed_mode(st, frame)
        if new != cur:
            if frame.uid != 0:
                await self._do(frame, False, faccessat, node.fd, os.W_OK)
            os.chmod(f"/proc/self/fd/{node.fd}", new)
        return ch._replace(mode=None, kill_suidgid=False)

    def _setattr_sync(self, node: Any, ch: Any, of: Any) -> None:
        if ch.uid is not None or ch.gid is not None:
            fchown_empty(node.fd, ch.uid, ch.gid)
        if ch.mode is not None:
            if node.kind == stat.S_IFLNK:
                raise FopError(errno.EOPNOTSUPP)
            os.chmod(f"/proc/self/fd/{node.fd}", ch.mode & 0o7777)
        if ch.size is not None:
            if of is not None and getattr(of, "writable", False):
                os.ftruncate(of.fd, ch.size)
            else:
                os.truncate(f"/proc/self/fd/{node.fd}", ch.size)
        if ch.atime_ns is not None or ch.mtime_ns is not None:
            utimens_empty(node.fd, ch.atime_ns, ch.mtime_ns)

    async def access(self, frame, inode, mask):
        node = self._node(inode)
        if mask == os.F_OK:
            return None
        await self._do(frame, False, faccessat, node.fd, mask)
        return None

    async def statfs(self, frame, inode):
        node = inode.ctx.get(self) if inode is not None else None
        node = node or self._root
        sv = os.fstatvfs(node.fd) if self._inline else await self._thread(os.fstatvfs,
                                                                            node.fd)
        blocks, bfree, bavail = sv.f_blocks, sv.f_bfree, sv.f_bavail
        files, ffree = sv.f_files, sv.f_ffree
        if self._reserve is not None:
            kind, value = self._reserve
            if kind == "percent":
                reserved = int(blocks * value / 100 + 0.5)
            else:
                reserved = int((value + sv.f_bsize - 1) // sv.f_bsize) if sv.f_bsize else 0
            if bfree > reserved:
                bfree -= reserved
                bavail = min(bavail, bfree)
            else:
                bfree = bavail = 0
        n = self.opts.shared_brick_count
        if n > 1:
            blocks, bfree, bavail, files, ffree = (blocks // n, bfree // n, bavail // n,
                                                   files // n, ffree // n)
        if not self.opts.export_statfs_size:
            blocks = bfree = bavail = files = ffree = 0
        return StatFs(blocks, bfree, bavail, files, ffree, sv.f_bsize, sv.f_namemax,
                      sv.f_frsize)

    # -- xattrs ----------------------------------------------------------------------
    def _xname(self, frame: Any, name: Any, write: bool) -> bytes:
        if isinstance(name, str):
            name = os.fsencode(name)
        if not name or 0 in name:          # NUL (by value: see posix_sys.check_name)
            raise FopError(errno.EINVAL)
        if frame.uid != 0 and self._switch:
            # The daemon keeps CAP_SYS_ADMIN under a switched fsuid: refuse what the
            # kernel would refuse an unprivileged caller.
            if name.startswith(b"trusted."):
                raise FopError(errno.EPERM if write else errno.ENODATA)
            if write and name.startswith(b"security."):
                raise FopError(errno.EPERM)
        return name

    async def setxattr(self, frame, inode, name, value, flags):
        node = self._node(inode)
        flags = xattr_flags(flags or 0)
        name = self._xname(frame, name, True)
        self._space()
        await self._do(frame, False, os.setxattr, f"/proc/self/fd/{node.fd}", name,
                       bytes(value), flags)
        node.noacl_ctime = -1
        if name.startswith(_ACL_PREFIX):
            node.mode = os.fstat(node.fd).st_mode     # an access ACL sets the mode too

    async def getxattr(self, frame, inode, name):
        node = inode.ctx.get(self)              # self._node(inode), inline
        if node is None:
            raise FopError(errno.ESTALE)
        if name.__class__ is not bytes or not name or 0 in name or (
                frame.uid != 0 and self._switch):
            name = self._xname(frame, name, False)
        if self._inline_always and (frame.uid == 0 or not self._switch
                                    or name.startswith(_ACL_PREFIX)):
            # As the daemon (_do's commonest case, inline); also for ACLs: anyone may read
            # one, and the kernel asks for the root's on every path walk by a non-owner
            # (it never caches it).
            return os.getxattr(f"/proc/self/fd/{node.fd}", name)
        return await self._do(frame, False, os.getxattr, f"/proc/self/fd/{node.fd}", name)

    async def listxattr(self, frame, inode):
        node = self._node(inode)
        names = await self._do(frame, False, os.listxattr, f"/proc/self/fd/{node.fd}")
        out = [os.fsencode(n) for n in names]
        if frame.uid != 0 and self._switch:
            out = [n for n in out if not n.startswith(b"trusted.")]
        return out

    async def removexattr(self, frame, inode, name):
        node = self._node(inode)
        path = f"/proc/self/fd/{node.fd}"
        if isinstance(name, str):
            name = os.fsencode(name)
        if name == _CAPS and frame.uid != 0 and self._switch:
            # The kernel removes file capabilities after a write or truncate, as the
            # writer; a caller cannot ask for it otherwise (the kernel refuses without
            # CAP_SETFCAP).  Allowed to whoever may write the file, as on a local disk.
            await self._do(frame, False, faccessat, node.fd, os.W_OK)
            os.removexattr(path, name)
            return
        name = self._xname(frame, name, True)
        await self._do(frame, False, os.removexattr, path, name)
        node.noacl_ctime = -1
        if name.startswith(_ACL_PREFIX):
            node.mode = os.fstat(node.fd).st_mode
