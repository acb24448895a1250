"""storage/posix: directory listing fops (a mixin of the Posix translator).

opendir opens the directory for reading with the caller's credentials (through
/proc/self/fd/N: a listing needs read permission only, not search), with O_NOATIME when
the fd asks for it (a noatime or nodiratime mount) and the caller may have it.  A readdir at
offset 0 (or with no snapshot yet) lists the whole directory into the open file's
context, as columns (xlators.core.dir_batch: readdir answers with a view of them, no
DirEntry per entry); the cookie of entry i is i + 1, "." and ".." are entries 0 and 1
(the other names follow shortest first), so seeking back to any cookie the caller was
given works and a rewind takes a new snapshot.  readdirp
looks each returned entry up like lookup does (as the daemon: the kernel checks search
permission on the directory before it uses a dentry), skipping names that vanished since
the snapshot: a plain stat for a name whose inode posix already holds, an O_PATH open
and fstat for the others.  It answers with a PlusBatch (xlators.core.dir_batch): the
entries' names, cookies, inodes and stat results as columns, from which the FUSE bridge
packs the reply when no translator above read the batch (a known inode's entry then
costs no Attr, Entry or DirEntry).  The first readdirp batch of a big directory (more than 1,024
entries) holds at most 4 KiB of entries: READDIRPLUS only where it pays (_BIG_LISTING
says why).  A batch stops once the kernel's byte budget is spent (and holds at least one
entry; a budget of 0 bytes gets an empty batch, as libfuse answers a buffer too small
for one entry: the kernel never asks for less than a page).  Listing a big
directory (its size above 256 KiB, some thousands of entries) runs in a worker thread.
"""
from __future__ import annotations

import errno
import os
import stat
import sys
from bisect import bisect_left
from itertools import accumulate, compress, islice
from operator import attrgetter
from typing import Any, Optional

from xlators.core.errors import FopError
from xlators.core.dir_batch import DirBatch, DirColumns, PlusBatch

from .posix_io import OpenFile, keep_noatime, open_noatime

_DT_DIR = stat.S_IFDIR >> 12
_DT_REG = stat.S_IFREG >> 12
_DT_LNK = stat.S_IFLNK >> 12
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_O_LOOKUP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_BIG_DIR = 256 << 10     # directory file size above which the listing runs in a thread
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_NUL_JOINS = "a\0b".encode(_FS_ENCODING, _FS_ERRORS) == b"a\0b"
_inode_of = os.DirEntry.inode
_is_file = os.DirEntry.is_file          # (follows a link: only asked when there is none)
_is_symlink = os.DirEntry.is_symlink
_name_of = attrgetter("name")
_CHUNK = 512                            # scandir entries held at once
# A readdirp at offset 0 of a directory of more than _BIG_LISTING entries fills at most
# _BIG_FIRST_BATCH bytes: the kernel asks READDIRPLUS at offset 0 only (READDIRPLUS_AUTO,
# until a lookup in the directory), so there the attributes would serve an `ls -l` for
# a few percent of the names and cost every names-only listing a stat per entry.
_BIG_LISTING = 1024
_BIG_FIRST_BATCH = 4096
_ALL_REGULAR = bytes([_DT_REG]) * _CHUNK
_DOTS_TYPES = bytes([_DT_DIR, _DT_DIR])
# a READDIR record's size / 8 by name length: struct fuse_dirent + name, padded to 8
_RECORD_EIGHTHS = bytes((31 + n) >> 3 for n in range(256))


def _opendir_at(node_fd: int, noatime: int) -> int:
    # Through /proc, not openat(fd, "."): reading a directory needs only read permission.
    return open_noatime(f"/proc/self/fd/{node_fd}", _O_DIR | noatime)[0]


class Listing:
    """A snapshot of a directory: ``cols``, its entries as columns (cookie i + 1 for
    entry i, "." and ".." first, then the names shortest first), and ``ends``, where
    ``ends[i]`` is the size of the READDIR records of entries 0..i-1 in units of 8 bytes
    (``ends[0]`` is 0), so a batch's end is a bisection."""
    __slots__ = ("cols", "ends")

    def __init__(self, cols: DirColumns, ends: list[int]) -> None:
        self.cols = cols
        self.ends = ends


def _type_of(e: "os.DirEntry[str]") -> int:
    """DT_* of a scandir entry that is not a regular file."""
    if e.is_dir(follow_symlinks=False):
        return _DT_DIR
    if e.is_symlink():
        return _DT_LNK
    try:
        return stat.S_IFMT(e.stat(follow_symlinks=False).st_mode) >> 12
    except OSError:
        return 0


def _names(entries: "list[os.DirEntry[str]]") -> list[bytes]:
    """The names of ``entries`` as os.fsencode gives them, encoded in one call (a name
    never holds a NUL)."""
    if not entries:
        return []
    if not _NUL_JOINS:
        return [os.fsencode(e.name) for e in entries]
    return "\0".join(map(_name_of, entries)).encode(_FS_ENCODING, _FS_ERRORS).split(b"\0")


def _types(entries: "list[os.DirEntry[str]]") -> bytes:
    """The DT_* type of each entry, one byte each (from the directory's d_type, or an
    lstat where the file system gives none)."""
    if not any(map(_is_symlink, entries)) and all(map(_is_file, entries)):
        return _ALL_REGULAR[:len(entries)] if len(entries) <= _CHUNK else \
            bytes([_DT_REG]) * len(entries)
    return bytes([_DT_REG if e.is_file(follow_symlinks=False) else _type_of(e)
                  for e in entries])


def _list(dfd: int, node: Any, parent_ino: int) -> Listing:
    """Every entry as columns: made once per snapshot, so a batch is a view of it.  Per
    entry, what is done is done over a chunk of entries at once (one call per column),
    not entry by entry; scandir's entries of a chunk are freed before the next chunk, so
    they never live long enough for the garbage collector to move them to an older
    generation.  The names go shortest first (in the directory's order among names of
    one length): a READDIR reply then packs a run of equal records at a time."""
    os.lseek(dfd, 0, os.SEEK_SET)
    names: list[bytes] = []
    inos: list[int] = []
    types = bytearray()
    with os.scandir(dfd) as it:
        while True:
            chunk = list(islice(it, _CHUNK))
            if not chunk:
                break
            names += _names(chunk)
            inos += map(_inode_of, chunk)
            types += _types(chunk)
            del chunk
    bits = node.devbits
    if bits:
        inos = [i | bits for i in inos]
    try:
        shape: Optional[bytes] = bytes(map(len, names))    # the names' lengths
    except ValueError:                  # a name longer than 255 bytes
        shape = None
    if shape is None or shape.count(shape[:1]) != len(shape):
        lens = shape if shape is not None else list(map(len, names))
        order = sorted(range(len(names)), key=lens.__getitem__)
        names = list(map(names.__getitem__, order))
        inos = list(map(inos.__getitem__, order))
        types = bytearray(map(types.__getitem__, order))
        if shape is not None:
            shape = bytes(map(shape.__getitem__, order))
    if shape is not None:
        shape = b"\x01\x02" + shape
        eighths: Any = shape.translate(_RECORD_EIGHTHS)
    else:
        eighths = [(31 + len(x)) >> 3 for x in names]
        eighths[:0] = [4, 4]
    cols = DirColumns([b".", b".."] + names, [node.ino, parent_ino] + inos,
                      _DOTS_TYPES + types, shape)
    return Listing(cols, list(accumulate(eighths, initial=0)))


def _lookup_new(pfd: int, name: bytes) -> Optional[tuple[int, os.stat_result]]:
    """``name`` in ``pfd`` looked up as lookup does for an inode posix does not hold:
    ``(fd, stat)`` (a new O_PATH descriptor and its stat), None when it is gone."""
    try:
        fd = os.open(name, _O_LOOKUP, 0, dir_fd=pfd)
    except OSError:
        return None
    try:
        return fd, os.fstat(fd)
    except OSError:
        os.close(fd)
        return None


def _lookup_many(pfd: int, names: list[bytes], known: list[bool]) -> list[Any]:
    """Per name, looked up like lookup does: its stat (a plain stat: no descriptor to
    open and close again) for a name whose inode posix already holds (``known``),
    :func:`_lookup_new`'s answer for the others, None when the name is gone."""
    out: list[Any] = []
    append = out.append
    for name, have in zip(names, known):
        if not have:
            append(_lookup_new(pfd, name))
            continue
        try:
            append(os.stat(name, dir_fd=pfd, follow_symlinks=False))
        except OSError:
            append(None)
    return out


class PosixDirOps:
    """opendir/readdir/readdirp/fsyncdir/releasedir for Posix."""

    async def opendir(self, frame, inode, fd):
        node = self._node(inode)
        if node.kind != stat.S_IFDIR:
            raise FopError(errno.ENOTDIR)
        dfd = await self._do(frame, False, _opendir_at, node.fd, fd.flags & os.O_NOATIME)
        keep_noatime(dfd, fd.flags, 0)
        self._opened(fd, OpenFile(dfd, node, os.O_RDONLY | os.O_DIRECTORY, False))

    def _parent_ino(self, node: Any) -> int:
        if node is self._root:
            return node.ino
        try:
            st = os.stat(b"..", dir_fd=node.fd, follow_symlinks=False)
        except OSError:
            return node.ino
        if st.st_dev == self._dev:
            return st.st_ino
        try:
            return st.st_ino | self._devbits(st.st_dev, st.st_ino)
        except OSError:
            return node.ino

    async def _snapshot(self, of: OpenFile, offset: int) -> Listing:
        listing = of.entries
        if offset == 0 or listing is None:
            node = of.node
            if self._inline and os.fstat(of.fd).st_size <= _BIG_DIR:
                listing = _list(of.fd, node, self._parent_ino(node))
            else:
                listing = await self._thread(_list, of.fd, node, self._parent_ino(node))
            of.entries = listing
        return listing

    async def readdir(self, frame, fd, offset, size):
        of = self._of(fd)
        if size <= 0:
            return []
        listing = await self._snapshot(of, offset)
        cols = listing.cols
        n = len(cols)
        if offset >= n:
            return []
        # the entries from offset on until their records take ``size`` bytes or more
        ends = listing.ends
        end = bisect_left(ends, ends[offset] + ((size + 7) >> 3), offset + 1)
        return DirBatch(cols, offset, end if end < n else n)

    async def readdirp(self, frame, fd, offset, size):
        of = self._of(fd)
        if size <= 0:
            return []                # (a batch must take one entry, or this never ends)
        cols = (await self._snapshot(of, offset)).cols
        n = len(cols)
        if offset == 0 and n > _BIG_LISTING:
            size = min(size, _BIG_FIRST_BATCH)
        all_names, all_inos = cols.names, cols.inos
        by_ino = self.itable.by_ino
        dev = self._dev
        i = offset
        while True:              # an empty reply means the end: skip vanished names
            start = i
            budget = size
            while i < n and budget > 0:
                budget -= (159 + len(all_names[i])) & ~7   # fuse_direntplus, padded
                i += 1
            head = list(map(cols.entry, range(start, min(i, 2))))  # "." and ".."
            first = max(start, 2)
            pfd = of.node.fd
            # The batch's columns (xlators.core.dir_batch.PlusBatch): a known inode's
            # entry is its stat (lookup's inline case: the inode number the snapshot
            # has, on the brick's device) and takes a slot of each column as it is.
            names = all_names[first:i]
            inos = all_inos[first:i]
            inodes = list(map(by_ino.get, inos))
            stats: list[Any] = []
            append = stats.append
            if self._inline:
                for name, inode in zip(names, inodes):
                    node = inode.ctx.get(self) if inode is not None else None
                    if node is None:
                        r = _lookup_new(pfd, name)
                    else:
                        try:
                            r = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                        except OSError:
                            append(None)             # gone since the snapshot
                            continue
                        if r.st_ino == inode.ino and r.st_dev == dev:
                            node.mode = r.st_mode
                            append(r)
                            continue
                    append(self._plus_entry(r, pfd, name, inodes, inos, len(stats)))
            else:
                known = [inode is not None and self in inode.ctx for inode in inodes]
                found = await self._thread(_lookup_many, pfd, names, known)
                for name, inode, r in zip(names, inodes, found):
                    if type(r) is os.stat_result:
                        node = inode.ctx.get(self)   # (a forget may have come since)
                        if node is not None and r.st_ino == inode.ino and \
                                r.st_dev == dev:
                            node.mode = r.st_mode
                            append(r)
                            continue
                    append(self._plus_entry(r, pfd, name, inodes, inos, len(stats)))
            offs: Any = range(first + 1, i + 1)
            if None in stats:
                kept = [r is not None for r in stats]
                names, offs, inodes, inos = (list(compress(c, kept))
                                             for c in (names, offs, inodes, inos))
                stats = [r for r in stats if r is not None]
            if head or stats or i >= n:
                return PlusBatch(head, names, list(offs), inodes, inos, stats)

    def _plus_entry(self, r: Any, pfd: int, name: bytes, inodes: list[Any],
                    inos: list[int], k: int) -> Any:
        """Entry ``k`` of a readdirp batch that is not a known inode's plain stat:
        ``r`` is a stat (of an inode posix holds, or held: the name may have changed
        since the snapshot), ``(fd, stat)`` (a new O_PATH descriptor) or None (the
        name is gone).  Its Attr (its inode and inode number go to ``inodes[k]`` and
        ``inos[k]``), or None to leave it out."""
        if r is None:
            return None
        try:
            if type(r) is tuple:
                entry = self._entry(r[1], r[0])
            else:                                # (opens one if the name changed since)
                entry = self._entry(r, pfd=pfd, name=name)
        except OSError:
            return None                          # another device, with submounts off
        a = entry.attr
        inodes[k] = entry.inode
        inos[k] = a.ino
        return a

    async def fsyncdir(self, frame, fd, datasync):
        of = self._of(fd)
        await self._thread(os.fdatasync if datasync else os.fsync, of.fd)

    async def releasedir(self, frame, fd):
        of = fd.ctx.pop(self, None)
        if of is not None:
            self._close_open(of)
        return None
