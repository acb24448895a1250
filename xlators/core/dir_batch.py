"""A listing kept as columns, and a batch of it that reads as a list of DirEntry.

A plain readdir of a big directory hands out thousands of entries; as one DirEntry
tuple each they cost an allocation, a garbage-collector traversal and a free per entry,
and a tuple unpacking per entry where the reply is packed.  storage/posix keeps its
listing as three columns instead (:class:`DirColumns`: the names, the inode numbers, the
DT_* types as one byte each; entry ``i``'s cookie is ``i + 1``) and answers readdir
with a :class:`DirBatch`, a read-only view of entries ``start``..``stop - 1`` of it.

A DirBatch is a sequence of DirEntry: iterating it, indexing it, comparing it with a
list, adding it to one make the DirEntry values on demand, so a translator that looks
at the entries sees what it always saw (``entry`` is None: a plain readdir).  Whatever
packs a batch without looking at each entry (the FUSE bridge's READDIR reply) reads the
columns: ``batch.columns()``.

A readdirp batch is kept as columns too (:class:`PlusBatch`): per looked-up entry its
name, cookie, inode and the ``os.stat_result`` it was looked up with (or its Attr), no
DirEntry, Entry or Attr made.  The first translator that reads it as a sequence makes
those (once: it may keep them, or change an Attr in place, and whoever reads the batch
later sees the same objects); until then the FUSE bridge packs the READDIRPLUS reply
straight from the columns (``batch.unread()``).
"""
from __future__ import annotations

from functools import partial
from itertools import repeat
from typing import Any, Iterator, Optional, Sequence, Union, overload

from .types import Attr, DirEntry, Entry

_dirent = partial(tuple.__new__, DirEntry)     # DirEntry(*t) without a Python-level call
_tuple_new = tuple.__new__


class DirColumns:
    """Entry ``i`` of a listing is ``DirEntry(names[i], inos[i], types[i], i + 1)``.
    ``shape``, when given, holds the length of each name as one byte (None when a name
    is longer than 255 bytes): what a packer needs to know of the names, at no cost per
    entry."""

    __slots__ = ("names", "inos", "types", "shape")

    def __init__(self, names: list[bytes], inos: list[int], types: bytes,
                 shape: Optional[bytes] = None) -> None:
        if not (len(names) == len(inos) == len(types)):
            raise ValueError(f"DirColumns: {len(names)} names, {len(inos)} inode "
                             f"numbers, {len(types)} types")
        if shape is None:
            try:
                shape = bytes(map(len, names))
            except ValueError:          # a name longer than 255 bytes
                pass
        elif len(shape) != len(names):
            raise ValueError(f"DirColumns: {len(names)} names, {len(shape)} lengths")
        self.names = names
        self.inos = inos
        self.types = types
        self.shape = shape

    def __len__(self) -> int:
        return len(self.names)

    def entry(self, i: int) -> DirEntry:
        return _dirent((self.names[i], self.inos[i], self.types[i], i + 1, None))


class DirBatch(Sequence[DirEntry]):
    """Entries ``start``..``stop - 1`` of ``cols``, as a read-only list of DirEntry."""

    __slots__ = ("cols", "start", "stop")

    def __init__(self, cols: DirColumns, start: int, stop: int) -> None:
        n = len(cols)
        if not 0 <= start <= stop <= n:
            raise ValueError(f"DirBatch: entries {start}..{stop} of {n}")
        self.cols = cols
        self.start = start
        self.stop = stop

    def columns(self) -> tuple[list[bytes], list[int], bytes, Optional[bytes], int]:
        """The batch's names, inode numbers, types and name lengths (DirColumns.shape),
        and the cookie of its first entry (each next entry's cookie is one more)."""
        c, a, b = self.cols, self.start, self.stop
        shape = c.shape
        return (c.names[a:b], c.inos[a:b], c.types[a:b],
                shape[a:b] if shape is not None else None, a + 1)

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[DirEntry]:
        c, a, b = self.cols, self.start, self.stop
        return map(_dirent, zip(c.names[a:b], c.inos[a:b], c.types[a:b],
                                range(a + 1, b + 1), repeat(None)))

    @overload
    def __getitem__(self, i: int) -> DirEntry: ...
    @overload
    def __getitem__(self, i: slice) -> Union["DirBatch", list[DirEntry]]: ...

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            a, b, step = i.indices(len(self))
            if step != 1:
                return list(self)[i]
            return DirBatch(self.cols, self.start + a, self.start + max(a, b))
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("DirBatch index out of range")
        return self.cols.entry(self.start + i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, DirBatch)):         # (a list is never == a tuple)
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None     # type: ignore[assignment]   # (a list is not hashable either)

    def __add__(self, other: Sequence[DirEntry]) -> list[DirEntry]:
        return list(self) + list(other)

    def __radd__(self, other: Sequence[DirEntry]) -> list[DirEntry]:
        return list(other) + list(self)

    def __repr__(self) -> str:
        return f"DirBatch({list(self)!r})"


class PlusBatch(Sequence[DirEntry]):
    """A readdirp batch: ``head`` (DirEntry values without an Entry: "." and "..")
    then, per looked-up entry ``k``, ``names[k]``, its cookie ``offs[k]``, its table
    ``inodes[k]``, ``inos[k]`` (the inode number its Attr holds) and ``stats[k]``: the
    ``os.stat_result`` its Attr is made of (``Attr.from_stat(stats[k], inos[k])``), or
    the Attr itself.  Reads as the list of those DirEntry values, made on first read
    and kept."""

    __slots__ = ("head", "names", "offs", "inodes", "inos", "stats", "_listed")

    def __init__(self, head: list[DirEntry], names: list[bytes], offs: list[int],
                 inodes: list[Any], inos: list[int], stats: list[Any]) -> None:
        if not (len(names) == len(offs) == len(inodes) == len(inos) == len(stats)):
            raise ValueError(f"PlusBatch: {len(names)} names, {len(offs)} cookies, "
                             f"{len(inodes)} inodes, {len(inos)} inode numbers, "
                             f"{len(stats)} stats")
        self.head = head
        self.names = names
        self.offs = offs
        self.inodes = inodes
        self.inos = inos
        self.stats = stats
        self._listed: Optional[list[DirEntry]] = None

    def unread(self) -> bool:
        """True while no DirEntry was made: the columns are the whole truth."""
        return self._listed is None

    def entry_names(self) -> list[bytes]:
        """Every entry's name, in order, without making a DirEntry."""
        return [e.name for e in self.head] + self.names

    def last_off(self) -> int:
        """The cookie of the last entry (the batch is not empty)."""
        return self.offs[-1] if self.offs else self.head[-1].off

    def split(self, n: int) -> tuple["PlusBatch", list[Any]]:
        """The first ``n`` entries as a batch of their own (the columns sliced, no
        DirEntry made), and the table inodes of the others."""
        k = max(n - len(self.head), 0)
        return (PlusBatch(self.head[:n], self.names[:k], self.offs[:k], self.inodes[:k],
                          self.inos[:k], self.stats[:k]),
                [i for i in self.inodes[k:] if i is not None])

    def listed(self) -> list[DirEntry]:
        """The batch's DirEntry values (made on the first call, the same ones after)."""
        out = self._listed
        if out is None:
            from_stat = Attr.from_stat
            out = list(self.head)
            for name, off, inode, ino, st in zip(self.names, self.offs, self.inodes,
                                                 self.inos, self.stats):
                a = st if type(st) is Attr else from_stat(st, ino)
                out.append(_dirent((name, ino, a.mode >> 12 & 0o17, off,
                                    _tuple_new(Entry, (inode, a)))))
            self._listed = out
        return out

    def __len__(self) -> int:
        return len(self.head) + len(self.names)

    def __iter__(self) -> Iterator[DirEntry]:
        return iter(self.listed())

    def __getitem__(self, i: Any) -> Any:
        return self.listed()[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, DirBatch, PlusBatch)):
            return len(self) == len(other) and self.listed() == list(other)
        return NotImplemented

    __hash__ = None     # type: ignore[assignment]

    def __add__(self, other: Sequence[DirEntry]) -> list[DirEntry]:
        return self.listed() + list(other)

    def __radd__(self, other: Sequence[DirEntry]) -> list[DirEntry]:
        return list(other) + self.listed()

    def __repr__(self) -> str:
        return f"PlusBatch({self.listed()!r})"
