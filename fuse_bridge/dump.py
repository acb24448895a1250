"""``--dump-fuse=PATH``: every FUSE message both ways, in GlusterFS's record format, and
the decoder behind ``xlfsctl dump-decode`` (GlusterFS needs an external tool for it).

A record is a direction byte (``R`` read from the kernel, ``W`` written to it), a u32
count of the parts that follow (3), then parts: ``{u32 16, u64 sec, u32 nsec}`` (the
time), ``{u32 12, "GLUSTER\\xF5"}`` (a marker) and the raw FUSE message (its own length
is in its header).  Integers are little-endian here, as GlusterFS writes them on x86.
"""
from __future__ import annotations

import errno
import os
import struct
import time
from typing import BinaryIO, Iterator, NamedTuple

from . import abi

_MARK = b"GLUSTER\xf5"
_TIME = struct.Struct("<IIQI")      # count=3, then {u32 16, u64 sec, u32 nsec}
_MARK_PART = struct.Struct("<I8s")  # {u32 12, marker}


class DumpWriter:
    def __init__(self, path: str) -> None:
        self.f = open(path, "ab", buffering=1 << 16)

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


def read_dump(f: BinaryIO) -> Iterator[DumpRecord]:
    """Yield the records of a dump; a truncated last record ends the iteration."""
    head = 1 + _TIME.size + _MARK_PART.size
    while True:
        h = f.read(head)
        if len(h) < head:
            return
        direction = chr(h[0])
        count, size, sec, nsec = _TIME.unpack_from(h, 1)
        _, mark = _MARK_PART.unpack_from(h, 1 + _TIME.size)
        if direction not in "RW" or count != 3 or size != 16 or mark != _MARK:
            raise ValueError(f"not a FUSE dump record at byte {f.tell() - head}")
        first = f.read(4)
        if len(first) < 4:
            return
        (length,) = struct.unpack("<I", first)
        rest = f.read(length - 4)
        if len(rest) < length - 4:
            return
        yield DumpRecord(direction, sec * 1_000_000_000 + nsec, first + rest)


def describe(rec: DumpRecord) -> str:
    """One readable line for a record."""
    t = time.strftime("%H:%M:%S", time.localtime(rec.time_ns / 1e9))
    stamp = f"{t}.{rec.time_ns % 1_000_000_000 // 1000:06d}"
    m = rec.message
    if rec.direction == "R" and len(m) >= abi.IN_HEADER.size:
        length, opcode, unique, nodeid, uid, gid, pid, _ = abi.IN_HEADER.unpack_from(m)
        try:
            name = abi.Opcode(opcode).name
        except ValueError:
            name = f"OPCODE_{opcode}"
        extra = ""
        names = abi.OPCODE_NAMES.get(opcode) if opcode in abi.Opcode._value2member_map_ else None
        if names:
            st = abi.OPCODE_INPUT.get(abi.Opcode(opcode))
            body = m[abi.IN_HEADER.size + (st.size if st else 0):]
            try:
                extra = " " + " ".join(repr(n) for n in abi.split_names(body, names))
            except ValueError:
                pass
        return (f"{stamp} R unique={unique} {name} nodeid={nodeid} uid={uid} gid={gid} "
                f"pid={pid} len={length}{extra}")
    if len(m) >= abi.OUT_HEADER.size:
        length, error, unique = abi.OUT_HEADER.unpack_from(m)
        if unique == 0:
            try:
                code = abi.NotifyCode(error).name
            except ValueError:
                code = str(error)
            return f"{stamp} W notify {code} len={length}"
        status = "ok" if error == 0 else errno.errorcode.get(-error, str(error))
        return f"{stamp} W unique={unique} {status} len={length}"
    return f"{stamp} {rec.direction} short message of {len(m)} bytes"


def decode_file(path: str) -> Iterator[str]:
    with open(path, "rb") as f:
        for rec in read_dump(f):
            yield describe(rec)


def main_decode(path: str) -> int:
    try:
        for line in decode_file(path):
            print(line)
    except (OSError, ValueError) as exc:
        print(f"xlfsctl dump-decode: {path}: {exc}", file=os.sys.stderr)
        return 1
    return 0
