"""performance/readdir-ahead: prefetch, offsets, invalidation, errors."""
from __future__ import annotations

import errno
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from xlators import FopError, Translator, default_registry
from xlators.core.inode import Fd
from xlators.core.upcall import InvalidateEntry, InvalidateInode
from xlators.performance.readdir_ahead import ReaddirAhead
from xlators.testing import Harness, check_passthrough, make_translator

RDA = "performance/readdir-ahead"


class Counter(Translator):
    type = "test/counter"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list = []
        self.fail_at: int | None = None

    async def readdirp(self, frame, fd, offset, size):
        self.calls.append(("readdirp", offset))
        if self.fail_at is not None and offset >= self.fail_at:
            raise FopError(errno.EIO)
        return await self.child.readdirp(frame, fd, offset, size)

    async def readdir(self, frame, fd, offset, size):
        self.calls.append(("readdir", offset))
        return await self.child.readdir(frame, fd, offset, size)


def build(**options):
    leaf = make_translator("storage/memory")
    counter = Counter("counter", [leaf], {}, itable=leaf.itable)
    opts = {k.replace("_", "-"): v for k, v in options.items()}
    rda = make_translator(RDA, (counter,), opts, itable=leaf.itable)
    h = Harness(rda)
    h.init()
    return h, counter, leaf


async def populate(h, n, path="/d"):
    await h.mkdir(path)
    for i in range(n):
        await h.write_file(f"{path}/f{i:04d}", b"x" * (i % 7))


async def opendir(h, path="/d"):
    e = await h.lookup(path)
    fd = Fd(e.inode, os.O_RDONLY, 0, is_dir=True)
    await h.top.opendir(h.frame(), e.inode, fd)
    return fd


async def read_all(h, fd, plus=True, size=4096, offset=0):
    out = []
    fop = h.top.readdirp if plus else h.top.readdir
    while True:
        batch = await fop(h.frame(), fd, offset, size)
        if not batch:
            return out
        out.extend(batch)
        offset = batch[-1].off


async def start(h, fd, size):
    """Two sequential readdirp requests: the second starts the read-ahead."""
    first = await h.top.readdirp(h.frame(), fd, 0, size)
    return first + await h.top.readdirp(h.frame(), fd, first[-1].off, size)


def names(entries):
    return [e.name for e in entries]


@dataclass
class Stream:
    h: Harness
    counter: Counter
    leaf: Translator
    fd: Fd


@asynccontextmanager
async def opened(files: int, **options):
    """readdir-ahead over ``files`` files in /d, with a nursery for its background reads
    and /d opened; the directory is released at the end of the block."""
    h, c, leaf = build(**options)
    await populate(h, files)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await opendir(h)
        yield Stream(h, c, leaf, fd)
        await h.top.releasedir(h.frame(), fd)


@pytest.mark.parametrize("plus", [True, False])
async def test_stream_is_the_childs_and_served_ahead(plus):
    async with opened(300) as s:
        got = await read_all(s.h, s.fd, plus)
        direct = await Harness(s.leaf).listdir("/d", plus=plus)
        assert names(got) == names(direct)
        assert [e.off for e in got] == [e.off for e in direct]
        if plus:
            assert all(e.entry is not None for e in got if e.name not in (b".", b".."))
        d = s.h.top.dump()
        assert d["misses"] == 1 and d["hits"] > 0 and d["prefetched"] > 0
    assert s.h.top.dump()["streams"] == 0


async def test_replies_fit_the_size_asked():
    async with opened(200) as s:
        offset = 0
        while True:
            batch = await s.h.top.readdirp(s.h.frame(), s.fd, offset, 1024)
            if not batch:
                break
            assert sum((152 + len(e.name) + 7) & ~7 for e in batch) <= 1024
            offset = batch[-1].off


async def test_seek_elsewhere_discards_and_restarts():
    async with opened(200) as s:
        h, fd = s.h, s.fd
        first = await h.top.readdirp(h.frame(), fd, 0, 2048)
        await trio.testing.wait_all_tasks_blocked()
        again = await h.top.readdirp(h.frame(), fd, 0, 2048)     # rewinddir
        assert names(again) == names(first)
        mid = first[5].off
        tail = await h.top.readdirp(h.frame(), fd, mid, 2048)    # seekdir
        assert names(tail)[0] == first[6].name


async def own_write(s: Stream, name: str, data: bytes) -> None:
    """Through readdir-ahead, which sees the write itself."""
    await s.h.write_file(f"/d/{name}", data)


async def storage_upcall(s: Stream, name: str, data: bytes) -> None:
    """Below readdir-ahead, then the storage tells it (an inode upcall)."""
    f = await Harness(s.leaf).lookup(f"/d/{name}")
    wfd = Fd(f.inode, os.O_RDWR)
    await s.leaf.open(s.h.frame(), f.inode, os.O_RDWR, wfd)
    await s.leaf.writev(s.h.frame(), wfd, data, 0)
    s.leaf.upcall(InvalidateInode(f.inode, -1, 0))


@pytest.mark.parametrize("change", [own_write, storage_upcall])
async def test_a_change_to_a_buffered_file_discards(change):
    async with opened(50) as s:
        first = await start(s.h, s.fd, 400)
        await trio.testing.wait_all_tasks_blocked()
        assert s.h.top.dump()["bytes"] > 0                  # f0040 is buffered
        await change(s, "f0040", b"now much longer than before")
        rest = await read_all(s.h, s.fd, offset=first[-1].off)
        f40 = [e for e in rest if e.name == b"f0040"][0]
        assert f40.entry.attr.size == len(b"now much longer than before")
        assert s.h.top.dump()["discards"] >= 1


async def test_entry_upcall_on_the_directory_discards():
    async with opened(20) as s:
        await start(s.h, s.fd, 400)
        await trio.testing.wait_all_tasks_blocked()
        before = s.h.top.dump()["discards"]
        s.leaf.upcall(InvalidateEntry(s.fd.inode, b"new"))
        assert s.h.top.dump()["discards"] == before + 1 and s.h.top.dump()["bytes"] == 0


async def test_background_error_reaches_the_request_that_needs_it():
    async with opened(200, rda_request_size="4096") as s:
        h, fd = s.h, s.fd
        first = await h.top.readdirp(h.frame(), fd, 0, 1024)
        s.counter.fail_at = first[-1].off           # every background read fails now
        h.top._discard(h.top._streams[id(fd)])
        with pytest.raises(FopError) as ei:
            await read_all(h, fd, offset=first[-1].off)
        assert ei.value.errno == errno.EIO
        s.counter.fail_at = None
        rest = await read_all(h, fd, offset=first[-1].off)
        assert len(first) + len(rest) == 202


async def test_high_wmark_and_cache_limit_bound_the_buffer():
    async with opened(500, rda_request_size="4096", rda_high_wmark="8KB",
                      rda_low_wmark="0") as s:
        await start(s.h, s.fd, 1024)
        await trio.testing.wait_all_tasks_blocked()
        assert 0 < s.h.top.dump()["bytes"] < 8192 + 4096


async def test_without_a_nursery_everything_is_wound():
    h, c, _ = build()
    await populate(h, 30)
    fd = await opendir(h)
    got = await read_all(h, fd)
    assert len(got) == 32 and h.top.dump()["hits"] == 0
    await h.top.releasedir(h.frame(), fd)


async def test_discarded_entries_inodes_are_forgotten_below():
    h, c, leaf = build()
    await populate(h, 40)
    for inode in list(h.itable):                   # as after the kernel forgot them
        if inode is not h.root:
            inode.nlookup = 0
            if h.itable.purge(inode):
                await leaf.forget(h.frame(), inode)
    before = len(h.itable)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await opendir(h)
        handed = await start(h, fd, 400)
        await trio.testing.wait_all_tasks_blocked()
        assert len(h.itable) > before + len(handed)   # buffered entries hold inodes
        await h.top.releasedir(h.frame(), fd)
    assert len(h.itable) <= before + len(handed)      # only those handed out remain


def test_options_follow_glusterfs():
    h, _, _ = build()
    o = h.top.opts
    assert o.rda_request_size == 131072 and o.rda_low_wmark == 4096
    assert o.rda_high_wmark == 131072 and o.rda_cache_limit == 10 << 20
    assert o.parallel_readdir is False
    with pytest.raises(ValueError):
        build(rda_low_wmark="1MB", rda_high_wmark="4KB")
    with pytest.raises(ValueError):
        h.top.reconfigure({"rda-low-wmark": "1MB", "rda-high-wmark": "4KB"})
    assert h.top.opts.rda_low_wmark == 4096
    h.top.reconfigure({"rda-high-wmark": "1MB"})
    assert h.top.opts.rda_high_wmark == 1 << 20
    assert default_registry().get(RDA) is ReaddirAhead


async def test_passthrough():
    checked = await check_passthrough(ReaddirAhead)
    for fop in ("readdir", "readdirp", "releasedir", "unlink", "writev", "open"):
        assert fop not in checked
    assert "lookup" in checked and "readv" in checked and "opendir" in checked


async def test_the_second_request_sets_the_kind_and_the_other_kind_skips_ahead():
    """The kernel asks READDIRPLUS at offset 0 and READDIR after (READDIRPLUS again after
    lookups): the stream prefetches what continues it, and a request of the other kind
    is wound with the buffered entries it covered skipped."""
    async with opened(300) as s:
        h, c, fd = s.h, s.counter, s.fd
        got = await h.top.readdirp(h.frame(), fd, 0, 4096)
        got += await h.top.readdir(h.frame(), fd, got[-1].off, 4096)
        await trio.testing.wait_all_tasks_blocked()
        assert set(k for k, _ in c.calls) == {"readdirp", "readdir"}
        assert c.calls.count(("readdirp", 0)) == 1
        got += await h.top.readdir(h.frame(), fd, got[-1].off, 4096)    # from the buffer
        plus = await h.top.readdirp(h.frame(), fd, got[-1].off, 2048)   # the other kind
        assert all(e.entry is not None for e in plus)
        got += plus
        while True:
            batch = await h.top.readdir(h.frame(), fd, got[-1].off, 4096)
            if not batch:
                break
            got += batch
        direct = await Harness(s.leaf).listdir("/d")
        assert names(got) == names(direct)
        assert h.top.dump()["hits"] >= 2


async def test_releasedir_waits_for_a_background_read_of_the_fd():
    h, c, leaf = build(rda_request_size="4096")
    await populate(h, 100)
    gate = trio.Event()
    events = []
    inner = c.readdirp
    background = []

    async def slow_readdirp(frame, fd, offset, size):
        if frame.unique == 0:                      # a background (system frame) read
            background.append(offset)
            if len(background) > 1:
                events.append("read-start")
                await gate.wait()
                events.append("read-end")
        return await inner(frame, fd, offset, size)
    c.readdirp = slow_readdirp
    inner_release = c.child.releasedir

    async def releasedir(frame, fd):
        events.append("releasedir")
        return await inner_release(frame, fd)
    c.releasedir = releasedir
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await opendir(h)
        await start(h, fd, 1024)
        await trio.testing.wait_all_tasks_blocked()
        assert events == ["read-start"]
        n.start_soon(h.top.releasedir, h.frame(), fd)
        await trio.testing.wait_all_tasks_blocked()
        assert "releasedir" not in events
        gate.set()
    assert events == ["read-start", "read-end", "releasedir"]
