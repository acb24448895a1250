"""A set of byte ranges kept as sorted, disjoint extents: storage/memory's allocation map.

Every operation costs O(log n + k) for n extents of which k are touched, whatever the
length of the range asked about: allocating, punching or searching an exabyte is as cheap
as a block.  Plain Python, no I/O.

    >>> e = Extents()
    >>> e.add(0, 4096), e.add(8192, 12288), e.add(4096, 8192)
    (4096, 4096, 4096)
    >>> e.spans(), e.total
    ([(0, 12288)], 12288)
    >>> e.remove(4096, 1 << 62), e.next_out(0), e.next_in(5000)
    (8192, 4096, None)
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Iterator, Optional


class Extents:
    """Disjoint, non-adjacent ranges [start, end), in order; ``total`` is their length."""
    __slots__ = ("starts", "ends", "total")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.total = 0

    def __len__(self) -> int:
        return len(self.starts)

    def spans(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends))

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.total = 0

    def within(self, a: int, b: int) -> Iterator[tuple[int, int]]:
        """The parts of the set inside [a, b), in order."""
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, a)
        while i < len(starts) and starts[i] < b:
            yield max(a, starts[i]), min(b, ends[i])
            i += 1

    def covered(self, a: int, b: int) -> int:
        """How many bytes of [a, b) the set holds."""
        return sum(e - s for s, e in self.within(a, b))

    def add(self, a: int, b: int) -> int:
        """Add [a, b); returns the bytes that were not in the set before."""
        if a >= b:
            return 0
        starts, ends = self.starts, self.ends
        if ends and starts[-1] <= a <= ends[-1]:     # at or in the last extent: appending
            grown = b - ends[-1]
            if grown <= 0:
                return 0
            ends[-1] = b
            self.total += grown
            return grown
        i = bisect_left(ends, a)            # first extent ending at or after a
        j = bisect_right(starts, b)         # past the last one starting at or before b
        if i < j:
            old = sum(ends[k] - starts[k] for k in range(i, j))
            a, b = min(a, starts[i]), max(b, ends[j - 1])
        else:
            old = 0
        starts[i:j] = [a]
        ends[i:j] = [b]
        grown = (b - a) - old
        self.total += grown
        return grown

    def remove(self, a: int, b: int) -> int:
        """Remove [a, b); returns the bytes that were in the set."""
        if a >= b:
            return 0
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, a)           # first extent ending after a
        j = bisect_left(starts, b)          # past the last one starting before b
        if i >= j:
            return 0
        freed = sum(min(b, ends[k]) - max(a, starts[k]) for k in range(i, j))
        keep_s: list[int] = []
        keep_e: list[int] = []
        if starts[i] < a:
            keep_s.append(starts[i])
            keep_e.append(a)
        if ends[j - 1] > b:
            keep_s.append(b)
            keep_e.append(ends[j - 1])
        starts[i:j] = keep_s
        ends[i:j] = keep_e
        self.total -= freed
        return freed

    def next_in(self, pos: int) -> Optional[int]:
        """The first position at or after ``pos`` in the set (None: there is none)."""
        i = bisect_right(self.ends, pos)
        if i == len(self.starts):
            return None
        return max(pos, self.starts[i])

    def next_out(self, pos: int) -> int:
        """The first position at or after ``pos`` not in the set."""
        i = bisect_right(self.ends, pos)
        if i < len(self.starts) and self.starts[i] <= pos:
            return self.ends[i]
        return pos
