"""performance/io-cache over storage/memory (and posix for a real upcall): hits, own
changes through any fd, revalidation, upcalls, limits, races, and a shadow-file check."""
from __future__ import annotations

import os
import random

import pytest
import trio

from xlators import SetAttr, default_registry
from xlators.core.events import Event
from xlators.core.options import OptionError
from xlators.core.upcall import InvalidateInode
from xlators.performance.io_cache import PAGE_SIZE, IoCache
from xlators.testing import check_passthrough

from tests.xlators.perflib import build, write_below

IOC = "performance/io-cache"
PUNCH = 0x2 | 0x1          # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


async def test_second_read_is_served_from_memory():
    h, count, _ = build(IOC)
    await h.write_file("/f", b"x" * 1000)
    fd = await h.open("/f", os.O_RDONLY)
    assert await h.read(fd, 1000) == b"x" * 1000
    n = count.calls["readv"]
    assert await h.read(fd, 100, 500) == b"x" * 100
    fd2 = await h.open("/f", os.O_RDONLY)               # another fd shares the pages
    assert await h.read(fd2, 1000) == b"x" * 1000
    assert count.calls["readv"] == n
    assert h.top.dump()["hits"] >= 2


async def test_reads_across_pages_and_past_the_end():
    h, count, _ = build(IOC)
    data = random.Random(1).randbytes(3 * PAGE_SIZE + 77)
    await h.write_file("/f", data)
    fd = await h.open("/f", os.O_RDONLY)
    for off, size in [(0, 10), (PAGE_SIZE - 5, 10), (0, len(data) + 100),
                      (2 * PAGE_SIZE + 3, PAGE_SIZE), (len(data) - 1, 5), (len(data), 5),
                      (len(data) + PAGE_SIZE * 4, 5)]:
        assert await h.read(fd, size, off) == data[off:off + size], (off, size)


async def test_append_through_one_fd_is_read_through_another():
    # GlusterFS 10.3's io-cache returns stale short reads here.
    h, count, _ = build(IOC)
    await h.write_file("/f", b"a" * 100)
    reader = await h.open("/f", os.O_RDONLY)
    appender = await h.open("/f", os.O_WRONLY | os.O_APPEND)
    assert await h.read(reader, 4096) == b"a" * 100          # a short page is cached
    for i in range(5):
        # the offset is ignored by an O_APPEND fd: the data lands at the end
        await h.write(appender, bytes([65 + i]) * 50, 0)
        expect = b"a" * 100 + b"".join(bytes([65 + k]) * 50 for k in range(i + 1))
        assert await h.read(reader, 4096) == expect
        assert await h.read(reader, 10, len(expect) - 5) == expect[-5:]


async def test_truncate_down_and_up_through_another_fd():
    h, count, _ = build(IOC)
    data = bytes(range(256)) * 1024                    # 256 KiB: two pages
    await h.write_file("/f", data)
    reader = await h.open("/f", os.O_RDONLY)
    writer = await h.open("/f", os.O_RDWR)
    assert await h.read(reader, len(data)) == data
    await h.top.setattr(h.frame(), writer.inode, SetAttr(size=1000), writer)
    assert await h.read(reader, len(data)) == data[:1000]
    await h.top.setattr(h.frame(), writer.inode, SetAttr(size=PAGE_SIZE + 10))
    assert await h.read(reader, len(data)) == data[:1000] + bytes(PAGE_SIZE + 10 - 1000)
    await h.close(writer)
    fd = await h.open("/f", os.O_RDWR | os.O_TRUNC)
    assert await h.read(reader, 100) == b""
    await h.close(fd)


@pytest.mark.parametrize("how", ["write", "punch", "zero", "copy"])
async def test_own_changes_through_any_fd_drop_the_pages(how):
    h, count, _ = build(IOC)
    await h.write_file("/f", b"y" * 5000)
    await h.write_file("/src", b"S" * 100)
    reader = await h.open("/f", os.O_RDONLY)
    other = await h.open("/f", os.O_RDWR)
    assert await h.read(reader, 5000) == b"y" * 5000
    if how == "write":
        await h.write(other, b"W" * 100, 10)
        expect = b"y" * 10 + b"W" * 100 + b"y" * 4890
    elif how == "punch":
        await h.top.fallocate(h.frame(), other, PUNCH, 10, 100)
        expect = b"y" * 10 + bytes(100) + b"y" * 4890
    elif how == "zero":
        await h.top.fallocate(h.frame(), other, 0x10, 10, 100)     # ZERO_RANGE
        expect = b"y" * 10 + bytes(100) + b"y" * 4890
    else:
        src = await h.open("/src", os.O_RDONLY)
        assert await h.top.copy_file_range(h.frame(), src, 0, other, 10, 100, 0) == 100
        expect = b"y" * 10 + b"S" * 100 + b"y" * 4890
    assert await h.read(reader, 5000) == expect


async def test_upcall_from_below_drops_the_pages_and_goes_on_up():
    h, count, _ = build(IOC, {"cache-timeout": "60"})
    seen = []

    class Parent:
        def notify(self, event, data=None, source=None):
            seen.append((event, data))
    h.top.parents.append(Parent())
    await h.write_file("/f", b"old!" * 10)
    fd = await h.open("/f", os.O_RDONLY)
    assert await h.read(fd, 40) == b"old!" * 10
    await write_below(h, fd, b"new!", 0)
    assert await h.read(fd, 4) == b"old!"             # trusted for cache-timeout
    msg = InvalidateInode(fd.inode, 0, 0)
    h.top.child.upcall(msg)
    assert seen == [(Event.UPCALL, msg)]
    assert await h.read(fd, 8) == b"new!old!"


async def test_attribute_upcall_makes_the_next_read_check():
    h, count, _ = build(IOC, {"cache-timeout": "60"})
    await h.write_file("/f", b"a" * 10)
    fd = await h.open("/f", os.O_RDONLY)
    await h.read(fd, 10)
    await write_below(h, fd, b"bb", 10)                # size changes
    h.top.child.upcall(InvalidateInode(fd.inode, -1, 0))
    assert await h.read(fd, 100) == b"a" * 10 + b"bb"


async def test_change_in_a_watched_brick_is_seen(watched_brick):
    await watched_brick(IOC, {"cache-timeout": "60"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_cache_timeout_bounds_an_unannounced_change(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("xlators.performance.io_cache.time", clock)
    h, count, _ = build(IOC, {"cache-timeout": "2"})
    await h.write_file("/f", b"one")
    fd = await h.open("/f", os.O_RDONLY)
    assert await h.read(fd, 10) == b"one"
    await write_below(h, fd, b"three", 0)              # size and mtime change
    clock.now += 1.5
    assert await h.read(fd, 10) == b"one"              # within cache-timeout: trusted
    clock.now += 1.0
    assert await h.read(fd, 10) == b"three"            # past it: checked, dropped


async def test_cache_timeout_zero_checks_every_read():
    h, count, _ = build(IOC, {"cache-timeout": "0"})
    await h.write_file("/f", b"one")
    fd = await h.open("/f", os.O_RDONLY)
    assert await h.read(fd, 10) == b"one"
    await write_below(h, fd, b"three", 0)
    assert await h.read(fd, 10) == b"three"


async def test_lookup_and_open_revalidate():
    h, count, _ = build(IOC, {"cache-timeout": "60"})
    await h.write_file("/f", b"one")
    fd = await h.open("/f", os.O_RDONLY)
    assert await h.read(fd, 10) == b"one"
    await write_below(h, fd, b"three", 0)
    await h.lookup("/f")                               # the reply's size differs
    assert await h.read(fd, 10) == b"three"
    await write_below(h, fd, b"fives", 0)              # same size, new mtime
    fd2 = await h.open("/f", os.O_RDONLY)              # open: the next read checks
    assert await h.read(fd2, 10) == b"fives"


async def test_a_fill_racing_a_write_is_not_kept():
    h, count, gate = build(IOC, gate=True)
    await h.write_file("/f", b"old" * 10)
    fd = await h.open("/f", os.O_RDWR)
    gate.close()
    async with trio.open_nursery() as n:
        got = []

        async def reader():
            got.append(await h.read(fd, 30))
        n.start_soon(reader)
        await gate.entered.wait()                      # the read has the old data
        await h.write(fd, b"NEW", 0)
        gate.let_go()
    assert got == [b"old" * 10]
    assert await h.read(fd, 30) == b"NEW" + b"old" * 9


async def test_priority_zero_min_and_max_size_and_o_direct_read_through():
    h, count, _ = build(IOC, {"priority": "*.nocache:0,*.big:3", "min-file-size": "10",
                              "max-file-size": "1000"})
    for name, data in [("a.nocache", b"x" * 100), ("tiny", b"x"), ("huge", b"x" * 2000),
                       ("ok.big", b"x" * 100)]:
        await h.write_file("/" + name, data)
    for name, cached in [("a.nocache", False), ("tiny", False), ("huge", False),
                         ("ok.big", True)]:
        fd = await h.open("/" + name, os.O_RDONLY)
        await h.read(fd, 10)
        n = count.calls["readv"]
        await h.read(fd, 10)
        assert (count.calls["readv"] == n) == cached, name
    assert h.itable.find((await h.lookup("/ok.big")).inode.ino).ctx[h.top].priority == 3
    fd = await h.open("/ok.big", os.O_RDONLY | os.O_DIRECT)
    n = count.calls["readv"]
    await h.read(fd, 10)
    assert count.calls["readv"] == n + 1


async def test_cache_size_limit_evicts_lowest_priority_first():
    h, count, _ = build(IOC, {"cache-size": "4MB", "priority": "keep*:5"})
    await h.write_file("/keep", b"k" * (2 << 20))
    await h.write_file("/other", b"o" * (3 << 20))
    keep = await h.open("/keep", os.O_RDONLY)
    other = await h.open("/other", os.O_RDONLY)
    await h.read(keep, 2 << 20)
    await h.read(other, 3 << 20)
    d = h.top.dump()
    assert d["cache-used"] <= 4 << 20 and d["evictions"] > 0
    n = count.calls["readv"]
    assert await h.read(keep, 2 << 20) == b"k" * (2 << 20)
    assert count.calls["readv"] == n                   # priority 5 kept


async def test_pass_through():
    h, count, _ = build(IOC, {"pass-through": "on"})
    await h.write_file("/f", b"x" * 10)
    fd = await h.open("/f", os.O_RDONLY)
    await h.read(fd, 10)
    await h.read(fd, 10)
    assert count.calls["readv"] == 2


async def test_shadow_file_with_three_fds_and_changes_below():
    rnd = random.Random(7)
    h, count, _ = build(IOC, {"cache-timeout": "0"})
    shadow = bytearray()
    fd0 = await h.create("/s")
    fds = [fd0, await h.open("/s", os.O_RDWR), await h.open("/s", os.O_WRONLY | os.O_APPEND)]

    def put(data, off):
        if off > len(shadow):
            shadow.extend(bytes(off - len(shadow)))
        shadow[off:off + len(data)] = data
    for step in range(600):
        op = rnd.choice(["write", "append", "trunc", "read", "read", "read", "below",
                         "punch"])
        where = f"step {step} {op}"
        if op == "write":
            off, data = rnd.randrange(400_000), rnd.randbytes(rnd.randrange(1, 70_000))
            await h.write(fds[rnd.randrange(2)], data, off)
            put(data, off)
        elif op == "append":
            data = rnd.randbytes(rnd.randrange(1, 3000))
            await h.write(fds[2], data, 0)
            put(data, len(shadow))
        elif op == "below":
            off, data = rnd.randrange(400_000), rnd.randbytes(rnd.randrange(1, 5000))
            await write_below(h, fd0, data, off)
            put(data, off)
        elif op == "trunc":
            size = rnd.randrange(400_000)
            await h.top.setattr(h.frame(), fd0.inode, SetAttr(size=size))
            del shadow[size:]
            shadow.extend(bytes(size - len(shadow)))
        elif op == "punch":
            off, n = rnd.randrange(400_000), rnd.randrange(1, 200_000)
            await h.top.fallocate(h.frame(), fds[1], PUNCH, off, n)
            end = min(off + n, len(shadow))
            if off < end:
                shadow[off:end] = bytes(end - off)
        else:
            off, size = rnd.randrange(450_000), rnd.randrange(1, 300_000)
            got = await h.read(fds[rnd.randrange(2)], size, off)
            assert got == bytes(shadow[off:off + size]), where
    assert await h.read(fd0, 1 << 20) == bytes(shadow)


def test_options():
    h, _, _ = build(IOC, {"force-revalidate-timeout": "5", "priority": "*.a:2, b*:0"})
    assert h.top.opts.cache_timeout == 5
    assert h.top.opts.priority == (("*.a", 2), ("b*", 0))
    assert h.top.opts.cache_size == 32 << 20 and h.top.opts.max_file_size == 0
    with pytest.raises(OptionError, match="priority"):
        build(IOC, {"priority": "*.a"})
    with pytest.raises(OptionError):
        build(IOC, {"cache-timeout": "61"})
    with pytest.raises(ValueError, match="min-file-size"):
        build(IOC, {"min-file-size": "2MB", "max-file-size": "1MB"})
    assert default_registry().get(IOC) is IoCache


async def test_passthrough_conformance():
    checked = await check_passthrough(IoCache)
    for fop in ("readv", "writev", "setattr", "fallocate", "copy_file_range", "open",
                "lookup", "forget"):
        assert fop not in checked
    assert "unlink" in checked and "readdir" in checked


@pytest.mark.parametrize("changes", [SetAttr(mode=0o600), SetAttr(uid=0, gid=0),
                                     SetAttr(atime_ns=5, mtime_ns=7)])
async def test_a_setattr_does_not_vouch_for_pages_older_than_a_change_below(changes):
    # The reply to a chmod, chown or utimes carries the file's mtime as it is now,
    # after a change made below without an upcall: it says nothing about the pages.
    h, count, _ = build(IOC, {"cache-timeout": "0"})
    await h.write_file("/f", b"old!" * 10)
    fd = await h.open("/f", os.O_RDONLY)
    assert await h.read(fd, 40) == b"old!" * 10
    await write_below(h, fd, b"new!", 0)               # same size, another mtime
    await h.top.setattr(h.frame(), fd.inode, changes)
    assert await h.read(fd, 8) == b"new!old!"
