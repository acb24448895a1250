"""Graphs and test translators shared by the limit, leak and fuzz tests of the bridge:
storage/posix on a temporary brick and storage/memory, each optionally under test
translators that fail, wait or corrupt entries on the way back from the storage."""
from __future__ import annotations

import errno
import os
from typing import Any

import trio

from xlators.core.errors import FopError
from xlators.core.graph import Graph
from xlators.core.registry import Registry
from xlators.core.translator import Translator
from xlators.core.types import DirEntry, Entry

from tests.protocol.kernel import registry as kernel_registry

POSIX_VOL = """\
volume posix
    type storage/posix
    option directory {brick}
    option reserve 0
    option io-threads {threads}
end-volume
"""

MEMORY_VOL = """\
volume memory
    type storage/memory
    option size 1GB
end-volume
"""


class FailAfter(Translator):
    """readdirp (when ``fail_readdirp``), lookup (``fail_lookup``) and open, opendir,
    create (``fail_open``) go to the child, then fail with EIO: the storage linked the
    entries or opened the file, the kernel never gets them."""
    type = "test/fail-after"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fail_readdirp = True
        self.fail_lookup = False
        self.fail_open = False

    async def open(self, frame, inode, flags, fd):
        await self.child.open(frame, inode, flags, fd)
        if self.fail_open:
            raise FopError(errno.EIO)

    async def opendir(self, frame, inode, fd):
        await self.child.opendir(frame, inode, fd)
        if self.fail_open:
            raise FopError(errno.EIO)

    async def create(self, frame, loc, flags, mode, umask, fd):
        entry = await self.child.create(frame, loc, flags, mode, umask, fd)
        if self.fail_open:
            raise FopError(errno.EIO)
        return entry

    async def readdirp(self, frame, fd, offset, size):
        entries = await self.child.readdirp(frame, fd, offset, size)
        if self.fail_readdirp:
            raise FopError(errno.EIO)
        return entries

    async def lookup(self, frame, loc):
        entry = await self.child.lookup(frame, loc)
        if self.fail_lookup:
            raise FopError(errno.EIO)
        return entry


class Corrupt(Translator):
    """readdirp returns the child's entries, the last one with an attribute no kernel
    struct can hold (uid -1), when ``corrupting``: packing the reply fails midway."""
    type = "test/corrupt"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.corrupting = True

    async def readdirp(self, frame, fd, offset, size):
        entries = await self.child.readdirp(frame, fd, offset, size)
        if not self.corrupting:
            return entries
        out = list(entries)
        for i in range(len(out) - 1, -1, -1):
            d = out[i]
            if d.entry is not None:
                bad = d.entry.attr.copy()
                bad.uid = -1
                out[i] = DirEntry(d.name, d.ino, d.type, d.off, Entry(d.entry.inode, bad))
                break
        return out


class Hold(Translator):
    """readdirp goes to the child, then waits (interruptibly) for ``release`` when
    ``holding``: an INTERRUPT cancels the request after the storage linked the entries."""
    type = "test/hold"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.holding = True
        self.release = trio.Event()
        self.waiting = 0

    async def readdirp(self, frame, fd, offset, size):
        entries = await self.child.readdirp(frame, fd, offset, size)
        if self.holding:
            frame.on_interrupt(lambda: None)
            self.waiting += 1
            try:
                await self.release.wait()
            finally:
                self.waiting -= 1
        return entries


class Oversize(Translator):
    """getxattr of ``user.big`` and listxattr answer more than any kernel buffer holds
    (as a translator, or a filesystem without the VFS's limits, might)."""
    type = "test/oversize"
    BIG = 65536 + 10

    async def getxattr(self, frame, inode, name):
        if name == b"user.big":
            return b"v" * self.BIG
        return await self.child.getxattr(frame, inode, name)

    async def listxattr(self, frame, inode):
        names = await self.child.listxattr(frame, inode)
        return names + [b"user.%03d" % i + b"x" * 240 for i in range(300)]


class Recorder(Translator):
    """Records the length every copy_file_range asks for, then winds it."""
    type = "test/recorder"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lengths: list[int] = []

    async def copy_file_range(self, frame, fd_in, off_in, fd_out, off_out, length, flags):
        self.lengths.append(length)
        return await self.child.copy_file_range(frame, fd_in, off_in, fd_out, off_out,
                                                length, flags)


def registry() -> Registry:
    r = kernel_registry()
    for cls in (FailAfter, Corrupt, Hold, Oversize, Recorder):
        r.register(cls, "tests.protocol")
    return r


def graph(kind: str, brick: str = "", *over: str) -> Graph:
    """storage/posix (on ``brick``; "posix-threads": every fop in a worker thread, so
    every request waits) or storage/memory, with the named translators stacked on it
    (bottom first)."""
    if kind.startswith("posix"):
        threads = "on" if kind == "posix-threads" else "off"
        text, below = POSIX_VOL.format(brick=brick, threads=threads), "posix"
    else:
        text, below = MEMORY_VOL, "memory"
    for t in over:
        name = t.split("/")[1]
        text += f"\nvolume {name}\n    type {t}\n    subvolumes {below}\nend-volume\n"
        below = name
    g = Graph.from_text(text, registry=registry())
    g.init()
    g.activate()
    return g


def open_fds() -> int:
    """Descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))
