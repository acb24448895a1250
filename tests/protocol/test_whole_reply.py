"""Whole replies (fuse_bridge.encode.whole_reply): a handler marked so returns the reply
message with its out-header, packed in one struct call; the session writes it as it is,
whether the handler finished at once or waited.  The bytes on the wire are those of the
out-header and the body encoded apart."""
from __future__ import annotations

import errno
import struct

import trio

from fuse_bridge import abi, encode
from fuse_bridge.mount_watch import MountWatch
from tests.protocol.kernel import serve
from xlators.core.types import Attr

O = abi.Opcode
HDR = struct.Struct("<IiQ")
T = encode.Timeouts(entry=2.5, attr=1.25, negative=0)
A = Attr(ino=7, size=4096, blocks=8, atime_ns=-1_500_000_000, mtime_ns=3_000_000_001,
         ctime_ns=5, mode=0o100644, nlink=2, uid=1000, gid=100, rdev=0x1_0000_0003,
         blksize=4096)


def test_whole_replies_are_the_header_and_the_body_encoded_apart():
    assert encode.attr_reply(T, 42, A) == HDR.pack(120, 0, 42) + encode.attr_out(T, A)
    assert (encode.entry_reply(T, 43, 9, A, 3)
            == HDR.pack(144, 0, 43) + encode.entry_out(T, 9, A, 3))
    assert encode.write_reply(44, 4096) == HDR.pack(24, 0, 44) + abi.WRITE_OUT.pack(4096)


def test_the_getattr_setattr_and_write_handlers_are_marked():
    from fuse_bridge import ops_entry, ops_file
    for handler in (ops_entry.getattr_, ops_entry.setattr_, ops_file.write):
        assert getattr(handler, "whole_reply", False), handler.__name__


def test_mount_watch_wrappers_keep_the_mark(tmp_path):
    """SETATTR is wrapped (it modifies): the wrapper returns a whole message too."""
    from fuse_bridge import ops_entry, ops_file

    class Sess:
        handlers = {int(O.SETATTR): ops_entry.setattr_, int(O.OPEN): ops_file.open_}

        def handler(self, op):
            return self.handlers.get(op)

        def set_handler(self, op, h):
            self.handlers[op] = h

    watch = MountWatch(str(tmp_path), lambda old, new: None)
    try:
        s = Sess()
        watch.install(s)
        assert s.handlers[int(O.SETATTR)] is not ops_entry.setattr_
        assert getattr(s.handlers[int(O.SETATTR)], "whole_reply", False)
        assert not getattr(s.handlers[int(O.OPEN)], "whole_reply", False)
    finally:
        watch.close()


async def test_a_marked_handler_set_later_is_written_as_it_is_at_once_or_after_waiting():
    @encode.whole_reply
    async def statfs_now(c, req, body):
        return HDR.pack(24, 0, req.unique) + b"12345678"

    @encode.whole_reply
    async def statfs_later(c, req, body):
        await trio.sleep(0)
        return HDR.pack(24, 0, req.unique) + b"abcdefgh"

    async with serve() as (k, s):
        s.set_handler(int(O.STATFS), statfs_now)
        u = await k.send(O.STATFS, b"", 1)
        assert (await k.recv()).raw == HDR.pack(24, 0, u) + b"12345678"
        s.set_handler(int(O.STATFS), statfs_later)
        u = await k.send(O.STATFS, b"", 1)
        assert (await k.recv()).raw == HDR.pack(24, 0, u) + b"abcdefgh"
        assert await k.silence(0.1)


async def test_a_marked_handler_returning_no_bytes_is_answered_eio_once():
    @encode.whole_reply
    async def bad(c, req, body):
        return [HDR.pack(24, 0, req.unique), b"12345678"]

    async with serve() as (k, s):
        s.set_handler(int(O.STATFS), bad)
        u = await k.send(O.STATFS, b"", 1)
        assert (await k.recv()).raw == HDR.pack(16, -errno.EIO, u)
        assert await k.silence(0.1)
        (await k.getattr(1)).attr()


async def test_reply_message_sends_once_and_says_whether_it_did():
    sent = []

    async def statfs(c, req, body):
        sent.append(req.session.reply_message(req, HDR.pack(24, 0, req.unique) + b"x" * 8))
        sent.append(req.session.reply_message(req, HDR.pack(24, 0, req.unique) + b"y" * 8))

    async with serve() as (k, s):
        s.set_handler(int(O.STATFS), statfs)
        u = await k.send(O.STATFS, b"", 1)
        assert (await k.recv()).raw == HDR.pack(24, 0, u) + b"x" * 8
        assert await k.silence(0.1)
        assert sent == [True, False]


async def test_getattr_and_write_on_the_wire():
    async with serve() as (k, s):
        e, o = (await k.create(1, b"f")).create()
        r = await k.write(e.nodeid, o.fh, b"hello")
        assert r.raw == HDR.pack(24, 0, r.unique) + abi.WRITE_OUT.pack(5)
        r = await k.getattr(e.nodeid)
        assert len(r.raw) == 120 and r.raw[:16] == HDR.pack(120, 0, r.unique)
        assert r.attr().attr.size == 5
