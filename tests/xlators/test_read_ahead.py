"""performance/read-ahead over storage/memory: sequential detection, background prefetch,
discard on changes through any fd and on upcalls, cancellation, release."""
from __future__ import annotations

import os
import random

import pytest
import trio
import trio.testing

from xlators import SetAttr, default_registry
from xlators.core.options import OptionError
from xlators.core.upcall import InvalidateInode
from xlators.performance.read_ahead import ReadAhead
from xlators.testing import check_passthrough

from tests.xlators.perflib import build, write_below

RA = "performance/read-ahead"
PS = 4096
OPTS = {"page-size": "4KB", "page-count": "4"}


async def settle():
    await trio.testing.wait_all_tasks_blocked()


async def test_sequential_reads_are_prefetched_in_the_background():
    h, count, _ = build(RA, OPTS)
    data = random.Random(2).randbytes(20 * PS)
    await h.write_file("/f", data)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        assert await h.read(fd, PS, 0) == data[:PS]
        await settle()
        assert count.reads[-1] == (PS, 4 * PS)          # one read for the 4 pages after
        before = count.calls["readv"]
        for k in range(1, 5):
            assert await h.read(fd, PS, k * PS) == data[k * PS:(k + 1) * PS]
        await settle()
        # served from memory; each hit tops the window up with the next missing page
        assert all(off >= 5 * PS for off, _ in count.reads[before:])
        assert h.top.dump()["hits"] == 4
        off = 5 * PS
        while chunk := await h.read(fd, 3000, off):       # unaligned, to the end
            assert chunk == data[off:off + 3000]
            off += len(chunk)
        assert off == len(data)
        await h.close(fd)


async def test_random_reads_prefetch_nothing():
    h, count, _ = build(RA, OPTS)
    await h.write_file("/f", bytes(20 * PS))
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        for off in (5 * PS, 1 * PS, 9 * PS, 3 * PS):
            await h.read(fd, 100, off)
        await settle()
        assert count.calls["readv"] == 4
        await h.close(fd)


async def test_a_read_waits_for_the_fetch_of_its_page():
    h, count, gate = build(RA, OPTS, gate=True)
    data = bytes(range(256)) * 64
    await h.write_file("/f", data)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        assert await h.read(fd, PS, 0) == data[:PS]
        gate.close()                              # the prefetch (not yet run) will wait
        await gate.entered.wait()
        got = []

        async def reader():
            got.append(await h.read(fd, PS, PS))
        n.start_soon(reader)
        await settle()
        assert got == []                          # waiting for the fetch in flight
        gate.let_go()
        await settle()
        assert got == [data[PS:2 * PS]]
        assert (PS, PS) not in count.reads        # the reader's own read never wound
        await h.close(fd)


@pytest.mark.parametrize("how", ["write", "truncate", "punch", "upcall", "below-only"])
async def test_changes_through_any_fd_drop_prefetched_pages(how):
    h, count, _ = build(RA, OPTS)
    data = b"a" * (10 * PS)
    await h.write_file("/f", data)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        reader = await h.open("/f", os.O_RDONLY)
        other = await h.open("/f", os.O_RDWR)
        assert await h.read(reader, PS, 0) == data[:PS]
        await settle()                                      # pages 1..4 are prefetched
        expect = bytearray(data)
        if how == "write":
            await h.write(other, b"W" * 10, PS + 5)
            expect[PS + 5:PS + 15] = b"W" * 10
        elif how == "truncate":
            await h.top.setattr(h.frame(), other.inode, SetAttr(size=PS + 100))
            del expect[PS + 100:]
        elif how == "punch":
            await h.top.fallocate(h.frame(), other, 0x3, PS, 50)
            expect[PS:PS + 50] = bytes(50)
        else:
            await write_below(h, other, b"B" * 10, PS + 5)
            expect[PS + 5:PS + 15] = b"B" * 10
            if how == "upcall":
                h.top.child.upcall(InvalidateInode(other.inode, 0, 0))
        got = await h.read(reader, PS, PS)
        if how == "below-only":     # nobody told read-ahead: the prefetched page is served
            assert got == data[PS:2 * PS]
        else:
            assert got == bytes(expect[PS:2 * PS])
        await h.close(reader)
        await h.close(other)


async def test_a_fetch_in_flight_during_a_write_is_cancelled_and_discarded():
    h, count, gate = build(RA, OPTS, gate=True)
    await h.write_file("/f", b"o" * (8 * PS))
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDWR)
        await h.read(fd, PS, 0)
        await settle()                            # pages 1..4 are in memory
        gate.close()
        await h.read(fd, PS, PS)                  # a hit: fetches page 5, held
        await gate.entered.wait()                 # ... with the old data in hand
        st = fd.ctx[h.top]
        await h.write(fd, b"N" * PS, 5 * PS)
        await settle()
        assert st.running == 0                    # cancelled while held
        gate.let_go()
        for k in range(2, 6):
            want = b"N" * PS if k == 5 else b"o" * PS
            assert await h.read(fd, PS, k * PS) == want, k
        await h.close(fd)


async def test_release_waits_for_and_cancels_fetches():
    h, count, gate = build(RA, OPTS, gate=True)
    await h.write_file("/f", bytes(8 * PS))
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        await h.read(fd, PS, 0)
        gate.close()
        await gate.entered.wait()                 # the prefetch is held below
        st = fd.ctx[h.top]
        await h.close(fd)                         # cancels it and waits for it
        assert st.running == 0
        assert h.top not in fd.inode.ctx
        gate.let_go()


async def test_without_a_nursery_reads_go_through():
    h, count, _ = build(RA, OPTS)
    await h.write_file("/f", bytes(8 * PS))
    fd = await h.open("/f", os.O_RDONLY)
    for k in range(4):
        await h.read(fd, PS, k * PS)
    assert count.calls["readv"] == 4


async def test_force_atime_update_and_pass_through():
    h, count, _ = build(RA, {**OPTS, "force-atime-update": "on"})
    await h.write_file("/f", bytes(8 * PS))
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        await h.read(fd, PS, 0)
        await settle()
        atime = (await h.top.getattr(h.frame(), fd.inode)).atime_ns
        await trio.sleep(0.01)
        await h.read(fd, PS, PS)
        assert (await h.top.getattr(h.frame(), fd.inode)).atime_ns > atime
        await h.close(fd)
    h, count, _ = build(RA, {**OPTS, "pass-through": "on"})
    await h.write_file("/f", bytes(8 * PS))
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        for k in range(3):
            await h.read(fd, PS, k * PS)
        await settle()
        assert count.calls["readv"] == 3
        await h.close(fd)


async def test_shadow_file_with_sequential_readers_and_writers():
    rnd = random.Random(11)
    h, count, _ = build(RA, OPTS)
    shadow = bytearray()
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fds = [await h.create("/s"), await h.open("/s", os.O_RDONLY),
               await h.open("/s", os.O_WRONLY | os.O_APPEND)]
        pos = 0
        for step in range(800):
            op = rnd.choice(["seq", "seq", "seq", "jump", "write", "append", "trunc"])
            if op == "seq" or op == "jump":
                if op == "jump":
                    pos = rnd.randrange(len(shadow) + 1)
                size = rnd.randrange(1, 3 * PS)
                got = await h.read(fds[1], size, pos)
                assert got == bytes(shadow[pos:pos + size]), f"step {step}"
                pos += len(got)
            elif op == "write":
                off, data = rnd.randrange(30 * PS), rnd.randbytes(rnd.randrange(1, 2 * PS))
                await h.write(fds[0], data, off)
                shadow.extend(bytes(max(0, off - len(shadow))))
                shadow[off:off + len(data)] = data
            elif op == "append":
                data = rnd.randbytes(rnd.randrange(1, PS))
                await h.write(fds[2], data, 0)
                shadow += data
            else:
                size = rnd.randrange(30 * PS)
                await h.top.setattr(h.frame(), fds[0].inode, SetAttr(size=size))
                del shadow[size:]
                shadow.extend(bytes(size - len(shadow)))
            if rnd.random() < 0.3:
                await settle()
        for fd in fds:
            await h.close(fd)


def test_options():
    h, _, _ = build(RA)
    assert h.top.opts.page_count == 4 and h.top.opts.page_size == 128 << 10
    with pytest.raises(OptionError):
        build(RA, {"page-count": "17"})
    assert default_registry().get(RA) is ReadAhead


async def test_passthrough_conformance():
    checked = await check_passthrough(ReadAhead)
    for fop in ("readv", "writev", "setattr", "fallocate", "release", "open"):
        assert fop not in checked
    assert "unlink" in checked and "lookup" in checked


@pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")
async def test_change_in_a_watched_brick_drops_prefetched_pages(tmp_path):
    brick = tmp_path / "brick"
    brick.mkdir()
    (brick / "f").write_bytes(b"o" * (8 * PS))
    h, count, _ = build(RA, OPTS, leaf="storage/posix",
                        leaf_options={"directory": str(brick), "reserve": "0",
                                      "watch-brick": "on"})
    posix = h.top.child.child
    try:
        async with trio.open_nursery() as n:
            h.attach_nursery(n)
            fd = await h.open("/f", os.O_RDONLY)
            await h.read(fd, PS, 0)
            await settle()                                  # pages 1..4 prefetched
            with open(brick / "f", "r+b") as f:
                f.seek(PS)
                f.write(b"N" * PS)
            w = posix._watch
            assert w.dispatch(w.read_available()) >= 1
            assert await h.read(fd, PS, PS) == b"N" * PS
            await h.close(fd)
            n.cancel_scope.cancel()
    finally:
        h.fini()


async def test_the_end_of_file_is_never_answered_from_a_prefetched_page():
    # The file grew below (another client, no upcall) after the page holding its end
    # was prefetched: a read across that old end must not come back short.  (A short
    # READ makes the kernel cut the file's size: GlusterFS's read caches return such
    # stale short reads after appends through another client.)
    h, count, _ = build(RA, OPTS)
    await h.write_file("/f", b"a" * (PS + 100))
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.open("/f", os.O_RDONLY)
        assert await h.read(fd, PS, 0) == b"a" * PS
        await settle()                                   # page 1 (100 bytes) fetched
        await write_below(h, fd, b"b" * 1000, PS + 100)  # appended below
        assert await h.read(fd, PS, PS) == b"a" * 100 + b"b" * 1000
        await h.close(fd)
