"""A translator that keeps the frame of a request (a background job, a cache) after the
reply: the frame still says who asked, it is no longer interruptible, and it holds no
reference cycle (the request is one object with its frame: fuse_bridge.interrupt.Request)."""
from __future__ import annotations

import gc

from fuse_bridge.interrupt import Request
from xlators.core.frame import Frame
from xlators.core.graph import Graph
from xlators.core.registry import Registry
from xlators.core.translator import Translator

from tests.protocol.kernel import MEMORY_VOL, serve


class Keeper(Translator):
    """Keeps the frame of every getattr."""
    type = "test/keeper"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.frames: list = []

    async def getattr(self, frame, inode, fd=None):
        self.frames.append(frame)
        return await self.child.getattr(frame, inode, fd)


def keeper_graph() -> Graph:
    registry = Registry(load_entrypoints=False)
    registry.register(Keeper, "tests.protocol")
    g = Graph.from_text(MEMORY_VOL + "\nvolume keeper\n    type test/keeper\n"
                        "    subvolumes memory\nend-volume\n", registry=registry)
    g.init()
    g.activate()
    return g


async def test_kept_frame_after_the_reply() -> None:
    graph = keeper_graph()
    keeper = graph.top
    async with serve(graph) as (k, s):
        r = await k.call(3, bytes(16), 1, uid=1000, gid=100, pid=4242)   # GETATTR
        assert r.error == 0
        assert await k.silence()                     # one reply
        assert not s.pending
        (frame,) = keeper.frames
        assert isinstance(frame, Frame)
        assert (frame.unique, frame.uid, frame.gid, frame.pid) == (r.unique, 1000, 100,
                                                                  4242)
        assert frame.on_interrupt(lambda: None) is False      # answered: not any more
        assert frame.lk_owner == 0 and frame.xdata == {}
        frame.xdata["kept"] = True                   # still a frame a translator may use
        assert frame.xdata == {"kept": True}

        assert (await k.call(17, b"", 1)).error == 0    # STATFS: the session's last
        gc.collect()                                    # request is another one now
        gc.disable()
        try:
            rid = id(frame)
            del frame
            keeper.frames.clear()
            # freed by its reference count alone: no cycle left for the collector
            assert not any(isinstance(o, Request) and id(o) == rid for o in gc.get_objects())
        finally:
            gc.enable()


class Inspector(Translator):
    """Looks at the session while its getattr runs: inline (``wait`` False) or after a
    checkpoint; inserts an interrupt record for the request either way."""
    type = "test/inspector"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.wait = False
        self.seen: list[tuple[bool, bool]] = []

    async def getattr(self, frame, inode, fd=None):
        import trio
        from fuse_bridge.interrupt import (interrupt_record_insert,
                                           interrupt_record_new)
        if self.wait:
            await trio.lowlevel.checkpoint()
        s = frame.session
        self.seen.append((frame.unique in s.pending, frame in s.in_flight()))
        interrupt_record_insert(interrupt_record_new(frame.header, lambda rec: None))
        return await self.child.getattr(frame, inode, fd)


async def test_a_request_enters_pending_only_when_it_waits() -> None:
    """pending (where INTERRUPT looks) holds the requests that wait; one that answers
    without waiting is never in it, yet it is in flight (.meta/frames lists it) and may
    insert an interrupt record, reaped when it is answered."""
    registry = Registry(load_entrypoints=False)
    registry.register(Inspector, "tests.protocol")
    graph = Graph.from_text(MEMORY_VOL + "\nvolume inspector\n    type test/inspector\n"
                            "    subvolumes memory\nend-volume\n", registry=registry)
    graph.init()
    graph.activate()
    inspector = graph.top
    async with serve(graph) as (k, s):
        assert (await k.call(3, bytes(16), 1)).error == 0          # GETATTR, inline
        inspector.wait = True
        assert (await k.call(3, bytes(16), 1)).error == 0          # GETATTR that waits
        assert inspector.seen == [(False, True), (True, True)]
        assert not s.pending and not s.in_flight()
        assert s.interrupts.records == 0                          # both reaped
