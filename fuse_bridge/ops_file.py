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
from collections.abc import Awaitable

import trio

from xlators.core.errors import FopError
from trio.lowlevel import current_task as _current_task
from xlators.core.inode import Fd, Loc, pins_by_task
from xlators.core.types import KILL_SUIDGID, LK_GET, LK_SET, LK_SETW, OFFSET_MAX, Lock

from . import abi
from .client import FuseClient
from .encode import Payload, create_reply, whole_reply, write_reply
from .interrupt import (HANDLED, SQUELCHED, DataRef, Request, interrupt_finish_fop,
                        interrupt_finish_interrupt, interrupt_record_insert,
                        interrupt_record_new)

log = logging.getLogger("xlfs.fuse")
_F = abi.FopenFlag
_OPEN_OUT_PACK = abi.OPEN_OUT.pack
_CREATE_IN = abi.CREATE_IN.unpack_from
_CREATE_IN_SIZE = abi.CREATE_IN.size
_pins_get = pins_by_task.get
_new_object = object.__new__
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


def open_flags(c: FuseClient, fd: Fd) -> int:
    """FOPEN_* bits for the kernel: NOFLUSH when no translator needs FLUSH
    (``FuseClient.fopen_noflush``, recorded in ``fd.noflush`` for its RELEASE), bridge
    options, then the translators' hints."""
    flags = c.fopen_noflush
    fd.noflush = flags != 0
    dio = c.opts.direct_io_mode
    if dio is True or (dio in (None, "auto") and "direct_io" in fd.open_flags):
        flags |= _F.DIRECT_IO
    keep = c.opts.fopen_keep_cache
    if keep is True or (keep is None and "keep_cache" in fd.open_flags):
        flags |= _F.KEEP_CACHE
    return flags


def checked_open_flags(flags: int) -> int:
    """A kernel's open flags are a C int, never negative: a request with bit 31 set is
    refused (EINVAL) rather than handed on to the graph."""
    if flags > _INT_MAX:
        raise FopError(errno.EINVAL)
    return flags


def backend_flags(c: FuseClient, flags: int) -> int:
    """The open flags to give the graph.  With the kernel's writeback cache the kernel
    may READ through a write-only file (to fill pages) and positions O_APPEND writes
    itself: open read-write, no append.  A noatime mount opens with O_NOATIME
    (fuse_bridge.mount_watch)."""
    flags = checked_open_flags(flags) | c.open_noatime
    if c.flags & _WRITEBACK_CACHE:
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        flags &= ~os.O_APPEND
    return flags


async def open_(c: FuseClient, req: Request, body: memoryview) -> Payload:
    flags, open_in_flags = abi.OPEN_IN.unpack_from(body)
    flags = backend_flags(c, flags)
    if open_in_flags & _OPEN_KILL_SUIDGID:
        req.frame.xdata[KILL_SUIDGID] = True
    inode = c.inode(req.nodeid)
    fd = Fd(inode, flags, req.frame.pid)
    try:
        await c.top.open(req.frame, inode, flags, fd)
        fh = c.new_fh(fd)
        sent = req.session.reply(req, _OPEN_OUT_PACK(fh, *_kernel_io(c, fd, fh)))
    except BaseException:
        await take_back_open(c, req, fd)
        raise
    if not sent:
        await take_back_open(c, req, fd)


async def take_back_open(c: FuseClient, req: Request, fd: Fd) -> None:
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
                    await c.top.releasedir(req.frame, fd)
                else:
                    await c.top.release(req.frame, fd)
        except Exception:
            log.exception("%s unique %d: releasing the handle the kernel never received "
                          "failed", abi.opcode_name(req.opcode), req.unique)
        finally:
            if fd.fh and c.passthrough is not None:
                c.passthrough.on_release(fd.fh)
            await c.drop_fh(fd.fh)


async def create(c: FuseClient, req: Request, body: memoryview) -> Payload:
    flags, mode, umask, open_in_flags = _CREATE_IN(body)
    flags = backend_flags(c, flags)
    if open_in_flags & _OPEN_KILL_SUIDGID:
        req.frame.xdata[KILL_SUIDGID] = True
    parent = c.nodes.get(req.nodeid)            # c.inode(), _name(), inline
    if parent is None:
        raise FopError(errno.ESTALE)
    name, nul, _ = body[_CREATE_IN_SIZE:].tobytes().partition(b"\0")
    if not nul:
        raise ValueError("name is not NUL-terminated")
    fd = Fd(parent, flags, req.frame.pid)
    loc = _new_object(Loc)                      # Loc(parent, name), without its __init__
    loc.parent, loc.name, loc.inode = parent, name, None
    task = _current_task()                      # LinkPins(), spelled out (ops_entry.lookup)
    outer = _pins_get(task)
    held = pins_by_task[task] = []
    try:
        entry = await c.top.create(req.frame, loc, flags, mode, c.umask(umask), fd)
        inode = fd.inode = entry.inode
        fh = c.new_fh(fd)
        io_flags, backing_id = _kernel_io(c, fd, fh)
        if req.session.reply_message(req, create_reply(
                c.timeouts, req.unique, inode.nodeid, entry.attr, inode.generation, fh,
                io_flags, backing_id)):
            c.count_lookup(inode, parent, name)
        else:
            await take_back_open(c, req, fd)
    except BaseException:
        await take_back_open(c, req, fd)
        raise
    finally:
        dead = c.unhold(task, held, outer)
        if dead:
            await c.purge_all(dead)


def _kernel_io(c: FuseClient, fd: Fd, fh: int) -> tuple[int, int]:
    """(FOPEN flags, backing id) of a new open: FUSE passthrough when the session has it
    on and the graph hands over the brick file (fuse_bridge.passthrough)."""
    flags = open_flags(c, fd)
    pt = c.passthrough
    if pt is None or not pt.enabled:
        return flags, 0
    return pt.on_open(c.graph, fd, fh, flags)


# READ and WRITE look their handle up inline (c.fd(fh), spelled out): they are the
# hottest handlers after GETATTR.
async def read(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, offset, size, _, lock_owner, flags = _READ_IN(body)
    fd = c.fds.get(fh)
    if fd is None:
        raise FopError(errno.EBADF)
    if size > c.max_io:
        size = c.max_io
    return await c.top.readv(req.frame, fd, size, offset, flags)


@whole_reply
async def write(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, offset, size, write_flags, lock_owner, flags = _WRITE_IN(body)
    if len(body) < _WRITE_HDR + size:
        raise ValueError(f"WRITE carries {max(0, len(body) - _WRITE_HDR)} bytes, header "
                         f"says {size}")
    fd = c.fds.get(fh)
    if fd is None:
        raise FopError(errno.EBADF)
    if write_flags & _WRITE_LOCKOWNER:
        req.frame.lk_owner = lock_owner
    if write_flags & _WRITE_KILL_SUIDGID:
        req.frame.xdata[KILL_SUIDGID] = True
    data = body[_WRITE_HDR:_WRITE_HDR + size].tobytes()
    n = await c.top.writev(req.frame, fd, data, offset, flags)
    return write_reply(req.unique, n)


def _flush_interrupted(record) -> None:
    """GlusterFS's flush interrupt handler: answer EINTR now, let the flush run on."""
    interrupt_finish_interrupt(record, HANDLED, False)


async def flush(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, lock_owner = abi.FLUSH_IN.unpack_from(body)
    fd = c.fd(fh)
    req.frame.lk_owner = lock_owner
    if not c.opts.flush_handle_interrupt:
        # GlusterFS: FLUSH waits unless the flag says so; translators' interrupt
        # handlers (delay-gen, ...) are refused, the interrupt is only logged.
        req.interruptible = False
        await c.top.flush(req.frame, fd)
        return None
    record = interrupt_record_new(req.header, _flush_interrupted)
    interrupt_record_insert(record)
    try:
        await c.top.flush(req.frame, fd)
    finally:
        # On every path (errors too): reap the record; when the handler answered EINTR
        # first, the flush finished unseen and its answer (or error) is dropped.
        if await interrupt_finish_fop(req.frame, False):
            log.debug("FLUSH unique %d: answered EINTR by the interrupt handler; the "
                      "flush finished afterwards", req.unique)
    return None


async def _before_release(req: Request, what: str, call: Awaitable[object]) -> None:
    """A flush or flock unlock that RELEASE runs first: its failure is logged, and the
    release still reaches the translators (else their descriptors and state of the
    file would stay: posix's open descriptor holds an unlinked file's space).  Nobody
    waits for a RELEASE's answer to see the error."""
    try:
        await call
    except OSError as exc:
        log.warning("RELEASE unique %d: the %s before it failed (%s); releasing anyway",
                    req.unique, what, exc)


async def release(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, flags, release_flags, lock_owner = abi.RELEASE_IN.unpack_from(body)
    fd = c.fd(fh)
    req.frame.lk_owner = lock_owner
    try:
        # Opened with FOPEN_NOFLUSH (the kernel sent no FLUSH at its closes) and the graph
        # needs FLUSH now (switched or reconfigured since): one flush here
        # (FuseClient.flush_at_release; exact: fopen_noflush is 0 then only for that).
        if release_flags & _RELEASE_FLUSH or fd.noflush and not c.fopen_noflush:
            await _before_release(req, "flush", c.top.flush(req.frame, fd))
        if release_flags & _RELEASE_FLOCK_UNLOCK and c.handles_locks:
            await _before_release(req, "flock unlock", c.top.lk(
                req.frame, fd, LK_SET, Lock(fcntl.F_UNLCK, 0, OFFSET_MAX, 0, lock_owner,
                                            True)))
        await c.top.release(req.frame, fd)
    finally:
        pt = c.passthrough
        if pt is not None:
            pt.on_release(fh)
        await c.drop_fh(fh)


async def fsync(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, fsync_flags = abi.FSYNC_IN.unpack_from(body)
    await c.top.fsync(req.frame, c.fd(fh), bool(fsync_flags & abi.FsyncFlag.FDATASYNC))


def _lock(body):
    fh, owner, start, end, type_, pid, lk_flags = abi.LK_IN.unpack_from(body)
    return fh, owner, Lock(type_, start, end, pid, owner, bool(lk_flags & abi.LkFlag.FLOCK))


async def getlk(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, owner, lock = _lock(body)
    req.frame.lk_owner = owner
    got = await c.top.lk(req.frame, c.fd(fh), LK_GET, lock)
    return abi.LK_OUT.pack(got.start, got.end, got.type, got.pid)


async def setlk(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, owner, lock = _lock(body)
    req.frame.lk_owner = owner
    await c.top.lk(req.frame, c.fd(fh), LK_SET, lock)


def _setlk_interrupted(record) -> None:
    """GlusterFS's setlk interrupt handler (sync strategy): ask the lock translators to
    withdraw the blocked request; HANDLED (EINTR now) if one did.  Otherwise the lock was
    granted already (that answer stands: no stale lock) or the request has not reached
    the lock queue yet: SQUELCHED, and the interrupt is remembered so that a lock wait
    that starts later is withdrawn at once (features/locks registers frame.on_interrupt).
    """
    req = record.request
    if req.session.graph.cancel_blocked(req.frame):
        log.debug("%s unique %d: blocked lock withdrawn", abi.opcode_name(req.opcode),
                  req.unique)
        interrupt_finish_interrupt(record, HANDLED, True)
        return
    log.debug("%s unique %d: no blocked lock to withdraw; squelched", abi.opcode_name(req.opcode),
              req.unique)
    req.interrupted = True
    interrupt_finish_interrupt(record, SQUELCHED, True)


async def setlkw(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, owner, lock = _lock(body)
    req.frame.lk_owner = owner
    fd = c.fd(fh)
    if not c.opts.setlk_handle_interrupt:
        req.interruptible = False          # the wait goes on until granted (GlusterFS)
        await c.top.lk(req.frame, fd, LK_SETW, lock)
        return None
    record = interrupt_record_new(req.header, _setlk_interrupted)
    record.data = lock                     # handed to whoever cleans up (here: us, sync)
    interrupt_record_insert(record)
    data = DataRef()
    try:
        await c.top.lk(req.frame, fd, LK_SETW, lock)
    finally:
        # sync: if the handler is still deciding, wait for it (in trio: nothing else
        # waits).  HANDLED: EINTR went out and the lock was withdrawn, so the EINTR that
        # the lock wait raises here is dropped by the session (one reply per request).
        if await interrupt_finish_fop(req.frame, True, data):
            log.debug("%s unique %d: answered EINTR by the interrupt handler; lock %s "
                      "withdrawn", abi.opcode_name(req.opcode), req.unique, data.value)
    return None


async def fallocate(c: FuseClient, req: Request, body: memoryview) -> Payload:
    fh, offset, length, mode = abi.FALLOCATE_IN.unpack_from(body)
    await c.top.fallocate(req.frame, c.fd(fh), mode, offset, length)


async def lseek(c: FuseClient, req: Request, body: memoryview) -> Payload:
    if c.flags & _WRITEBACK_CACHE:
        # The kernel asks SEEK_DATA/SEEK_HOLE without writing its dirty pages back, so
        # the brick would call fresh data a hole (cp --sparse would skip it).  ENOSYS
        # makes it answer by itself for the rest of the connection: all data, no holes.
        raise FopError(errno.ENOSYS)
    fh, offset, whence = abi.LSEEK_IN.unpack_from(body)
    return abi.LSEEK_OUT.pack(await c.top.lseek(req.frame, c.fd(fh), offset, whence))


async def copy_file_range(c: FuseClient, req: Request, body: memoryview) -> Payload:
    """COPY_FILE_RANGE answers a 32-bit count: the kernel asks at most 4 GiB less a page
    with it (more only with COPY_FILE_RANGE_64), so a bigger length is clamped there
    rather than copied in full and then reported EOVERFLOW."""
    fh_in, off_in, _nodeid_out, fh_out, off_out, length, flags = \
        abi.COPY_FILE_RANGE_IN.unpack_from(body)
    wide = req.opcode == abi.Opcode.COPY_FILE_RANGE_64
    if not wide:
        length = min(length, _COPY_32_MAX)
    n = await c.top.copy_file_range(req.frame, c.fd(fh_in), off_in, c.fd(fh_out), off_out,
                                    length, flags)
    if wide:
        return abi.COPY_FILE_RANGE_OUT.pack(n)
    if n > 0xFFFFFFFF:
        raise FopError(errno.EOVERFLOW)
    return _WRITE_OUT_PACK(n)


