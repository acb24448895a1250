"""Handlers for name and attribute requests: LOOKUP, GETATTR, SETATTR, MKNOD, MKDIR,
SYMLINK, LINK, UNLINK, RMDIR, RENAME(2), READLINK, ACCESS, STATFS and the xattr family.

Each handler decodes its body with abi.py, calls one fop on the graph's top translator and
returns the reply payload (or raises FopError).  A new entry counts one kernel lookup only
once its reply went out: handlers that hand out entries send the reply themselves
(``req.session.reply``, :func:`send_entry`) and hold every inode the graph links meanwhile
(``LinkPins``), so that what the kernel never received (the request failed or was
interrupted, the reply could not be encoded or written) leaves the inode table again
(``FuseClient.unpin``).

LOOKUP of "." is how the kernel decodes a file handle (open_by_handle_at, an NFS export;
fs/fuse/inode.c fuse_get_dentry) of an inode it no longer caches: the nodeid may be one
the table forgot, and the graph's ``resolve`` fop finds the object again by its export
key (xlators.core.inode).  LOOKUP of ".." is its get_parent, an ordinary lookup.
"""
from __future__ import annotations

import errno
import stat
from typing import Any

from xlators.core.errors import FopError
from trio.lowlevel import current_task as _current_task

from xlators.core.inode import Inode, LinkPins, Loc, pins_by_task
from xlators.core.types import NOW, Entry, SetAttr

from . import abi
from .client import FuseClient
from .interrupt import Request
from .encode import (Payload, attr_reply, entry_reply, names_blob, negative_entry_out,
                     statfs_out, whole_reply)

_V = abi.int_flags(abi.SetattrValid)
_GETATTR_FH = int(abi.GetattrFlag.FH)
_GETATTR_IN = abi.GETATTR_IN.unpack_from
_RENAME_IN = abi.RENAME_IN.unpack_from
_GETXATTR_IN = abi.GETXATTR_IN.unpack_from
_MKDIR_IN = abi.MKDIR_IN.unpack_from
_MKDIR_IN_SIZE = abi.MKDIR_IN.size
_S_IFDIR = stat.S_IFDIR
_DONT_MASK = int(abi.InitFlag.DONT_MASK)
_GETXATTR_IN_SIZE = abi.GETXATTR_IN.size
_RENAME_IN_SIZE = abi.RENAME_IN.size
_SETXATTR_EXT = int(abi.InitFlag.SETXATTR_EXT)
_POSIX_ACL = int(abi.InitFlag.POSIX_ACL)
_ACL_XATTR = b"system.posix_acl_"
_pins_get = pins_by_task.get
# Loc(parent, name) without the call of its __init__ (more than half of the cost of
# making one): spelled out in LOOKUP, UNLINK, RMDIR and RENAME
_new_object = object.__new__


def _acl_refused(c: FuseClient, name: bytes) -> bool:
    """Without negotiated POSIX ACLs (--acl) the kernel would store ACL xattrs but never
    enforce them: refuse them, as GlusterFS's bridge does without its acl option."""
    return name.startswith(_ACL_XATTR) and not c.flags & _POSIX_ACL


def _name(body: memoryview) -> bytes:
    name, nul, _ = body.tobytes().partition(b"\0")
    if not nul:
        raise ValueError("name is not NUL-terminated")
    return name


def _two_names(body: memoryview) -> tuple[bytes, bytes]:
    a, b = abi.split_names(body, 2)
    return a, b


def send_entry(c: FuseClient, req: Request, entry: Entry, parent: Inode, name: bytes
               ) -> bool:
    """ENTRY_OUT for ``entry``; counted only when the kernel took it."""
    inode = entry.inode
    if req.session.reply_message(req, entry_reply(c.timeouts, req.unique, inode.nodeid,
                                                  entry.attr, inode.generation)):
        c.count_lookup(inode, parent, name)
        return True
    return False


async def _entry_request(c: FuseClient, req: Request, fop: Any, parent: Inode, name: bytes,
                         *args: Any) -> None:
    """Wind ``fop`` (returning an Entry) and answer with it, pinned."""
    task = _current_task()              # LinkPins(), spelled out (see lookup)
    outer = _pins_get(task)
    held = pins_by_task[task] = []
    try:
        send_entry(c, req, await fop(req.frame, *args), parent, name)
    finally:
        dead = c.unhold(task, held, outer)
        if dead:
            await c.purge_all(dead)


# Errors of ``resolve`` that mean "no such object": the kernel would pass them on to
# open_by_handle_at or nfsd as they are, where a handle that names nothing is ESTALE.
_GONE = frozenset({errno.ENOENT, errno.ENOSYS, errno.EOPNOTSUPP, errno.ESTALE,
                   errno.EINVAL})


async def lookup(c: FuseClient, req: Request, body: memoryview) -> Payload:
    name, nul, _ = body.tobytes().partition(b"\0")     # _name(body), inline
    if not nul:
        raise ValueError("name is not NUL-terminated")
    if name == b".":
        return await _lookup_self(c, req)
    parent = c.nodes.get(req.nodeid)
    if parent is None:
        raise FopError(errno.ESTALE)
    # LinkPins() without the object (xlators.core.inode): the registry entry is a plain
    # list, ended below as c.unhold does it; an object and its two method calls cost as
    # much again
    task = _current_task()
    outer = _pins_get(task)
    held = pins_by_task[task] = []
    try:
        try:
            loc = _new_object(Loc)
            loc.parent, loc.name, loc.inode = parent, name, None
            entry = await c.top.lookup(req.frame, loc)
        except OSError as exc:      # FopError, or an OSError escaping a translator
            if exc.errno != errno.ENOENT:
                raise
            if c.timeouts.negative | c.timeouts.negative_ns:
                return negative_entry_out(c.timeouts)
            # answered here, as the session would: the exception (and the frames its
            # traceback holds) goes no further on the commonest failing request
            req.session.reply_error(req, errno.ENOENT)
            return None
        inode = entry.inode
        if req.session.reply_message(req, entry_reply(c.timeouts, req.unique, inode.nodeid,
                                                      entry.attr, inode.generation)):
            # c.count_lookup(inode, parent, name), inline ("." went to _lookup_self)
            inode.nlookup += 1
            if name != b"..":
                lru = c.lru
                nodeid = inode.nodeid
                lru.pop(nodeid, None)            # (re)inserted last: the newest handout
                lru[nodeid] = (parent, name)
                limit = c.lru_limit
                if limit and len(lru) > limit and c.invalidate is not None:
                    c._lru_evict(len(lru) - limit + limit // 16)
    finally:
        # c.unhold(task, held, outer), inline: the registry entry ends, the holds drop
        if pins_by_task.get(task) is held:
            if outer is None:
                del pins_by_task[task]
            else:
                pins_by_task[task] = outer
        if held:
            dead = None
            for i in held:
                i.refs -= 1
            for i in held:
                if not (i.nlookup or i.refs):
                    dead = [i] if dead is None else dead + [i]
            if dead:
                await c.purge_all(dead)


async def _lookup_self(c: FuseClient, req: Request) -> Payload:
    """LOOKUP(nodeid, "."): the entry of nodeid itself, found by its export key when
    the table forgot it (the reply must carry that same nodeid, or the kernel fails
    the handle with EIO: anything else is ESTALE)."""
    inode = c.itable.by_nodeid.get(req.nodeid)
    if inode is not None:
        send_entry(c, req, Entry(inode, await c.top.getattr(req.frame, inode)), inode, b".")
        return None
    pins = LinkPins()
    try:
        try:
            entry = await c.top.resolve(req.frame, req.nodeid)
        except OSError as exc:
            if exc.errno in _GONE:
                raise FopError(errno.ESTALE) from None
            raise
        if c.itable.by_nodeid.get(req.nodeid) is not entry.inode:   # not that object
            raise FopError(errno.ESTALE)       # (unpin drops what resolve linked)
        send_entry(c, req, entry, entry.inode, b".")
    finally:
        dead = c.unpin(pins)
        if dead:
            await c.purge_all(dead)
    return None


@whole_reply
async def getattr_(c: FuseClient, req: Request, body: memoryview) -> Payload:
    flags, fh = _GETATTR_IN(body)
    inode = c.nodes.get(req.nodeid)
    if inode is None:
        raise FopError(errno.ESTALE)
    fd = c.fds.get(fh) if flags & _GETATTR_FH else None
    return attr_reply(c.timeouts, req.unique, await c.top.getattr(req.frame, inode, fd))


@whole_reply
async def setattr_(c: FuseClient, req: Request, body: memoryview) -> Payload:
    (valid, fh, size, lock_owner, atime, mtime, ctime, atimensec, mtimensec, ctimensec,
     mode, uid, gid) = abi.SETATTR_IN.unpack_from(body)
    inode = c.inode(req.nodeid)
    fd = c.fds.get(fh) if valid & _V.FH else None
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
    return attr_reply(c.timeouts, req.unique,
                      await c.top.setattr(req.frame, inode, changes, fd))


async def readlink(c: FuseClient, req: Request, body: memoryview) -> Payload:
    return await c.top.readlink(req.frame, c.inode(req.nodeid))


async def mknod(c: FuseClient, req: Request, body: memoryview) -> Payload:
    mode, rdev, umask = abi.MKNOD_IN.unpack_from(body)
    name = _name(body[abi.MKNOD_IN.size:])
    parent = c.inode(req.nodeid)
    await _entry_request(c, req, c.top.mknod, parent, name, Loc(parent, name), mode, rdev,
                         c.umask(umask))


async def mkdir(c: FuseClient, req: Request, body: memoryview) -> Payload:
    # _entry_request, c.inode(), _name() and Loc(), spelled out as in lookup
    mode, umask = _MKDIR_IN(body)
    name, nul, _ = body[_MKDIR_IN_SIZE:].tobytes().partition(b"\0")
    if not nul:
        raise ValueError("name is not NUL-terminated")
    parent = c.nodes.get(req.nodeid)
    if parent is None:
        raise FopError(errno.ESTALE)
    loc = _new_object(Loc)
    loc.parent, loc.name, loc.inode = parent, name, None
    task = _current_task()
    outer = _pins_get(task)
    held = pins_by_task[task] = []
    try:
        entry = await c.top.mkdir(req.frame, loc, _S_IFDIR | (mode & 0o7777),
                                  umask if c.flags & _DONT_MASK else 0)   # c.umask()
        inode = entry.inode
        if req.session.reply_message(req, entry_reply(c.timeouts, req.unique, inode.nodeid,
                                                      entry.attr, inode.generation)):
            c.count_lookup(inode, parent, name)
    finally:
        dead = c.unhold(task, held, outer)
        if dead:
            await c.purge_all(dead)


async def symlink(c: FuseClient, req: Request, body: memoryview) -> Payload:
    name, target = _two_names(body)
    parent = c.inode(req.nodeid)
    await _entry_request(c, req, c.top.symlink, parent, name, target, Loc(parent, name))


async def link(c: FuseClient, req: Request, body: memoryview) -> Payload:
    (oldnodeid,) = abi.LINK_IN.unpack_from(body)
    name = _name(body[abi.LINK_IN.size:])
    parent = c.inode(req.nodeid)
    await _entry_request(c, req, c.top.link, parent, name, c.inode(oldnodeid),
                         Loc(parent, name))


def _child_loc(c: FuseClient, req: Request, body: memoryview) -> Loc:
    """The Loc of the name ``body`` holds in the request's directory: c.inode(),
    _name() and Loc() spelled out in one call (UNLINK and RMDIR are the commonest
    modifying requests after CREATE)."""
    name, nul, _ = body.tobytes().partition(b"\0")
    if not nul:
        raise ValueError("name is not NUL-terminated")
    parent = c.nodes.get(req.nodeid)
    if parent is None:
        raise FopError(errno.ESTALE)
    loc = _new_object(Loc)
    loc.parent, loc.name, loc.inode = parent, name, None
    return loc


async def unlink(c: FuseClient, req: Request, body: memoryview) -> Payload:
    c.removals += 1
    await c.top.unlink(req.frame, _child_loc(c, req, body))


async def rmdir(c: FuseClient, req: Request, body: memoryview) -> Payload:
    c.removals += 1
    await c.top.rmdir(req.frame, _child_loc(c, req, body))


async def rename(c: FuseClient, req: Request, body: memoryview) -> Payload:
    c.removals += 1
    (newdir,) = _RENAME_IN(body)
    names = body[_RENAME_IN_SIZE:].tobytes().split(b"\0", 2)    # _two_names, inline
    if len(names) < 3:
        raise ValueError("name is not NUL-terminated")
    old, new = names[0], names[1]
    nodes = c.nodes
    parent = nodes.get(req.nodeid)
    newparent = nodes.get(newdir)
    if parent is None or newparent is None:
        raise FopError(errno.ESTALE)
    oldloc = _new_object(Loc)
    oldloc.parent, oldloc.name, oldloc.inode = parent, old, None
    newloc = _new_object(Loc)
    newloc.parent, newloc.name, newloc.inode = newparent, new, None
    await c.top.rename(req.frame, oldloc, newloc, 0)


async def rename2(c: FuseClient, req: Request, body: memoryview) -> Payload:
    c.removals += 1
    newdir, flags = abi.RENAME2_IN.unpack_from(body)
    old, new = _two_names(body[abi.RENAME2_IN.size:])
    await c.top.rename(req.frame, Loc(c.inode(req.nodeid), old), Loc(c.inode(newdir), new),
                       flags)


async def access(c: FuseClient, req: Request, body: memoryview) -> Payload:
    (mask,) = abi.ACCESS_IN.unpack_from(body)
    await c.top.access(req.frame, c.inode(req.nodeid), mask)


async def statfs(c: FuseClient, req: Request, body: memoryview) -> Payload:
    return statfs_out(await c.top.statfs(req.frame, c.inode(req.nodeid)))


async def setxattr(c: FuseClient, req: Request, body: memoryview) -> Payload:
    # The VFS refuses these before they reach a kernel filesystem; so do we.
    if c.flags & _SETXATTR_EXT:
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
    if _acl_refused(c, name):
        raise FopError(errno.EOPNOTSUPP)
    await c.top.setxattr(req.frame, c.inode(req.nodeid), name, value, flags)


def _xattr_name(body: memoryview) -> bytes:
    name = _name(body)
    if not 0 < len(name) <= abi.XATTR_NAME_MAX:
        raise FopError(errno.ERANGE)
    return name


async def getxattr(c: FuseClient, req: Request, body: memoryview) -> Payload:
    size, = _GETXATTR_IN(body)
    name, nul, _ = body[_GETXATTR_IN_SIZE:].tobytes().partition(b"\0")  # _xattr_name
    if not nul:
        raise ValueError("name is not NUL-terminated")
    if not 0 < len(name) <= abi.XATTR_NAME_MAX:
        raise FopError(errno.ERANGE)
    if name.startswith(_ACL_XATTR) and not c.flags & _POSIX_ACL:     # _acl_refused
        raise FopError(errno.EOPNOTSUPP)
    inode = c.nodes.get(req.nodeid)
    if inode is None:
        raise FopError(errno.ESTALE)
    try:
        value = await c.top.getxattr(req.frame, inode, name)
    except OSError as exc:
        # Answered here, as LOOKUP's ENOENT is: the kernel asks for security.capability
        # before a file's first write, and most files have none (ENODATA).
        req.session.reply_error(req, exc.errno or errno.EIO)
        return None
    return _sized(value, size, abi.XATTR_SIZE_MAX)


async def listxattr(c: FuseClient, req: Request, body: memoryview) -> Payload:
    size, = abi.GETXATTR_IN.unpack_from(body)
    names = await c.top.listxattr(req.frame, c.inode(req.nodeid))
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


async def removexattr(c: FuseClient, req: Request, body: memoryview) -> Payload:
    name = _xattr_name(body)
    if _acl_refused(c, name):
        raise FopError(errno.EOPNOTSUPP)
    await c.top.removexattr(req.frame, c.inode(req.nodeid), name)


