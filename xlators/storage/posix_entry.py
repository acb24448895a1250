"""storage/posix: the namespace fops (a mixin of the Posix translator): lookup, readlink,
mknod, mkdir, symlink, unlink, rmdir, rename and link, and what creating needs: the
permission bits a new object gets (create-mask options, the caller's umask or the
parent's default ACL) and its owner when caller credentials are off.

A lookup in a directory whose permissions plainly allow the search (no ACL, search bit
for the caller's class) stats the name as the daemon; otherwise as the caller.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Any, Optional

from xlators.core.errors import FopError
from xlators.core.types import Attr, Entry

from .posix_node import Node, _tuple_new
from .posix_sys import (check_name, fchown_empty, link_at, lookup_at, mkdir_at, mknod_at,
                        readlink_fd, rename_at, rmdir_at, stat_at, symlink_at, unlink_at)

S_IFMT = stat.S_IFMT
S_IFDIR = stat.S_IFDIR
S_IFLNK = stat.S_IFLNK


class PosixEntryOps:
    """The namespace fops for Posix (needs its _node/_do/_call/_thread/_entry/_space)."""

    def _perm(self, mode: int, umask: Optional[int], is_dir: bool) -> int:
        perm = mode & 0o7777 & ~(umask or 0)
        if is_dir:
            return (perm & 0o7000) | (perm & self._dmask) | self._dforce
        return (perm & 0o7000) | (perm & self._fmask) | self._fforce

    def _new_mode(self, pnode: Node, mode: int, umask: Optional[int],
                  is_dir: bool) -> tuple[int, Any]:
        """Permission bits to create with in ``pnode``, and the fix-up to run on the new
        object (None: nothing to fix).  A default ACL on the parent replaces the
        caller's umask (POSIX.1e): the brick applies the ACL itself, and its result
        stays as it is.  Without a umask to apply and with no bit the process umask
        would take there is nothing to fix either, and the parent is not asked (a
        getxattr through /proc per create): the common case, since the kernel applies
        the umask itself unless DONT_MASK was negotiated."""
        if not umask:
            perm = mode & 0o7777                # self._perm(mode, 0, is_dir), inline
            if is_dir:
                perm = (perm & 0o7000) | (perm & self._dmask) | self._dforce
            else:
                perm = (perm & 0o7000) | (perm & self._fmask) | self._fforce
            if not perm & self._umask & 0o777:
                return perm, None
        if self._default_acl(pnode):
            return self._perm(mode, 0, is_dir), None
        return self._perm(mode, umask, is_dir), self._fix_mode

    def _default_acl(self, pnode: Node) -> bool:
        if not self._acls:
            return False
        try:
            os.getxattr(f"/proc/self/fd/{pnode.fd}", "system.posix_acl_default")
            return True
        except OSError as e:
            if e.errno == errno.EOPNOTSUPP:
                self._acls = False           # the brick's filesystem has no ACLs
            return False

    def _fix_mode(self, fd: int, st: os.stat_result, perm: int) -> os.stat_result:
        """Undo the process umask on a new object (the caller's umask is already in
        ``perm``); bits taken for other reasons (a default ACL, setgid rules) stay."""
        got, want = st.st_mode & 0o777, perm & 0o777
        if got != want and got == want & ~self._umask and S_IFMT(st.st_mode) != S_IFLNK:
            os.chmod(f"/proc/self/fd/{fd}", (st.st_mode & 0o7000) | want)
            return os.fstat(fd)
        return st

    def _may_search(self, frame: Any, pnode: Node) -> bool:
        """True when the caller plainly may search ``pnode`` (False: ask the kernel)."""
        st = os.fstat(pnode.fd)
        mode = st.st_mode
        if frame.uid == st.st_uid:
            return bool(mode & 0o100)
        if pnode.noacl_ctime != st.st_ctime_ns:
            try:
                os.getxattr(f"/proc/self/fd/{pnode.fd}", "system.posix_acl_access")
                return False
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                    return False
            pnode.noacl_ctime = st.st_ctime_ns
        if mode & 0o011 == 0o011:        # group and others may: membership does not matter
            return True
        if frame.gid == st.st_gid or st.st_gid in frame.groups:
            return bool(mode & 0o010)
        return bool(mode & 0o001)

    def _give(self, frame: Any, pnode: Node, entry: Entry) -> Entry:
        """With caller-credentials off, a root daemon still gives new objects to the
        caller (the group of a set-group-ID parent stays)."""
        if self._switch or not self._root_daemon or (frame.uid == 0 and frame.gid == 0):
            return entry
        node = entry.inode.ctx[self]
        gid = None if os.fstat(pnode.fd).st_mode & stat.S_ISGID else frame.gid
        fchown_empty(node.fd, frame.uid, gid)
        return Entry(entry.inode, Attr.from_stat(os.fstat(node.fd), node.ino))

    def _ploc(self, loc: Any) -> tuple[Node, bytes]:
        """(the parent's Node, the checked name) of a location a fop modifies.
        unlink, rmdir and rename spell its common case (and check_name's test) inline:
        a change to either belongs there too."""
        parent = loc.parent
        pnode = parent.ctx.get(self) if parent is not None else None
        if pnode is None:
            raise FopError(errno.ESTALE)
        name = loc.name
        # check_name's test spelled out for the common case (bytes, valid)
        if (type(name) is not bytes or not name or 47 in name or 0 in name
                or name == b"." or name == b".."):
            name = check_name(name)
        return pnode, name

    # -- namespace fops ----------------------------------------------------------------
    async def lookup(self, frame, loc):
        name = loc.name
        if name is None:                       # nameless: revalidate a known inode
            return Entry(loc.inode, await self.getattr(frame, loc.inode))
        parent = loc.parent                     # self._node(loc.parent), inline
        pnode = parent.ctx.get(self) if parent is not None else None
        if pnode is None:
            raise FopError(errno.ESTALE)
        if isinstance(name, str):
            name = os.fsencode(name)
        if name == b"." or (name == b".." and pnode is self._root):
            if self._inline:
                st = os.fstat(pnode.fd)
            else:
                st = await self._thread(os.fstat, pnode.fd)
            return self._entry(st)
        if not name:
            raise FopError(errno.ENOENT)
        if 47 in name or 0 in name:            # "/" or NUL (see posix_sys.check_name)
            raise FopError(errno.EINVAL, f"invalid name {name!r}")
        if self._inline_always:
            # A plain stat: a known inode needs no new descriptor (opened when it does).
            if frame.uid == 0 or not self._switch or self._may_search(frame, pnode):
                st = os.stat(name, dir_fd=pnode.fd, follow_symlinks=False)
            else:
                st = self._call(frame, False, stat_at, pnode.fd, name)
            # _entry's common case inline: a known inode of the brick's own filesystem
            ino = st.st_ino
            inode = self.itable.by_ino.get(ino) if st.st_dev == self._dev else None
            node = inode.ctx.get(self) if inode is not None else None
            if node is not None:
                node.mode = st.st_mode
                entry = _tuple_new(Entry, (inode, Attr.from_stat(st, ino)))
            else:
                entry = self._entry(st, pfd=pnode.fd, name=name)
        else:
            fd, st = await self._thread(self._call, frame, False, lookup_at, pnode.fd, name)
            entry = self._entry(st, fd)
        if self._watch is not None:
            self._watch.looked_up(pnode, name, entry)
        return entry

    async def readlink(self, frame, inode):
        node = self._node(inode)
        if node.kind != S_IFLNK:
            raise FopError(errno.EINVAL)
        if self._inline:
            return os.readlink(b"", dir_fd=node.fd)
        return await self._thread(readlink_fd, node.fd)

    async def mknod(self, frame, loc, mode, rdev, umask):
        pnode, name = self._ploc(loc)
        self._space()
        perm, fix = self._new_mode(pnode, mode, umask, False)
        fd, st = await self._do(frame, True, mknod_at, pnode.fd, name, S_IFMT(mode) | perm,
                                rdev or 0, fix)
        if self._watch is not None:
            self._watch.created(pnode, name)
        return self._give(frame, pnode, self._entry(st, fd))

    async def mkdir(self, frame, loc, mode, umask):
        pnode, name = self._ploc(loc)
        if self._reserve is not None:
            self._space()
        # _new_mode's common case inline: no umask to apply, no bit the process umask
        # would take (the kernel applied the caller's umask)
        perm = mode & 0o7777
        perm = (perm & 0o7000) | (perm & self._dmask) | self._dforce
        if umask or perm & self._umask & 0o777:
            perm, fix = self._new_mode(pnode, mode, umask, True)
        else:
            fix = None
        if self._inline_always and (not self._switch or frame.uid == 0 and frame.gid == 0):
            pfd = pnode.fd                      # _do and mkdir_at, inline
            os.mkdir(name, perm, dir_fd=pfd)
            fd, st = lookup_at(pfd, name)
            if fix is not None:
                st = fix(fd, st, perm)
        else:
            fd, st = await self._do(frame, True, mkdir_at, pnode.fd, name, perm, fix)
        if self._watch is not None:
            self._watch.created(pnode, name)
        if self._switch:                        # _give gives nothing then
            return self._entry(st, fd)
        return self._give(frame, pnode, self._entry(st, fd))

    async def symlink(self, frame, target, loc):
        pnode, name = self._ploc(loc)
        if isinstance(target, str):
            target = os.fsencode(target)
        if b"\0" in target:
            raise FopError(errno.EINVAL)
        self._space()
        fd, st = await self._do(frame, True, symlink_at, pnode.fd, name, target)
        if self._watch is not None:
            self._watch.created(pnode, name)
        return self._give(frame, pnode, self._entry(st, fd))

    # unlink, rmdir and rename spell out _do's commonest case: inline (no io-threads), as
    # the daemon (a root caller, or no credential switching): two calls fewer each; and
    # _ploc's common case (a known parent, a plain name), one call fewer each.
    async def unlink(self, frame, loc):
        parent, name = loc.parent, loc.name
        pnode = parent.ctx.get(self) if parent is not None else None
        if (pnode is None or type(name) is not bytes or not name or 47 in name
                or 0 in name or name == b"." or name == b".."):
            pnode, name = self._ploc(loc)       # ESTALE or EINVAL (or a str name)
        if self._inline_always and (frame.uid == 0 or not self._switch):
            os.unlink(name, dir_fd=pnode.fd)
        else:
            await self._do(frame, False, unlink_at, pnode.fd, name)
        if self._watch is not None:
            self._watch.deleted(pnode, name)

    async def rmdir(self, frame, loc):
        parent, name = loc.parent, loc.name     # _ploc, as in unlink
        pnode = parent.ctx.get(self) if parent is not None else None
        if (pnode is None or type(name) is not bytes or not name or 47 in name
                or 0 in name or name == b"." or name == b".."):
            pnode, name = self._ploc(loc)
        if self._inline_always and (frame.uid == 0 or not self._switch):
            os.rmdir(name, dir_fd=pnode.fd)
        else:
            await self._do(frame, False, rmdir_at, pnode.fd, name)
        if self._watch is not None:
            self._watch.deleted(pnode, name)

    async def rename(self, frame, oldloc, newloc, flags=None):
        parent, old = oldloc.parent, oldloc.name    # _ploc of each, as in unlink
        opnode = parent.ctx.get(self) if parent is not None else None
        if (opnode is None or type(old) is not bytes or not old or 47 in old
                or 0 in old or old == b"." or old == b".."):
            opnode, old = self._ploc(oldloc)
        parent, new = newloc.parent, newloc.name
        npnode = parent.ctx.get(self) if parent is not None else None
        if (npnode is None or type(new) is not bytes or not new or 47 in new
                or 0 in new or new == b"." or new == b".."):
            npnode, new = self._ploc(newloc)
        if not flags and self._inline_always and (frame.uid == 0 or not self._switch):
            os.rename(old, new, src_dir_fd=opnode.fd, dst_dir_fd=npnode.fd)
        else:
            await self._do(frame, False, rename_at, opnode.fd, old, npnode.fd, new,
                           flags or 0)
        if self._watch is not None:
            self._watch.renamed(opnode, old, npnode, new, flags or 0)

    async def link(self, frame, inode, newloc):
        node = self._node(inode)
        npnode, name = self._ploc(newloc)
        if node.kind == S_IFDIR:
            raise FopError(errno.EPERM)
        self._space()
        if self._max_links and os.fstat(node.fd).st_nlink >= self._max_links:
            raise FopError(errno.EMLINK)
        await self._do(frame, True, link_at, node.fd, npnode.fd, name)
        if self._watch is not None:
            self._watch.created(npnode, name)
        st = os.fstat(node.fd)
        node.mode = st.st_mode
        return Entry(inode, Attr.from_stat(st, node.ino))
