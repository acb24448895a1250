"""--dump-fuse: every message both ways, in GlusterFS's record layout, and its decoders
(fuse_bridge.dump.read_dump / describe / decode_file and ``xlfsctl dump-decode``)."""
from __future__ import annotations

import errno
import io
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuse_bridge import abi
from fuse_bridge.dump import DumpRecord, DumpWriter, decode_file, describe, read_dump
from fuse_bridge.options import BridgeOptions
from tests.protocol.kernel import ALL_FLAGS, serve
from xlators import ctl

O = abi.Opcode
I = abi.InitFlag
ROOT = Path(__file__).resolve().parents[2]
STAMP = r"\d\d:\d\d:\d\d\.\d{6}"


async def record_session(path: Path, **init_kw):
    """A short session with --dump-fuse; returns the fake kernel's log of messages."""
    async with serve(options=BridgeOptions(dump_fuse=str(path)), **init_kw) as (k, s):
        assert (await k.lookup(1, b"nothere")).errno == errno.ENOENT
        d = (await k.mkdir(1, b"dir")).entry()
        await k.forget(d.nodeid, 1)
        (await k.getattr(1)).attr()
        log = list(k.log)
    return log


def read_all(path: Path) -> list[DumpRecord]:
    with open(path, "rb") as f:
        return list(read_dump(f))


async def test_records_in_order(tmp_path):
    path = tmp_path / "fuse.dump"
    before = time.time_ns()
    log = await record_session(path)
    after = time.time_ns()
    recs = read_all(path)
    assert [(r.direction, r.message) for r in recs] == log
    assert [r.direction for r in recs] == list("RWRWRWRRW")     # FORGET: no W
    times = [r.time_ns for r in recs]
    assert times == sorted(times) and before <= times[0] and times[-1] <= after


async def test_record_layout_golden(tmp_path):
    path = tmp_path / "fuse.dump"
    log = await record_session(path)
    raw = path.read_bytes()
    pos = 0
    for direction, message in log:
        assert raw[pos:pos + 1] == direction.encode()
        count, size16, sec, nsec, size12 = struct.unpack_from("<IIQII", raw, pos + 1)
        assert (count, size16, size12) == (3, 16, 12)
        assert abs(sec - time.time()) < 600 and 0 <= nsec < 1_000_000_000
        assert raw[pos + 25:pos + 33] == b"GLUSTER\xf5"
        assert raw[pos + 33:pos + 33 + len(message)] == message
        pos += 33 + len(message)
    assert pos == len(raw)


def test_writer_bytes_golden(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_123_456_789)
    path = tmp_path / "d"
    w = DumpWriter(str(path))
    msg = abi.OUT_HEADER.pack(16, -2, 42)
    w.record(b"W", msg)
    w.close()
    assert path.read_bytes() == (b"W" + b"\x03\0\0\0" + b"\x10\0\0\0"
                                 + struct.pack("<Q", 1_700_000_000) + struct.pack("<I", 123_456_789)
                                 + b"\x0c\0\0\0" + b"GLUSTER\xf5" + msg)
    rec, = read_all(path)
    assert rec == DumpRecord("W", 1_700_000_000_123_456_789, msg)


async def test_describe_lines(tmp_path):
    path = tmp_path / "fuse.dump"
    log = await record_session(path)
    lines = list(decode_file(str(path)))
    assert len(lines) == len(log)
    pid = r"pid=\d+"
    want = [
        rf"R INIT unique=2 nodeid=0 uid=0 gid=0 {pid} len=104 major=7 minor=45 "
        r"max_readahead=\d+ flags=0x[0-9a-f]+ flags2=0x[0-9a-f]+",
        r"W INIT unique=2 ok len=80 major=7 minor=45 max_readahead=\d+ flags=0x[0-9a-f]+ "
        r"max_background=\d+ congestion_threshold=\d+ max_write=\d+ time_gran=1 "
        r"max_pages=\d+ map_alignment=0 flags2=0x[0-9a-f]+ max_stack_depth=\d+ "
        r"request_timeout=0",
        rf"R LOOKUP unique=4 nodeid=1 uid=0 gid=0 {pid} len=48 name='nothere'",
        r"W LOOKUP unique=4 error=ENOENT len=16",
        rf"R MKDIR unique=6 nodeid=1 uid=0 gid=0 {pid} len=52 mode=0o755 umask=0o22 "
        r"name='dir'",
        r"W MKDIR unique=6 ok len=144 nodeid=(\d+) generation=\d+ entry_valid=\d+ "
        r"attr_valid=\d+ entry_valid_nsec=\d+ attr_valid_nsec=\d+ ino=\d+ size=\d+ "
        r"blocks=\d+ atime=\d+ mtime=\d+ ctime=\d+ atimensec=\d+ mtimensec=\d+ "
        r"ctimensec=\d+ mode=0o40755 nlink=2 uid=0 gid=0 rdev=0 blksize=\d+ flags=0x0",
        rf"R FORGET unique=8 nodeid=\d+ uid=0 gid=0 {pid} len=48 nlookup=1",
        rf"R GETATTR unique=10 nodeid=1 uid=0 gid=0 {pid} len=56 getattr_flags=0x0 fh=0",
        r"W GETATTR unique=10 ok len=120 attr_valid=\d+ attr_valid_nsec=\d+ ino=1 .* "
        r"mode=0o40755 nlink=3 .* flags=0x0",
    ]
    for line, pattern in zip(lines, want):
        assert re.fullmatch(STAMP + " " + pattern, line), line


def test_describe_notifications_and_short_messages():
    t = 1_700_000_000_000_000_000
    msg = abi.pack_notify_header(40, abi.NotifyCode.INVAL_INODE) + \
        abi.NOTIFY_INVAL_INODE_OUT.pack(7, 0, -1)
    assert describe(DumpRecord("W", t, msg)).endswith(
        " W NOTIFY_INVAL_INODE len=40 ino=7 off=0 len=-1")
    msg = abi.pack_notify_header(16 + 16 + 4, abi.NotifyCode.INVAL_ENTRY) + \
        abi.NOTIFY_INVAL_ENTRY_OUT.pack(1, 3, 0) + b"abc\0"
    assert describe(DumpRecord("W", t, msg)).endswith(
        " W NOTIFY_INVAL_ENTRY len=36 parent=1 namelen=3 flags=0x0 name='abc'")
    assert describe(DumpRecord("W", t, b"abc")).endswith(
        " W reply of 3 bytes (shorter than a header)")
    odd = abi.IN_HEADER.pack(40, 9999, 2, 1, 0, 0, 0, 0)
    assert " R OPCODE_9999 unique=2 " in describe(DumpRecord("R", t, odd))
    err = abi.OUT_HEADER.pack(16, -errno.EIO, 8)
    assert describe(DumpRecord("W", t, err)).endswith(" W reply unique=8 error=EIO len=16")


async def test_two_names_and_setxattr_names(tmp_path):
    path = tmp_path / "fuse.dump"
    async with serve(options=BridgeOptions(dump_fuse=str(path))) as (k, s):
        assert s.client.flags & I.SETXATTR_EXT
        e, o = (await k.create(1, b"a")).create()
        (await k.rename(1, b"a", 1, b"b")).ok()
        (await k.symlink(1, b"link", b"target")).entry()
        (await k.setxattr(e.nodeid, b"user.key", b"val", ext=True)).ok()
        assert (await k.getxattr(e.nodeid, b"user.key", 0)).ok()
    lines = list(decode_file(str(path)))
    text = "\n".join(lines)
    assert re.search(r" R CREATE .* flags=0x[0-9a-f]+ mode=0o100\d+ umask=0o\d+ "
                     r"open_flags=0x0 name='a'$", text, re.M)
    assert re.search(r" W CREATE unique=\d+ ok len=160 nodeid=\d+ .* fh=\d+ open_flags=0x\d+ "
                     r"backing_id=0$", text, re.M)
    assert re.search(r" R RENAME .* newdir=1 name='a' newname='b'$", text, re.M)
    assert re.search(r" R SYMLINK .* name='link' target='target'$", text, re.M)
    assert re.search(r" R GETXATTR .* size=0 name='user.key'$", text, re.M)
    assert re.search(r" W GETXATTR unique=\d+ ok len=24 size=3$", text, re.M), text
    assert re.search(r" R SETXATTR .* size=3 flags=0x0 setxattr_flags=0x0 name='user.key' "
                     r"data=3 bytes$", text, re.M), \
        [line for line in lines if "SETXATTR" in line]


async def test_setxattr_compat_layout_name(tmp_path):
    path = tmp_path / "fuse.dump"
    async with serve(options=BridgeOptions(dump_fuse=str(path)),
                     flags=ALL_FLAGS & ~int(I.SETXATTR_EXT)) as (k, s):
        (await k.setxattr(1, b"user.key", b"val", ext=False)).ok()
    assert any(re.search(r" SETXATTR .* size=3 flags=0x0 name='user.key' data=3 bytes$", line)
               for line in decode_file(str(path)))


async def test_malformed_request_keeps_the_dump_readable(tmp_path):
    """The session records what it read; a request whose header lies about its length
    must not derail the decoder for the records after it."""
    path = tmp_path / "fuse.dump"
    async with serve(options=BridgeOptions(dump_fuse=str(path))) as (k, s):
        for length in (200, 41, 0, 3, 1 << 30):
            u = await k.send(O.GETATTR, abi.GETATTR_IN.pack(0, 0), 1, length=length)
            assert (await k.recv()).errno == errno.EIO
        (await k.getattr(1)).attr()
        log = list(k.log)
    recs = read_all(path)
    assert [r.direction for r in recs] == [d for d, _ in log]
    assert [r.message for r in recs][-2:] == [m for _, m in log][-2:]
    assert len(list(decode_file(str(path)))) == len(log)


async def test_messages_that_contain_dump_records(tmp_path):
    """A WRITE of a dump file into the filesystem carries record heads in its payload:
    the message's own length decides, not what it contains."""
    first = tmp_path / "first.dump"
    await record_session(first)
    payload = first.read_bytes()
    path = tmp_path / "fuse.dump"
    async with serve(options=BridgeOptions(dump_fuse=str(path))) as (k, s):
        e, o = (await k.create(1, b"copy.dump")).create()
        assert (await k.write(e.nodeid, o.fh, payload)).u32() == len(payload)
        assert (await k.read(e.nodeid, o.fh, len(payload))).ok().body == payload
        log = list(k.log)
    assert [(r.direction, r.message) for r in read_all(path)] == log


async def test_truncated_last_record_ends_reading(tmp_path):
    path = tmp_path / "fuse.dump"
    log = await record_session(path)
    raw = path.read_bytes()
    for cut in (1, 10, 33, 36, 40):
        recs = list(read_dump(io.BytesIO(raw[:-cut])))
        assert [r.message for r in recs] == [m for _, m in log[:-1]]


async def test_not_a_dump_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not a FUSE dump record at byte 0"):
        list(read_dump(io.BytesIO(b"X" * 100)))
    path = tmp_path / "fuse.dump"
    log = await record_session(path)
    raw = path.read_bytes()
    good = list(read_dump(io.BytesIO(raw)))
    at = len(raw)
    with pytest.raises(ValueError, match=f"not a FUSE dump record at byte {at}"):
        list(read_dump(io.BytesIO(raw + b"Q" * 40)))
    recs = []
    with pytest.raises(ValueError):
        for r in read_dump(io.BytesIO(raw + b"Q" * 40)):
            recs.append(r)
    assert recs == good and len(good) == len(log)


async def test_dump_file_is_appended(tmp_path):
    path = tmp_path / "fuse.dump"
    first = await record_session(path)
    second = await record_session(path)
    assert [r.message for r in read_all(path)] == [m for _, m in first + second]


# --------------------------------------------------------------------------- xlfsctl

async def test_xlfsctl_dump_decode(tmp_path, capsys):
    path = tmp_path / "fuse.dump"
    await record_session(path)
    assert ctl.main(["dump-decode", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == list(decode_file(str(path)))
    assert len(out) == 9 and " LOOKUP " in out[2]


def test_xlfsctl_dump_decode_errors(tmp_path, capsys):
    assert ctl.main(["dump-decode", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.write_bytes(b"Z" * 64)
    assert ctl.main(["dump-decode", str(bad)]) == 1
    assert "not a FUSE dump record" in capsys.readouterr().err


def test_xlfsctl_help_lists_dump_decode():
    parser = ctl.build_parser()
    assert "dump-decode" in parser.format_help()


async def test_xlfsctl_dump_decode_command_line(tmp_path):
    path = tmp_path / "fuse.dump"
    await record_session(path)
    p = subprocess.run([sys.executable, "-m", "xlators.ctl", "dump-decode", str(path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 9
