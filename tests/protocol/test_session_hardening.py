"""The session under pressure and abuse (issue 13): any number of waiting requests, a
unique reused while its request waits, malformed FORGET/BATCH_FORGET/INTERRUPT, numbers
no system call takes.  The fake kernel drives a real Session; every test also checks the
loop is still alive afterwards."""
from __future__ import annotations

import errno
import logging
import struct

import pytest
import trio

from fuse_bridge import abi
from fuse_bridge.options import BridgeOptions
from tests.protocol.kernel import cstr, memory_graph, registry, serve
from xlators.core.graph import Graph
from xlators.core.types import OFFSET_MAX

try:
    import tracemalloc
except ImportError:                 # PyPy has no tracemalloc
    tracemalloc = None
needs_tracemalloc = pytest.mark.skipif(tracemalloc is None, reason="no tracemalloc (PyPy)")

O = abi.Opcode
HDR = struct.Struct("<IiQ")
WAITERS = 1000
F_WRLCK, F_UNLCK = 1, 2


def error_reply(unique: int, err: int) -> bytes:
    return HDR.pack(16, -err, unique)


async def until(cond, timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


# --------------------------------------------------------------------------- many waiters

@needs_tracemalloc
async def test_a_thousand_waiting_requests_do_not_stop_the_reading():
    """1,000 requests wait (Gate holds LOOKUPs); GETATTR is still answered, the waiting
    requests cost no large buffer each, and all are answered once released."""
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        gate.slow = {b"w%d" % i for i in range(WAITERS)}
        chan = s.channels[0]
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            slow = []
            for i in range(WAITERS):
                slow.append(await k.send(O.LOOKUP, cstr(b"w%d" % i), 1))
                if i % 100 == 99:
                    await until(lambda: gate.waiting == i + 1)
            await until(lambda: gate.waiting == WAITERS)
            grown = tracemalloc.get_traced_memory()[0] - base
            print(f"traced memory grew {grown / WAITERS:.0f} bytes per waiter")
        finally:
            tracemalloc.stop()
        with trio.fail_after(10):
            (await k.getattr(1)).attr()                   # still read and answered
        assert chan.readers >= WAITERS + 1
        # Memory: a small buffer and a task per waiting request, never a large buffer.
        assert chan.large_allocated <= 3, chan.large_allocated
        assert grown < WAITERS * 64 * 1024, f"{grown / WAITERS:.0f} bytes per waiter"
        gate.gate_open.set()
        with trio.fail_after(60):
            replies = [await k.recv() for _ in slow]
        assert sorted(r.unique for r in replies) == sorted(slow)
        assert all(r.errno == errno.ENOENT for r in replies)
        assert await k.silence(0.1)                       # each exactly once
        for _ in range(3):
            (await k.getattr(1)).attr()
        assert s.interrupts.pending == {}
        # Idle readers beyond the few kept exit, and hold no large buffer.
        assert chan.readers <= 1 + s.opts.idle_readers
        assert chan.large_allocated <= 3 and len(chan.spare) <= chan.spare_max


def lk_body(fh: int, owner: int, type_: int) -> bytes:
    return abi.LK_IN.pack(fh, owner, 0, OFFSET_MAX, type_, 4242, 0)


async def test_a_thousand_blocked_locks_then_the_unlock_is_served_in_order():
    """One owner holds a POSIX lock; 1,000 others wait in SETLKW.  The holder's unlock is
    read and served; the waiters get the lock one after the other, oldest first."""
    async with serve(memory_graph("features/locks")) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        nodeid, fh = e.nodeid, o.fh
        locks = s.graph.xlators["locks"]
        assert (await k.call(O.SETLK, lk_body(fh, 1, F_WRLCK), nodeid)).ok()
        waiting = {}
        for owner in range(2, WAITERS + 2):
            waiting[await k.send(O.SETLKW, lk_body(fh, owner, F_WRLCK), nodeid)] = owner
        await until(lambda: len(s.interrupts.pending) == WAITERS)
        assert len(locks._by_frame) == WAITERS
        (await k.getattr(nodeid)).attr()
        assert (await k.call(O.SETLK, lk_body(fh, 1, F_UNLCK), nodeid)).ok()
        granted = []
        with trio.fail_after(120):
            for _ in range(WAITERS):
                r = (await k.recv()).ok()
                owner = waiting.pop(r.unique)
                granted.append(owner)
                u = await k.send(O.SETLK, lk_body(fh, owner, F_UNLCK), nodeid)
                r = (await k.recv()).ok()
                assert r.unique == u, "a grant arrived before the unlock's reply"
        assert granted == list(range(2, WAITERS + 2))
        assert waiting == {} and s.interrupts.pending == {}
        assert s.channels[0].large_allocated <= 3
        (await k.getattr(nodeid)).attr()


# --------------------------------------------------------------------------- uniques

async def test_a_unique_in_flight_is_refused_and_the_first_answered_once(caplog):
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        u = await k.send(O.LOOKUP, cstr(b"slow"), 1)
        await until(lambda: gate.waiting == 1)
        with caplog.at_level(logging.ERROR, logger="xlfs.fuse"):
            await k.send(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1, unique=u)
            assert (await k.recv()).raw == error_reply(u, errno.EIO)
        lines = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(lines) == 1 and lines[0].exc_info is None
        assert f"unique {u} is in flight already (LOOKUP" in lines[0].getMessage()
        assert s.interrupts.pending[u].opcode == O.LOOKUP     # the first still waits
        (await k.getattr(1)).attr()
        gate.gate_open.set()
        r = await k.recv()
        assert r.unique == u and r.errno == errno.ENOENT       # the first, answered
        assert await k.silence(0.1)                            # once
        assert s.interrupts.pending == {}
        (await k.getattr(1)).attr()
        assert s.stats["exceptions"] == 0


async def test_a_unique_in_flight_at_unmount_does_not_crash():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        u = await k.send(O.LOOKUP, cstr(b"slow"), 1)
        await until(lambda: gate.waiting == 1)
        await k.send(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1, unique=u)
        assert (await k.recv()).errno == errno.EIO
        k.close()                                   # unmount: the waiting LOOKUP unwinds
        with trio.fail_after(5):
            await s.ended.wait()
    assert s.interrupts.pending == {}


# --------------------------------------------------------------------------- no-reply

NO_REPLY_MALFORMED = {
    "forget-short": dict(op=O.FORGET, body=b"\x01\x00\x00\x00", nodeid=1),
    "forget-empty": dict(op=O.FORGET, body=b"", nodeid=1),
    "forget-wrong-length": dict(op=O.FORGET, body=abi.FORGET_IN.pack(1), length=100),
    "batch-forget-short": dict(op=O.BATCH_FORGET, body=b"\x02\x00"),
    "batch-forget-count-past-body": dict(
        op=O.BATCH_FORGET, body=abi.BATCH_FORGET_IN.pack(5) + abi.FORGET_ONE.pack(1, 1)),
    "batch-forget-huge-count": dict(op=O.BATCH_FORGET,
                                    body=abi.BATCH_FORGET_IN.pack(0xFFFFFFFF)),
    "interrupt-short": dict(op=O.INTERRUPT, body=b"\x02\x00\x00", unique=3),
    "interrupt-empty": dict(op=O.INTERRUPT, body=b"", unique=3),
    "interrupt-wrong-length": dict(op=O.INTERRUPT, body=abi.INTERRUPT_IN.pack(2),
                                   length=41, unique=3),
    "notify-reply-short": dict(op=O.NOTIFY_REPLY, body=b"\0" * 8),
}


@pytest.mark.parametrize("case", sorted(NO_REPLY_MALFORMED))
async def test_malformed_no_reply_request_is_one_line_and_no_reply(case, caplog):
    c = NO_REPLY_MALFORMED[case]
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        e = (await k.mkdir(1, b"d")).entry()
        with caplog.at_level(logging.DEBUG):
            await k.send(c["op"], c["body"], c.get("nodeid", 0), length=c.get("length"),
                         unique=c.get("unique"))
            assert await k.silence(0.2)                       # never answered
            (await k.getattr(1)).attr()                        # the loop goes on
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert errors[0].exc_info is None and "Traceback" not in caplog.text
        assert errors[0].getMessage().startswith(f"malformed {c['op'].name} (unique ")
        assert s.itable.by_nodeid[e.nodeid].nlookup == 1     # nothing was forgotten
        assert gate.forgotten == []
        assert s.stats["exceptions"] == 0


async def test_well_formed_no_reply_requests_still_work():
    async with serve(memory_graph("test/gate")) as (k, s):
        gate = s.graph.xlators["gate"]
        a = (await k.mkdir(1, b"a")).entry().nodeid
        b = (await k.mkdir(1, b"b")).entry().nodeid
        await k.forget(a, 1)
        await k.batch_forget([(b, 1)])
        assert await k.silence(0.1)
        assert a not in s.itable.by_nodeid and b not in s.itable.by_nodeid
        assert len(gate.forgotten) == 2


# --------------------------------------------------------------------------- numbers

def posix_graph(directory) -> Graph:
    g = Graph.from_text(f"volume posix\n    type storage/posix\n    option directory "
                        f"{directory}\nend-volume\n", registry=registry())
    g.init()
    g.activate()
    return g


BIG = 1 << 63                       # past loff_t: the kernel never sends it


def numbers_cases(fh: int, nodeid: int) -> dict:
    return {
        "read-offset": (O.READ, abi.READ_IN.pack(fh, BIG, 10, 0, 0, 0)),
        "write-offset": (O.WRITE, abi.WRITE_IN.pack(fh, BIG, 1, 0, 0, 0) + b"x"),
        "lseek-offset": (O.LSEEK, abi.LSEEK_IN.pack(fh, BIG, 0)),
        "open-flags": (O.OPEN, abi.OPEN_IN.pack(0xFFFFFFFF, 0)),
        "truncate-size": (O.SETATTR, abi.SETATTR_IN.pack(abi.SetattrValid.SIZE, 0, BIG, 0,
                                                         0, 0, 0, 0, 0, 0, 0, 0, 0)),
        "copy-length": (O.COPY_FILE_RANGE, abi.COPY_FILE_RANGE_IN.pack(
            fh, 0, nodeid, fh, 0, (1 << 64) - 1, 0)),
    }


# What the VFS answers for these (xlators/core/bounds.py): never EIO, never a traceback.
NUMBERS_ERRNO = {"read-offset": errno.EINVAL, "write-offset": errno.EINVAL,
                 "lseek-offset": errno.EINVAL, "truncate-size": errno.EINVAL,
                 "open-flags": errno.EINVAL,      # past a C int: refused by the bridge
                 "copy-length": 0}                # capped like a read: nothing to copy


@pytest.mark.parametrize("case", sorted(numbers_cases(0, 0)))
async def test_numbers_no_system_call_takes_get_the_vfs_errno(case, tmp_path, caplog):
    async with serve(posix_graph(tmp_path)) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        op, body = numbers_cases(o.fh, e.nodeid)[case]
        with caplog.at_level(logging.ERROR):
            u = await k.send(op, body, e.nodeid)
            r = await k.recv()
            assert r.unique == u and r.errno == NUMBERS_ERRNO[case]
        assert not [r for r in caplog.records if r.exc_info], caplog.text
        assert s.stats["exceptions"] == 0
        (await k.getattr(e.nodeid)).attr()


async def test_a_reply_that_cannot_be_sent_is_still_answered_once():
    """A handler returning a payload that cannot be written (a bug) still gets the
    request answered: EIO, exactly once."""
    async def bad_statfs(s, req, body):
        return 12345                                  # not bytes
    async with serve() as (k, s):
        s.set_handler(int(O.STATFS), bad_statfs)
        u = await k.send(O.STATFS, b"", 1)
        assert (await k.recv()).raw == error_reply(u, errno.EIO)
        assert await k.silence(0.1)
        assert s.stats["exceptions"] == 1
        (await k.getattr(1)).attr()


async def test_a_handler_wrapper_that_raises_before_the_coroutine_is_answered():
    """A handler may be a plain function handing back the handler's coroutine
    (mount_watch's check): what it raises before that is the request's answer."""
    from xlators.core.errors import FopError

    def read_only_statfs(c, req, body):
        raise FopError(errno.EROFS)
    async with serve() as (k, s):
        s.set_handler(int(O.STATFS), read_only_statfs)
        u = await k.send(O.STATFS, b"", 1)
        assert (await k.recv()).raw == error_reply(u, errno.EROFS)
        assert await k.silence(0.1)
        (await k.getattr(1)).attr()                   # the reader serves on


async def test_a_dump_that_cannot_be_written_stops_and_serving_goes_on(caplog):
    """--dump-fuse on a full disk (/dev/full: ENOSPC once the buffer is flushed)."""
    async with serve(options=BridgeOptions(dump_fuse="/dev/full")) as (k, s):
        with caplog.at_level(logging.ERROR):
            for _ in range(1000):                     # far past the dump's buffer
                (await k.getattr(1)).attr()
        assert s.dump is None
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "no more messages are dumped" in errors[0].getMessage()
        assert errors[0].exc_info is None
