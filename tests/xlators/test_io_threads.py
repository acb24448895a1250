"""performance/io-threads: blocking calls of storage/posix below move to worker threads;
fops are admitted by priority within thread-count and the per-priority caps."""
from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from xlators import Translator, default_registry
from xlators.core.fops import FOPS
from xlators.core.frame import Frame
from xlators.core.offload import offload_limiter
from xlators.core.options import OptionError
from xlators.performance.io_threads import IoThreads, priority_of
from xlators.performance.io_threads_pool import HIGH, LEAST, LOW, NORMAL, PriorityPool
from xlators.testing import Harness, RecordingLeaf, check_passthrough, make_translator
from xlators import InodeTable

IOT = "performance/io-threads"


class Hold(Translator):
    """Holds every getattr and readv until let go; records the order they entered."""
    type = "test/hold"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.go = trio.Event()
        self.go.set()                     # armed by hold.arm() once the file exists
        self.order: list[str] = []
        self.offload: list = []

    def arm(self):
        self.go = trio.Event()

    async def getattr(self, frame, inode, fd=None):
        self.order.append(f"getattr:{frame.pid}")
        self.offload.append(offload_limiter())
        await self.go.wait()
        return await self.child.getattr(frame, inode, fd)

    async def readv(self, frame, fd, size, offset, flags=None):
        self.order.append("readv")
        await self.go.wait()
        return await self.child.readv(frame, fd, size, offset, flags)


def build(options=None):
    itable = InodeTable()
    leaf = make_translator("storage/memory", (), {}, itable=itable)
    hold = Hold("hold", [leaf], {}, itable=itable)
    iot = IoThreads("iot", [hold], options or {}, itable=itable)
    h = Harness(iot)
    h.init()
    return h, hold


@pytest.mark.skipif(os.geteuid() != 0, reason="storage/posix tests run as root")
async def test_only_blocking_calls_go_to_threads_on_the_io_threads_limiter(tmp_path,
                                                                          monkeypatch):
    """Cached metadata and reads stay on the loop under io-threads (a thread hop per fop
    made perf.vol's metadata 10-30x slower); what posix sends to a thread anyway (fsync)
    runs on io-threads' limiter, within its thread-count."""
    calls = []
    real = trio.to_thread.run_sync

    async def counting(fn, *args, **kw):
        calls.append(kw.get("limiter"))
        return await real(fn, *args, **kw)
    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    opts = {"storage/posix": {"directory": str(tmp_path), "reserve": "0"}}
    h = Harness.stack(IOT, leaf="storage/posix", options=opts)
    await h.write_file("/f", b"data")
    assert await h.read_file("/f") == b"data"
    await h.stat("/f")
    await h.mkdir("/d")
    await h.rename("/f", "/d/g")
    await h.unlink("/d/g")
    assert calls == []                                     # metadata, cached data: inline
    fd = await h.create("/s")
    await h.top.fsync(h.frame(), fd, False)
    assert calls == [h.top.limiter]                        # fsync blocks: a thread
    await h.close(fd)
    assert offload_limiter() is None                       # nothing leaks out
    h.fini()
    calls.clear()
    plain = Harness.stack(leaf="storage/posix", options=opts)
    fd = await plain.open("/s")
    await plain.top.fsync(plain.frame(), fd, False)
    assert len(calls) == 1 and calls[0] is not None and calls[0] is not h.top.limiter
    await plain.close(fd)
    plain.fini()


async def test_waiting_fops_are_admitted_highest_priority_first():
    h, hold = build({"thread-count": "1"})
    fd = await h.create("/f")
    hold.arm()
    hold.order.clear()
    hold.offload.clear()
    async with trio.open_nursery() as n:
        n.start_soon(h.top.getattr, h.frame(pid=1), fd.inode)        # takes the slot
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(h.read, fd, 10)                                  # low, waits
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(h.top.getattr, h.frame(pid=2), fd.inode)        # high, waits
        await trio.testing.wait_all_tasks_blocked()
        assert hold.order == ["getattr:1"]
        assert h.top.dump()["queued"] == 2
        hold.go.set()
    assert hold.order == ["getattr:1", "getattr:2", "readv"]
    assert hold.offload[0] is h.top.limiter


async def test_a_priority_cap_holds_its_fops_but_not_the_others():
    h, hold = build({"thread-count": "4", "low-prio-threads": "1"})
    fd = await h.create("/f")
    hold.arm()
    hold.order.clear()
    hold.offload.clear()
    async with trio.open_nursery() as n:
        n.start_soon(h.read, fd, 10)
        n.start_soon(h.read, fd, 10)
        await trio.testing.wait_all_tasks_blocked()
        assert hold.order == ["readv"]                   # the second read waits
        n.start_soon(h.top.getattr, h.frame(pid=3), fd.inode)
        await trio.testing.wait_all_tasks_blocked()
        assert hold.order == ["readv", "getattr:3"]      # high priority is not held
        d = h.top.dump()
        assert d["low.running"] == 1 and d["low.waited"] == 1 and d["high.running"] == 1
        hold.go.set()
    assert hold.order.count("readv") == 2


async def test_internal_frames_get_the_least_priority():
    h, hold = build({"least-prio-threads": "1"})
    fd = await h.create("/f")
    hold.go.set()
    await h.top.getattr(h.frame(pid=-5), fd.inode)
    assert h.top.dump()["least.admitted"] == 1
    h, hold = build({"enable-least-priority": "off"})
    fd = await h.create("/f")
    hold.go.set()
    await h.top.getattr(h.frame(pid=-5), fd.inode)
    assert h.top.dump()["least.admitted"] == 0


async def test_a_cancelled_waiter_leaves_the_queue():
    h, hold = build({"thread-count": "1"})
    fd = await h.create("/f")
    hold.arm()
    hold.order.clear()
    hold.offload.clear()
    async with trio.open_nursery() as n:
        n.start_soon(h.top.getattr, h.frame(pid=1), fd.inode)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.01):
            await h.top.getattr(h.frame(pid=2), fd.inode)
        assert h.top.dump()["queued"] == 0
        hold.go.set()
    assert h.top.pool.busy == 0
    assert hold.order == ["getattr:1"]


def test_pool_caps_and_reconfigure():
    pool = PriorityPool(2, [1, 1, 1, 1])
    assert pool.busy == 0
    h, _ = build({"thread-count": "2"})
    h.top.reconfigure({"thread-count": "8", "low-prio-threads": "3"})
    assert h.top.pool.total == 8 and h.top.pool.caps[LOW] == 3
    assert h.top.limiter.total_tokens == 8


def test_priorities_follow_glusterfs():
    assert priority_of("lookup") == HIGH and priority_of("open") == HIGH
    assert priority_of("unlink") == NORMAL and priority_of("lk") == NORMAL
    assert priority_of("readv") == LOW and priority_of("fsync") == LOW
    assert LEAST == 3


def test_options():
    h, _ = build()
    o = h.top.opts
    assert (o.thread_count, o.high_prio_threads, o.least_prio_threads) == (16, 16, 1)
    assert o.enable_least_priority is True
    with pytest.raises(OptionError):
        build({"thread-count": "65"})
    assert default_registry().get(IOT) is IoThreads


async def test_every_fop_reaches_the_child_unchanged():
    for fop in FOPS:
        leaf = RecordingLeaf()
        xl = IoThreads("iot", [leaf], {}, itable=leaf.itable)
        frame = Frame(unique=7, uid=1000, gid=1000, pid=1)
        args = tuple(object() for _ in fop.params)
        result = await getattr(xl, fop.name)(frame, *args)
        (name, got_frame, got_args, _), = leaf.calls
        assert name == fop.name and got_frame is frame and result is leaf.result
        assert all(a is b for a, b in zip(got_args, args)) and len(got_args) == len(args)
    checked = await check_passthrough(IoThreads)
    assert set(checked) == {"forget", "release", "releasedir"}


async def test_blocked_lock_waits_hold_no_slot_the_unlock_needs(autojump_clock):
    # A SETLKW waiting in features/locks below must not keep an admission slot: with
    # thread-count waiters blocked, the holder's unlock (and every other fop) would
    # never be admitted, and the waiters would wait for good.
    import fcntl
    from xlators.core.types import LK_SET, LK_SETW, Lock
    itable = InodeTable()
    leaf = make_translator("storage/memory", (), {}, itable=itable)
    locks = make_translator("features/locks", (leaf,), {}, itable=itable)
    iot = IoThreads("iot", [locks], {"thread-count": "2"}, itable=itable)
    h = Harness(iot)
    h.init()
    await h.write_file("/f", b"x")
    fd = await h.open("/f", os.O_RDWR)
    wr = Lock(fcntl.F_WRLCK, 0, 0)
    await iot.lk(h.frame(), fd, LK_SET, wr._replace(owner=1))
    got = []
    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            for owner in (2, 3, 4):
                async def wait(owner=owner):
                    await iot.lk(h.frame(), fd, LK_SETW, wr._replace(owner=owner))
                    got.append(owner)
                    await iot.lk(h.frame(), fd, LK_SET,
                                 Lock(fcntl.F_UNLCK, 0, 0, owner=owner))
                n.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert (await h.stat("/f")).size == 1      # other fops still get in
            await iot.lk(h.frame(), fd, LK_SET, Lock(fcntl.F_UNLCK, 0, 0, owner=1))
    assert sorted(got) == [2, 3, 4]
