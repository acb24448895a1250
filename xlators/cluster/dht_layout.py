"""cluster/distribute: name hashing and directory layouts.

A name hashes to a 32-bit value (CRC-32 of the name, spread by MurmurHash3's finaliser so
that neighbouring names land far apart).  Every directory has a *layout*: one range of the
32-bit hash space per child; a file lives on the child whose range holds its name's hash.

Layouts are kept in extended attributes of the directory's copies (the namespace
``trusted.xlfs.dht.``; see docs/cluster.md):

- ``trusted.xlfs.dht.layout`` on a directory: ``b"xlfs-dht-layout 1 commit=C
  R0,R1,..."`` where ``Ri`` is ``START-STOP`` (inclusive, decimal) or ``-`` (no range) for
  child ``i``, and ``C`` is 1 when every file of the directory is where this layout says
  (a miss on the hashed child is then authoritative) and 0 while a rebalance has not yet
  moved the files of a new layout.  The copy on child 0 is the one read; the others
  carry the same value for inspection and repair.
- ``trusted.xlfs.dht.volume`` on child 0's root: ``b"children=K"``.  A directory with no
  layout attribute has the *default layout* of the volume: the hash space cut into K equal
  ranges over children 0..K-1, committed.  New directories get no attribute at all (so a
  mkdir costs no extra write); adding a child leaves K alone until ``xlfsctl rebalance``
  has given every directory an explicit layout over all the children and moved the files.
"""
from __future__ import annotations

import zlib
from typing import Optional, Sequence

LAYOUT_XATTR = b"trusted.xlfs.dht.layout"
VOLUME_XATTR = b"trusted.xlfs.dht.volume"
XATTR_PREFIX = b"trusted.xlfs.dht."
HASH_SPACE = 1 << 32
_MAGIC = b"xlfs-dht-layout"


def name_hash(name: bytes) -> int:
    """The 32-bit hash of a name (stable across runs and machines)."""
    x = zlib.crc32(name)
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


class LayoutError(ValueError):
    """A layout attribute that cannot be parsed."""


class Layout:
    """Hash ranges per child index (``None``: the child gets no new files)."""
    __slots__ = ("ranges", "committed", "explicit")

    def __init__(self, ranges: Sequence[Optional[tuple[int, int]]], committed: bool = True,
                 explicit: bool = False) -> None:
        self.ranges = list(ranges)
        self.committed = committed
        self.explicit = explicit      # read from an attribute (False: the volume default)

    @classmethod
    def even(cls, count: int, total: Optional[int] = None, committed: bool = True,
             explicit: bool = False) -> "Layout":
        """The hash space cut into ``count`` equal ranges over children 0..count-1 (of
        ``total`` children; the others get no range)."""
        total = count if total is None else total
        ranges: list[Optional[tuple[int, int]]] = []
        for i in range(total):
            if i < count:
                ranges.append((i * HASH_SPACE // count, (i + 1) * HASH_SPACE // count - 1))
            else:
                ranges.append(None)
        return cls(ranges, committed, explicit)

    def child_for(self, name: bytes) -> int:
        """The child index a name hashes to."""
        h = name_hash(name)
        for i, r in enumerate(self.ranges):
            if r is not None and r[0] <= h <= r[1]:
                return i
        raise LayoutError(f"hash {h:#x} falls in no range of {self.format()!r}")

    def is_complete(self) -> bool:
        """The ranges cover the hash space exactly once."""
        spans = sorted(r for r in self.ranges if r is not None)
        at = 0
        for start, stop in spans:
            if start != at or stop < start:
                return False
            at = stop + 1
        return at == HASH_SPACE

    def format(self) -> bytes:
        rs = b",".join(b"-" if r is None else b"%d-%d" % r for r in self.ranges)
        return b"%s 1 commit=%d %s" % (_MAGIC, 1 if self.committed else 0, rs)

    @classmethod
    def parse(cls, value: bytes) -> "Layout":
        parts = bytes(value).split()
        if len(parts) != 4 or parts[0] != _MAGIC or parts[1] != b"1" or \
                parts[2] not in (b"commit=0", b"commit=1"):
            raise LayoutError(f"not a layout: {bytes(value)[:80]!r}")
        ranges: list[Optional[tuple[int, int]]] = []
        for item in parts[3].split(b","):
            if item == b"-":
                ranges.append(None)
                continue
            start, sep, stop = item.partition(b"-")
            try:
                r = (int(start), int(stop))
            except ValueError:
                raise LayoutError(f"bad range {item!r} in {bytes(value)[:80]!r}") from None
            if not sep or not 0 <= r[0] <= r[1] < HASH_SPACE:
                raise LayoutError(f"bad range {item!r} in {bytes(value)[:80]!r}")
            ranges.append(r)
        layout = cls(ranges, parts[2] == b"commit=1", True)
        if not layout.is_complete():
            raise LayoutError(f"ranges do not cover the hash space: {bytes(value)[:120]!r}")
        return layout

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self.ranges == other.ranges and \
            self.committed == other.committed

    def __repr__(self) -> str:
        return f"Layout({self.format().decode()})"


def volume_value(children: int) -> bytes:
    return b"children=%d" % children


def parse_volume(value: bytes) -> int:
    key, sep, num = bytes(value).partition(b"=")
    if key != b"children" or not sep or not num.isdigit() or int(num) < 1:
        raise LayoutError(f"not a volume marker: {bytes(value)[:80]!r}")
    return int(num)
