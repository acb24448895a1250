"""The session's rules (seed 004, libfuse's loop), over a fake kernel: INIT negotiation,
what is answered and how, malformed requests, handler failures and the end of a session."""
from __future__ import annotations

import collections
import errno
import os
import struct

import pytest
import trio

from fuse_bridge import abi, ops
from fuse_bridge.opcodes import TABLE
from fuse_bridge.options import BridgeOptions
from fuse_bridge.session import Session
from tests.protocol.kernel import (ALL_FLAGS, ALL_FLAGS2, MEMORY_VOL, FakeKernel, cstr,
                                   memory_graph, registry, serve)
from xlators.core.graph import Graph

O = abi.Opcode
I = abi.InitFlag
HDR = struct.Struct("<IiQ")

# What the bridge asks for with default BridgeOptions when the kernel offers everything.
DEFAULT_WANTED = (I.ASYNC_READ | I.ATOMIC_O_TRUNC | I.BIG_WRITES | I.HAS_IOCTL_DIR
                  | I.ASYNC_DIO | I.PARALLEL_DIROPS | I.MAX_PAGES | I.CACHE_SYMLINKS
                  | I.SETXATTR_EXT | I.INIT_EXT | I.EXPORT_SUPPORT | I.DO_READDIRPLUS
                  | I.READDIRPLUS_AUTO | I.AUTO_INVAL_DATA)


def error_reply(unique: int, err: int) -> bytes:
    return HDR.pack(16, -err, unique)


# --------------------------------------------------------------------------- before INIT

async def test_request_before_init_is_eio():
    async with serve(init=False) as (k, s):
        for op, body, nodeid in ((O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1),
                                 (O.LOOKUP, cstr(b"x"), 1), (O.STATFS, b"", 1),
                                 (99, b"", 1)):           # even an unknown opcode
            u = await k.send(op, body, nodeid)
            r = await k.recv()
            assert r.raw == error_reply(u, errno.EIO)
        assert not s.client.initialized
        (await k.init()).init()
        assert s.client.initialized
        (await k.getattr(1)).attr()


async def test_no_reply_opcodes_before_init_stay_silent():
    async with serve(init=False) as (k, s):
        await k.forget(1, 1)
        await k.batch_forget([(1, 1)])
        await k.interrupt(2)
        assert await k.silence()
        (await k.init()).init()


# --------------------------------------------------------------------------- INIT

async def test_init_golden_reply():
    async with serve(init=False) as (k, s):
        u = await k.send(O.INIT, k.init_body(minor=45, max_readahead=131072,
                                             flags=ALL_FLAGS, flags2=ALL_FLAGS2))
        r = await k.recv()
        body = abi.INIT_OUT.pack(7, 45, 131072, int(DEFAULT_WANTED), 64, 48, 1 << 20, 1, 256,
                                 0, 0, 0, 0)
        assert len(body) == 64
        assert r.raw == HDR.pack(16 + 64, 0, u) + body
        assert s.client.flags == DEFAULT_WANTED and s.client.proto_minor == 45 and s.client.max_write == 1 << 20
        assert s.init_done.is_set()


@pytest.mark.parametrize("kminor,expect", [(46, 45), (60, 45), (45, 45), (40, 40),
                                           (36, 36), (23, 23), (22, 22), (12, 12)])
async def test_init_minor_is_the_lower_one(kminor, expect):
    async with serve(init=False) as (k, s):
        out = (await k.init(minor=kminor)).init()
        assert (out.major, out.minor) == (7, expect)
        assert s.client.proto_minor == expect


@pytest.mark.parametrize("kminor,size", [(12, 24), (22, 24), (23, 64), (35, 64),
                                         (36, 64), (45, 64)])
async def test_init_reply_size_follows_the_minor(kminor, size):
    async with serve(init=False) as (k, s):
        flags = ALL_FLAGS if kminor >= 28 else (1 << 16) - 1
        r = await k.init(minor=kminor, flags=flags, max_readahead=4096)
        assert len(r.body) == size and r.len == 16 + size
        full = abi.INIT_OUT.pack(7, kminor, 4096, r.init().flags, 64, 48, s.client.max_write, 1,
                                 r.init().max_pages, 0, 0, 0, 0)
        assert r.body == full[:size]


async def test_init_7_22_golden():
    async with serve(init=False) as (k, s):
        offered = int(I.ASYNC_READ | I.POSIX_LOCKS | I.BIG_WRITES | I.DONT_MASK
                      | I.DO_READDIRPLUS | I.ASYNC_DIO)
        u = await k.send(O.INIT, abi.INIT_IN_COMPAT.pack(7, 22, 65536, offered))
        r = await k.recv()
        want = int(I.ASYNC_READ | I.BIG_WRITES | I.DO_READDIRPLUS | I.ASYNC_DIO)
        assert r.raw == HDR.pack(40, 0, u) + struct.pack("<IIIIHHI", 7, 22, 65536, want, 64,
                                                         48, 128 << 10)


async def test_init_flags_are_offered_and_wanted():
    async with serve(init=False) as (k, s):
        offered = int(I.ASYNC_READ | I.POSIX_LOCKS | I.SPLICE_READ | I.BIG_WRITES
                      | I.WRITEBACK_CACHE | I.NO_OPENDIR_SUPPORT | I.EXPORT_SUPPORT)
        out = (await k.init(flags=offered)).init()
        assert out.flags == I.ASYNC_READ | I.BIG_WRITES | I.EXPORT_SUPPORT
        assert out.flags2 == 0


@pytest.mark.parametrize("opts,added,removed", [
    (BridgeOptions(kernel_writeback_cache=True), I.WRITEBACK_CACHE, 0),
    (BridgeOptions(use_readdirp=False), 0, I.DO_READDIRPLUS | I.READDIRPLUS_AUTO),
    (BridgeOptions(auto_invalidation=False), 0, I.AUTO_INVAL_DATA),
])
async def test_init_flags_follow_options(opts, added, removed):
    async with serve(options=opts, init=False) as (k, s):
        out = (await k.init(flags=ALL_FLAGS)).init()
        assert out.flags == (DEFAULT_WANTED | added) & ~removed


async def test_init_lock_flags_only_with_a_lock_translator():
    text = MEMORY_VOL + "\nvolume locks\n    type features/locks\n    subvolumes memory\n" \
                        "end-volume\n"
    g = Graph.from_text(text, registry=registry())
    g.init()
    g.activate()
    async with serve(g, init=False) as (k, s):
        out = (await k.init(flags=ALL_FLAGS)).init()
        assert out.flags & (I.POSIX_LOCKS | I.FLOCK_LOCKS) == I.POSIX_LOCKS | I.FLOCK_LOCKS
    async with serve(init=False) as (k, s):
        out = (await k.init(flags=ALL_FLAGS)).init()
        assert not out.flags & (I.POSIX_LOCKS | I.FLOCK_LOCKS)


@pytest.mark.parametrize("max_write,flags,want_write,want_pages", [
    (1 << 20, ALL_FLAGS, 1 << 20, 256),                            # MAX_PAGES: 1 MiB
    (1 << 20, ALL_FLAGS & ~int(I.MAX_PAGES), 128 << 10, 0),        # no MAX_PAGES: 128 KiB
    (4 << 20, ALL_FLAGS, 1 << 20, 256),                            # capped at 256 pages
    (64 << 10, ALL_FLAGS, 64 << 10, 16),
    (64 << 10, ALL_FLAGS & ~int(I.MAX_PAGES), 64 << 10, 0),
    (4096 + 100, ALL_FLAGS, 4096, 1),
])
async def test_init_max_write_and_max_pages(max_write, flags, want_write, want_pages):
    async with serve(options=BridgeOptions(max_write=max_write), init=False) as (k, s):
        out = (await k.init(flags=flags)).init()
        assert (out.max_write, out.max_pages) == (want_write, want_pages)
        assert s.client.max_write == want_write
        assert bool(out.flags & I.MAX_PAGES) == bool(want_pages)
        assert s.bufsize >= abi.FUSE_MIN_READ_BUFFER


async def test_init_ext_flags2_split(monkeypatch):
    monkeypatch.setattr(ops, "_WANTED", ops._WANTED | I.HAS_EXPIRE_ONLY | I.SECURITY_CTX)
    high = (int(I.HAS_EXPIRE_ONLY) >> 32) | (int(I.SECURITY_CTX) >> 32)
    async with serve(init=False) as (k, s):
        # INIT_EXT offered: flags2 counts, and comes back in flags2 (bits 32..63).
        out = (await k.init(flags=ALL_FLAGS, flags2=ALL_FLAGS2)).init()
        assert out.flags2 == high
        assert out.flags & I.INIT_EXT
        assert out.flags >> 32 == 0
        assert s.client.flags & I.HAS_EXPIRE_ONLY and s.client.flags & I.SECURITY_CTX
    async with serve(init=False) as (k, s):
        # Without INIT_EXT, flags2 is not looked at (even in a 64-byte body).
        body = abi.INIT_IN.pack(7, 45, 0, ALL_FLAGS & ~int(I.INIT_EXT), ALL_FLAGS2)
        out = (await k.call(O.INIT, body)).init()
        assert out.flags2 == 0 and not out.flags & I.INIT_EXT
        assert s.client.flags >> 32 == 0


async def test_init_default_wants_nothing_in_flags2():
    async with serve(init=False) as (k, s):
        out = (await k.init(flags=ALL_FLAGS, flags2=ALL_FLAGS2)).init()
        assert out.flags2 == 0


async def test_init_newer_major_gets_only_major_minor_then_resend():
    async with serve(init=False) as (k, s):
        u = await k.send(O.INIT, k.init_body(major=8, minor=3))
        r = await k.recv()
        assert r.raw == HDR.pack(24, 0, u) + struct.pack("<II", 7, 45)
        assert not s.client.initialized
        assert (await k.getattr(1)).errno == errno.EIO   # still not initialized
        out = (await k.init(major=7, minor=45)).init()
        assert (out.major, out.minor) == (7, 45)
        assert s.client.initialized
        (await k.getattr(1)).attr()


@pytest.mark.parametrize("major,minor", [(7, abi.MIN_MINOR - 1), (7, 5), (6, 45)])
async def test_init_too_old_is_eproto(major, minor):
    async with serve(init=False) as (k, s):
        u = await k.send(O.INIT, abi.INIT_IN_COMPAT.pack(major, minor, 0, ALL_FLAGS))
        r = await k.recv()
        assert r.raw == error_reply(u, errno.EPROTO)
        assert not s.client.initialized


async def test_second_init_is_eio():
    async with serve() as (k, s):
        flags = s.client.flags
        u = await k.send(O.INIT, k.init_body(flags=int(I.ASYNC_READ)))
        assert (await k.recv()).raw == error_reply(u, errno.EIO)
        assert s.client.flags == flags
        (await k.getattr(1)).attr()


async def test_init_short_body_is_eio():
    async with serve(init=False) as (k, s):
        u = await k.send(O.INIT, struct.pack("<II", 7, 45))
        assert (await k.recv()).raw == error_reply(u, errno.EIO)
        assert not s.client.initialized


# --------------------------------------------------------------------------- opcodes

UNHANDLED = sorted(op for op, row in TABLE.items() if row.handler is None and row.reply)


@pytest.mark.parametrize("opcode", UNHANDLED + [99, 4095, 0])
async def test_unknown_opcode_is_enosys(opcode):
    async with serve() as (k, s):
        u = await k.send(opcode, bytes(64), 1)
        assert (await k.recv()).raw == error_reply(u, errno.ENOSYS)
        (await k.getattr(1)).attr()


async def test_no_reply_opcodes_are_never_answered():
    async with serve() as (k, s):
        await k.forget(12345, 1)                           # unknown nodeid
        await k.forget(1, 1)                               # the root is never forgotten
        await k.batch_forget([(1, 5), (777, 1)])
        await k.batch_forget([])
        await k.interrupt(1000)                            # nothing in flight
        await k.send(O.NOTIFY_REPLY, bytes(abi.NOTIFY_RETRIEVE_IN.size), 1)
        assert await k.silence(0.2)
        assert 1 in s.itable.by_nodeid
        r = await k.getattr(1)
        assert r.unique == k.next_unique
        assert await k.silence(0.05)


async def test_malformed_no_reply_requests_stay_silent():
    async with serve() as (k, s):
        await k.send(O.FORGET, b"\x01\x00", 1)                 # short body
        await k.send(O.BATCH_FORGET, abi.BATCH_FORGET_IN.pack(5) + abi.FORGET_ONE.pack(1, 1))
        await k.send(O.INTERRUPT, b"", length=999)             # wrong length
        assert await k.silence(0.2)
        (await k.getattr(1)).attr()


# --------------------------------------------------------------------------- malformed

MALFORMED = {
    "len-bigger-than-read": dict(op=O.GETATTR, body=abi.GETATTR_IN.pack(0, 0), length=200),
    "len-smaller-than-read": dict(op=O.GETATTR, body=abi.GETATTR_IN.pack(0, 0), length=41),
    "getattr-short-body": dict(op=O.GETATTR, body=b"\0" * 4),
    "read-short-body": dict(op=O.READ, body=b"\0" * 20),
    "setattr-short-body": dict(op=O.SETATTR, body=b"\0" * 80),
    "mkdir-no-body": dict(op=O.MKDIR, body=b""),
    "lookup-no-nul": dict(op=O.LOOKUP, body=b"name"),
    "lookup-empty": dict(op=O.LOOKUP, body=b""),
    "mkdir-no-nul": dict(op=O.MKDIR, body=abi.MKDIR_IN.pack(0o755, 0) + b"d"),
    "rename-one-name": dict(op=O.RENAME, body=abi.RENAME_IN.pack(1) + b"a\0b"),
    "symlink-one-name": dict(op=O.SYMLINK, body=b"link\0target"),
    "setxattr-no-nul": dict(op=O.SETXATTR, body=abi.SETXATTR_IN.pack(1, 0, 0) + b"user.x"),
    "setxattr-short-value": dict(op=O.SETXATTR,
                                 body=abi.SETXATTR_IN.pack(10, 0, 0) + b"user.x\0abc"),
    "setxattr-ext-short-body": dict(op=O.SETXATTR, body=b"\0" * 12),   # 8 <= len < 16
    "getxattr-no-nul": dict(op=O.GETXATTR, body=abi.GETXATTR_IN.pack(0) + b"user.x"),
    "extlen-past-body": dict(op=O.GETATTR, body=abi.GETATTR_IN.pack(0, 0), extlen=4),
    "extlen-eats-body": dict(op=O.GETATTR, body=abi.GETATTR_IN.pack(0, 0), extlen=1),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_request_is_eio_and_the_loop_goes_on(case):
    c = MALFORMED[case]
    async with serve() as (k, s):
        u = await k.send(c["op"], c["body"], 1, length=c.get("length"),
                         extlen=c.get("extlen", 0))
        assert (await k.recv()).raw == error_reply(u, errno.EIO)
        (await k.getattr(1)).attr()
        assert (await k.lookup(1, b"missing")).errno == errno.ENOENT
        assert s.stats["exceptions"] == 0, "a malformed request is not a handler bug"


async def test_write_shorter_than_its_size_is_eio():
    async with serve() as (k, s):
        e, o = (await k.create(1, b"f")).create()
        body = abi.WRITE_IN.pack(o.fh, 0, 100, 0, 0, 0) + b"x" * 10
        u = await k.send(O.WRITE, body, e.nodeid)
        assert (await k.recv()).raw == error_reply(u, errno.EIO)
        assert (await k.read(e.nodeid, o.fh, 100)).ok().body == b""


async def test_message_shorter_than_a_header_is_dropped():
    async with serve() as (k, s):
        await k.send_raw(b"\x0a\0\0\0\x03\0\0\0\x02\0")
        assert await k.silence(0.1)
        (await k.getattr(1)).attr()


async def test_unknown_nodeid_is_estale():
    async with serve() as (k, s):
        assert (await k.getattr(999)).errno == errno.ESTALE
        assert (await k.lookup(999, b"x")).errno == errno.ESTALE


# --------------------------------------------------------------------------- failures

async def test_handler_exception_is_eio_and_the_loop_goes_on(caplog):
    async with serve(memory_graph("test/gate")) as (k, s):
        u = await k.send(O.LOOKUP, cstr(b"boom"), 1)
        assert (await k.recv()).raw == error_reply(u, errno.EIO)
        assert s.stats["exceptions"] == 1
        assert "RuntimeError" in caplog.text or "raised" in caplog.text
        (await k.getattr(1)).attr()
        # again: the loop did not die, the reader is still there
        assert (await k.lookup(1, b"boom")).errno == errno.EIO
        (await k.mkdir(1, b"d")).entry()
        assert s.stats["exceptions"] == 2


@pytest.mark.parametrize("name,err", [(b"fop", errno.EACCES), (b"oserr", errno.ENOTCONN),
                                      (b"missing", errno.ENOENT)])
async def test_fop_errors_become_minus_errno(name, err):
    async with serve(memory_graph("test/gate")) as (k, s):
        u = await k.send(O.LOOKUP, cstr(name), 1)
        assert (await k.recv()).raw == error_reply(u, err)
        assert s.stats["exceptions"] == 0


async def test_fop_errors_through_the_handlers():
    async with serve() as (k, s):
        (await k.mkdir(1, b"d")).entry()
        assert (await k.mkdir(1, b"d")).errno == errno.EEXIST
        assert (await k.rmdir(1, b"nothere")).errno == errno.ENOENT
        assert (await k.read(1, 4242, 10)).errno == errno.EBADF       # unknown fh


# --------------------------------------------------------------------------- the end

async def test_closing_the_device_ends_the_session():
    k = FakeKernel()
    s = Session(memory_graph(), k.device_fd, BridgeOptions(), "/fake")
    returned = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            async def run():
                await s.run()
                returned.set()
            nursery.start_soon(run)
            await trio.sleep(0)
            (await k.init()).init()
            k.close()
            with trio.fail_after(5):
                await returned.wait()
        assert s.ended.is_set()
        assert "end of file" in s.end_reason
        assert all(c.readers == 0 for c in s.channels)
    finally:
        k.dsock.close()


async def test_enodev_ends_the_session(monkeypatch):
    real = os.readv
    k = FakeKernel()
    dev = k.device_fd
    mode = {"err": None}

    def readv(fd, bufs):
        if fd == dev and mode["err"] is not None:
            err, mode["err"] = mode["err"], (None if mode["err"] != errno.ENODEV
                                              else errno.ENODEV)
            raise OSError(err, os.strerror(err))
        return real(fd, bufs)

    monkeypatch.setattr(os, "readv", readv)
    s = Session(memory_graph(), dev, BridgeOptions(), "/fake")
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(s.run)
                (await k.init()).init()
                # ENOENT (aborted before read) and EINTR are retried: the request is served
                for err in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                    mode["err"] = err
                    (await k.getattr(1)).attr()
                mode["err"] = errno.ENODEV
                await k.send(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1)
                await s.ended.wait()
        assert "unmounted" in s.end_reason
    finally:
        k.close_all()


async def test_destroy_is_answered_and_ends_the_session():
    async with serve() as (k, s):
        u = await k.send(O.DESTROY, b"", 0)
        assert (await k.recv()).raw == HDR.pack(16, 0, u)
        with trio.fail_after(5):
            await s.ended.wait()
        assert "DESTROY" in s.end_reason


# --------------------------------------------------------------------------- one reply

async def test_exactly_one_reply_per_request():
    async with serve(memory_graph("test/gate")) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        answered = []
        for i in range(5):
            answered.append(await k.send(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1))
            answered.append(await k.send(O.LOOKUP, cstr(b"f"), 1))
            answered.append(await k.send(O.LOOKUP, cstr(b"nope"), 1))
            answered.append(await k.send(O.LOOKUP, cstr(b"boom"), 1))
            answered.append(await k.send(O.LOOKUP, cstr(b"fop"), 1))
            answered.append(await k.send(99, b"", 1))
            answered.append(await k.send(O.GETATTR, b"", 1))            # short body
            answered.append(await k.send(O.INIT, k.init_body()))        # second INIT
            answered.append(await k.send(O.READ, abi.READ_IN.pack(o.fh, 0, 10, 0, 0, 0),
                                         e.nodeid))
            answered.append(await k.send(O.FLUSH, abi.FLUSH_IN.pack(o.fh, 0), e.nodeid))
            await k.forget(e.nodeid, 1)
            await k.interrupt(answered[-1])
            await k.send(O.NOTIFY_REPLY, bytes(40), 1)
            answered.append(await k.send(O.LOOKUP, cstr(b"f"), 1))       # re-count it
        seen = collections.Counter()
        while True:
            with trio.move_on_after(0.3):
                r = await k.recv()
                seen[r.unique] += 1
                continue
            break
        assert set(seen) == set(answered)
        assert all(n == 1 for n in seen.values()), [u for u, n in seen.items() if n > 1]
        assert s.interrupts.pending == {}
