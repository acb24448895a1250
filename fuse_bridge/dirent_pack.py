"""READDIR replies packed a run of records at a time from a listing's columns.

A READDIR record (abi.DIRENT, then the name padded with zeros to 8 bytes) is, on a
little-endian host, 3 + P/8 machine words for a name of P padded bytes: the inode
number, the cookie, the name length in the low and the type in the high half of the
third word, then the name.  Records of names of one length all have the same shape, so
a run of them is written into one ``array('Q')`` field by field with strided slice
assignments: a handful of calls per run instead of a ``struct`` call, a bytes object
and a tuple unpacking per entry.  storage/posix hands its listing out as columns
(xlators.core.dir_batch.DirBatch) with the names shortest first, so a batch is a few
runs; short runs, and a batch of plain DirEntry values, go record by record
(abi.pack_dirents).  The bytes are exactly abi.pack_dirents's.
"""
from __future__ import annotations

import re
import struct
import sys
from array import array
from bisect import bisect_right
from itertools import accumulate, repeat
try:
    from operator import call
except ImportError:                 # Python < 3.11 (PyPy 3.9)
    def call(obj, /, *args, **kwargs):
        return obj(*args, **kwargs)
from typing import Optional, Sequence

from xlators.core.dir_batch import DirBatch

from . import abi

_HEAD = abi.DIRENT.size             # 24: ino, off, namelen, type
_NAME_MAX = 255
# one precompiled pack per name length: the head, then the name padded to 8 bytes
_RECORDS = [struct.Struct(f"{abi.DIRENT.format}{(n + 7) & ~7}s").pack
            for n in range(_NAME_MAX + 1)]
_WORDS_OK = (sys.byteorder == "little" and abi.DIRENT.format in ("<QQII", b"<QQII")
             and array("Q").itemsize == 8)
_SHORT_RUN = 8                      # runs shorter than this go record by record
_RECORD_EIGHTHS = bytes((_HEAD + n + 7) >> 3 for n in range(_NAME_MAX + 1))
_ZERO = array("Q", [0])
_RUN_OF: dict = {}                  # name length -> a pattern matching a run of it
_COOKIES = array("Q", range(1 << 16))
_COOKIES_MAX = 1 << 18              # the cached cookies grow to this many (2 MiB) at most


def _run_of(namelen: int) -> "re.Pattern[bytes]":
    try:
        return _RUN_OF[namelen]
    except KeyError:
        return _RUN_OF.setdefault(namelen, re.compile(re.escape(bytes((namelen,))) + b"+"))


def _cookies(first: int, k: int) -> array:
    """array('Q') of first, first + 1, ... (k of them), sliced from a cached one."""
    global _COOKIES
    end = first + k
    if end > len(_COOKIES):
        if end > _COOKIES_MAX:
            return array("Q", range(first, end))
        _COOKIES = array("Q", range(max(end, 2 * len(_COOKIES))))
    return _COOKIES[first:end]


def _run(names: list[bytes], inos: list[int], types: bytes, cookie: int,
         namelen: int) -> bytes:
    """The records of ``names`` (all ``namelen`` bytes long), the first one's cookie
    ``cookie``."""
    k = len(names)
    padded = (namelen + 7) & ~7
    q = padded >> 3
    width = 3 + q
    rec = _ZERO * (k * width)
    rec[0::width] = array("Q", inos)
    rec[1::width] = _cookies(cookie, k)
    lt = bytearray(8 * k)               # namelen, type: the low bytes of two u32
    lt[0::8] = bytes((namelen,)) * k
    lt[4::8] = types
    rec[2::width] = array("Q", lt)
    pad = b"\0" * (padded - namelen)
    words = array("Q", pad.join(names) + pad)
    if q == 1:
        rec[3::width] = words
    else:
        for j in range(q):
            rec[3 + j::width] = words[j::q]
    return rec.tobytes()


def _one_by_one(names: list[bytes], inos: list[int], types: bytes, cookie: int,
                lens: list[int]) -> bytes:
    return b"".join(map(call, map(_RECORDS.__getitem__, lens), inos,
                        range(cookie, cookie + len(names)), lens, types, names))


def pack_columns(names: list[bytes], inos: list[int], types: bytes, cookie: int,
                 size: int, shape: Optional[bytes] = None) -> bytes:
    """The READDIR records of entries given as columns (entry i's cookie is ``cookie +
    i``; ``shape``: the names' lengths, one byte each, if known), as many as fit in
    ``size`` bytes."""
    if not names:
        return b""
    if shape is None:
        try:
            shape = bytes(map(len, names))
        except ValueError:              # a name longer than 255 bytes
            shape = b""
    if not shape or not _WORDS_OK:
        return abi.pack_dirents(list(zip(names, inos, types,
                                         range(cookie, cookie + len(names)),
                                         repeat(None))), size)
    eighths = shape.translate(_RECORD_EIGHTHS)     # each record's size / 8
    if sum(eighths) * 8 > size:         # the leading records that fit
        k = bisect_right(list(accumulate(eighths)), size >> 3)
        if not k:
            return b""
        names, inos, types, shape = names[:k], inos[:k], types[:k], shape[:k]
    out = []
    a = 0
    n = len(shape)
    while a < n:
        b = _run_of(shape[a]).match(shape, a).end()    # the run of names of one length
        if b - a < _SHORT_RUN:
            out.append(_one_by_one(names[a:b], inos[a:b], types[a:b], cookie + a,
                                   list(shape[a:b])))
        else:
            out.append(_run(names[a:b], inos[a:b], types[a:b], cookie + a, shape[a]))
        a = b
    return b"".join(out)


def pack_readdir(entries: Sequence, size: int) -> bytes:
    """A READDIR reply of ``entries`` (a DirBatch, or any sequence of DirEntry), as
    many as fit in ``size`` bytes."""
    if type(entries) is DirBatch:
        names, inos, types, shape, cookie = entries.columns()
        return pack_columns(names, inos, types, cookie, size, shape)
    return abi.pack_dirents(entries, size)
