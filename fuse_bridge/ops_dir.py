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
from .dirent_pack import pack_readdir
from .encode import Payload, Timeouts, attr_values
from .interrupt import Request
from .ops_file import checked_open_flags, take_back_open

_direntplus = abi.direntplus_packer
_NAME_PACKED = 256          # names shorter than this: their packer from _PLUS_PACKS
_PLUS_PACKS = [_direntplus(n) for n in range(_NAME_PACKED)]
_NS = 1_000_000_000
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
    return pack_readdir(await c.top.readdir(req.frame, c.fd(fh), offset, size), size)


def pack_plus(entries: list, t: Timeouts, size: int) -> tuple[bytes, list]:
    """A READDIRPLUS reply of ``entries`` (as many as fit in ``size`` bytes) and the
    entries in it that carry an inode (the kernel counts a lookup for each of those).
    An entry without one goes with nodeid 0: the kernel makes no dentry for it."""
    records: list = []
    packed: list = []
    append = records.append
    total = 0
    ev, av, evn, avn = t.entry, t.attr, t.entry_ns, t.attr_ns
    packs = _PLUS_PACKS
    for e in entries:
        name, ino, type_, off, entry = e
        n = len(name)
        pack = packs[n] if n < _NAME_PACKED else _direntplus(n)
        if entry is None:
            rec = pack(0, 0, 0, 0, 0, 0, ino, 0, 0, 0, 0, 0, 0, 0, 0, type_ << 12,
                       0, 0, 0, 0, 0, 0, ino, off, n, type_, name)
        else:
            a = entry.attr
            inode = entry.inode
            at, mt, ct = a.atime_ns, a.mtime_ns, a.ctime_ns
            if at < 0 or mt < 0 or ct < 0:      # before 1970: two's complement seconds
                rec = pack(inode.nodeid, inode.generation, ev, av, evn, avn,
                           *attr_values(a), a.ino, off, n, type_, name)
            else:
                rec = pack(inode.nodeid, inode.generation, ev, av, evn, avn,
                           a.ino, a.size, a.blocks, at // _NS, mt // _NS,
                           ct // _NS, at % _NS, mt % _NS, ct % _NS, a.mode,
                           a.nlink, a.uid, a.gid, a.rdev & 0xFFFFFFFF, a.blksize,
                           0, a.ino, off, n, type_, name)
        total += len(rec)
        if total > size:
            break
        append(rec)
        if entry is not None:
            packed.append(e)
    return b"".join(records), packed


async def readdirplus(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, offset, size, *_ = _READ_IN(body)
    fd = c.fd(fh)
    size = min(size, c.max_io)
    pins = LinkPins()
    entries = ()
    try:
        entries = await c.top.readdirp(req.frame, fd, offset, size)
        data, packed = pack_plus(entries, c.timeouts, size)
        if req.session.reply(req, data):
            parent = fd.inode
            count = c.count_lookup
            for e in packed:
                count(e.entry.inode, parent, e.name)
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


