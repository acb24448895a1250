"""One FUSE session: INIT, the request loop, dispatch and exactly one reply per request.

The loop follows the kernel's rules (and seed 004, libfuse's loop):

- read errors: ENOENT (the request was aborted before we read it), EINTR and EAGAIN are
  retried; ENODEV ends the session (unmounted); anything else is logged and retried;
- nothing but INIT is served before INIT, and a second INIT is refused (EIO);
- an unknown opcode is answered ENOSYS; a malformed request (short body, wrong length,
  extensions past the body, a unique already in flight, a number no system call takes) EIO
  and one log line;
- FORGET, BATCH_FORGET and INTERRUPT are never answered, malformed or not (a malformed one
  is one log line); every other request exactly once;
- a handler exception becomes EIO and a logged traceback: the loop never dies.

Concurrency and buffers: ``fuse_bridge.readers`` (the reader pool steps each handler
inline; a request that waits keeps its reader's task and only the buffer it is in).
"""
from __future__ import annotations

import errno
import resource
from collections import OrderedDict
import logging
import os
import struct
from typing import Any, Awaitable, Callable, Optional

import trio

from xlators.core.errors import FopError
from xlators.core.events import Event
from xlators.core.frame import Frame
from xlators.core.graph import Graph
from xlators.core.inode import Fd, Inode
from xlators.core.upcall import InvalidateEntry

from . import abi, selfaccess
from .encode import Timeouts
from .interrupt import InterruptTable, Request
from .options import BridgeOptions
from .readers import Channel, read_loop

log = logging.getLogger("xlfs.fuse")

_IN_HEADER_UNPACK = abi.IN_HEADER.unpack_from
_OUT_HEADER_PACK = abi.OUT_HEADER.pack
_HDR = abi.IN_HEADER.size
_NO_REPLY = frozenset(int(o) for o in abi.NO_REPLY_OPCODES)

Handler = Callable[["Session", Request, memoryview], Awaitable[Any]]


class SessionEnded(Exception):
    """The kernel ended the connection (ENODEV): unmounted or aborted."""


class Session:
    def __init__(self, graph: Graph, fd: int, options: Optional[BridgeOptions] = None,
                 mountpoint: str = "") -> None:
        from .ops import HANDLERS
        self.graph = graph
        self.top = graph.top
        self.itable = graph.itable
        self.devfd = fd
        self.opts = options or BridgeOptions()
        self.mountpoint = mountpoint
        self.timeouts = Timeouts(self.opts.entry_timeout, self.opts.attribute_timeout,
                                 self.opts.negative_timeout)
        self.handlers: dict[int, Handler] = {int(op): h for op, h in HANDLERS.items()}
        # Some translator implements lk: then POSIX and flock locks go to the graph.
        self.handles_locks = graph.handles_locks()
        self.initialized = False
        self.proto_minor = 0
        self.flags = 0                        # negotiated INIT flags (64-bit set)
        self.max_write = self.opts.max_write
        self.bufsize = max(abi.FUSE_MIN_READ_BUFFER, self.max_write + abi.BUFFER_HEADER_SIZE)
        self.channels: list[Channel] = []
        self.fds: dict[int, Fd] = {}
        self._next_fh = 1
        self.interrupts = InterruptTable(self)
        self.dump: Any = None
        self.notifier: Any = None
        self.mount_watch: Any = None          # fuse_bridge.mount_watch, when mounted
        self.open_noatime = 0                 # O_NOATIME when the mount is noatime
        self.opendir_noatime = 0              # ... or nodiratime
        self.passthrough: Any = None          # fuse_bridge.passthrough, set by INIT
        self.nursery: Optional[trio.Nursery] = None
        self._stepping: Optional[Request] = None   # the request a reader is stepping
        self.lru: OrderedDict[int, tuple] = OrderedDict()
        # every storage leaf may hold a descriptor per inode (a mirror: two)
        leaves = sum(1 for xl in graph.xlators.values() if not xl.children)
        self.lru_limit = effective_lru_limit(self.opts.lru_limit, leaves)
        self.ended = trio.Event()
        self.init_done = trio.Event()
        self.stats = {"requests": 0, "errors": 0, "exceptions": 0}
        self.end_reason = ""
        # Set while a graph switch commits: readers take no request (fuse_bridge.graph_switch).
        self.switching: Optional[trio.Event] = None
        graph.listeners.append(self._graph_event)

    def _graph_event(self, event: Any, data: Any, source: Any) -> None:
        """UPCALLs from translators become kernel notifications (fuse_bridge.notify)."""
        if event is Event.UPCALL and self.notifier is not None:
            self.notifier.send(data)

    # -- lifecycle -------------------------------------------------------------------
    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until the kernel ends the connection (or the caller cancels)."""
        from .trace_log import recorder
        self.dump = recorder(self.opts.dump_fuse)   # a dump file, the TRACE log, both, or None
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.graph.nursery = nursery
                self._add_channel(self.devfd)
                task_status.started()
                await self.ended.wait()
                nursery.cancel_scope.cancel()
        finally:
            if self.notifier is not None:
                self.notifier.stop()
            if self.dump is not None:
                self.dump.close()

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            log.info("session ended: %s", reason)
            self.ended.set()

    def _add_channel(self, fd: int) -> Channel:
        chan = Channel(fd, self.bufsize, self.opts.idle_readers)
        self.channels.append(chan)
        self._start_reader(chan)
        return chan

    def _start_reader(self, chan: Channel) -> None:
        chan.readers += 1
        assert self.nursery is not None
        self.nursery.start_soon(read_loop, self, chan)

    def clone_channels(self, count: int) -> None:
        """GlusterFS's --reader-thread-count: extra cloned /dev/fuse descriptors."""
        import fcntl
        import struct
        for _ in range(count - 1):
            fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, abi.FUSE_DEV_IOC_CLONE, struct.pack("I", self.devfd))
            except OSError as exc:
                os.close(fd)
                log.warning("cannot clone /dev/fuse (%s); using one channel", exc)
                return
            os.set_blocking(fd, False)
            self._add_channel(fd)

    # -- the request loop --------------------------------------------------------------
    async def _dispatch(self, chan: Channel, buf: bytearray, n: int) -> None:
        if n < _HDR:
            log.error("malformed request: %d bytes, shorter than the %d-byte header", n, _HDR)
            return
        length, opcode, unique, nodeid, uid, gid, pid, extlen = _IN_HEADER_UNPACK(buf)
        if self.dump is not None:
            self._dump(b"R", buf[:n])
        self.stats["requests"] += 1
        handler = self.handlers.get(opcode)
        if opcode in _NO_REPLY:
            self._stepping = None
            return await self._no_reply(chan, buf, n, length, opcode, unique, nodeid, handler)
        if length != n:
            return self._reply_error(chan.fd, unique, errno.EIO,
                                     f"malformed {_opname(opcode)}: header says {length} "
                                     f"bytes, read {n}")
        if not self.initialized:
            if opcode != abi.Opcode.INIT:
                return self._reply_error(chan.fd, unique, errno.EIO,
                                         f"{_opname(opcode)} before INIT")
        elif opcode == abi.Opcode.INIT:
            return self._reply_error(chan.fd, unique, errno.EIO, "a second INIT")
        if handler is None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s (unique %d): not implemented, ENOSYS", _opname(opcode), unique)
            return self._reply_error(chan.fd, unique, errno.ENOSYS)
        body_end = n - extlen * 8
        need = abi.OPCODE_INPUT.get(opcode)
        if body_end < _HDR or (need is not None and body_end - _HDR < need.size):
            return self._reply_error(chan.fd, unique, errno.EIO,
                                     f"malformed {_opname(opcode)}: body of "
                                     f"{body_end - _HDR} bytes")
        pending = self.interrupts.pending
        if unique in pending:
            return self._reply_error(chan.fd, unique, errno.EIO,
                                     f"malformed {_opname(opcode)}: unique {unique} is in "
                                     f"flight already ({_opname(pending[unique].opcode)}, "
                                     f"which goes on)")
        frame = Frame(unique, uid, gid, pid)
        if pid not in selfaccess.FOREIGN:
            selfaccess.check(pid, opcode, unique, nodeid)
        req = Request(self, chan.fd, unique, opcode, nodeid, frame)
        frame.interrupt = req
        pending[unique] = req
        self._stepping = req
        try:
            payload = await handler(self, req, memoryview(buf)[_HDR:body_end])
            if not req.replied:
                self.reply(req, payload)
        except trio.Cancelled:
            if req.cancel_requested:        # interrupted: the reader's scope absorbs it
                self.reply_error(req, errno.EINTR)
            raise
        except OSError as exc:              # FopError included
            self.reply_error(req, exc.errno or errno.EIO)
        except (ValueError, IndexError, UnicodeError, struct.error, OverflowError) as exc:
            # OverflowError: a number the kernel never sends (an offset past 2**63 - 1,
            # flags past an int) that a system call cannot take.
            log.error("%s (unique %d): malformed request: %s", _opname(opcode), unique, exc)
            self.reply_error(req, errno.EIO)
        except Exception:
            self.stats["exceptions"] += 1
            log.exception("%s (unique %d, nodeid %d) raised; answering EIO",
                          _opname(opcode), unique, nodeid)
            self.reply_error(req, errno.EIO)
        finally:
            del pending[unique]
            req.finish()

    async def _no_reply(self, chan: Channel, buf: bytearray, n: int, length: int, opcode: int,
                        unique: int, nodeid: int, handler: Optional[Handler]) -> None:
        """FORGET, BATCH_FORGET, INTERRUPT, NOTIFY_REPLY: never answered.  A malformed one
        (wrong length, body shorter than its struct, a count past the body) is one log
        line and is not acted on."""
        need = abi.OPCODE_INPUT.get(opcode)
        if length != n:
            why = f"header says {length} bytes, read {n}"
        elif need is not None and n - _HDR < need.size:
            why = f"body of {n - _HDR} bytes, shorter than its {need.size}-byte struct"
        elif not self.initialized:
            why = "before INIT"
        else:
            why = ""
        if why:
            log.error("malformed %s (unique %d): %s; ignored", _opname(opcode), unique, why)
            return
        if handler is None:
            return
        try:
            await handler(self, Request(self, chan.fd, unique, opcode, nodeid, None),
                          memoryview(buf)[_HDR:n])
        except (ValueError, struct.error) as exc:
            log.error("malformed %s (unique %d): %s; ignored", _opname(opcode), unique, exc)
        except Exception:
            log.exception("%s (unique %d) failed", _opname(opcode), unique)

    # -- replies ---------------------------------------------------------------------
    def reply(self, req: Request, payload: Any = None) -> bool:
        """Send the one reply of ``req``; False if it was already answered."""
        if req.replied:
            return False
        # ``replied`` is set once the reply is built and written: a payload that cannot
        # be sent (a handler bug) raises here and the request is still answered EIO.
        if payload is None:
            data: Any = _OUT_HEADER_PACK(16, 0, req.unique)
            self._write(req.fd, data, req.unique)
        elif isinstance(payload, (list, tuple)):
            size = 16 + sum(len(p) for p in payload)
            self._writev(req.fd, [_OUT_HEADER_PACK(size, 0, req.unique), *payload], req.unique)
        else:
            self._writev(req.fd, [_OUT_HEADER_PACK(16 + len(payload), 0, req.unique),
                                  payload], req.unique)
        req.replied = True
        return True

    def reply_error(self, req: Request, err: int) -> bool:
        if req.replied:
            return False
        req.replied = True
        if not 0 < err < 1000:
            err = errno.EIO
        self.stats["errors"] += 1
        self._write(req.fd, _OUT_HEADER_PACK(16, -err, req.unique), req.unique)
        return True

    def _reply_error(self, fd: int, unique: int, err: int, why: str = "") -> None:
        if why:
            log.error("%s (unique %d): answering %s", why, unique, errno.errorcode[err])
        self._write(fd, _OUT_HEADER_PACK(16, -err, unique), unique)

    def _write(self, fd: int, data: bytes, unique: int) -> None:
        if self.dump is not None:
            self._dump(b"W", data)
        try:
            os.write(fd, data)
        except OSError as exc:
            self._write_failed(exc, unique)

    def _writev(self, fd: int, bufs: list, unique: int) -> None:
        if self.dump is not None:
            self._dump(b"W", b"".join(bytes(b) for b in bufs))
        try:
            os.writev(fd, bufs)
        except OSError as exc:
            self._write_failed(exc, unique)

    def _dump(self, direction: bytes, message: Any) -> None:
        """--dump-fuse: a dump that cannot be written (disk full) stops; serving goes on."""
        try:
            self.dump.record(direction, message)
        except OSError as exc:
            log.error("--dump-fuse=%s: %s; no more messages are dumped",
                      self.opts.dump_fuse, exc)
            dump, self.dump = self.dump, None
            dump.close()

    def _write_failed(self, exc: OSError, unique: int) -> None:
        if exc.errno == errno.ENOENT:
            # The request is gone (interrupted and answered, or aborted): normal.
            if log.isEnabledFor(logging.DEBUG):
                log.debug("reply to unique %d: the request is no longer pending", unique)
        elif exc.errno == errno.ENODEV:
            self.end("the kernel ended the connection (unmounted)")
        else:
            log.error("reply to unique %d failed: %s", unique, exc)

    # -- helpers for handlers ----------------------------------------------------------

    def umask(self, umask: int) -> int:
        """The umask still to apply: 0 when the kernel applied it already (no DONT_MASK)."""
        return umask if self.flags & abi.InitFlag.DONT_MASK else 0

    # -- tables --------------------------------------------------------------------
    def inode(self, nodeid: int) -> Inode:
        inode = self.itable.by_nodeid.get(nodeid)
        if inode is None:
            raise FopError(errno.ESTALE)
        return inode

    def new_fh(self, fd: Fd) -> int:
        fh = self._next_fh
        self._next_fh += 1
        fd.fh = fh
        self.fds[fh] = fd
        fd.inode.refs += 1
        return fh

    def fd(self, fh: int) -> Fd:
        fd = self.fds.get(fh)
        if fd is None:
            raise FopError(errno.EBADF)
        return fd

    async def drop_fh(self, fh: int) -> None:
        fd = self.fds.pop(fh, None)
        if fd is not None:
            fd.inode.refs -= 1
            await self.maybe_forget(fd.inode)

    async def maybe_forget(self, inode: Inode) -> None:
        if self.itable.purge(inode):
            self.lru.pop(inode.nodeid, None)
            await self.graph.forget(inode)

    # -- --lru-limit -----------------------------------------------------------------
    def lru_touch(self, inode: Inode, parent: Inode, name: bytes) -> None:
        """``inode`` was handed to the kernel as ``name`` in ``parent``.  Past the limit,
        the least recently handed-out names are invalidated (INVAL_ENTRY, from the
        notification thread) so the kernel drops them and FORGETs their inodes, as
        GlusterFS's lru-limit does: each inode may hold resources (storage/posix keeps
        a descriptor per inode)."""
        lru = self.lru
        nodeid = inode.nodeid
        lru[nodeid] = (parent, name)
        lru.move_to_end(nodeid)
        if len(lru) > self.lru_limit and self.notifier is not None:
            self._lru_evict(len(lru) - self.lru_limit + self.lru_limit // 16)

    def _lru_evict(self, count: int) -> None:
        lru = self.lru
        for _ in range(min(count, len(lru))):
            nodeid, (parent, name) = lru.popitem(last=False)
            if nodeid in self.itable.by_nodeid:
                self.notifier.send(InvalidateEntry(parent, name))
                self.stats["lru-invalidations"] = self.stats.get("lru-invalidations", 0) + 1


def _opname(opcode: int) -> str:
    try:
        return abi.Opcode(opcode).name
    except ValueError:
        return f"opcode {opcode}"


def effective_lru_limit(wanted: int, leaves: int = 1) -> int:
    """--lru-limit, kept below what the process may hold open: translators may keep a
    descriptor per inode (storage/posix does; ``leaves`` storage translators, as many),
    and the kernel keeps inodes it has looked up until told otherwise.  0 means no
    limit but that one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = hard if hard != resource.RLIM_INFINITY else soft
    cap = (max(1024, int(fds * 0.75) // max(1, leaves))
           if fds != resource.RLIM_INFINITY else 1 << 30)
    return min(wanted, cap) if wanted > 0 else cap
