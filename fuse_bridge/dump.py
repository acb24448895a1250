"""``--dump-fuse=PATH``: every FUSE message both ways, in GlusterFS's record format, and
the decoder behind ``xlfsctl dump-decode`` (GlusterFS needs an external tool for it): one
line per message with every field decoded (fuse_bridge.wire_text), each reply named after
the request it answers.  The file is created 0600: it holds file names and data.

A record is a direction byte (``R`` read from the kernel, ``W`` written to it), a u32
count of the parts that follow (3), then parts: ``{u32 16, u64 sec, u32 nsec}`` (the
time), ``{u32 12, "GLUSTER\\xF5"}`` (a marker) and the raw FUSE message (its own length
is in its header).  Integers are little-endian here, as GlusterFS writes them on x86.
"""
from __future__ import annotations

import os
import struct
import time
from typing import BinaryIO, Iterator, NamedTuple, Optional

from . import abi
from .wire_text import Conversation

_MARK = b"GLUSTER\xf5"
_TIME = struct.Struct("<IIQI")      # count=3, then {u32 16, u64 sec, u32 nsec}
_MARK_PART = struct.Struct("<I8s")  # {u32 12, marker}


class DumpWriter:
    def __init__(self, path: str) -> None:
        # The recording holds file data and names: readable by the owner only.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        self.f = open(fd, "ab", buffering=1 << 16)

    def record(self, direction: bytes, message) -> None:
        ns = time.time_ns()
        self.f.write(direction + _TIME.pack(3, 16, ns // 1_000_000_000, ns % 1_000_000_000)
                     + _MARK_PART.pack(12, _MARK))
        self.f.write(message)

    def close(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass


class DumpRecord(NamedTuple):
    direction: str   # "R" (kernel -> xlfs) or "W" (xlfs -> kernel)
    time_ns: int
    message: bytes


_HEAD = 1 + _TIME.size + _MARK_PART.size
_HEAD_KEY = struct.pack("<II", 3, 16)   # bytes 1..8 of every record head


def _is_head(h: bytes) -> bool:
    if len(h) < _HEAD or h[0] not in b"RW":
        return False
    count, size, _, _ = _TIME.unpack_from(h, 1)
    size12, mark = _MARK_PART.unpack_from(h, 1 + _TIME.size)
    return count == 3 and size == 16 and size12 == 12 and mark == _MARK


def _next_head(f: BinaryIO, pos: int) -> Optional[int]:
    """Offset of the first record head at or after ``pos``, None if there is none."""
    f.seek(pos)
    buf = b""
    base = pos
    while True:
        chunk = f.read(1 << 16)
        buf += chunk
        i = buf.find(_HEAD_KEY, 1)
        while i >= 1:
            if len(buf) - (i - 1) < _HEAD and chunk:
                break                                  # need more bytes to judge
            if _is_head(buf[i - 1:i - 1 + _HEAD]):
                return base + i - 1
            i = buf.find(_HEAD_KEY, i + 1)
        if not chunk:
            return None
        keep = max(0, len(buf) - _HEAD)
        base += keep
        buf = buf[keep:]


def read_dump(f: BinaryIO) -> Iterator[DumpRecord]:
    """Yield the records of a dump; a truncated last record ends the iteration.

    A record's message ends where its own header's length says.  A request whose header
    lies about its length (the session records what it read) is cut at the next record
    head instead, so the records after it still decode (needs a seekable file)."""
    while True:
        start = f.tell()
        h = f.read(_HEAD)
        if len(h) < _HEAD:
            return
        if not _is_head(h):
            raise ValueError(f"not a FUSE dump record at byte {start}")
        direction = chr(h[0])
        _, _, sec, nsec = _TIME.unpack_from(h, 1)
        first = f.read(4)
        if len(first) < 4:
            return
        length = abi.message_length(first)
        message = first + f.read(max(0, length - 4))
        after = f.read(_HEAD)
        f.seek(-len(after), os.SEEK_CUR)
        if length < 4 or len(message) < length or (len(after) == _HEAD
                                                   and not _is_head(after)):
            # A truncated last record, or a message whose header lies about its length.
            body = start + _HEAD
            nxt = _next_head(f, body + 4)
            if nxt is None:
                if len(message) < length or length < 4:
                    return                             # truncated
                end = body + length                    # garbage follows: reported next
            else:
                end = nxt
            f.seek(body)
            message = f.read(end - body)
        yield DumpRecord(direction, sec * 1_000_000_000 + nsec, message)


def _stamp(time_ns: int) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(time_ns / 1e9))
    return f"{t}.{time_ns % 1_000_000_000 // 1000:06d}"


def describe(rec: DumpRecord, setxattr_ext: bool = False,
             conversation: Optional[Conversation] = None) -> str:
    """One line for a record: time, direction, then every field (fuse_bridge.wire_text).
    With ``conversation`` (the records before it seen through the same one) a reply is
    decoded as the answer to its request; alone, only its header is known."""
    if conversation is None:
        conversation = Conversation()
        conversation.setxattr_ext = setxattr_ext
    return f"{_stamp(rec.time_ns)} {rec.direction} " + conversation.message(rec.direction,
                                                                          rec.message)


def decode_file(path: str) -> Iterator[str]:
    """Every record of a dump as a line, replies paired with their requests."""
    conversation = Conversation()
    with open(path, "rb") as f:
        for rec in read_dump(f):
            yield describe(rec, conversation=conversation)


def main_decode(path: str) -> int:
    try:
        for line in decode_file(path):
            print(line)
    except (OSError, ValueError) as exc:
        print(f"xlfsctl dump-decode: {path}: {exc}", file=os.sys.stderr)
        return 1
    return 0
