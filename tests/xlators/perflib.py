"""Helpers shared by the tests of the data-caching performance translators (io-cache,
read-ahead, quick-read, io-threads): a counting translator under the one tested, a gate
that holds reads, and a stack builder."""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Mapping, Optional

import trio

from xlators import InodeTable, Translator
from xlators.core.frame import system_frame
from xlators.core.inode import Fd
from xlators.testing import Harness, make_translator


class Count(Translator):
    """Counts the fops that reach it (``calls["readv"]``) and remembers read ranges."""
    type = "test/count"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.calls: Counter = Counter()
        self.reads: list[tuple[int, int]] = []

    async def readv(self, frame, fd, size, offset, flags=None):
        self.calls["readv"] += 1
        self.reads.append((offset, size))
        return await self.child.readv(frame, fd, size, offset, flags)

    async def getattr(self, frame, inode, fd=None):
        self.calls["getattr"] += 1
        return await self.child.getattr(frame, inode, fd)

    async def open(self, frame, inode, flags, fd):
        self.calls["open"] += 1
        return await self.child.open(frame, inode, flags, fd)


class Gate(Translator):
    """Holds every readv until ``let_go()``; ``entered`` is set when one waits."""
    type = "test/gate"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.closed = False
        self.opened = trio.Event()
        self.entered = trio.Event()

    def close(self) -> None:
        self.closed, self.opened = True, trio.Event()

    def let_go(self) -> None:
        self.closed = False
        self.opened.set()

    async def readv(self, frame, fd, size, offset, flags=None):
        data = await self.child.readv(frame, fd, size, offset, flags)
        if self.closed:
            self.entered.set()
            await self.opened.wait()
        return data


def build(xl_type: str, options: Optional[Mapping[str, str]] = None, *, leaf: str =
          "storage/memory", leaf_options: Optional[Mapping[str, str]] = None,
          gate: bool = False) -> tuple[Harness, Count, Optional[Gate]]:
    """``xl_type`` over a Count (over a Gate) over ``leaf``."""
    itable = InodeTable()
    node = make_translator(leaf, (), leaf_options or {}, itable=itable)
    g = None
    if gate:
        node = g = Gate("gate", [node], {}, itable=itable)
    count = Count("count", [node], {}, itable=itable)
    top = make_translator(xl_type, (count,), options or {}, itable=itable)
    h = Harness(top)
    h.init()
    return h, count, g


async def write_below(h: Harness, fd: Any, data: bytes, offset: int) -> None:
    """Change the file under the tested translator (as another client would), through
    an fd of its own opened below it."""
    below = h.top.child
    mine = Fd(fd.inode, os.O_RDWR)
    await below.open(system_frame(), fd.inode, os.O_RDWR, mine)
    try:
        await below.writev(system_frame(), mine, data, offset, 0)
    finally:
        await below.release(system_frame(), mine)
