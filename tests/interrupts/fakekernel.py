"""A scripted kernel for the session: real Session and graph, a SOCK_SEQPACKET socketpair
in place of /dev/fuse (message boundaries are kept, as on the device).

The test writes requests and INTERRUPTs in exactly the order it wants and reads every
reply, so each race order is forced, not hoped for.  A :class:`Gate` on top of the graph
holds chosen fops until the test opens it (optionally registering ``frame.on_interrupt``
the way delay-gen does).
"""
from __future__ import annotations

import errno
import socket
import time
from contextlib import asynccontextmanager
from typing import Any, Optional

import trio

from fuse_bridge import abi
from fuse_bridge.options import BridgeOptions
from fuse_bridge.session import Session
from xlators.core.errors import FopError
from xlators.core.graph import Graph

O = abi.Opcode
STACK = """
volume mem
    type storage/memory
    option size 64MB
end-volume

volume locks
    type features/locks
    subvolumes mem
end-volume
"""


class Gate:
    """Holds the fops named in ``hold`` until released; the rest pass straight down."""

    def __init__(self, child: Any) -> None:
        self.child = child
        self.hold: dict[str, dict] = {}   # fop -> {"register": bool, "fail": errno|None}
        self.entered = trio.Event()
        self.release = trio.Event()
        self.interrupted = 0              # on_interrupt handler calls
        self.cancelled = 0                # Cancelled seen while held
        self.finished = 0                 # held fops that went on to the child

    def __getattr__(self, name: str) -> Any:
        return getattr(self.child, name)

    def arm(self, fop: str, register: bool = True, fail: Optional[int] = None,
            register_late: bool = False, thread: float = 0.0) -> None:
        """Hold ``fop``: until released, or (``thread``) for a worker-thread call of that
        many seconds whose result is abandoned on cancellation."""
        self.hold[fop] = {"register": register, "fail": fail, "late": register_late,
                          "thread": thread}
        self.entered = trio.Event()
        self.release = trio.Event()

    async def _held(self, fop: str, frame: Any) -> None:
        how = self.hold.get(fop)
        if how is None:
            return
        if how["register"] and not how["late"]:
            frame.on_interrupt(self._on_interrupt)
        self.entered.set()
        try:
            if how["thread"]:
                await trio.to_thread.run_sync(time.sleep, how["thread"],
                                              abandon_on_cancel=True)
            elif how["late"]:
                await self.release.wait()          # wait without a handler first ...
                self.release = trio.Event()
                frame.on_interrupt(self._on_interrupt)   # ... then register one
                await trio.lowlevel.checkpoint()
            else:
                await self.release.wait()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        self.finished += 1
        if how["fail"]:
            raise FopError(how["fail"])

    def _on_interrupt(self) -> None:
        self.interrupted += 1

    async def flush(self, frame, fd):
        await self._held("flush", frame)
        return await self.child.flush(frame, fd)

    async def writev(self, frame, fd, data, offset, flags):
        await self._held("writev", frame)
        return await self.child.writev(frame, fd, data, offset, flags)

    async def lk(self, frame, fd, cmd, lock):
        await self._held("lk", frame)
        return await self.child.lk(frame, fd, cmd, lock)


class FakeKernel:
    def __init__(self, sock: Any, raw: socket.socket, session: Session, gate: Gate) -> None:
        self.sock = sock
        self.raw = raw                    # the same socket, for sends that do not yield
        self.session = session
        self.gate = gate
        self._unique = 0x100

    def next_unique(self) -> int:
        self._unique += 2                 # request uniques are even (INTERRUPT: N|1)
        return self._unique

    async def send(self, opcode: int, body: bytes = b"", nodeid: int = 1,
                   unique: Optional[int] = None, pid: int = 4242) -> int:
        unique = self.next_unique() if unique is None else unique
        hdr = abi.IN_HEADER.pack(abi.IN_HEADER.size + len(body), int(opcode), unique,
                                 nodeid, 0, 0, pid, 0)
        await self.sock.send(hdr + body)
        return unique

    async def interrupt(self, target: int) -> None:
        await self.send(O.INTERRUPT, abi.INTERRUPT_IN.pack(target), nodeid=0,
                        unique=target | 1)

    def send_nowait(self, opcode: int, body: bytes = b"", nodeid: int = 1,
                    unique: Optional[int] = None, pid: int = 4242) -> int:
        """Queue a request without letting the session run (to batch several)."""
        unique = self.next_unique() if unique is None else unique
        hdr = abi.IN_HEADER.pack(abi.IN_HEADER.size + len(body), int(opcode), unique,
                                 nodeid, 0, 0, pid, 0)
        self.raw.send(hdr + body)
        return unique

    def interrupt_nowait(self, target: int) -> None:
        self.send_nowait(O.INTERRUPT, abi.INTERRUPT_IN.pack(target), nodeid=0,
                         unique=target | 1)

    async def reply(self, timeout: float = 5.0) -> tuple[int, int, bytes]:
        """(unique, -errno or 0, payload) of the next reply."""
        with trio.fail_after(timeout):
            data = await self.sock.recv(1 << 20)
        length, error, unique = abi.OUT_HEADER.unpack_from(data)
        assert length == len(data)
        return unique, error, data[abi.OUT_HEADER.size:]

    async def no_reply(self, wait: float = 0.2) -> None:
        """Nothing arrives within ``wait`` seconds."""
        with trio.move_on_after(wait):
            data = await self.sock.recv(1 << 20)
            raise AssertionError(f"unexpected reply {abi.OUT_HEADER.unpack_from(data)}")

    async def call(self, opcode: int, body: bytes = b"",
                   nodeid: int = 1) -> tuple[int, bytes]:
        unique = await self.send(opcode, body, nodeid)
        got, error, payload = await self.reply()
        assert got == unique, (got, unique)
        return error, payload

    # -- helpers -------------------------------------------------------------------
    async def create(self, name: str) -> tuple[int, int]:
        """(nodeid, fh) of a new file."""
        import os
        body = abi.CREATE_IN.pack(os.O_RDWR | os.O_CREAT, 0o100644, 0, 0) + \
            name.encode() + b"\0"
        error, payload = await self.call(O.CREATE, body)
        assert error == 0, errno.errorcode.get(-error)
        nodeid = abi.ENTRY_OUT.unpack_from(payload)[0]
        fh = abi.OPEN_OUT.unpack_from(payload, abi.ENTRY_OUT.size)[0]
        return nodeid, fh

    def flush_body(self, fh: int, owner: int = 7) -> bytes:
        return abi.FLUSH_IN.pack(fh, owner)

    def lk_body(self, fh: int, owner: int, type_: int, start: int = 0,
                end: int = 0x7FFFFFFFFFFFFFFF, flock: bool = False,
                pid: int = 4242) -> bytes:
        return abi.LK_IN.pack(fh, owner, start, end, type_, pid,
                              int(abi.LkFlag.FLOCK) if flock else 0)

    def write_body(self, fh: int, data: bytes, offset: int = 0) -> bytes:
        return abi.WRITE_IN.pack(fh, offset, len(data), 0, 0, 0) + data


@asynccontextmanager
async def fake_kernel(stack: str = STACK, **options: Any):
    """A served session over ``stack`` with a Gate on top; yields the FakeKernel."""
    graph = Graph.from_text(stack)
    graph.init()
    graph.activate()
    gate = Gate(graph.top)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    opts = BridgeOptions()
    for k, v in options.items():
        setattr(opts, k, v)
    session = Session(graph, ours.fileno(), opts)
    session.client.set_graph(graph, gate)
    kernel = FakeKernel(trio.socket.from_stdlib_socket(theirs), theirs, session, gate)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            init = abi.INIT_IN.pack(abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION, 0,
                                    0xFFFFFFFF, 0)
            error, _ = await kernel.call(O.INIT, init, nodeid=0)
            assert error == 0
            yield kernel
            session.end("test over")
    finally:
        graph.fini()
        kernel.sock.close()
        ours.close()
