"""Handlers for open files: OPEN, CREATE, READ, WRITE, FLUSH, RELEASE, FSYNC, the lock
requests, FALLOCATE, LSEEK and COPY_FILE_RANGE.

FLUSH and SETLKW use the interrupt-record API when their flags ask for it
(``--fuse-flush-handle-interrupt``, ``--fuse-setlk-handle-interrupt``): see interrupt.py.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os

import trio

from xlators.core.errors import FopError
from xlators.core.inode import Fd, LinkPins, Loc
from xlators.core.types import KILL_SUIDGID, LK_GET, LK_SET, LK_SETW, OFFSET_MAX, Lock

from . import abi
from .interrupt import (HANDLED, SQUELCHED, DataRef, interrupt_finish_fop,
                        interrupt_finish_interrupt, interrupt_record_insert,
                        interrupt_record_new)
from .encode import entry_out, max_io
from .ops_entry import _name, count_lookup, send, unpin

log = logging.getLogger("xlfs.fuse")
_F = abi.FopenFlag
_OPEN_OUT_PACK = abi.OPEN_OUT.pack
_READ_IN = abi.READ_IN.unpack_from
_WRITE_IN = abi.WRITE_IN.unpack_from
_WRITE_OUT_PACK = abi.WRITE_OUT.pack
_WRITE_HDR = abi.WRITE_IN.size
_WRITE_LOCKOWNER = int(abi.WriteFlag.LOCKOWNER)
_WRITEBACK_CACHE = int(abi.InitFlag.WRITEBACK_CACHE)
_RELEASE_FLUSH = int(abi.ReleaseFlag.FLUSH)
_RELEASE_FLOCK_UNLOCK = int(abi.ReleaseFlag.FLOCK_UNLOCK)
_OPEN_KILL_SUIDGID = int(abi.OpenInFlag.KILL_SUIDGID)
_WRITE_KILL_SUIDGID = int(abi.WriteFlag.KILL_SUIDGID)
_INT_MAX = (1 << 31) - 1
_COPY_32_MAX = 0xFFFFFFFF & ~(abi.PAGE_SIZE - 1)


def open_flags(s, fd: Fd) -> int:
    """FOPEN_* bits for the kernel: bridge options first, then the translators' hints."""
    flags = 0
    dio = s.opts.direct_io_mode
    if dio is True or (dio in (None, "auto") and "direct_io" in fd.open_flags):
        flags |= _F.DIRECT_IO
    keep = s.opts.fopen_keep_cache
    if keep is True or (keep is None and "keep_cache" in fd.open_flags):
        flags |= _F.KEEP_CACHE
    return flags


def checked_open_flags(flags: int) -> int:
    """A kernel's open flags are a C int, never negative: a request with bit 31 set is
    refused (EINVAL) rather than handed on to the graph."""
    if flags > _INT_MAX:
        raise FopError(errno.EINVAL)
    return flags


def backend_flags(s, flags: int) -> int:
    """The open flags to give the graph.  With the kernel's writeback cache the kernel
    may READ through a write-only file (to fill pages) and positions O_APPEND writes
    itself: open read-write, no append.  A noatime mount opens with O_NOATIME
    (fuse_bridge.mount_watch)."""
    flags = checked_open_flags(flags) | s.open_noatime
    if s.flags & _WRITEBACK_CACHE:
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        flags &= ~os.O_APPEND
    return flags


async def open_(s, req, body):
    flags, open_in_flags = abi.OPEN_IN.unpack_from(body)
    flags = backend_flags(s, flags)
    if open_in_flags & _OPEN_KILL_SUIDGID:
        req.frame.xdata[KILL_SUIDGID] = True
    inode = s.inode(req.nodeid)
    fd = Fd(inode, flags, req.frame.pid)
    try:
        await s.top.open(req.frame, inode, flags, fd)
        fh = s.new_fh(fd)
        sent = send(s, req, _OPEN_OUT_PACK(fh, *_kernel_io(s, fd, fh)))
    except BaseException:
        await take_back_open(s, req, fd)
        raise
    if not sent:
        await take_back_open(s, req, fd)


async def take_back_open(s, req, fd: Fd) -> None:
    """The kernel never learnt of ``fd`` (its OPEN/CREATE/OPENDIR failed or was
    interrupted after a translator opened it, or the reply was lost) and so will never
    RELEASE it: release it now if any translator holds state in it (as GlusterFS does
    when an fd's last reference goes), and drop its handle.  Shielded; a failing release
    is logged, not raised (the request's own outcome stands)."""
    if not fd.ctx and not fd.fh:
        return
    with trio.CancelScope(shield=True):
        try:
            if fd.ctx:
                if fd.is_dir:
                    await s.top.releasedir(req.frame, fd)
                else:
                    await s.top.release(req.frame, fd)
        except Exception:
            log.exception("%s unique %d: releasing the handle the kernel never received "
                          "failed", _opname(req.opcode), req.unique)
        finally:
            if fd.fh and s.passthrough is not None:
                s.passthrough.on_release(fd.fh)
            await s.drop_fh(fd.fh)


async def create(s, req, body):
    flags, mode, umask, open_in_flags = abi.CREATE_IN.unpack_from(body)
    flags = backend_flags(s, flags)
    if open_in_flags & _OPEN_KILL_SUIDGID:
        req.frame.xdata[KILL_SUIDGID] = True
    parent = s.inode(req.nodeid)
    name = _name(body[abi.CREATE_IN.size:])
    fd = Fd(parent, flags, req.frame.pid)
    pins = LinkPins()
    try:
        entry = await s.top.create(req.frame, Loc(parent, name), flags, mode,
                                   s.umask(umask), fd)
        fd.inode = entry.inode
        reply = entry_out(s.timeouts, entry.inode.nodeid, entry.attr, entry.inode.generation)
        fh = s.new_fh(fd)
        if send(s, req, [reply, _OPEN_OUT_PACK(fh, *_kernel_io(s, fd, fh))]):
            count_lookup(s, entry.inode, parent, name)
        else:
            await take_back_open(s, req, fd)
    except BaseException:
        await take_back_open(s, req, fd)
        raise
    finally:
        await unpin(s, pins)


def _kernel_io(s, fd: Fd, fh: int) -> tuple[int, int]:
    """(FOPEN flags, backing id) of a new open: FUSE passthrough when the session has it
    on and the graph hands over the brick file (fuse_bridge.passthrough)."""
    flags = open_flags(s, fd)
    pt = s.passthrough
    if pt is None or not pt.enabled:
        return flags, 0
    return pt.on_open(s.graph, fd, fh, flags)


async def read(s, req, body):
    fh, offset, size, _, lock_owner, flags = _READ_IN(body)
    return await s.top.readv(req.frame, s.fd(fh), min(size, max_io(s.flags, s.max_write)),
                             offset, flags)


async def write(s, req, body):
    fh, offset, size, write_flags, lock_owner, flags = _WRITE_IN(body)
    data = body[_WRITE_HDR:_WRITE_HDR + size]
    if len(data) != size:
        raise ValueError(f"WRITE carries {len(data)} bytes, header says {size}")
    if write_flags & _WRITE_LOCKOWNER:
        req.frame.lk_owner = lock_owner
    if write_flags & _WRITE_KILL_SUIDGID:
        req.frame.xdata[KILL_SUIDGID] = True
    n = await s.top.writev(req.frame, s.fd(fh), data.tobytes(), offset, flags)
    return _WRITE_OUT_PACK(n)


def _flush_interrupted(record) -> None:
    """GlusterFS's flush interrupt handler: answer EINTR now, let the flush run on."""
    interrupt_finish_interrupt(record, HANDLED, False)


async def flush(s, req, body):
    fh, lock_owner = abi.FLUSH_IN.unpack_from(body)
    fd = s.fd(fh)
    req.frame.lk_owner = lock_owner
    if not s.opts.flush_handle_interrupt:
        # GlusterFS: FLUSH waits unless the flag says so; translators' interrupt
        # handlers (delay-gen, ...) are refused, the interrupt is only logged.
        req.interruptible = False
        await s.top.flush(req.frame, fd)
        return None
    record = interrupt_record_new(req.header, _flush_interrupted)
    interrupt_record_insert(record)
    try:
        await s.top.flush(req.frame, fd)
    finally:
        # On every path (errors too): reap the record; when the handler answered EINTR
        # first, the flush finished unseen and its answer (or error) is dropped.
        if await interrupt_finish_fop(req.frame, False):
            log.debug("FLUSH unique %d: answered EINTR by the interrupt handler; the "
                      "flush finished afterwards", req.unique)
    return None


async def release(s, req, body):
    fh, flags, release_flags, lock_owner = abi.RELEASE_IN.unpack_from(body)
    fd = s.fd(fh)
    req.frame.lk_owner = lock_owner
    try:
        if release_flags & _RELEASE_FLUSH:
            await s.top.flush(req.frame, fd)
        if release_flags & _RELEASE_FLOCK_UNLOCK and s.handles_locks:
            await s.top.lk(req.frame, fd, LK_SET,
                           Lock(fcntl.F_UNLCK, 0, OFFSET_MAX, 0, lock_owner, True))
        await s.top.release(req.frame, fd)
    finally:
        pt = s.passthrough
        if pt is not None:
            pt.on_release(fh)
        await s.drop_fh(fh)


async def fsync(s, req, body):
    fh, fsync_flags = abi.FSYNC_IN.unpack_from(body)
    await s.top.fsync(req.frame, s.fd(fh), bool(fsync_flags & abi.FsyncFlag.FDATASYNC))


def _lock(body):
    fh, owner, start, end, type_, pid, lk_flags = abi.LK_IN.unpack_from(body)
    return fh, owner, Lock(type_, start, end, pid, owner, bool(lk_flags & abi.LkFlag.FLOCK))


async def getlk(s, req, body):
    fh, owner, lock = _lock(body)
    req.frame.lk_owner = owner
    got = await s.top.lk(req.frame, s.fd(fh), LK_GET, lock)
    return abi.LK_OUT.pack(got.start, got.end, got.type, got.pid)


async def setlk(s, req, body):
    fh, owner, lock = _lock(body)
    req.frame.lk_owner = owner
    await s.top.lk(req.frame, s.fd(fh), LK_SET, lock)


def _setlk_interrupted(record) -> None:
    """GlusterFS's setlk interrupt handler (sync strategy): ask the lock translators to
    withdraw the blocked request; HANDLED (EINTR now) if one did.  Otherwise the lock was
    granted already (that answer stands: no stale lock) or the request has not reached
    the lock queue yet: SQUELCHED, and the interrupt is remembered so that a lock wait
    that starts later is withdrawn at once (features/locks registers frame.on_interrupt).
    """
    req = record.request
    if req.session.graph.cancel_blocked(req.frame):
        log.debug("%s unique %d: blocked lock withdrawn", _opname(req.opcode), req.unique)
        interrupt_finish_interrupt(record, HANDLED, True)
        return
    log.debug("%s unique %d: no blocked lock to withdraw; squelched", _opname(req.opcode),
              req.unique)
    req.interrupted = True
    interrupt_finish_interrupt(record, SQUELCHED, True)


async def setlkw(s, req, body):
    fh, owner, lock = _lock(body)
    req.frame.lk_owner = owner
    fd = s.fd(fh)
    if not s.opts.setlk_handle_interrupt:
        req.interruptible = False          # the wait goes on until granted (GlusterFS)
        await s.top.lk(req.frame, fd, LK_SETW, lock)
        return None
    record = interrupt_record_new(req.header, _setlk_interrupted)
    record.data = lock                     # handed to whoever cleans up (here: us, sync)
    interrupt_record_insert(record)
    data = DataRef()
    try:
        await s.top.lk(req.frame, fd, LK_SETW, lock)
    finally:
        # sync: if the handler is still deciding, wait for it (in trio: nothing else
        # waits).  HANDLED: EINTR went out and the lock was withdrawn, so the EINTR that
        # the lock wait raises here is dropped by the session (one reply per request).
        if await interrupt_finish_fop(req.frame, True, data):
            log.debug("%s unique %d: answered EINTR by the interrupt handler; lock %s "
                      "withdrawn", _opname(req.opcode), req.unique, data.value)
    return None


def _opname(opcode: int) -> str:
    return abi.Opcode(opcode).name


async def fallocate(s, req, body):
    fh, offset, length, mode = abi.FALLOCATE_IN.unpack_from(body)
    await s.top.fallocate(req.frame, s.fd(fh), mode, offset, length)


async def lseek(s, req, body):
    if s.flags & _WRITEBACK_CACHE:
        # The kernel asks SEEK_DATA/SEEK_HOLE without writing its dirty pages back, so
        # the brick would call fresh data a hole (cp --sparse would skip it).  ENOSYS
        # makes it answer by itself for the rest of the connection: all data, no holes.
        raise FopError(errno.ENOSYS)
    fh, offset, whence = abi.LSEEK_IN.unpack_from(body)
    return abi.LSEEK_OUT.pack(await s.top.lseek(req.frame, s.fd(fh), offset, whence))


async def copy_file_range(s, req, body):
    """COPY_FILE_RANGE answers a 32-bit count: the kernel asks at most 4 GiB less a page
    with it (more only with COPY_FILE_RANGE_64), so a bigger length is clamped there
    rather than copied in full and then reported EOVERFLOW."""
    fh_in, off_in, _nodeid_out, fh_out, off_out, length, flags = \
        abi.COPY_FILE_RANGE_IN.unpack_from(body)
    wide = req.opcode == abi.Opcode.COPY_FILE_RANGE_64
    if not wide:
        length = min(length, _COPY_32_MAX)
    n = await s.top.copy_file_range(req.frame, s.fd(fh_in), off_in, s.fd(fh_out), off_out,
                                    length, flags)
    if wide:
        return abi.COPY_FILE_RANGE_OUT.pack(n)
    if n > 0xFFFFFFFF:
        raise FopError(errno.EOVERFLOW)
    return _WRITE_OUT_PACK(n)


O = abi.Opcode
HANDLERS = {
    O.OPEN: open_, O.CREATE: create, O.READ: read, O.WRITE: write, O.FLUSH: flush,
    O.RELEASE: release, O.FSYNC: fsync, O.GETLK: getlk, O.SETLK: setlk, O.SETLKW: setlkw,
    O.FALLOCATE: fallocate, O.LSEEK: lseek, O.COPY_FILE_RANGE: copy_file_range,
    O.COPY_FILE_RANGE_64: copy_file_range,
}
