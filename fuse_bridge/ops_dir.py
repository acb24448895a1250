"""Handlers for directories: OPENDIR, READDIR, READDIRPLUS, FSYNCDIR, RELEASEDIR.

A READDIR(PLUS) reply holds as many entries as fit in the kernel's buffer (never more
than max_pages pages, whatever size the request claims); the next request resumes at the
last packed entry's cookie.  READDIRPLUS counts one lookup for every entry the kernel
received (never for "." and ".."), once the reply is out; the inodes of entries that did
not fit, or whose reply failed or never went out, leave the table again.
"""
from __future__ import annotations

from xlators.core.inode import Fd, LinkPins

from . import abi
from .client import FuseClient
from .encode import Payload, attr_values
from .interrupt import Request
from .ops_file import checked_open_flags, take_back_open

_pack_dirents = abi.pack_dirents
_pack_direntplus = abi.pack_direntplus
_KEEP_CACHE = int(abi.FopenFlag.KEEP_CACHE)
_CACHE_DIR = int(abi.FopenFlag.CACHE_DIR)


def opendir_flags(fd: Fd) -> int:
    """FOPEN_* bits for a directory, from the translators' hints (performance/md-cache
    gives them when it knows the directory did not change): ``cache_dir`` lets the kernel
    keep the listing, ``keep_cache`` keeps what it kept across this open.  The kernel
    drops a kept listing itself when the directory changes through the mount, and on an
    INVAL_INODE of the directory (upcalls from below)."""
    hints = fd.open_flags
    if not hints:
        return 0
    return (_CACHE_DIR if "cache_dir" in hints else 0) | (
        _KEEP_CACHE if "keep_cache" in hints else 0)
_READ_IN = abi.READ_IN.unpack_from


async def opendir(c: FuseClient, req: Request, body: memoryview) -> Payload:
    flags, _ = abi.OPEN_IN.unpack_from(body)
    flags = checked_open_flags(flags)
    inode = c.inode(req.nodeid)
    fd = Fd(inode, flags | c.opendir_noatime, req.frame.pid, is_dir=True)
    try:
        await c.top.opendir(req.frame, inode, fd)
        sent = req.session.reply(req, abi.OPEN_OUT.pack(c.new_fh(fd), opendir_flags(fd), 0))
    except BaseException:
        await take_back_open(c, req, fd)
        raise
    if not sent:
        await take_back_open(c, req, fd)


async def readdir(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, offset, size, *_ = _READ_IN(body)
    size = min(size, c.max_io)
    return _pack_dirents(await c.top.readdir(req.frame, c.fd(fh), offset, size), size)


async def readdirplus(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, offset, size, *_ = _READ_IN(body)
    fd = c.fd(fh)
    size = min(size, c.max_io)
    pins = LinkPins()
    entries = ()
    try:
        entries = await c.top.readdirp(req.frame, fd, offset, size)
        t = c.timeouts
        buf = bytearray(size)
        pos = 0
        packed = []
        for e in entries:
            entry = e.entry
            if entry is None:
                end = _pack_direntplus(buf, pos, 0, 0, 0, 0, 0, 0,
                                       (e.ino,) + (0,) * 8 + (e.type << 12,) + (0,) * 6,
                                       e.off, e.type, e.name)
            else:
                inode = entry.inode
                end = _pack_direntplus(buf, pos, inode.nodeid, inode.generation, t.entry,
                                       t.attr, t.entry_ns, t.attr_ns,
                                       attr_values(entry.attr), e.off, e.type, e.name)
            if end < 0:
                break
            pos = end
            if entry is not None:
                packed.append(e)
        if req.session.reply(req, memoryview(buf)[:pos]):
            parent = fd.inode
            for e in packed:
                c.count_lookup(e.entry.inode, parent, e.name)
    finally:
        # Entries the kernel did not receive, linked here or (by a cache) earlier.
        dead = c.unpin(pins, [e.entry.inode for e in entries if e.entry is not None])
        if dead:
            await c.purge_all(dead)


async def fsyncdir(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, fsync_flags = abi.FSYNC_IN.unpack_from(body)
    await c.top.fsyncdir(req.frame, c.fd(fh), bool(fsync_flags & abi.FsyncFlag.FDATASYNC))


async def releasedir(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, *_ = abi.RELEASE_IN.unpack_from(body)
    try:
        await c.top.releasedir(req.frame, c.fd(fh))
    finally:
        await c.drop_fh(fh)


