"""performance/readdir-ahead with FUSE passthrough: the kernel writes a passthrough
writer's brick file itself, so no fop tells readdir-ahead that the size and times of the
entries it read ahead (readdirp) have changed.  A listed size must never be older than
the writes made before the listing asked for it.

The kernel's write is simulated by writing the brick file directly while the harness
holds an fd for which the bridge would have asked ``passthrough_fd``.
"""
from __future__ import annotations

import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import pytest
import trio
import trio.testing

from xlators import Translator
from xlators.core.dir_batch import PlusBatch
from xlators.core.inode import Fd
from xlators.performance.readdir_ahead_stream import last_cookie
from xlators.testing import Harness, make_translator

RDA = "performance/readdir-ahead"
FILES = 60
AT = 12      # the written file's place in the listing: past the first two requests


class Gate(Translator):
    """Passes everything (data too); when ``armed``, a background readdirp (system
    frame) gets its reply from the child, then waits for ``go`` before returning it."""
    type = "test/gate"
    passes_data_through = True

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.armed = False
        self.replied = trio.Event()
        self.go = trio.Event()

    async def readdirp(self, frame: Any, fd: Any, offset: int, size: int) -> Any:
        reply = await self.child.readdirp(frame, fd, offset, size)
        if self.armed and frame.unique == 0:
            self.armed = False
            self.replied.set()
            await self.go.wait()
        return reply


@dataclass
class Listing:
    h: Harness
    gate: Gate
    brick: Path
    dir_fd: Fd
    nursery: trio.Nursery
    target: bytes = b""        # the name of the file written
    offset: int = 0

    async def next(self, size: int = 400) -> list:
        batch = await self.h.top.readdirp(self.h.frame(), self.dir_fd, self.offset, size)
        if batch:
            self.offset = last_cookie(batch)       # (makes no DirEntry)
        return batch

    async def restart_held(self) -> trio.Event:
        """Rewind and start the read-ahead again with its first background read held
        at the gate once it has its reply; the request waiting for it runs in the
        background.  Returns the event set when that request was answered."""
        self.offset = 0
        await self.next()
        self.gate.armed = True
        answered = trio.Event()

        async def second() -> None:
            await self.next()
            answered.set()
        self.nursery.start_soon(second)
        with trio.fail_after(5):
            await self.gate.replied.wait()
        return answered

    async def rest(self) -> list:
        out: list = []
        while batch := await self.next(4096):
            out.extend(batch)
        return out


@asynccontextmanager
async def listing(brick: Path, **options: str) -> AsyncIterator[Listing]:
    """readdir-ahead over a gate over storage/posix with FILES files in /d; /d opened
    and two readdirp requests made, so the rest of it is being read ahead."""
    posix = make_translator("storage/posix", (), {"directory": str(brick)})
    gate = Gate("gate", [posix], {}, itable=posix.itable)
    rda = make_translator(RDA, (gate,), options, itable=posix.itable)
    h = Harness(rda)
    h.init()
    try:
        await h.mkdir("/d")
        for i in range(FILES):
            await h.write_file(f"/d/f{i:04d}", b"x")
        order = [e.name for e in await Harness(posix).listdir("/d")
                 if e.name not in (b".", b"..")]
        async with trio.open_nursery() as nursery:
            h.attach_nursery(nursery)
            e = await h.lookup("/d")
            dir_fd = Fd(e.inode, os.O_RDONLY, 0, is_dir=True)
            await h.top.opendir(h.frame(), e.inode, dir_fd)
            s = Listing(h, gate, brick, dir_fd, nursery, order[AT])
            await s.next()
            await s.next()                                 # starts the read-ahead
            yield s
            await h.top.releasedir(h.frame(), dir_fd)
    finally:
        h.fini()


def kernel_write(s: Listing, data: bytes) -> int:
    """A WRITE the kernel does in passthrough: straight to the brick file."""
    path = s.brick / "d" / s.target.decode()
    with open(path, "ab") as f:
        f.write(data)
    return os.stat(path).st_size


async def open_writer(s: Listing, flags: int = os.O_WRONLY) -> Fd:
    fd = await s.h.open(f"/d/{s.target.decode()}", flags)
    assert s.h.top.passthrough_fd(fd) is not None       # the bridge registers it
    return fd


def listed(s: Listing, entries: list) -> Optional[Any]:
    """The written file's entry in ``entries`` (asserting there is exactly one)."""
    found = [e for e in entries if e.name == s.target]
    assert len(found) == 1, [e.name for e in entries]
    return found[0]


def assert_not_stale(entry: Any, size: int) -> None:
    """Either no attributes (the kernel asks again) or the file's size now."""
    assert entry.entry is None or entry.entry.attr.size == size, entry


def buffered(s: Listing) -> bool:
    return any(e.name == s.target for st in s.h.top._streams.values() for e in st.entries)


async def test_the_stack_lets_the_kernel_do_data(tmp_path: Path) -> None:
    async with listing(tmp_path) as s:
        assert s.h.top.passthrough_blocker() is None
        rfd = await s.h.open("/d/f0001", os.O_RDONLY)
        assert s.h.top.passthrough_fd(rfd) is not None
        assert s.h.top.dump()["passthrough_writers"] == 0    # a reader writes nothing
        await s.h.close(rfd)


async def test_a_writer_open_gets_no_buffered_attributes(tmp_path: Path) -> None:
    """Written behind readdir-ahead while its entry waits in the buffer: the entry is
    handed out without attributes as long as the writer is open; after its release the
    listing is read again and the size is the file's."""
    async with listing(tmp_path) as s:
        await trio.testing.wait_all_tasks_blocked()
        assert buffered(s)                                   # read ahead with size 1
        wfd = await open_writer(s)
        size = kernel_write(s, b"written behind the graph")
        got = await s.rest()
        assert_not_stale(listed(s, got), size)
        assert listed(s, got).entry is None
        assert s.h.top.dump()["hits"] >= 2                   # served from the buffer
        assert s.h.top.dump()["unattributed"] == 1
        # again from the start, with the writer still open
        s.offset = 0
        await s.next()
        await s.next()
        await trio.testing.wait_all_tasks_blocked()
        size = kernel_write(s, b"more")
        assert_not_stale(listed(s, await s.rest()), size)
        await s.h.close(wfd)
        assert s.h.top.dump()["passthrough_writers"] == 0
        s.offset = 0
        await s.next()
        await s.next()
        await trio.testing.wait_all_tasks_blocked()
        assert buffered(s)
        entry = listed(s, await s.rest())
        assert entry.entry is not None and entry.entry.attr.size == size


async def test_release_discards_entries_read_while_it_wrote(tmp_path: Path) -> None:
    """Written and closed between the read-ahead and the listing: the entry buffered
    before the write is not served (its buffer is read again)."""
    async with listing(tmp_path) as s:
        await trio.testing.wait_all_tasks_blocked()
        assert buffered(s)
        wfd = await open_writer(s, os.O_RDWR)
        size = kernel_write(s, b"grown")
        await s.h.close(wfd)
        discards = s.h.top.dump()["discards"]
        assert discards >= 1 and not buffered(s)
        entry = listed(s, await s.rest())
        assert entry.entry is not None and entry.entry.attr.size == size


async def test_a_read_ahead_crossing_the_writers_release_is_not_trusted(
        tmp_path: Path) -> None:
    """A background read that stat'ed the file before the last write and returns after
    the writer's release: nothing was buffered when the release came, so only the
    inodes changed meanwhile can tell its reply is stale."""
    async with listing(tmp_path, **{"rda-request-size": "4096"}) as s:
        await trio.testing.wait_all_tasks_blocked()
        wfd = await open_writer(s)
        # start again so that the target's entry is in a read still under way
        answered = await s.restart_held()
        assert not buffered(s)
        size = kernel_write(s, b"after the stat")
        await s.h.close(wfd)
        s.gate.go.set()
        with trio.fail_after(5):
            await answered.wait()
        entry = listed(s, await s.rest())
        assert_not_stale(entry, size)
        assert s.h.top.dump()["unattributed"] >= 1


async def test_a_change_through_the_graph_crossing_a_read_ahead(tmp_path: Path) -> None:
    """The same race for a change that does pass through (a truncate): the entries of
    the read under way are handed out without attributes."""
    async with listing(tmp_path, **{"rda-request-size": "4096"}) as s:
        answered = await s.restart_held()
        await s.h.setattr(f"/d/{s.target.decode()}", size=12345)
        s.gate.go.set()
        with trio.fail_after(5):
            await answered.wait()
        assert_not_stale(listed(s, await s.rest()), 12345)


async def test_no_brick_file_no_writer(tmp_path: Path) -> None:
    """Over storage/memory there is no passthrough: nothing is counted."""
    h = Harness.stack(RDA)
    assert h.top.passthrough_blocker() is not None
    await h.write_file("/f", b"x")
    fd = await h.open("/f")
    assert h.top.passthrough_fd(fd) is None
    assert h.top.dump()["passthrough_writers"] == 0
    await h.close(fd)


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR])
async def test_writer_count_follows_opens_and_releases(tmp_path: Path, flags: int) -> None:
    async with listing(tmp_path) as s:
        fds = [await open_writer(s, flags) for _ in range(2)]
        assert s.h.top.passthrough_fd(fds[0]) is not None    # asked twice: counted once
        assert s.h.top.dump()["passthrough_writers"] == 2
        e = await s.h.lookup(f"/d/{s.target.decode()}")
        assert s.h.top._writing(e.inode)
        await s.h.close(fds[0])
        assert s.h.top._writing(e.inode)
        await s.h.close(fds[1])
        assert not s.h.top._writing(e.inode)
        assert s.h.top.dump()["passthrough_writers"] == 0


async def test_a_reply_past_the_budget_is_cut_where_the_kernel_continues(
        tmp_path: Path) -> None:
    """storage/posix may answer one readdirp entry past the byte budget (the bridge drops
    it): readdir-ahead hands out what fits, so that the kernel's next offset is the
    stream's and the read-ahead serves it (it used to discard and wind every request)."""
    async with listing(tmp_path) as s:
        await trio.testing.wait_all_tasks_blocked()
        s.offset = 0
        first = await s.next(1000)
        # cut in its columns: no DirEntry made, the bridge packs it from the columns
        assert type(first) is PlusBatch and first.unread()
        assert sum((152 + len(e.name) + 7) & ~7 for e in first) <= 1000
        hits = s.h.top.dump()["hits"]
        rest = await s.rest()
        assert s.h.top.dump()["hits"] > hits
        assert len(first) + len(rest) == FILES + 2
