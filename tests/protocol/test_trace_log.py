"""``-L TRACE``: each request and its reply on one log line (fuse_bridge.trace_log)."""
from __future__ import annotations

import logging
import re

from fuse_bridge import abi, trace_log
from fuse_bridge.dump import DumpWriter
from fuse_bridge.trace_log import TRACE, Tee, TraceLog, recorder
from tests.protocol.kernel import serve

O = abi.Opcode


def test_recorder_is_none_unless_asked(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, "xlfs.fuse.trace")
    assert recorder(None) is None
    assert isinstance(recorder(str(tmp_path / "d")), DumpWriter)
    caplog.set_level(TRACE, "xlfs.fuse.trace")
    assert isinstance(recorder(None), TraceLog)
    both = recorder(str(tmp_path / "d"))
    assert isinstance(both, Tee) and trace_log.is_traced(both)


def test_one_line_per_message_reply_paired(caplog):
    caplog.set_level(TRACE, "xlfs.fuse.trace")
    t = TraceLog()
    t.record(b"R", abi.IN_HEADER.pack(40 + 5, O.LOOKUP, 9, 1, 1000, 100, 42, 0) + b"name\0")
    t.record(b"W", abi.OUT_HEADER.pack(16, -2, 9))
    t.record(b"W", b"\x01")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("TRACE", "R LOOKUP unique=9 nodeid=1 uid=1000 gid=100 pid=42 len=45 name='name'"),
        ("TRACE", "W LOOKUP unique=9 error=ENOENT len=16"),
        ("TRACE", "W reply of 1 bytes (shorter than a header)"),
    ]


async def test_a_session_traced_at_trace_level(caplog):
    caplog.set_level(TRACE, "xlfs.fuse.trace")
    async with serve() as (k, s):
        trace_log.install(s)
        trace_log.install(s)                 # idempotent
        assert isinstance(s.dump, TraceLog)
        e = (await k.mkdir(1, b"dir")).entry()
        (await k.getattr(e.nodeid)).attr()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "xlfs.fuse.trace")
    assert re.search(r"^R MKDIR unique=(\d+) nodeid=1 .* mode=0o755 umask=0o22 name='dir'$",
                     text, re.M), text
    assert re.search(r"^W MKDIR unique=\d+ ok len=144 nodeid=\d+ .* mode=0o40755 ", text, re.M)
    assert re.search(r"^W GETATTR unique=\d+ ok len=120 attr_valid=", text, re.M)


async def test_nothing_is_recorded_when_trace_is_off(caplog):
    caplog.set_level(logging.DEBUG, "xlfs.fuse.trace")
    async with serve() as (k, s):
        trace_log.install(s)
        assert s.dump is None
        (await k.getattr(1)).attr()
    assert not [r for r in caplog.records if r.name == "xlfs.fuse.trace"]
