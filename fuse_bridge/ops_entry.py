"""Handlers for name and attribute requests: LOOKUP, GETATTR, SETATTR, MKNOD, MKDIR,
SYMLINK, LINK, UNLINK, RMDIR, RENAME(2), READLINK, ACCESS, STATFS and the xattr family.

Each handler decodes its body with abi.py, calls one fop on the graph's top translator and
returns the reply payload (or raises FopError).  A new entry counts one kernel lookup only
once its reply went out: handlers that hand out entries send the reply themselves
(:func:`send`) and hold every inode the graph links meanwhile (``LinkPins``), so that what
the kernel never received (the request failed or was interrupted, the reply could not be
encoded or written) leaves the inode table again (:func:`unpin`).

LOOKUP of "." is how the kernel decodes a file handle (open_by_handle_at, an NFS export;
fs/fuse/inode.c fuse_get_dentry) of an inode it no longer caches: the nodeid may be one
the table forgot, and the graph's ``resolve`` fop finds the object again by its export
key (xlators.core.inode).  LOOKUP of ".." is its get_parent, an ordinary lookup.
"""
from __future__ import annotations

import errno
import os
import stat

import trio

from xlators.core.errors import FopError
from xlators.core.inode import LinkPins, Loc
from xlators.core.types import NOW, Entry, SetAttr

from . import abi
from .encode import attr_out, entry_out, names_blob, negative_entry_out, statfs_out

_V = abi.int_flags(abi.SetattrValid)
_GETATTR_FH = int(abi.GetattrFlag.FH)
_SETXATTR_EXT = int(abi.InitFlag.SETXATTR_EXT)
_POSIX_ACL = int(abi.InitFlag.POSIX_ACL)
_ACL_XATTR = b"system.posix_acl_"


def _acl_refused(s, name: bytes) -> bool:
    """Without negotiated POSIX ACLs (--acl) the kernel would store ACL xattrs but never
    enforce them: refuse them, as GlusterFS's bridge does without its acl option."""
    return name.startswith(_ACL_XATTR) and not s.flags & _POSIX_ACL


def _name(body: memoryview) -> bytes:
    data = body.tobytes()
    nul = data.find(b"\0")
    if nul < 0:
        raise ValueError("name is not NUL-terminated")
    return data[:nul]


def _two_names(body: memoryview) -> tuple[bytes, bytes]:
    a, b = abi.split_names(body, 2)
    return a, b


_OUT_HEADER_PACK = abi.OUT_HEADER.pack


def send(s, req, payload) -> bool:
    """Answer ``req`` with ``payload`` (bytes or a list of parts) now.  False when the
    kernel did not take it: the request was answered already (an interrupt handler's
    EINTR) or the write failed (the request is gone).  Whatever the reply handed out
    must then be taken back; the session's reply() cannot tell."""
    if req.replied:
        return False
    req.replied = True
    parts = payload if isinstance(payload, list) else [payload]
    head = _OUT_HEADER_PACK(16 + sum(len(p) for p in parts), 0, req.unique)
    if s.dump is not None:
        s.dump.record(b"W", b"".join([head, *(bytes(p) for p in parts)]))
    try:
        os.writev(req.fd, [head, *parts])
    except OSError as exc:
        s._write_failed(exc, req.unique)
        return False
    return True


def count_lookup(s, inode, parent, name: bytes) -> None:
    """The kernel received ``inode`` as ``name`` in ``parent``: one more lookup to forget
    (remembered for --lru-limit)."""
    inode.nlookup += 1
    if name != b"." and name != b"..":     # not a name the kernel could be told to drop
        s.lru_touch(inode, parent, name)


def send_entry(s, req, entry, parent, name: bytes) -> bool:
    """ENTRY_OUT for ``entry``; counted only when the kernel took it."""
    inode = entry.inode
    if send(s, req, entry_out(s.timeouts, inode.nodeid, entry.attr, inode.generation)):
        count_lookup(s, inode, parent, name)
        return True
    return False


async def unpin(s, pins: LinkPins, also=()) -> None:
    """End a request's ``pins``: purge the inodes it linked (and those in ``also``)
    that nothing references, the kernel included.  Shielded: it runs on the way out of
    an interrupted request too."""
    dead = [i for i in pins.release() if not (i.nlookup or i.refs)]
    dead += [i for i in also if not (i.nlookup or i.refs)]
    if dead:
        with trio.CancelScope(shield=True):
            for inode in dead:
                await s.maybe_forget(inode)


async def _entry_request(s, req, fop, parent, name: bytes, *args):
    """Wind ``fop`` (returning an Entry) and answer with it, pinned."""
    pins = LinkPins()
    try:
        send_entry(s, req, await fop(req.frame, *args), parent, name)
    finally:
        await unpin(s, pins)


# Errors of ``resolve`` that mean "no such object": the kernel would pass them on to
# open_by_handle_at or nfsd as they are, where a handle that names nothing is ESTALE.
_GONE = frozenset({errno.ENOENT, errno.ENOSYS, errno.EOPNOTSUPP, errno.ESTALE,
                   errno.EINVAL})


async def lookup(s, req, body):
    name = _name(body)
    if name == b".":
        return await _lookup_self(s, req)
    parent = s.inode(req.nodeid)
    pins = LinkPins()
    try:
        try:
            entry = await s.top.lookup(req.frame, Loc(parent, name))
        except OSError as exc:      # FopError, or an OSError escaping a translator
            if exc.errno == errno.ENOENT and s.timeouts.negative | s.timeouts.negative_ns:
                return negative_entry_out(s.timeouts)
            raise
        send_entry(s, req, entry, parent, name)
    finally:
        await unpin(s, pins)


async def _lookup_self(s, req):
    """LOOKUP(nodeid, "."): the entry of nodeid itself, found by its export key when
    the table forgot it (the reply must carry that same nodeid, or the kernel fails
    the handle with EIO: anything else is ESTALE)."""
    inode = s.itable.by_nodeid.get(req.nodeid)
    if inode is not None:
        send_entry(s, req, Entry(inode, await s.top.getattr(req.frame, inode)), inode, b".")
        return None
    pins = LinkPins()
    try:
        try:
            entry = await s.top.resolve(req.frame, req.nodeid)
        except OSError as exc:
            if exc.errno in _GONE:
                raise FopError(errno.ESTALE) from None
            raise
        if s.itable.by_nodeid.get(req.nodeid) is not entry.inode:   # not that object
            raise FopError(errno.ESTALE)       # (unpin drops what resolve linked)
        send_entry(s, req, entry, entry.inode, b".")
    finally:
        await unpin(s, pins)
    return None


async def getattr_(s, req, body):
    flags, fh = abi.GETATTR_IN.unpack_from(body)
    inode = s.inode(req.nodeid)
    fd = s.fds.get(fh) if flags & _GETATTR_FH else None
    return attr_out(s.timeouts, await s.top.getattr(req.frame, inode, fd))


async def setattr_(s, req, body):
    (valid, fh, size, lock_owner, atime, mtime, ctime, atimensec, mtimensec, ctimensec,
     mode, uid, gid) = abi.SETATTR_IN.unpack_from(body)
    inode = s.inode(req.nodeid)
    fd = s.fds.get(fh) if valid & _V.FH else None
    # the kernel's times are signed (s64): a time before 1970 arrives as a huge u64
    if valid & (_V.ATIME | _V.MTIME | _V.CTIME):
        atime, mtime, ctime = (t - (1 << 64) if t >= 1 << 63 else t
                               for t in (atime, mtime, ctime))
    if valid & _V.LOCKOWNER:
        req.frame.lk_owner = lock_owner
    changes = SetAttr(
        mode=mode & 0o7777 if valid & _V.MODE else None,
        uid=uid if valid & _V.UID else None,
        gid=gid if valid & _V.GID else None,
        size=size if valid & _V.SIZE else None,
        atime_ns=(NOW if valid & _V.ATIME_NOW else atime * 1_000_000_000 + atimensec)
        if valid & _V.ATIME else None,
        mtime_ns=(NOW if valid & _V.MTIME_NOW else mtime * 1_000_000_000 + mtimensec)
        if valid & _V.MTIME else None,
        ctime_ns=ctime * 1_000_000_000 + ctimensec if valid & _V.CTIME else None,
        kill_suidgid=bool(valid & _V.KILL_SUIDGID))
    return attr_out(s.timeouts, await s.top.setattr(req.frame, inode, changes, fd))


async def readlink(s, req, body):
    return await s.top.readlink(req.frame, s.inode(req.nodeid))


async def mknod(s, req, body):
    mode, rdev, umask = abi.MKNOD_IN.unpack_from(body)
    name = _name(body[abi.MKNOD_IN.size:])
    parent = s.inode(req.nodeid)
    await _entry_request(s, req, s.top.mknod, parent, name, Loc(parent, name), mode, rdev,
                         s.umask(umask))


async def mkdir(s, req, body):
    mode, umask = abi.MKDIR_IN.unpack_from(body)
    name = _name(body[abi.MKDIR_IN.size:])
    parent = s.inode(req.nodeid)
    await _entry_request(s, req, s.top.mkdir, parent, name, Loc(parent, name),
                         stat.S_IFDIR | (mode & 0o7777), s.umask(umask))


async def symlink(s, req, body):
    name, target = _two_names(body)
    parent = s.inode(req.nodeid)
    await _entry_request(s, req, s.top.symlink, parent, name, target, Loc(parent, name))


async def link(s, req, body):
    (oldnodeid,) = abi.LINK_IN.unpack_from(body)
    name = _name(body[abi.LINK_IN.size:])
    parent = s.inode(req.nodeid)
    await _entry_request(s, req, s.top.link, parent, name, s.inode(oldnodeid),
                         Loc(parent, name))


async def unlink(s, req, body):
    await s.top.unlink(req.frame, Loc(s.inode(req.nodeid), _name(body)))


async def rmdir(s, req, body):
    await s.top.rmdir(req.frame, Loc(s.inode(req.nodeid), _name(body)))


async def rename(s, req, body):
    (newdir,) = abi.RENAME_IN.unpack_from(body)
    old, new = _two_names(body[abi.RENAME_IN.size:])
    await s.top.rename(req.frame, Loc(s.inode(req.nodeid), old), Loc(s.inode(newdir), new), 0)


async def rename2(s, req, body):
    newdir, flags = abi.RENAME2_IN.unpack_from(body)
    old, new = _two_names(body[abi.RENAME2_IN.size:])
    await s.top.rename(req.frame, Loc(s.inode(req.nodeid), old), Loc(s.inode(newdir), new),
                       flags)


async def access(s, req, body):
    (mask,) = abi.ACCESS_IN.unpack_from(body)
    await s.top.access(req.frame, s.inode(req.nodeid), mask)


async def statfs(s, req, body):
    return statfs_out(await s.top.statfs(req.frame, s.inode(req.nodeid)))


async def setxattr(s, req, body):
    # The VFS refuses these before they reach a kernel filesystem; so do we.
    if s.flags & _SETXATTR_EXT:
        if len(body) < abi.SETXATTR_IN.size:   # the session checked only the compat size
            raise ValueError(f"SETXATTR body of {len(body)} bytes, SETXATTR_EXT needs "
                             f"{abi.SETXATTR_IN.size}")
        size, flags, _ = abi.SETXATTR_IN.unpack_from(body)
        rest = body[abi.SETXATTR_IN.size:]
    else:
        size, flags = abi.SETXATTR_IN_COMPAT.unpack_from(body)
        rest = body[abi.SETXATTR_IN_COMPAT.size:]
    name = _xattr_name(rest)
    if size > abi.XATTR_SIZE_MAX:
        raise FopError(errno.E2BIG)
    value = rest[len(name) + 1:len(name) + 1 + size].tobytes()
    if len(value) != size:
        raise ValueError(f"SETXATTR value is {len(value)} bytes, header says {size}")
    if _acl_refused(s, name):
        raise FopError(errno.EOPNOTSUPP)
    await s.top.setxattr(req.frame, s.inode(req.nodeid), name, value, flags)


def _xattr_name(body: memoryview) -> bytes:
    name = _name(body)
    if not 0 < len(name) <= abi.XATTR_NAME_MAX:
        raise FopError(errno.ERANGE)
    return name


async def getxattr(s, req, body):
    size, = abi.GETXATTR_IN.unpack_from(body)
    name = _xattr_name(body[abi.GETXATTR_IN.size:])
    if _acl_refused(s, name):
        raise FopError(errno.EOPNOTSUPP)
    value = await s.top.getxattr(req.frame, s.inode(req.nodeid), name)
    return _sized(value, size, abi.XATTR_SIZE_MAX)


async def listxattr(s, req, body):
    size, = abi.GETXATTR_IN.unpack_from(body)
    names = await s.top.listxattr(req.frame, s.inode(req.nodeid))
    return _sized(names_blob(names), size, abi.XATTR_LIST_MAX)


def _sized(value: bytes, size: int, limit: int):
    """The reply to a GETXATTR/LISTXATTR asking ``size`` bytes (0: how many).  A kernel
    buffer never exceeds ``limit``: a bigger value is E2BIG (as the VFS says when a
    filesystem has one), whatever size the request claims."""
    if size == 0:
        return abi.GETXATTR_OUT.pack(min(len(value), 0xFFFFFFFF))
    if len(value) > limit:
        raise FopError(errno.E2BIG)
    if len(value) > size:
        raise FopError(errno.ERANGE)
    return value


async def removexattr(s, req, body):
    name = _xattr_name(body)
    if _acl_refused(s, name):
        raise FopError(errno.EOPNOTSUPP)
    await s.top.removexattr(req.frame, s.inode(req.nodeid), name)


O = abi.Opcode
HANDLERS = {
    O.LOOKUP: lookup, O.GETATTR: getattr_, O.SETATTR: setattr_, O.READLINK: readlink,
    O.MKNOD: mknod, O.MKDIR: mkdir, O.SYMLINK: symlink, O.LINK: link, O.UNLINK: unlink,
    O.RMDIR: rmdir, O.RENAME: rename, O.RENAME2: rename2, O.ACCESS: access,
    O.STATFS: statfs, O.SETXATTR: setxattr, O.GETXATTR: getxattr, O.LISTXATTR: listxattr,
    O.REMOVEXATTR: removexattr,
}
