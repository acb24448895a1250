"""One FUSE session, the transport: INIT, the request loop, dispatch and exactly one reply
per request.  What the requests act on (the graph, the node and handle tables, what INIT
negotiated) is the client's (``fuse_bridge.client.FuseClient``, ``Session.client``); what
each opcode means is the opcode table's (``fuse_bridge.opcodes``).

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
import fcntl
import logging
import os
import struct
import time
from typing import Any, Awaitable, Optional

import trio

from xlators.core.events import Event
from xlators.core.graph import Graph
from xlators.core.upcall import InvalidateEntry

from . import abi, selfaccess
from .client import FuseClient
from .interrupt import InterruptTable, Request
from .opcodes import TABLE, Handler, OpcodeRow
from .options import BridgeOptions
from .readers import DONE, FAILED, Channel, new_stepper, read_loop, resume, resume_stepper

log = logging.getLogger("xlfs.fuse")

_IN_HEADER_UNPACK = abi.IN_HEADER.unpack_from
_OUT_HEADER_PACK = abi.OUT_HEADER.pack
_HDR = abi.IN_HEADER.size
_FOREIGN = selfaccess.FOREIGN
_opname = abi.opcode_name
_new_object = object.__new__
_JOIN_MAX = 16384       # replies up to this size are joined to their header, not writev'd
_NEVER = 1 << 62        # a request length no read returns
# What a request's body may raise when it is malformed (not a handler bug).
# OverflowError: a number the kernel never sends (an offset past 2**63 - 1, flags past an
# int) that a system call cannot take.
_MALFORMED = (ValueError, IndexError, UnicodeError, struct.error, OverflowError)


class SessionEnded(Exception):
    """The kernel ended the connection (ENODEV): unmounted or aborted."""


class Route:
    """A session's view of one opcode table row: its handler (which the session may wrap:
    fuse_bridge.mount_watch), the shortest valid request, whether it is answered, and
    whether its handler returns whole reply messages (``encode.whole_reply``)."""
    __slots__ = ("row", "handler", "min_len", "reply", "fast_len", "whole")

    def __init__(self, row: OpcodeRow) -> None:
        self.row = row
        self.handler: Optional[Handler] = None
        self.whole = False
        self.set_handler(row.handler)
        self.min_len = _HDR + (row.input.size if row.input is not None else 0)
        self.reply = row.reply
        # The shortest request dispatch serves without a closer look (Session._admit):
        # never, for the requests that are not answered.
        self.fast_len = self.min_len if row.reply else _NEVER

    def set_handler(self, handler: Optional[Handler]) -> None:
        self.handler = handler
        self.whole = bool(getattr(handler, "whole_reply", False))


class Session:
    """The transport of one mount: reads requests, dispatches them to the opcode table's
    handlers with the client, writes one reply each."""

    def __init__(self, graph: Graph, fd: int, options: Optional[BridgeOptions] = None,
                 mountpoint: str = "") -> None:
        self.devfd = fd
        self.opts = options or BridgeOptions()
        self.mountpoint = mountpoint
        self.client = FuseClient(graph, self.opts)
        self.client.invalidate = self._invalidate
        self.bufsize = max(abi.FUSE_MIN_READ_BUFFER,
                           self.opts.max_write + abi.BUFFER_HEADER_SIZE)
        # Every opcode with a handler; until INIT only INIT (and after it, no INIT).
        self._routes: dict[int, Route] = {op: Route(r) for op, r in TABLE.items()
                                          if r.handler is not None}
        self.routes: dict[int, Route] = {int(abi.Opcode.INIT):
                                         self._routes[int(abi.Opcode.INIT)]}
        self.channels: list[Channel] = []
        self.interrupts = InterruptTable(self)
        self.pending = self.interrupts.pending    # requests in flight, by unique
        self.dump: Any = None
        self.notifier: Any = None
        self.mount_watch: Any = None          # fuse_bridge.mount_watch, when mounted
        self.nursery: Optional[trio.Nursery] = None
        self._stepping: Optional[Request] = None   # the request a reader is stepping
        # Steps the handlers (readers.stepper); a handler that waits takes it along.
        self._step, self._box = new_stepper()
        self.ended = trio.Event()
        self.init_done = trio.Event()
        self.requests = 0
        self.errors = 0
        self.exceptions = 0
        self.end_reason = ""
        # Set while a graph switch commits: readers take no request (fuse_bridge.graph_switch).
        self.switching: Optional[trio.Event] = None
        self.forget_applier: Any = None     # fuse_bridge.forget_backlog's, once needed
        graph.listeners.append(self._graph_event)

    # -- the client's graph (one place: client.set_graph) --------------------------------
    @property
    def graph(self) -> Graph:
        return self.client.graph

    @property
    def itable(self) -> Any:
        return self.client.itable

    def set_graph(self, graph: Graph) -> None:
        """Serve requests from ``graph`` from now on (a graph switch): the client's
        graph, top and inode table change together, and the graph's UPCALLs reach the
        kernel.  What INIT negotiated stays as it was."""
        old = self.client.graph
        if old is not None and self._graph_event in old.listeners:
            old.listeners.remove(self._graph_event)
        self.client.set_graph(graph)
        if self._graph_event not in graph.listeners:     # moved there already
            graph.listeners.append(self._graph_event)
        if self.nursery is not None and graph.nursery is None:   # a switch gives its own
            graph.nursery = self.nursery

    @property
    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "errors": self.errors,
                "exceptions": self.exceptions}

    def _graph_event(self, event: Any, data: Any, source: Any) -> None:
        """UPCALLs from translators become kernel notifications (fuse_bridge.notify)."""
        if event is Event.UPCALL and self.notifier is not None:
            self.notifier.send(data)

    def _invalidate(self, parent: Any, name: bytes) -> None:
        """The client's LRU evicts ``name``: the kernel drops it and FORGETs its inode."""
        if self.notifier is not None:
            self.notifier.send(InvalidateEntry(parent, name))

    # -- handlers ----------------------------------------------------------------------
    def handler(self, opcode: int) -> Optional[Handler]:
        route = self._routes.get(opcode)
        return route.handler if route is not None else None

    def set_handler(self, opcode: int, handler: Handler) -> None:
        """Serve ``opcode`` with ``handler`` (which may wrap :meth:`handler`'s) from now on."""
        route = self._routes.get(opcode)
        if route is None:
            route = self._routes[opcode] = Route(TABLE[opcode])
            if self.client.initialized:
                self.routes[opcode] = route
        route.set_handler(handler)

    def init_complete(self) -> None:
        """INIT answered: serve every opcode from now on (a second INIT is refused)."""
        routes = dict(self._routes)
        del routes[int(abi.Opcode.INIT)]
        self.routes = routes
        self.init_done.set()

    # -- lifecycle -------------------------------------------------------------------
    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until the kernel ends the connection (or the caller cancels)."""
        from .trace_log import recorder
        self.dump = recorder(self.opts.dump_fuse)   # a dump file, the TRACE log, both, or None
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.client.graph.nursery = nursery
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
        # One reader blocked in poll() would hold up the readers of other channels that
        # trio's current batch has yet to run: the idle poll is for one channel only.
        hold = self.opts.idle_poll if len(self.channels) == 1 else 0.0
        for c in self.channels:
            c.set_idle_poll(hold)
        self.start_reader(chan)
        return chan

    def start_reader(self, chan: Channel) -> None:
        chan.readers += 1
        assert self.nursery is not None
        self.nursery.start_soon(read_loop, self, chan)

    def clone_channels(self, count: int) -> None:
        """GlusterFS's --reader-thread-count: extra cloned /dev/fuse descriptors."""
        for _ in range(count - 1):
            fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, abi.FUSE_DEV_IOC_CLONE, abi.pack_u32(self.devfd))
            except OSError as exc:
                os.close(fd)
                log.warning("cannot clone /dev/fuse (%s); using one channel", exc)
                return
            os.set_blocking(fd, False)
            self._add_channel(fd)

    def dump_state(self) -> dict[str, Any]:
        """Statedump lines of the transport and its client."""
        c = self.client
        state: dict[str, Any] = {"mountpoint": self.mountpoint, "proto-minor": c.proto_minor,
                                 "max-write": c.max_write}
        state.update(c.dump())
        state.update(self.interrupts.dump())
        if self.notifier is not None:
            state.update(self.notifier.dump())
        state.update(self.stats)
        for i, chan in enumerate(self.channels):
            state.update(chan.dump(f"channel{i}"))
        pt = c.passthrough
        if pt is not None:
            state.update({f"passthrough.{k}": v for k, v in pt.dump().items()})
        return state

    # -- the request loop --------------------------------------------------------------
    def serve(self, chan: Channel, buf: memoryview, n: int) -> Optional[Awaitable[None]]:
        """Serve the request in ``buf[:n]`` (a view of the reader's buffer): check it,
        step its handler, answer once.  None when it is done (the usual case: the handler
        did not wait); else it waits, and the reader awaits what this returns to finish
        it, after :meth:`wait_begins`."""
        if n < _HDR:
            log.error("malformed request: %d bytes, shorter than the %d-byte header", n, _HDR)
            return None
        length, opcode, unique, nodeid, uid, gid, pid, extlen = _IN_HEADER_UNPACK(buf)
        if self.dump is not None:
            self._dump(b"R", buf[:n])
        self.requests += 1
        route = self.routes.get(opcode)
        if (route is None or length != n or extlen or n < route.fast_len
                or unique in self.pending):
            end = self._admit(chan.fd, route, length, opcode, unique, n, extlen)
            if end < 0:
                return None
            assert route is not None
            if not route.reply:
                self._stepping = None
                step = self._no_reply(route, chan.fd, unique, opcode, nodeid, buf, end)
                try:
                    first = step.send(None)
                except StopIteration:
                    return None
                return resume(step, first)
        else:
            end = n
        if pid not in _FOREIGN:
            selfaccess.check(pid, opcode, unique, nodeid)
        # Request(self, chan.fd, unique, opcode, nodeid, uid, gid, pid), without the
        # call of its __init__ (a third of the cost of making it: once per request).
        req = _new_object(Request)
        req.session = self
        req.fd = chan.fd
        req.unique = unique
        req.opcode = opcode
        req.nodeid = nodeid
        req.uid = uid
        req.gid = gid
        req.pid = pid
        req.replied = False
        req.record = None
        req.frame = req
        # The request enters ``pending`` (where INTERRUPT finds it) only if it waits
        # (wait_begins); until then no other request can run.
        self._stepping = req
        try:
            # Handlers are coroutine functions (fuse_bridge.opcodes), stepped by the
            # session's stepper: DONE or FAILED unless the handler waits.
            handler = route.handler         # an attribute, not a method: LOAD_ATTR
            trap = self._step.send(handler(self.client, req, buf[_HDR:end]))
        except BaseException as exc:        # before the handler's coroutine (a wrapper),
            if self._step.gi_frame is None:  # or a GeneratorExit out of it: the stepper
                self._step, self._box = new_stepper()   # is over, the next needs one
            self._done(req, exc)
            return None
        if trap is DONE:
            box = self._box
            payload = box[0]
            box[0] = None
            if not req.replied:
                if route.whole and payload.__class__ is bytes:
                    msg = payload               # the whole message (encode.whole_reply)
                elif payload.__class__ is bytes and len(payload) <= _JOIN_MAX:
                    # The usual small reply (reply()'s first case), inline.
                    msg = _OUT_HEADER_PACK(16 + len(payload), 0, unique) + payload
                elif payload is None and not route.whole:   # no body: UNLINK, FLUSH, ...
                    msg = _OUT_HEADER_PACK(16, 0, unique)
                else:
                    msg = None
                if msg is not None:
                    if self.dump is not None:
                        self._dump(b"W", msg)
                    try:
                        os.write(req.fd, msg)
                    except OSError as exc:
                        self._write_failed(exc, unique)
                    req.replied = True
                else:
                    try:
                        self._reply(req, payload, route.whole)
                    except BaseException as exc:
                        self._done(req, exc)
                        return None
            req.frame = None                # the cycle (req.frame is req); also: done
            if req.record is not None:
                req.finish()
            return None
        if trap is FAILED:
            box = self._box
            exc = box[0]
            box[0] = None
            self._done(req, exc)
            return None
        # The handler waits, and keeps this stepper until it is done.
        step, box = self._step, self._box
        self._step, self._box = new_stepper()
        return self._finish(req, step, box, trap, route.whole)

    async def dispatch(self, chan: Channel, buf: memoryview, n: int) -> None:
        """:meth:`serve` as one coroutine (tests, tools): the request, served whole."""
        rest = self.serve(chan, buf, n)
        if rest is not None:
            self.wait_begins()
            await rest

    async def _finish(self, req: Request, step: Any, box: list, trap: Any, whole: bool
                      ) -> None:
        """The rest of a request whose handler waits (serve stepped it once)."""
        try:
            payload = await resume_stepper(step, box, trap)
            if not req.replied:
                self._reply(req, payload, whole)
        except BaseException as exc:
            self._done(req, exc)
        else:
            self._done(req, None)

    def _done(self, req: Request, exc: Optional[BaseException]) -> None:
        """The request is over: answer what its handler raised (``exc``: its errno, EIO,
        or EINTR when it was interrupted), then forget the request.  Re-raises what is
        not the request's to absorb (trio.Cancelled: the reader's scope takes it)."""
        try:
            if exc is None:
                pass
            elif isinstance(exc, trio.Cancelled):
                if req.cancel_requested:     # interrupted: the reader's scope absorbs it
                    self.reply_error(req, errno.EINTR)
                raise exc
            elif isinstance(exc, OSError):   # FopError included
                self.reply_error(req, exc.errno or errno.EIO)
            elif isinstance(exc, _MALFORMED):
                log.error("%s (unique %d): malformed request: %s", _opname(req.opcode),
                          req.unique, exc)
                self.reply_error(req, errno.EIO)
            elif isinstance(exc, (Exception, GeneratorExit)):   # (the latter: a bug
                self.exceptions += 1                            # below, not a close)
                log.error("%s (unique %d, nodeid %d) raised; answering EIO",
                          _opname(req.opcode), req.unique, req.nodeid, exc_info=exc)
                self.reply_error(req, errno.EIO)
            else:
                raise exc
        finally:
            req.frame = None                # the cycle (req.frame is req); also: done
            if req.waited:
                del self.pending[req.unique]
            if req.record is not None:
                req.finish()

    def wait_begins(self) -> Optional[Request]:
        """The request being stepped suspends (its reader calls this, right after the
        step that suspended): it enters ``pending``, where INTERRUPT and the statedump
        find it.  None when the suspended step was not a request that is answered."""
        req, self._stepping = self._stepping, None
        if req is None or req.frame is None:     # none, or one that is done already
            return None
        req.waited = True
        req.waited_at = time.monotonic()         # its age in .meta/frames
        self.pending[req.unique] = req
        return req

    def in_flight(self) -> list[Request]:
        """The requests not answered yet: those that wait, and the one being stepped
        (the request that asks, when a request asks)."""
        reqs = list(self.pending.values())
        req = self._stepping
        if req is not None and req.frame is not None and not req.waited:
            reqs.append(req)
        return reqs

    def _admit(self, fd: int, route: Optional[Route], length: int, opcode: int, unique: int,
               n: int, extlen: int) -> int:
        """The checks the common request passes at a glance, one by one: the end of the
        body (extensions excluded) when the request may be served, else -1 (answered or,
        never answered, logged)."""
        row = route.row if route is not None else TABLE.get(opcode)
        if row is not None and not row.reply:
            if length != n:
                why = f"header says {length} bytes, read {n}"
            elif row.input is not None and n - _HDR < row.input.size:
                why = (f"body of {n - _HDR} bytes, shorter than its {row.input.size}-byte "
                       f"struct")
            elif not self.client.initialized:
                why = "before INIT"
            else:
                return n if route is not None else -1    # no handler: ignored
            log.error("malformed %s (unique %d): %s; ignored", _opname(opcode), unique, why)
            return -1
        if length != n:
            self.answer_error(fd, unique, errno.EIO, f"malformed {_opname(opcode)}: header "
                                                     f"says {length} bytes, read {n}")
            return -1
        if route is None:
            if not self.client.initialized:
                self.answer_error(fd, unique, errno.EIO, f"{_opname(opcode)} before INIT")
            elif opcode == abi.Opcode.INIT:
                self.answer_error(fd, unique, errno.EIO, "a second INIT")
            else:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s (unique %d): not implemented, ENOSYS", _opname(opcode),
                              unique)
                self.answer_error(fd, unique, errno.ENOSYS)
            return -1
        end = n - extlen * 8
        if end < route.min_len:
            self.answer_error(fd, unique, errno.EIO, f"malformed {_opname(opcode)}: body "
                                                     f"of {end - _HDR} bytes")
            return -1
        other = self.pending.get(unique)
        if other is not None:
            self.answer_error(fd, unique, errno.EIO,
                              f"malformed {_opname(opcode)}: unique {unique} is in flight "
                              f"already ({_opname(other.opcode)}, which goes on)")
            return -1
        return end

    async def _no_reply(self, route: Route, fd: int, unique: int, opcode: int, nodeid: int,
                        buf: memoryview, end: int) -> None:
        """FORGET, BATCH_FORGET, INTERRUPT: never answered.  A malformed one (wrong
        length, body shorter than its struct, a count past the body) is one log line and
        is not acted on."""
        req = Request(self, fd, unique, opcode, nodeid)
        try:
            await route.handler(self.client, req, buf[_HDR:end])
        except (ValueError, struct.error) as exc:
            log.error("malformed %s (unique %d): %s; ignored", _opname(opcode), unique, exc)
        except Exception:
            log.exception("%s (unique %d) failed", _opname(opcode), unique)
        finally:
            req.frame = None

    # -- replies ---------------------------------------------------------------------
    def reply(self, req: Request, payload: Any = None) -> bool:
        """Send the one reply of ``req``: bytes, a list of parts, or None (no body).
        True when the kernel took it; False when ``req`` was answered already (an
        interrupt handler's EINTR) or the write failed (the request is gone): whatever
        the reply handed out must then be taken back by the caller."""
        if req.replied:
            return False
        # ``replied`` is set once the reply is written: a payload that cannot be encoded
        # or written (a handler bug) raises here and the request is still answered EIO.
        unique = req.unique
        cls = payload.__class__
        if cls is bytes and len(payload) <= _JOIN_MAX:
            # One buffer: cheaper than writev's iovecs for the usual small reply.
            ok = self._write(req.fd, _OUT_HEADER_PACK(16 + len(payload), 0, unique)
                             + payload, unique)
        elif payload is None:
            ok = self._write(req.fd, _OUT_HEADER_PACK(16, 0, unique), unique)
        elif cls is list or cls is tuple:
            ok = self._writev(req.fd, [_OUT_HEADER_PACK(16 + sum(map(len, payload)), 0,
                                                        unique), *payload], unique)
        else:
            ok = self._writev(req.fd, [_OUT_HEADER_PACK(16 + len(payload), 0, unique),
                                       payload], unique)
        req.replied = True
        return ok

    def reply_message(self, req: Request, msg: bytes) -> bool:
        """Send the one reply of ``req`` as the whole message ``msg``, out-header included
        (``encode``'s ``*_reply``).  True and False as :meth:`reply`."""
        if req.replied:
            return False
        if msg.__class__ is not bytes:
            raise TypeError(f"a whole reply is bytes, not {type(msg).__name__}")
        ok = self._write(req.fd, msg, req.unique)
        req.replied = True
        return ok

    def _reply(self, req: Request, payload: Any, whole: bool) -> bool:
        """What a handler returned, as its reply: a whole message when the handler is
        marked so (encode.whole_reply), else a body."""
        if whole:
            return self.reply_message(req, payload)
        return self.reply(req, payload)

    def reply_error(self, req: Request, err: int) -> bool:
        if req.replied:
            return False
        req.replied = True
        if not 0 < err < 1000:
            err = errno.EIO
        self.errors += 1
        self._write(req.fd, _OUT_HEADER_PACK(16, -err, req.unique), req.unique)
        return True

    def answer_error(self, fd: int, unique: int, err: int, why: str = "") -> None:
        """Answer a request that never became a Request (refused by the checks)."""
        if why:
            log.error("%s (unique %d): answering %s", why, unique, errno.errorcode[err])
        self._write(fd, _OUT_HEADER_PACK(16, -err, unique), unique)

    def _write(self, fd: int, data: bytes, unique: int) -> bool:
        if self.dump is not None:
            self._dump(b"W", data)
        try:
            os.write(fd, data)
        except OSError as exc:
            self._write_failed(exc, unique)
            return False
        return True

    def _writev(self, fd: int, bufs: list, unique: int) -> bool:
        if self.dump is not None:
            self._dump(b"W", b"".join(bytes(b) for b in bufs))
        try:
            os.writev(fd, bufs)
        except OSError as exc:
            self._write_failed(exc, unique)
            return False
        return True

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

