"""cluster/replicate's changelog: which child missed what, kept on the children.

Every child ``X`` may carry, for every child ``Y`` of the same replica, the extended
attribute ``trusted.xlfs.afr.<Y's volume name>``: three 32-bit big-endian counters,
(data, metadata, entry).  A non-zero counter means "X knows that Y missed changes of
this kind on this file" -- X *accuses* Y.  Replicate writes these only when a change
did not reach every child (a child was down, or failed the fop): the children that did
it record, on themselves, that the others missed it.  A fully healthy write costs no
changelog I/O.  Self-heal copies from the accusers to the accused and then zeroes the
counters.

From the counters (as last read from, or written to, each child) follow:

- the *sources* of a kind: children no known child accuses;
- the *sinks*: accused children; they are never read from until healed;
- *split brain*: every child holding the file is accused by another (each missed what
  the other did), so no copy can be trusted; it is reported (EIO and a log line) unless
  a ``favorite-child-policy`` picks a winner.

Accusations held by a child that is down at the moment still count (they were seen
before it went down); a file looked up for the first time while a child is down only
knows what the children that are up say.
"""
from __future__ import annotations

import struct
from itertools import chain
from typing import Iterable, Optional, Sequence

DATA, METADATA, ENTRY = 0, 1, 2
KINDS = (DATA, METADATA, ENTRY)
KIND_NAMES = ("data", "metadata", "entry")
PREFIX = b"trusted.xlfs.afr."
_FMT = struct.Struct(">III")
ZERO = (0, 0, 0)


def xattr_name(child_name: str) -> bytes:
    return PREFIX + child_name.encode()


def encode(counts: Sequence[int]) -> bytes:
    return _FMT.pack(*(min(c, 0xFFFFFFFF) for c in counts))


def decode(value: bytes) -> tuple[int, int, int]:
    """Counters from an xattr value; a short or odd value counts as accusing everything."""
    if len(value) != _FMT.size:
        return (1, 1, 1)
    return _FMT.unpack(value)


def is_internal(name: bytes) -> bool:
    """Names replicate keeps to itself (hidden from and refused to users): its changelog
    and the gfid.  Other ``trusted.xlfs.*`` names (a distribute parent's layout) are
    replicated like any other xattr."""
    return name.startswith(PREFIX) or name == b"trusted.xlfs.gfid"


class Changelog:
    """The accusation matrix of one file: ``pending[x][y][kind]``; ``known[x]`` says
    whether child x's counters have been read (or written) at all."""
    __slots__ = ("pending", "known")

    def __init__(self, n: int) -> None:
        self.pending = [[[0, 0, 0] for _ in range(n)] for _ in range(n)]
        self.known = [False] * n

    def accused(self, kind: int) -> set[int]:
        n = len(self.pending)
        return {y for y in range(n) for x in range(n)
                if x != y and self.known[x] and self.pending[x][y][kind]}

    def accuses(self, x: int, y: int, kind: int) -> bool:
        return bool(self.pending[x][y][kind])

    def any_pending(self) -> bool:
        # the diagonal is always zero; any() over the flattened rows runs in C
        return any(map(any, chain.from_iterable(self.pending)))

    def pending_kinds(self) -> list[int]:
        n = len(self.pending)
        return [k for k in KINDS if any(self.pending[x][y][k] for x in range(n)
                                        for y in range(n) if x != y)]

    def sources(self, kind: int, present: Iterable[int]) -> set[int]:
        """Children among ``present`` (those holding the file) no one accuses."""
        return set(present) - self.accused(kind)

    def split_brain(self, kind: int, present: Iterable[int]) -> bool:
        present = set(present)
        return bool(present) and not self.sources(kind, present)


def row_values(changelog: Changelog, x: int) -> list[tuple[int, bytes]]:
    """(y, encoded counters) for every other child ``y``: what child x holds."""
    return [(y, encode(c)) for y, c in enumerate(changelog.pending[x]) if y != x]


def parse_row(names: Sequence[str], values: dict[bytes, bytes], x: int,
              changelog: Changelog) -> None:
    """Fill child x's row from the xattrs ``values`` (name -> value) read from it."""
    row: list[list[int]] = []
    for y, name in enumerate(names):
        raw: Optional[bytes] = values.get(xattr_name(name))
        row.append(list(decode(raw)) if raw is not None and y != x else [0, 0, 0])
    changelog.pending[x] = row
    changelog.known[x] = True
