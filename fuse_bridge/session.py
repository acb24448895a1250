"""One FUSE session, the transport of one mount: channels and their readers, the routes
(how the session sees the opcode table), INIT's switch from serving INIT only to serving
everything else, the graph's UPCALLs, the statedump.  What the requests act on (the
graph, the node and handle tables, what INIT negotiated) is the client's
(``fuse_bridge.client.FuseClient``, ``Session.client``); what each opcode means is the
opcode table's (``fuse_bridge.opcodes``).

The session is put together from one module per concern:

- ``fuse_bridge.readers``: reading /dev/fuse (read errors: ENOENT, the request was
  aborted before we read it, EINTR and EAGAIN are retried; ENODEV ends the session;
  anything else is logged and retried), the reader pool and its buffers;
- ``fuse_bridge.serving`` (``RequestServing``): one request checked, its handler stepped,
  one reply; a handler exception becomes EIO and a logged traceback, the loop never dies;
- ``fuse_bridge.request_checks`` (``RequestChecks``): the rules a request that fails the
  common test is checked against (before INIT, a second INIT, ENOSYS, malformed, a unique
  in flight) and the requests never answered (FORGET, BATCH_FORGET, INTERRUPT);
- ``fuse_bridge.replies`` (``Replies``): exactly one reply per request, written;
- ``fuse_bridge.routes`` (``Route``): a session's view of one opcode table row.
"""
from __future__ import annotations

import fcntl
import logging
import os
from typing import Any, Optional

import trio

from xlators.core.events import Event
from xlators.core.graph import Graph
from xlators.core.upcall import InvalidateEntry

from . import abi
from .client import FuseClient
from .interrupt import InterruptTable, Request
from .opcodes import TABLE, Handler
from .options import BridgeOptions
from .readers import Channel, new_stepper, read_loop
from .routes import Route
from .serving import RequestServing

log = logging.getLogger("xlfs.fuse")


class SessionEnded(Exception):
    """The kernel ended the connection (ENODEV): unmounted or aborted."""


class Session(RequestServing):
    """The transport of one mount: reads requests, dispatches them to the opcode table's
    handlers with the client, writes one reply each (``RequestServing``: serving, checks
    and replies)."""

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
