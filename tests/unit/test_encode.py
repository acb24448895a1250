"""fuse_bridge.encode: translator values -> reply bytes, checked against layouts written
out by hand (fuse_attr: ino, size, blocks, atime, mtime, ctime as u64 seconds, then their
nanoseconds as u32, mode, nlink, uid, gid, rdev, blksize, flags)."""
from __future__ import annotations

import struct

from fuse_bridge import encode
from xlators.core.types import Attr

ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
ATTR_OUT = struct.Struct("<QI4x")
ENTRY_OUT = struct.Struct("<QQQQII")
NS = 1_000_000_000
T = encode.Timeouts(entry=2.5, attr=1.25, negative=0)


def by_hand(a: Attr) -> bytes:
    def split(ns: int) -> tuple[int, int]:
        sec = ns // NS                       # floor: -1.5 s is -2 s + 0.5e9 ns
        return sec % (1 << 64), ns - sec * NS
    (asec, ansec), (msec, mnsec), (csec, cnsec) = map(split, (a.atime_ns, a.mtime_ns,
                                                               a.ctime_ns))
    return ATTR.pack(a.ino, a.size, a.blocks, asec, msec, csec, ansec, mnsec, cnsec,
                     a.mode, a.nlink, a.uid, a.gid, a.rdev, a.blksize, 0)


def attr(at: int, mt: int, ct: int, ino: int = 7) -> Attr:
    return Attr(ino=ino, size=4096, blocks=8, atime_ns=at, mtime_ns=mt, ctime_ns=ct,
                mode=0o100644, nlink=1, uid=1000, gid=100, rdev=0, blksize=4096)


TIMES = [
    (0, 0, 0),
    (1_700_000_000_123_456_789, 1_700_000_000_000_000_000, 1_700_000_001_999_999_999),
    (-1, -NS, -1_500_000_000),                        # before 1970
    ((1 << 31) * NS + 5, (1 << 40) * NS, 2**62),      # after 2038
    (1_700_000_002_000_000_001,) * 3,                 # a new object: all three equal
    (1_700_000_000_500_000_000, 1_700_000_003_250_000_000,
     1_700_000_003_250_000_000),                      # a changed directory: m == c
    (1_700_000_004_100_000_000, 1_700_000_004_100_000_000,
     1_700_000_004_700_000_000),                      # a == m
    (-7, -7, -7),
]


def test_attr_out_and_entry_out_times() -> None:
    for times in TIMES + TIMES:                       # the second round: remembered
        a = attr(*times)
        assert encode.attr_out(T, a) == ATTR_OUT.pack(1, 250_000_000) + by_hand(a), times
        assert encode.entry_out(T, 9, a, 3) == (
            ENTRY_OUT.pack(9, 3, 2, 1, 500_000_000, 250_000_000) + by_hand(a)), times
        assert ATTR.pack(*encode.attr_values(a)) == by_hand(a), times


def test_remembered_times_stay_bounded_and_right() -> None:
    base = 1_600_000_000 * NS
    for i in range(encode._TIMES_MAX * 2 + 10):
        a = attr(base + i, base + 2 * i, base - i * NS, ino=i)
        assert encode.attr_out(T, a)[16:] == by_hand(a)
        assert len(encode._TIMES) <= encode._TIMES_MAX
