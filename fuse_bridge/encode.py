"""Translator values -> kernel reply bytes (through the layouts in abi.py).

Most encoders give a reply's body, which the session puts behind an out-header.  The
``*_reply`` ones give the whole reply message, out-header included, packed with one
``struct`` call from one layout (``abi.OUT_HEADER`` and the reply struct joined): the
session writes it as it is, with no second pack, join or check.  A handler returns them
only when it is marked :func:`whole_reply`; one that answers by itself sends them with
``Session.reply_message``.
"""
from __future__ import annotations

import struct
from typing import Any, Callable, Sequence, TypeVar, Union

from xlators.core.types import Attr, StatFs

from . import abi

#: What a handler returns: the reply's body (bytes, or a list of parts), or None (empty).
Payload = Union[None, bytes, bytearray, memoryview, list]

_ENTRY_PACK = abi.ENTRY_OUT.pack
_MAX_PAGES = int(abi.InitFlag.MAX_PAGES)
_DEFAULT_IO = abi.MAX_PAGES_DEFAULT * abi.PAGE_SIZE
_ATTR_OUT_PACK = abi.ATTR_OUT.pack
_STATFS_PACK = abi.KSTATFS.pack


def _whole(body: struct.Struct) -> struct.Struct:
    """The layout of a whole reply: ``abi.OUT_HEADER`` then ``body``."""
    return struct.Struct(abi.OUT_HEADER.format + body.format.lstrip("<"))


ATTR_REPLY = _whole(abi.ATTR_OUT)
ENTRY_REPLY = _whole(abi.ENTRY_OUT)
WRITE_REPLY = _whole(abi.WRITE_OUT)
CREATE_REPLY = struct.Struct(ENTRY_REPLY.format + abi.OPEN_OUT.format.lstrip("<"))
_ATTR_REPLY_PACK = ATTR_REPLY.pack
_ENTRY_REPLY_PACK = ENTRY_REPLY.pack
_WRITE_REPLY_PACK = WRITE_REPLY.pack
_ATTR_REPLY_LEN = ATTR_REPLY.size
_ENTRY_REPLY_LEN = ENTRY_REPLY.size
_WRITE_REPLY_LEN = WRITE_REPLY.size
_CREATE_REPLY_PACK = CREATE_REPLY.pack
_CREATE_REPLY_LEN = CREATE_REPLY.size

H = TypeVar("H", bound=Callable[..., Any])


def whole_reply(handler: H) -> H:
    """Mark ``handler`` as returning whole reply messages (out-header included: the
    ``*_reply`` encoders here) instead of bodies.  The session reads the mark when the
    handler is installed (``Session.set_handler``); a wrapper must carry it over
    (``functools.wraps`` does)."""
    handler.whole_reply = True      # type: ignore[attr-defined]
    return handler


def max_io(flags: int, max_write: int) -> int:
    """The most one READ or READDIR(PLUS) asks of a kernel that negotiated ``flags`` and
    ``max_write``: max_pages pages (MAX_PAGES_DEFAULT without MAX_PAGES, whatever
    max_write is).  Its buffer holds no more, so a bigger size in a request is clamped
    to this before anything is allocated or asked of the graph."""
    return max_write if flags & _MAX_PAGES else _DEFAULT_IO


_NS = 1_000_000_000
_U64 = 0xFFFFFFFFFFFFFFFF


def attr_values(a: Attr) -> tuple:
    """The 16 ATTR fields in wire order."""
    asec, msec, csec, ansec, mnsec, cnsec = _times(a.atime_ns, a.mtime_ns, a.ctime_ns)
    return (a.ino, a.size, a.blocks, asec, msec, csec, ansec, mnsec, cnsec, a.mode, a.nlink,
            a.uid, a.gid, a.rdev & 0xFFFFFFFF, a.blksize, 0)


# The wire's times of recent (atime, mtime, ctime) triples: a file's times rarely change
# between two replies about it, and the three divisions of 64-bit nanosecond times cost
# several times one dict lookup.  Bounded: forgotten all at once when full.
_TIMES: dict[tuple[int, int, int], tuple[int, int, int, int, int, int]] = {}
_TIMES_MAX = 4096
_times_get = _TIMES.get


def _times(at: int, mt: int, ct: int) -> tuple[int, int, int, int, int, int]:
    """(atime, mtime, ctime seconds as u64: two's complement before 1970; then their
    nanoseconds) for times in nanoseconds."""
    key = (at, mt, ct)
    wire = _times_get(key)
    if wire is None:
        wire = _times_new(key)
    return wire


def _times_new(key: tuple[int, int, int]) -> tuple[int, int, int, int, int, int]:
    """:func:`_times` of a triple the cache does not hold (the encoders looked first,
    with the key they pass): computed and remembered."""
    if len(_TIMES) >= _TIMES_MAX:
        _TIMES.clear()
    at, mt, ct = key
    # A time equal to the one before it is not divided again: a new object's three
    # times are one, and a directory a request changed has mtime == ctime.
    asec, ansec = divmod(at, _NS)
    msec, mnsec = (asec, ansec) if mt == at else divmod(mt, _NS)
    csec, cnsec = (msec, mnsec) if ct == mt else divmod(ct, _NS)
    wire = _TIMES[key] = (asec & _U64, msec & _U64, csec & _U64, ansec, mnsec, cnsec)
    return wire


class Timeouts:
    """Cache validity the kernel is told, split into (seconds, nanoseconds) once."""
    __slots__ = ("entry", "entry_ns", "attr", "attr_ns", "negative", "negative_ns")

    def __init__(self, entry: float, attr: float, negative: float) -> None:
        self.entry, self.entry_ns = abi.split_timeout(entry)
        self.attr, self.attr_ns = abi.split_timeout(attr)
        self.negative, self.negative_ns = abi.split_timeout(negative)


def entry_out(t: Timeouts, nodeid: int, a: Attr, generation: int = 0) -> bytes:
    key = (a.atime_ns, a.mtime_ns, a.ctime_ns)
    wire = _times_get(key)
    if wire is None:
        wire = _times_new(key)
    asec, msec, csec, ansec, mnsec, cnsec = wire
    return _ENTRY_PACK(nodeid, generation, t.entry, t.attr, t.entry_ns, t.attr_ns, a.ino,
                       a.size, a.blocks, asec, msec, csec, ansec, mnsec, cnsec, a.mode,
                       a.nlink, a.uid, a.gid, a.rdev & 0xFFFFFFFF, a.blksize, 0)


def negative_entry_out(t: Timeouts) -> bytes:
    return _ENTRY_PACK(0, 0, t.negative, 0, t.negative_ns, 0, *((0,) * 16))


def attr_out(t: Timeouts, a: Attr) -> bytes:
    key = (a.atime_ns, a.mtime_ns, a.ctime_ns)
    wire = _times_get(key)
    if wire is None:
        wire = _times_new(key)
    asec, msec, csec, ansec, mnsec, cnsec = wire
    return _ATTR_OUT_PACK(t.attr, t.attr_ns, a.ino, a.size, a.blocks, asec, msec, csec,
                          ansec, mnsec, cnsec, a.mode, a.nlink, a.uid, a.gid,
                          a.rdev & 0xFFFFFFFF, a.blksize, 0)


def attr_reply(t: Timeouts, unique: int, a: Attr) -> bytes:
    """The whole ATTR_OUT reply to request ``unique``: :func:`attr_out` with its header."""
    key = (a.atime_ns, a.mtime_ns, a.ctime_ns)
    wire = _times_get(key)
    if wire is None:
        wire = _times_new(key)
    asec, msec, csec, ansec, mnsec, cnsec = wire
    return _ATTR_REPLY_PACK(_ATTR_REPLY_LEN, 0, unique, t.attr, t.attr_ns, a.ino, a.size,
                            a.blocks, asec, msec, csec, ansec, mnsec, cnsec, a.mode,
                            a.nlink, a.uid, a.gid, a.rdev & 0xFFFFFFFF, a.blksize, 0)


def entry_reply(t: Timeouts, unique: int, nodeid: int, a: Attr, generation: int = 0
                ) -> bytes:
    """The whole ENTRY_OUT reply to request ``unique``: :func:`entry_out` with its
    header."""
    key = (a.atime_ns, a.mtime_ns, a.ctime_ns)
    wire = _times_get(key)
    if wire is None:
        wire = _times_new(key)
    asec, msec, csec, ansec, mnsec, cnsec = wire
    return _ENTRY_REPLY_PACK(_ENTRY_REPLY_LEN, 0, unique, nodeid, generation, t.entry,
                             t.attr, t.entry_ns, t.attr_ns, a.ino, a.size, a.blocks, asec,
                             msec, csec, ansec, mnsec, cnsec, a.mode, a.nlink, a.uid, a.gid,
                             a.rdev & 0xFFFFFFFF, a.blksize, 0)


def create_reply(t: Timeouts, unique: int, nodeid: int, a: Attr, generation: int, fh: int,
                 open_flags: int, backing_id: int) -> bytes:
    """The whole CREATE reply to request ``unique``: ENTRY_OUT then OPEN_OUT, with its
    header."""
    key = (a.atime_ns, a.mtime_ns, a.ctime_ns)
    wire = _times_get(key)
    if wire is None:
        wire = _times_new(key)
    asec, msec, csec, ansec, mnsec, cnsec = wire
    return _CREATE_REPLY_PACK(_CREATE_REPLY_LEN, 0, unique, nodeid, generation, t.entry,
                              t.attr, t.entry_ns, t.attr_ns, a.ino, a.size, a.blocks, asec,
                              msec, csec, ansec, mnsec, cnsec, a.mode, a.nlink, a.uid,
                              a.gid, a.rdev & 0xFFFFFFFF, a.blksize, 0, fh, open_flags,
                              backing_id)


def write_reply(unique: int, size: int) -> bytes:
    """The whole WRITE_OUT reply to request ``unique``: ``size`` bytes written."""
    return _WRITE_REPLY_PACK(_WRITE_REPLY_LEN, 0, unique, size)


def statfs_out(s: StatFs) -> bytes:
    return _STATFS_PACK(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen,
                        s.frsize)


def names_blob(names: Sequence[bytes]) -> bytes:
    """listxattr's reply: every name NUL-terminated."""
    return b"".join(n + b"\0" for n in names)
