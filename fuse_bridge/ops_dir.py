"""Handlers for directories: OPENDIR, READDIR, READDIRPLUS, FSYNCDIR, RELEASEDIR.

A READDIR(PLUS) reply holds as many entries as fit in the kernel's buffer (never more
than max_pages pages, whatever size the request claims); the next request resumes at the
last packed entry's cookie.  READDIRPLUS counts one lookup for every entry the kernel
received (never for "." and ".."), once the reply is out; the inodes of entries that did
not fit, or whose reply failed or never went out, leave the table again.
"""
from __future__ import annotations

import os
from typing import Any

from xlators.core.dir_batch import PlusBatch
from xlators.core.inode import Fd, LinkPins
from xlators.core.types import Attr

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
_STAT_RESULT = os.stat_result
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


def pack_plus_batch(batch: PlusBatch, t: Timeouts, size: int) -> tuple[bytes, int]:
    """:func:`pack_plus` of a PlusBatch nobody read (``batch.unread()``), from its
    columns: the reply, and how many of the looked-up entries (those after
    ``batch.head``) are in it."""
    head = batch.head
    data, _ = pack_plus(head, t, size)
    if len(data) < sum([(159 + len(e.name)) & ~7 for e in head]):
        return data, 0                          # ("." or ".." did not fit)
    records = [data]
    append = records.append
    total = len(data)
    ev, av, evn, avn = t.entry, t.attr, t.entry_ns, t.attr_ns
    packs = _PLUS_PACKS
    k = 0
    for name, off, inode, ino, st in zip(batch.names, batch.offs, batch.inodes,
                                         batch.inos, batch.stats):
        n = len(name)
        pack = packs[n] if n < _NAME_PACKED else _direntplus(n)
        if type(st) is _STAT_RESULT:
            # its 10 items (the times' whole seconds among them): one unpacking instead
            # of an attribute look-up each
            mode, _, _, nlink, uid, gid, fsize, asec, msec, csec = st
            if asec >= 0 and msec >= 0 and csec >= 0:
                rec = pack(inode.nodeid, inode.generation, ev, av, evn, avn,
                           ino, fsize, st.st_blocks, asec, msec, csec,
                           st.st_atime_ns % _NS, st.st_mtime_ns % _NS,
                           st.st_ctime_ns % _NS, mode, nlink, uid, gid,
                           st.st_rdev & 0xFFFFFFFF, st.st_blksize, 0, ino, off, n,
                           mode >> 12 & 0o17, name)
            else:                               # before 1970: two's complement seconds
                rec = pack(inode.nodeid, inode.generation, ev, av, evn, avn,
                           *attr_values(Attr.from_stat(st, ino)), ino, off, n,
                           mode >> 12 & 0o17, name)
        else:                                   # an Attr
            rec = pack(inode.nodeid, inode.generation, ev, av, evn, avn,
                       *attr_values(st), ino, off, n, st.mode >> 12 & 0o17, name)
        total += len(rec)
        if total > size:
            break
        append(rec)
        k += 1
    return b"".join(records), k


async def readdirplus(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, offset, size, *_ = _READ_IN(body)
    fd = c.fd(fh)
    size = min(size, c.max_io)
    pins = LinkPins()
    entries: Any = ()
    left: Any = None        # the inodes of the entries the kernel did not receive
    try:
        entries = await c.top.readdirp(req.frame, fd, offset, size)
        if type(entries) is PlusBatch and entries.unread():
            data, k = pack_plus_batch(entries, c.timeouts, size)
            if req.session.reply(req, data):
                inodes = entries.inodes
                c.count_listed(fd.inode, inodes[:k], entries.names[:k])
                left = inodes[k:]
        else:
            data, packed = pack_plus(entries, c.timeouts, size)
            if req.session.reply(req, data):
                parent = fd.inode
                count = c.count_lookup
                for e in packed:
                    count(e.entry.inode, parent, e.name)
                if packed and packed[-1] is entries[-1]:
                    left = ()           # (packed in order: the last one went out)
    finally:
        # Entries the kernel did not receive, linked here or (by a cache) earlier.
        if left is None:
            left = entries.inodes if type(entries) is PlusBatch else [
                e.entry.inode for e in entries if e.entry is not None]
        dead = c.unpin(pins, left)
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


