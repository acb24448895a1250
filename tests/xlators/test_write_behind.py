"""performance/write-behind over storage/memory: ordering, visibility, windows, failures."""
from __future__ import annotations

import errno
import os
import random

import pytest
import trio
import trio.testing

from xlators import FopError, InodeTable, SetAttr, Translator, default_registry
from xlators.core.options import OptionError
from xlators.performance.write_behind import WriteBehind
from xlators.testing import Harness, check_passthrough, make_translator

WB = "performance/write-behind"


# -- test translators (not registered: built by hand) ---------------------------------

class Gate(Translator):
    """Holds writev (and, when asked, flush) until opened; records what it saw."""
    type = "test/gate"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.opened = trio.Event()
        self.flush_opened = trio.Event()
        self.flush_opened.set()
        self.events: list = []

    def open_gate(self):
        self.opened.set()

    def close_gate(self):
        self.opened = trio.Event()

    async def writev(self, frame, fd, data, offset, flags=None):
        self.events.append(("writev", offset, len(data)))
        await self.opened.wait()
        return await self.child.writev(frame, fd, data, offset, flags)

    async def flush(self, frame, fd):
        self.events.append(("flush", frame.lk_owner))
        await self.flush_opened.wait()
        await self.child.flush(frame, fd)
        self.events.append(("flush-done",))

    async def fsync(self, frame, fd, datasync):
        self.events.append(("fsync",))
        return await self.child.fsync(frame, fd, datasync)

    async def release(self, frame, fd):
        self.events.append(("release",))
        return await self.child.release(frame, fd)

    def writes(self):
        return [e for e in self.events if e[0] == "writev"]


class Jitter(Translator):
    """Adds a random number of checkpoints before data fops, to shake interleavings."""
    type = "test/jitter"

    def __init__(self, *a, seed=0, **kw):
        super().__init__(*a, **kw)
        self.rnd = random.Random(seed)

    async def _jit(self):
        for _ in range(self.rnd.randrange(4)):
            await trio.lowlevel.checkpoint()

    async def writev(self, frame, fd, data, offset, flags=None):
        await self._jit()
        return await self.child.writev(frame, fd, data, offset, flags)

    async def readv(self, frame, fd, size, offset, flags=None):
        await self._jit()
        return await self.child.readv(frame, fd, size, offset, flags)

    async def setattr(self, frame, inode, changes, fd=None):
        await self._jit()
        return await self.child.setattr(frame, inode, changes, fd)


def build(*middles, leaf="storage/memory", leaf_opts=None, md_cache=None, **wb_opts):
    """write-behind over the given middle translators (instances made from classes or
    factories) over ``leaf``; with ``md_cache`` (its options), performance/md-cache over
    write-behind is the harness's top.  wb_opts use underscores for dashes."""
    itable = InodeTable()
    node = make_translator(leaf, (), leaf_opts or {}, itable=itable)
    made = []
    for m in reversed(middles):
        node = m("mid", [node], {}, itable=itable) if isinstance(m, type) else m(node, itable)
        made.insert(0, node)
    opts = {k.replace("_", "-").replace("strict-O-DIRECT", "strict-O_DIRECT"): v
            for k, v in wb_opts.items()}
    top = WriteBehind("wb", [node], opts, itable=itable)
    if md_cache is not None:
        top = make_translator("performance/md-cache", (top,), md_cache, itable=itable)
    h = Harness(top)
    h.init()
    return h, made


def error_gen(**opts):
    def factory(child, itable):
        return make_translator("debug/error-gen", (child,),
                               {k.replace("_", "-"): v for k, v in opts.items()},
                               itable=itable)
    return factory


def key(h, fd, what):
    return f"inode.{fd.inode.ino}.{what}"


async def settle():
    await trio.testing.wait_all_tasks_blocked()


async def once_landed(n, gate, *asks, held=None):
    """Run each of ``asks`` (async functions of no arguments) in the nursery ``n``: none
    may answer while ``gate`` holds the queued writes (nor may ``held()``, when given,
    be false then); the gate is opened, and their answers come back in the order
    given (each must have answered once the writes landed)."""
    got = {}

    async def run(i, ask):
        got[i] = await ask()
    for i, ask in enumerate(asks):
        n.start_soon(run, i, ask)
    await settle()
    assert got == {}, "answered before the queued writes landed"
    assert held is None or held()
    gate.open_gate()
    await settle()
    assert len(got) == len(asks), "still waiting after the queued writes landed"
    return [got[i] for i in range(len(asks))]


# -- basics ---------------------------------------------------------------------------

async def test_write_is_acknowledged_before_it_lands():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        assert await h.write(fd, b"hello", 0) == 5       # gate closed: still answered
        assert gate.writes() == []                       # not even wound yet
        d = h.top.dump()
        assert d[key(h, fd, "pending_bytes")] == 5 and d["inodes"] == 1
        # a read waits for the write it must see
        assert await once_landed(n, gate, lambda: h.read(fd, 100)) == [b"hello"]
        await h.close(fd)
    assert h.top.dump()["inodes"] == 0


async def test_without_a_nursery_writes_go_through():
    h, (gate,) = build(Gate)
    gate.open_gate()
    fd = await h.create("/f")
    await h.write(fd, b"abc", 0)
    assert gate.writes() == [("writev", 0, 3)]
    await h.close(fd)                                   # flush is synchronous too
    assert [e[0] for e in gate.events] == ["writev", "flush", "flush-done", "release"]
    assert await h.read_file("/f") == b"abc"


async def test_read_only_waits_for_writes_it_can_see():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        gate.open_gate()
        await h.write(fd, b"0123456789", 0)
        await settle()
        gate.close_gate()
        await h.write(fd, b"XY", 20)                     # pending, ends at 22
        # a read that ends before the pending write starts... still must wait: the
        # pending write makes the file longer, so [8, 18) is b"89" + 8 zero bytes
        assert await once_landed(n, gate, lambda: h.read(fd, 10, 8)) == [b"89" + bytes(8)]
        await h.close(fd)


async def test_attributes_include_pending_writes():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"x" * 10, 100)
        frame = h.frame()
        # getattr, lookup and readdirp wait for the queued writes (mtime, ctime and
        # set-id bits change where they land)

        async def lookup():
            return (await h.lookup("/f")).attr

        async def listing():
            plus = {d.name: d for d in await h.listdir("/", plus=True)}
            return plus[b"f"].entry.attr

        got = await once_landed(n, gate, lambda: h.top.getattr(frame, fd.inode), lookup,
                                listing)
        assert [a.size for a in got] == [110] * 3
        await h.top.fsync(frame, fd, 0)
        assert (await h.top.getattr(frame, fd.inode)).size == 110
        assert (await h.stat("/f")).size == 110                    # lookup + getattr
        await h.close(fd)


async def test_truncate_and_setattr_wait_for_pending_writes():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"a" * 100, 0)
        done = await once_landed(
            n, gate, lambda: h.top.setattr(h.frame(), fd.inode, SetAttr(size=50)))
        assert done[0].size == 50
        assert await h.read(fd, 1000) == b"a" * 50
        await h.close(fd)


async def test_overlapping_writes_land_in_order():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        f1 = await h.create("/f")
        f2 = await h.open("/f")
        await h.write(f1, b"a" * 10, 0)
        await h.write(f2, b"b" * 10, 5)        # another fd: not merged, queued after
        await h.write(f1, b"c" * 3, 0)
        await h.write(f2, b"d" * 2, 13)
        gate.open_gate()
        assert await h.read(f2, 100) == b"ccc" + b"aa" + b"b" * 8 + b"dd"
        await h.close(f1)
        await h.close(f2)


async def test_contiguous_writes_are_aggregated():
    h, (gate,) = build(Gate, aggregate_size="64KB", trickling_writes="off")
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        data = bytes(range(256)) * 4
        for i in range(100):                       # 100 KB in 1 KB writes
            await h.write(fd, data, i * 1024)
        await settle()
        gate.open_gate()
        await h.top.fsync(h.frame(), fd, 0)
        assert gate.writes() == [("writev", 0, 65536), ("writev", 65536, 36864)]
        # overlapping rewrites merge too; a write before the tail's start as well
        gate.events.clear()
        await h.write(fd, b"x" * 100, 200_000)
        await h.write(fd, b"y" * 50, 200_050)
        await h.write(fd, b"z" * 60, 199_990)
        await h.top.fsync(h.frame(), fd, 0)
        assert gate.writes() == [("writev", 199_990, 110)]
        assert await h.read(fd, 110, 199_990) == b"z" * 60 + b"y" * 50
        assert await h.read(fd, 1024, 50 * 1024) == data
        await h.close(fd)


async def test_trickling_writes_wind_at_once_and_aggregate_behind():
    h, (gate,) = build(Gate)                   # trickling on (default)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"q" * 100, 0)
        await settle()
        assert gate.writes() == [("writev", 0, 100)]   # the first, at once
        for i in range(1, 10):                         # the rest merge behind it
            await h.write(fd, b"q" * 100, i * 100)
        gate.open_gate()
        await h.top.fsync(h.frame(), fd, 0)
        assert gate.writes() == [("writev", 0, 100), ("writev", 100, 900)]
        await h.close(fd)


async def test_trickling_off_holds_small_writes_until_needed():
    h, (gate,) = build(Gate, trickling_writes="off")
    gate.open_gate()
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"small", 0)
        await settle()
        assert gate.writes() == []                   # waiting to be merged
        await h.top.fsync(h.frame(), fd, 0)          # fsync needs it
        assert gate.writes() == [("writev", 0, 5)]
        await h.close(fd)


async def test_window_backpressure(autojump_clock):
    h, (gate,) = build(Gate, cache_size="64KB", aggregate_size="16KB")
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        f2 = await h.open("/f")
        block = b"w" * 16384
        for i in range(4):                       # 64 KB: the whole window
            await h.write(fd if i % 2 else f2, block, i * 16384)
        assert h.top.dump()[key(h, fd, "pending_bytes")] == 65536
        acked = []

        async def writer():
            await h.write(fd, b"v" * 16384, 65536)
            acked.append(True)
        n.start_soon(writer)
        await settle()
        assert acked == []
        # a waiting writer can be cancelled: nothing gets queued
        with trio.move_on_after(1) as cs:
            await h.write(f2, b"never", 0)
        assert cs.cancelled_caught
        gate.open_gate()
        await settle()
        assert acked == [True]
        assert await h.read(fd, 100_000) == block * 4 + b"v" * 16384
        await h.close(fd)
        await h.close(f2)


async def test_large_write_goes_through_in_order():
    h, (gate,) = build(Gate, cache_size="8KB", aggregate_size="4KB")
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"a" * 100, 0)
        done = await once_landed(n, gate, lambda: h.write(fd, b"b" * 8192, 50),
                                 held=lambda: gate.writes() == [("writev", 0, 100)])
        assert done == [8192]
        assert await h.read(fd, 10_000) == b"a" * 50 + b"b" * 8192
        await h.close(fd)


@pytest.mark.parametrize("flag,strict,through", [
    (os.O_SYNC, "off", True), (os.O_DSYNC, "off", True), (os.O_APPEND, "off", True),
    (os.O_DIRECT, "on", True), (os.O_DIRECT, "off", False), (0, "on", False)])
async def test_sync_append_and_direct_fds(flag, strict, through):
    h, (gate,) = build(Gate, strict_O_DIRECT=strict)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        f0 = await h.create("/f")
        fd = await h.open("/f", os.O_RDWR | flag)
        await h.write(f0, b"0" * 10, 0)                   # queued behind the gate
        done = []

        async def writer():
            done.append(await h.write(fd, b"1" * 5, 10))
        n.start_soon(writer)
        await settle()
        assert done == ([] if through else [5])
        gate.open_gate()
        await settle()
        assert done == [5]
        assert await h.read(f0, 100) == b"0" * 10 + b"1" * 5
        await h.close(fd)
        await h.close(f0)


class ShortWrites(Translator):
    """Writes only half of each request (at least one byte)."""
    type = "test/short-writes"

    async def writev(self, frame, fd, data, offset, flags=None):
        half = data[:max(1, len(data) // 2)]
        return await self.child.writev(frame, fd, half, offset, flags)


async def test_short_writes_are_completed():
    h, _ = build(ShortWrites)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, bytes(range(200)), 10)
        await h.top.fsync(h.frame(), fd, 0)
        assert await h.read(fd, 1000) == bytes(10) + bytes(range(200))
        await h.close(fd)


async def test_data_fops_wait_for_pending_writes():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        f2 = await h.create("/g")
        await h.write(fd, b"a" * 8192, 0)
        fr = h.frame()
        _, _, copied = await once_landed(
            n, gate,
            lambda: h.top.fallocate(fr, fd, 3, 0, 4096),              # KEEP_SIZE|PUNCH
            lambda: h.top.lseek(fr, fd, 0, 3),                        # SEEK_DATA
            lambda: h.top.copy_file_range(fr, fd, 4096, f2, 0, 4096, 0))
        assert copied == 4096
        assert await h.read(fd, 10_000) == bytes(4096) + b"a" * 4096
        assert await h.read(f2, 10_000) == b"a" * 4096
        # open with O_TRUNC lands after the writes queued before it
        gate.close_gate()
        await h.write(fd, b"b" * 100, 0)
        opened = await once_landed(n, gate, lambda: h.open("/f", os.O_RDWR | os.O_TRUNC))
        assert await h.read(opened[0], 100) == b""
        for f in (fd, f2, opened[0]):
            await h.close(f)


async def test_link_reports_pending_size():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"x" * 10, 0)
        loc = await h.parent_loc("/l")
        # it waits for the write (its mtime)
        got = await once_landed(n, gate, lambda: h.top.link(h.frame(), fd.inode, loc))
        assert got[0].attr.size == 10
        await h.close(fd)


async def test_after_the_nursery_closed_writes_go_through():
    h, (gate,) = build(Gate)
    gate.open_gate()
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
    await h.write(fd, b"late", 0)                  # no nursery to spawn in any more
    assert gate.writes() == [("writev", 0, 4)]
    await h.close(fd)
    assert await h.read_file("/f") == b"late"


# -- fsync, flush, release -------------------------------------------------------------

async def test_fsync_waits_for_pending_writes_then_winds():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"data", 0)
        await once_landed(n, gate, lambda: h.top.fsync(h.frame(), fd, 0),
                          held=lambda: ("fsync",) not in gate.events)
        assert gate.events[-1] == ("fsync",)
        await h.close(fd)


async def test_flush_behind_answers_before_the_child_flush_completes():
    h, (gate,) = build(Gate)
    gate.open_gate()
    gate.flush_opened = trio.Event()                 # the child's flush hangs
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"abc", 0)
        await h.top.flush(h.frame(lk_owner=7), fd)   # returns at once
        await h.top.release(h.frame(pid=0), fd)      # so does release
        await settle()
        assert ("flush", 7) in gate.events
        assert ("flush-done",) not in gate.events and ("release",) not in gate.events
        assert h.top.dump()[key(h, fd, "background_flushes")] == 1
        gate.flush_opened.set()
        await settle()
        # the writes, then the flush (with the caller's lock owner), then release
        assert [e[0] for e in gate.events] == ["writev", "flush", "flush-done", "release"]
    assert h.top.dump()["inodes"] == 0


async def test_getattr_of_a_setid_file_waits_for_unprivileged_writes():
    """A write by anyone but root clears set-id bits where it lands: getattr must not
    report them while such a write is still queued."""
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f", 0o777, umask=0)
        await h.top.setattr(h.frame(), fd.inode, SetAttr(mode=0o6777), fd)
        await h.write(fd, b"abc", 0, frame=h.frame(1000, 1000))     # queued
        got = await once_landed(n, gate, lambda: h.top.getattr(h.frame(), fd.inode))
        assert got[0].mode & 0o7777 == 0o777 and got[0].size == 3
        await h.close(fd)


class LockRecorder(Translator):
    """Answers lk itself; holds flush until opened; records the order of the two."""
    type = "test/lock-recorder"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.flush_opened = trio.Event()
        self.events: list = []

    async def flush(self, frame, fd):
        self.events.append("flush")
        await self.flush_opened.wait()
        self.events.append("flush-done")
        return await self.child.flush(frame, fd)

    async def lk(self, frame, fd, cmd, lock):
        self.events.append("lk")
        return lock


async def test_lk_waits_for_background_flushes():
    """A flush drops its owner's POSIX locks: a lock taken after close() must not reach
    the locks translator before that close()'s background flush (or the flush undoes it)."""
    import fcntl

    from xlators.core.types import LK_SET, Lock
    h, (rec,) = build(LockRecorder)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"abc", 0)
        await h.top.flush(h.frame(lk_owner=7), fd)       # answered at once
        fd2 = await h.open("/f")
        got = []

        async def lock():
            got.append(await h.top.lk(h.frame(lk_owner=7), fd2, LK_SET,
                                      Lock(fcntl.F_WRLCK, 0, 9, 1, 7)))

        n.start_soon(lock)
        await settle()
        assert rec.events == ["flush"] and got == []
        rec.flush_opened.set()
        await settle()
        assert rec.events == ["flush", "flush-done", "lk"] and len(got) == 1
        await h.top.release(h.frame(pid=0), fd)
        await h.close(fd2)


async def test_flock_and_unlock_do_not_wait_for_background_flushes(autojump_clock):
    """Flushes never touch flock locks, and an unlock has nothing to fear from them: the
    unlock sent for a last close() must land before the next process's lock request."""
    import fcntl

    from xlators.core.types import LK_SET, Lock
    h, (rec,) = build(LockRecorder)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"abc", 0)
        await h.top.flush(h.frame(lk_owner=7), fd)       # its background flush hangs
        await settle()
        for lock in (Lock(fcntl.F_WRLCK, owner=9, flock=True),
                     Lock(fcntl.F_UNLCK, owner=9, flock=True),
                     Lock(fcntl.F_UNLCK, 0, 9, 1, 7)):
            with trio.move_on_after(1) as scope:          # autojump: no real wait
                await h.top.lk(h.frame(lk_owner=7), fd, LK_SET, lock)
            assert not scope.cancelled_caught, f"{lock} waited for the flush"
        assert rec.events == ["flush", "lk", "lk", "lk"]
        rec.flush_opened.set()
        await settle()
        await h.top.release(h.frame(pid=0), fd)


async def test_flush_behind_off_waits():
    h, (gate,) = build(Gate, flush_behind="off")
    gate.flush_opened = trio.Event()
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"abc", 0)
        done = []

        async def flush():
            await h.top.flush(h.frame(), fd)
            done.append(True)
        n.start_soon(flush)
        await settle()
        assert done == [] and gate.events == [("writev", 0, 3)]    # waits for the write
        gate.open_gate()
        await settle()
        assert done == [] and gate.events[-1] == ("flush", 0)       # then for the flush
        gate.flush_opened.set()
        await settle()
        assert done == [True]
        await h.top.release(h.frame(), fd)


async def test_release_waits_for_pending_writes_in_the_background():
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"abc", 0)
        await h.top.release(h.frame(), fd)           # answered at once
        await settle()
        assert ("release",) not in gate.events
        gate.open_gate()
    assert [e[0] for e in gate.events] == ["writev", "release"]
    assert await h.read_file("/f") == b"abc"


# -- failures ---------------------------------------------------------------------------

def failing(fops="writev", err="ENOSPC"):
    return error_gen(failure="100", error_no=err, enable=fops)


def heal(eg):
    eg.reconfigure({"failure": "0"})


async def test_failed_write_reported_by_next_write_exactly_once():
    h, (eg,) = build(failing())
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"lost", 0)                # acknowledged, fails below
        await settle()
        d = h.top.dump()
        assert d[key(h, fd, "error")] == "ENOSPC" and d["failures"] == 1
        heal(eg)
        with pytest.raises(FopError) as ei:
            await h.write(fd, b"y", 0)               # reports it (and is not done)
        assert ei.value.errno == errno.ENOSPC
        await h.write(fd, b"z", 0)                   # once only
        await h.top.fsync(h.frame(), fd, 0)
        await h.top.flush(h.frame(), fd)
        assert await h.read(fd, 10) == b"z"
        await h.close(fd)
    assert key(h, fd, "error") not in h.top.dump()


async def test_failed_write_reported_by_fsync_exactly_once():
    h, (eg,) = build(failing(err="EIO"))
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"lost", 0)
        # still pending when fsync starts: fsync waits for it and reports its failure
        with pytest.raises(FopError) as ei:
            await h.top.fsync(h.frame(), fd, 0)
        assert ei.value.errno == errno.EIO
        await h.top.fsync(h.frame(), fd, 0)
        heal(eg)
        await h.write(fd, b"ok", 0)
        await h.close(fd)
        assert await h.read_file("/f") == b"ok"


@pytest.mark.parametrize("behind", ["on", "off"])
async def test_failed_write_reported_by_flush_exactly_once(behind):
    h, (eg,) = build(failing(), flush_behind=behind)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"lost", 0)
        await settle()
        with pytest.raises(FopError) as ei:
            await h.top.flush(h.frame(), fd)
        assert ei.value.errno == errno.ENOSPC
        await h.top.flush(h.frame(), fd)
        await h.top.fsync(h.frame(), fd, 0)
        await h.top.release(h.frame(), fd)
    assert h.top.dump()["inodes"] == 0


async def test_failure_during_flush_behind_reported_by_next_fsync():
    h, (eg,) = build(failing(fops="writev,flush", err="EDQUOT"))
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"lost", 0)
        await h.top.flush(h.frame(), fd)             # answered before anything failed
        await settle()
        assert h.top.dump()["failures"] == 2          # the write and the flush
        with pytest.raises(FopError) as ei:
            await h.top.fsync(h.frame(), fd, 0)
        assert ei.value.errno == errno.EDQUOT
        await h.top.fsync(h.frame(), fd, 0)
        await h.top.release(h.frame(), fd)


async def test_unreported_failure_is_dumped_and_logged(caplog):
    h, (eg,) = build(failing())
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"lost", 0)
    assert "background writev on ino" in caplog.text
    assert h.top.dump()[key(h, fd, "error")] == "ENOSPC"
    await h.top.forget(h.frame(), fd.inode)
    assert "forgotten with an unreported write failure" in caplog.text


async def test_recorded_error_wins_over_a_failing_fsync():
    h, (eg,) = build(failing(fops="writev,fsync", err="ENOSPC"), flush_behind="off")
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"lost", 0)
        with pytest.raises(FopError) as ei:
            await h.top.fsync(h.frame(), fd, 0)
        assert ei.value.errno == errno.ENOSPC
        assert key(h, fd, "error") not in h.top.dump()     # reported: cleared
        eg.reconfigure({"failure": "100", "error-no": "EIO", "enable": "flush"})
        await h.write(fd, b"lost again", 0)                  # writev works now
        eg.reconfigure({"failure": "100", "error-no": "EIO", "enable": "writev,flush"})
        await h.write(fd, b"fails", 0)
        with pytest.raises(FopError) as ei:
            await h.top.flush(h.frame(), fd)                # the write's error, once
        assert ei.value.errno == errno.EIO
        heal(eg)
        await h.top.flush(h.frame(), fd)
        await h.top.release(h.frame(), fd)


# -- randomized checks against a shadow file ------------------------------------------

async def fsx(seed: int, trickling: str, nops: int = 400) -> None:
    rnd = random.Random(seed)
    h, _ = build(lambda child, it: Jitter("jit", [child], {}, itable=it, seed=seed),
                 cache_size=rnd.choice(["8KB", "32KB", "1MB"]), aggregate_size="4KB",
                 trickling_writes=trickling)
    maxlen = 48 * 1024
    shadow = bytearray()

    def put(data: bytes, off: int) -> None:
        if off > len(shadow):
            shadow.extend(bytes(off - len(shadow)))
        shadow[off:off + len(data)] = data

    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fds = [await h.create("/fsx")]
        for _ in range(2):
            fds.append(await h.open("/fsx"))
        inode = fds[0].inode
        for step in range(nops):
            op = rnd.choices(["write", "seq", "back", "append", "trunc", "read", "stat",
                              "fsync", "reopen", "flush"],
                             [30, 8, 5, 8, 6, 20, 8, 3, 3, 3])[0]
            fd = rnd.choice(fds)
            where = f"seed {seed} step {step} {op}"
            if op == "write":
                off = rnd.randrange(maxlen)
                data = rnd.randbytes(rnd.randrange(1, 6000))
                assert await h.write(fd, data, off) == len(data), where
                put(data, off)
            elif op == "seq":
                off = rnd.randrange(maxlen)
                for _ in range(rnd.randrange(2, 12)):
                    data = rnd.randbytes(rnd.randrange(1, 1500))
                    await h.write(fd, data, off)
                    put(data, off)
                    off = max(0, off + len(data) - rnd.choice([0, 0, 0, 10]))
            elif op == "back":                  # descending, touching or overlapping
                off = rnd.randrange(maxlen)
                for _ in range(rnd.randrange(2, 8)):
                    data = rnd.randbytes(rnd.randrange(1, 1500))
                    off = max(0, off - len(data) + rnd.choice([0, 0, 5]))
                    await h.write(fd, data, off)
                    put(data, off)
            elif op == "append":
                data = rnd.randbytes(rnd.randrange(1, 3000))
                await h.write(fd, data, len(shadow))
                put(data, len(shadow))
            elif op == "trunc":
                size = rnd.randrange(maxlen)
                attr = await h.top.setattr(h.frame(), inode, SetAttr(size=size))
                assert attr.size == size, where
                del shadow[size:]
                shadow.extend(bytes(size - len(shadow)))
            elif op == "read":
                off = rnd.randrange(maxlen + 4096)
                size = rnd.randrange(1, 9000)
                assert await h.read(fd, size, off) == bytes(shadow[off:off + size]), where
            elif op == "stat":
                assert (await h.top.getattr(h.frame(), inode)).size == len(shadow), where
            elif op == "fsync":
                await h.top.fsync(h.frame(), fd, rnd.choice([0, 1]))
            elif op == "flush":
                await h.top.flush(h.frame(), fd)
            elif op == "reopen":
                i = fds.index(fd)
                await h.close(fd)
                fds[i] = await h.open("/fsx")
        assert await h.read(fds[0], maxlen * 2) == bytes(shadow)
        for fd in fds:
            await h.close(fd)
    assert await h.read_file("/fsx") == bytes(shadow)
    assert h.top.dump()["inodes"] == 0


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("trickling", ["on", "off"])
async def test_fsx(seed, trickling):
    await fsx(seed, trickling)


async def test_concurrent_writers_against_a_shadow():
    rnd = random.Random(1234)
    h, _ = build(lambda child, it: Jitter("jit", [child], {}, itable=it, seed=5),
                 cache_size="16KB", aggregate_size="4KB")
    shadow = bytearray()

    def put(data: bytes, off: int) -> None:
        if off > len(shadow):
            shadow.extend(bytes(off - len(shadow)))
        shadow[off:off + len(data)] = data

    async def writer(fd, seed):
        r = random.Random(seed)
        for _ in range(150):
            off = r.randrange(32 * 1024)
            data = r.randbytes(r.randrange(1, 3000))
            await h.write(fd, data, off)
            put(data, off)          # no checkpoint since the write was queued
            if r.random() < 0.3:
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fds = [await h.create("/c")] + [await h.open("/c") for _ in range(3)]
        async with trio.open_nursery() as writers:
            for i, fd in enumerate(fds):
                writers.start_soon(writer, fd, rnd.random())
        assert (await h.top.getattr(h.frame(), fds[0].inode)).size == len(shadow)
        assert await h.read(fds[1], 1 << 20) == bytes(shadow)
        for fd in fds:
            await h.close(fd)
    assert await h.read_file("/c") == bytes(shadow)


# -- options, statedump, conformance ---------------------------------------------------

def test_options():
    h, _ = build(window_size="2MB")
    assert h.top.opts.cache_size == 2 << 20
    assert h.top.opts.flush_behind is True and h.top.opts.trickling_writes is True
    assert h.top.opts.strict_O_DIRECT is False and h.top.opts.aggregate_size == 128 << 10
    with pytest.raises(ValueError, match="aggregate-size"):
        build(cache_size="64KB", aggregate_size="128KB")
    with pytest.raises(OptionError):
        build(flush_behind="sometimes")
    assert default_registry().get(WB) is WriteBehind
    with pytest.raises(ValueError):
        h.top.reconfigure({"cache-size": "8KB"})
    assert h.top.opts.cache_size == 2 << 20
    h.top.reconfigure({"cache-size": "4MB", "flush-behind": "off"})
    assert h.top.opts.cache_size == 4 << 20 and h.top.opts.flush_behind is False


async def test_harness_stack_and_dump():
    h = Harness.stack(WB, options={WB: {"cache-size": "4MB"}})
    d = h.top.dump()
    assert d["cache-size"] == 4 << 20 and d["inodes"] == 0 and d["failures"] == 0
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        await h.write_file("/x", b"payload")
        assert await h.read_file("/x") == b"payload"


async def test_passthrough():
    checked = await check_passthrough(WriteBehind)
    for fop in ("writev", "readv", "flush", "fsync", "release", "getattr", "setattr",
                "lookup", "readdirp"):
        assert fop not in checked
    assert "unlink" in checked and "lk" not in checked and "readdir" in checked


# -- attributes handed out while writes are pending ------------------------------------

async def _attr_while_pending(h, fd, how):
    from xlators.core.inode import Loc
    if how == "lookup":
        return (await h.lookup("/f")).attr
    if how == "readdirp":
        return {d.name: d for d in await h.listdir("/", plus=True)}[b"f"].entry.attr
    return (await h.top.link(h.frame(), fd.inode, Loc(h.root, b"g"))).attr


@pytest.mark.parametrize("how", ["lookup", "readdirp", "link"])
async def test_attributes_handed_out_are_those_the_pending_writes_leave(how):
    # A lookup, readdirp or link reply made before the queued writes land carries the
    # old mtime and ctime: a cache above (md-cache, the kernel) would keep them.
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"x" * 10, 100)
        got = await once_landed(n, gate, lambda: _attr_while_pending(h, fd, how))
        landed = await h.top.child.getattr(h.frame(), fd.inode)
        assert got[0].size == 110
        assert (got[0].mtime_ns, got[0].ctime_ns) == (landed.mtime_ns, landed.ctime_ns)
        await h.close(fd)


MD_CACHE_600 = {"md-cache-timeout": "600", "cache-invalidation": "on"}   # no upcall source


@pytest.mark.parametrize("how", ["lookup", "readdirp", "link"])
async def test_md_cache_over_it_does_not_keep_the_mtime_before_a_write(how):
    h, (gate,) = build(Gate, md_cache=MD_CACHE_600)
    mdc = h.top
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"x" * 10, 100)
        await once_landed(n, gate, lambda: _attr_while_pending(h, fd, how))
        landed = await gate.child.getattr(h.frame(), fd.inode)
        assert (await mdc.getattr(h.frame(), fd.inode)).mtime_ns == landed.mtime_ns
        await h.close(fd)


# -- file capabilities, which a write ends where it lands -------------------------------

CAPS = b"security.capability"
# a valid VFS_CAP_REVISION_2 value: cap_net_raw permitted and effective
CAP_VALUE = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")


async def _xattr_or_errno(h, inode, name):
    try:
        return await h.top.getxattr(h.frame(), inode, name)
    except OSError as exc:
        return exc.errno


async def test_the_capability_is_answered_as_the_queued_writes_leave_it():
    """storage/memory, as posix, ends security.capability where a write lands: with a
    write queued, a getxattr or listxattr that finds one answers after the write, and
    ENODATA (which no write changes: the kernel asks before writes) and other names
    answer at once."""
    h, (gate,) = build(Gate)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        plain = await h.create("/g")
        await h.top.setxattr(h.frame(), fd.inode, CAPS, CAP_VALUE, 0)
        await h.top.setxattr(h.frame(), fd.inode, b"user.x", b"1", 0)
        await h.write(fd, b"abc", 0)                     # queued: the gate is closed
        await h.write(plain, b"abc", 0)
        with trio.fail_after(5):                         # (they would wait for good)
            assert await _xattr_or_errno(h, plain.inode, CAPS) == errno.ENODATA
            assert await _xattr_or_errno(h, fd.inode, b"user.x") == b"1"
        got = await once_landed(n, gate, lambda: _xattr_or_errno(h, fd.inode, CAPS),
                                lambda: h.top.listxattr(h.frame(), fd.inode),
                                held=lambda: gate.writes() == [("writev", 0, 3)] * 2)
        assert got == [errno.ENODATA, [b"user.x"]]
        await h.close(fd)
        await h.close(plain)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (switches users)")
@pytest.mark.parametrize("leaf", ["storage/memory", "storage/posix"])
async def test_md_cache_over_it_keeps_no_privilege_a_queued_write_ends(leaf, tmp_path):
    """md-cache over write-behind, no upcalls (md-cache-timeout 600): a write by a user
    without CAP_FSETID ends the file's capability and set-user-ID bit where it lands,
    after write-behind acknowledged it.  What md-cache caches after the ack (the
    kernel's capability question, a stat) is what the landing leaves: a capability
    that write ended must not be served for ten minutes (exec would grant it)."""
    os.chmod(tmp_path, 0o755)
    h, (gate,) = build(Gate, leaf=leaf, md_cache=MD_CACHE_600, leaf_opts=(
        {"directory": str(tmp_path)} if leaf == "storage/posix" else {}))
    mdc = h.top
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f", 0o777, umask=0)
        inode = fd.inode
        await h.close(fd)
        await mdc.setattr(h.frame(), inode, SetAttr(mode=0o4777))
        await mdc.setxattr(h.frame(), inode, CAPS, CAP_VALUE, 0)
        assert await mdc.getxattr(h.frame(), inode, CAPS) == CAP_VALUE       # cached
        assert (await mdc.getattr(h.frame(), inode)).mode & 0o7777 == 0o4777  # cached
        user = h.frame(1000, 1000)
        fd = await h.open("/f", os.O_WRONLY, frame=user)
        assert await h.write(fd, b"w", frame=user) == 1    # acknowledged, held below
        got = await once_landed(n, gate, lambda: _xattr_or_errno(h, inode, CAPS),
                                lambda: mdc.getattr(h.frame(), inode),
                                held=lambda: gate.writes() == [("writev", 0, 1)])
        assert got[0] == errno.ENODATA                     # as the landing left them
        assert got[1].mode & 0o7777 == 0o777
        assert await _xattr_or_errno(h, inode, CAPS) == errno.ENODATA   # and cached so
        assert (await mdc.getattr(h.frame(), inode)).mode & 0o7777 == 0o777
        await h.close(fd, frame=user)


class HoldLookup(Gate):
    """Gate's writev hold, and a lookup reply held (after it was made) until released."""
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lookup_go = trio.Event()
        self.hold = False

    async def lookup(self, frame, loc):
        entry = await self.child.lookup(frame, loc)
        if self.hold:
            await self.lookup_go.wait()
        return entry


async def test_a_lookup_reply_made_before_a_queued_write_landed_is_asked_again():
    # the write lands while the reply (made below before it: size 0) is on its way up
    h, (mid,) = build(HoldLookup)
    async with trio.open_nursery() as n:
        h.attach_nursery(n)
        fd = await h.create("/f")
        await h.write(fd, b"x" * 10, 100)       # queued: the gate is closed
        mid.hold = True
        got = []

        async def lookup():
            got.append((await h.lookup("/f")).attr)
        n.start_soon(lookup)
        await settle()                          # the reply is made below: size 0
        mid.open_gate()
        await settle()                          # the write lands: size 110
        mid.lookup_go.set()
        await settle()
        assert got[0].size == 110, got[0].size
        await h.close(fd)
