"""Every FUSE message as one line (fuse_bridge.wire_text): each field of each request,
reply and notification decoded from abi's layouts, each reply paired with its request."""
from __future__ import annotations

import os
import re
import struct

from fuse_bridge import abi
from fuse_bridge.dump import decode_file
from fuse_bridge.options import BridgeOptions
from fuse_bridge.opcodes import TABLE
from fuse_bridge.wire_text import (FIELD_NAMES, Conversation, describe_reply,
                                   describe_request)
from tests.protocol.kernel import serve

O = abi.Opcode


def _count(layout: struct.Struct) -> int:
    return len(layout.unpack(bytes(layout.size)))


def test_every_layout_a_message_can_carry_has_a_name_per_field():
    layouts = {r.input for r in TABLE.values() if r.input is not None}
    layouts |= {o for r in TABLE.values() for o in r.out} | {abi.SETXATTR_IN, abi.INIT_IN}
    layouts |= {getattr(abi, n) for n in dir(abi) if n.startswith("NOTIFY_")
                and n.endswith("_OUT") and isinstance(getattr(abi, n), struct.Struct)}
    structs = {n: getattr(abi, n) for n in dir(abi) if isinstance(getattr(abi, n), struct.Struct)}
    missing = [n for n, layout in structs.items()
               if layout in layouts and len(FIELD_NAMES.get(layout, ())) != _count(layout)]
    assert missing == []
    assert len(layouts) > 50


async def test_a_session_decodes_with_every_field_and_every_reply_paired(tmp_path):
    path = tmp_path / "fuse.dump"
    async with serve(options=BridgeOptions(dump_fuse=str(path))) as (k, s):
        e, o = (await k.create(1, b"f")).create()
        (await k.write(e.nodeid, o.fh, b"hello world")).ok()
        assert (await k.read(e.nodeid, o.fh, 100)).ok()
        (await k.setattr(e.nodeid, abi.SetattrValid.MODE, mode=0o100600)).ok()
        (await k.setxattr(e.nodeid, b"user.a", b"1", ext=True)).ok()
        (await k.listxattr(e.nodeid, 0)).ok()
        (await k.listxattr(e.nodeid, 100)).ok()
        (await k.getxattr(e.nodeid, b"user.a", 10)).ok()
        (await k.flush(e.nodeid, o.fh)).ok()
        (await k.release(e.nodeid, o.fh)).ok()
        (await k.symlink(1, b"l", b"f")).entry()
        (await k.readlink((await k.lookup(1, b"l")).entry().nodeid)).ok()
        await k.listdir(1)
        await k.listdir(1, plus=True)
        (await k.statfs()).ok()
        (await k.access(1, os.R_OK)).ok()
        await k.batch_forget([(e.nodeid, 1)])
        (await k.mkdir(1, b"d")).entry()
        (await k.rmdir(1, b"d")).ok()
    lines = list(decode_file(str(path)))
    text = "\n".join(lines)
    assert "field0" not in text and "request not seen" not in text, text
    assert not re.search(r" W reply ", text), text
    for opcode in ("WRITE", "READ", "SETATTR", "LISTXATTR", "GETXATTR", "READLINK",
                   "READDIR", "READDIRPLUS", "STATFS", "ACCESS", "RMDIR"):
        assert re.search(rf" W {opcode} unique=\d+ ", text), (opcode, text)
    assert re.search(r" R WRITE .* fh=\d+ offset=0 size=11 .* data=11 bytes$", text, re.M)
    assert re.search(r" W WRITE unique=\d+ ok len=24 size=11$", text, re.M)
    assert re.search(r" W READ unique=\d+ ok len=27 data=11 bytes$", text, re.M)
    assert "hello" not in text                      # file data is never shown
    assert re.search(r" W LISTXATTR unique=\d+ ok len=24 size=\d+$", text, re.M)
    assert re.search(r" W LISTXATTR unique=\d+ ok len=\d+ names=.*'user.a'", text, re.M)
    assert re.search(r" W GETXATTR unique=\d+ ok len=17 data=1 bytes$", text, re.M)
    assert re.search(r" W READLINK unique=\d+ ok len=17 target='f'$", text, re.M)
    assert re.search(r" W READDIR unique=\d+ ok len=\d+ entries=\d+ .*'f'\(ino=\d+,off=\d+,"
                     r"type=8\)", text, re.M)
    assert re.search(r" W READDIRPLUS unique=\d+ ok len=\d+ entries=\d+ .*'l'\(ino=\d+,"
                     r"off=\d+,type=10,nodeid=\d+\)", text, re.M)
    assert re.search(r" W STATFS unique=\d+ ok len=96 blocks=\d+ bfree=\d+ bavail=\d+ "
                     r"files=\d+ ffree=\d+ bsize=\d+ namelen=255 frsize=\d+$", text, re.M)
    assert re.search(r" R BATCH_FORGET .* count=1 forget=\d+:1$", text, re.M)
    assert re.search(r" R ACCESS .* mask=0o4$", text, re.M)


def test_a_reply_whose_request_was_not_seen_and_a_resent_unique():
    conv = Conversation()
    reply = abi.OUT_HEADER.pack(24, 0, 7) + abi.WRITE_OUT.pack(3)
    assert conv.reply(reply) == "reply unique=7 ok len=24 body=8 bytes (request not seen)"
    req = abi.IN_HEADER.pack(40 + 40 + 3, O.WRITE, 7, 5, 0, 0, 1, 0) + \
        abi.WRITE_IN.pack(1, 0, 3, 0, 0, 0) + b"abc"
    assert conv.request(req).startswith("WRITE unique=7 nodeid=5 ")
    assert conv.reply(reply) == "WRITE unique=7 ok len=24 size=3"
    assert conv.pending == {}


def test_malformed_requests_are_described_not_raised():
    short = abi.IN_HEADER.pack(44, O.READ, 2, 1, 0, 0, 0, 0) + b"abcd"
    assert describe_request(short).endswith("malformed: body of 4 bytes")
    noname = abi.IN_HEADER.pack(43, O.LOOKUP, 2, 1, 0, 0, 0, 0) + b"abc"
    assert "names not NUL-terminated" in describe_request(noname)
    assert describe_request(b"xy") == "request of 2 bytes (shorter than a header)"
    assert describe_reply(abi.OUT_HEADER.pack(16, -2, 3), O.LOOKUP) == \
        "LOOKUP unique=3 error=ENOENT len=16"
