"""storage/posix: directory listing fops (a mixin of the Posix translator).

opendir opens the directory for reading with the caller's credentials (through
/proc/self/fd/N: a listing needs read permission only, not search), with O_NOATIME when
the fd asks for it (a noatime or nodiratime mount) and the caller may have it.  A readdir at
offset 0 (or with no snapshot yet) starts a snapshot of the directory in the open file's
context, as columns (xlators.core.dir_batch: readdir answers with a view of them, no
DirEntry per entry), read a chunk of :data:`_CHUNK` names at a time as the batches asked
need them (so a cold listing's first reply does not wait for the whole directory to be
read, and each chunk is read inline: a few blocks of the directory; in a worker thread
when posix uses threads).  The cookie of entry i is i + 1, "." and ".." are entries 0
and 1 (the names of each chunk follow shortest first); entries are only appended, so
seeking back to any cookie the caller was given works, and a rewind takes a new
snapshot.  Names made or removed while a listing runs are listed at most once (as the
directory's own readdir lists them: the chunks are read in order through one stream),
the others exactly once.  readdirp
looks each returned entry up like lookup does (as the daemon: the kernel checks search
permission on the directory before it uses a dentry), skipping names that vanished since
the snapshot: a plain stat for a name whose inode posix already holds, an O_PATH open
and fstat for the others.  It answers with a PlusBatch (xlators.core.dir_batch): the
entries' names, cookies, inodes and stat results as columns, from which the FUSE bridge
packs the reply when no translator above read the batch (a known inode's entry then
costs no Attr, Entry or DirEntry).  The first readdirp batch of a big directory (more than 1,024
entries) holds "." and ".." alone: READDIRPLUS only where it pays (_BIG_LISTING says
why).  A batch holds the entries that fit in the kernel's byte budget (at least one:
the bridge would drop one past it, and its readdirp stat would be wasted; a budget of 0
bytes gets an empty batch, as libfuse answers a buffer too small
for one entry: the kernel never asks for less than a page).
"""
from __future__ import annotations

import errno
import os
import stat
import sys
from bisect import bisect_right
from itertools import accumulate, compress, islice
from operator import attrgetter
from typing import Any, Optional

import trio

from xlators.core.errors import FopError
from xlators.core.dir_batch import DirBatch, DirColumns, PlusBatch

from .posix_io import OpenFile, keep_noatime, open_noatime

_DT_DIR = stat.S_IFDIR >> 12
_DT_REG = stat.S_IFREG >> 12
_DT_LNK = stat.S_IFLNK >> 12
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_O_LOOKUP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_NUL_JOINS = "a\0b".encode(_FS_ENCODING, _FS_ERRORS) == b"a\0b"
_inode_of = os.DirEntry.inode
_is_file = os.DirEntry.is_file          # (follows a link: only asked when there is none)
_is_symlink = os.DirEntry.is_symlink
_name_of = attrgetter("name")
_CHUNK = 512                            # scandir entries held at once
# A readdirp at offset 0 of a directory of more than _BIG_LISTING entries answers "."
# and ".." alone (no lookup): the kernel asks READDIRPLUS at offset 0 only
# (READDIRPLUS_AUTO, until a lookup in the directory), so there the attributes would
# serve an `ls -l` for a few names of thousands (it looks the others up anyway) and
# cost every names-only listing a cold lookup each (with 26 of them, a 4 KiB batch, a
# cold listing of 10,000 names took 10-18 ms longer: docs/benchmarks.md, "Issue 10").
_BIG_LISTING = 1024
_ALL_REGULAR = bytes([_DT_REG]) * _CHUNK
_DOTS_TYPES = bytes([_DT_DIR, _DT_DIR])
# a READDIR record's size / 8 by name length: struct fuse_dirent + name, padded to 8
_RECORD_EIGHTHS = bytes((31 + n) >> 3 for n in range(256))


def _opendir_at(node_fd: int, noatime: int) -> int:
    # Through /proc, not openat(fd, "."): reading a directory needs only read permission.
    return open_noatime(f"/proc/self/fd/{node_fd}", _O_DIR | noatime)[0]


class Listing:
    """A snapshot of a directory, read a chunk at a time: ``cols``, its entries so far
    as columns (cookie i + 1 for entry i, "." and ".." first, then each chunk of
    :data:`_CHUNK` names in the directory's order, shortest first within the chunk),
    and ``ends``, where ``ends[i]`` is the size of the READDIR records of entries
    0..i-1 in units of 8 bytes (``ends[0]`` is 0), so a batch's end is a bisection.
    ``it`` is the scandir iterator the next chunk comes from (None once the directory's
    end was read or the snapshot closed): it reads through a duplicate of the open
    directory's descriptor, whose offset it shares, so no other snapshot of that
    descriptor may read while it does.  ``lock`` is held while a chunk is read in a
    worker thread (``busy``); a ``close`` meanwhile is done by that thread's reader
    when it is back.  Entries are only ever appended, so a cookie once handed out
    names the same entry for the snapshot's life."""
    __slots__ = ("cols", "ends", "it", "bits", "lock", "busy", "closed")

    def __init__(self, cols: DirColumns, it: Any, bits: int) -> None:
        self.cols = cols
        self.ends = list(accumulate(cols.shape.translate(_RECORD_EIGHTHS), initial=0))
        self.it = it
        self.bits = bits                # ORed into the inode numbers (a submount's)
        self.lock = trio.Lock()
        self.busy = False               # a worker thread reads the next chunk
        self.closed = False

    def close(self) -> None:
        """No more reading (the iterator is closed now, or by the thread that reads it
        once it is back)."""
        self.closed = True
        if not self.busy:
            it, self.it = self.it, None
            if it is not None:
                it.close()

    def more(self) -> None:
        """Append the next chunk of the directory (or note its end)."""
        it = self.it
        if it is None:
            return
        chunk = list(islice(it, _CHUNK))
        if len(chunk) < _CHUNK:
            self.it = None
            it.close()
        if chunk:
            _append(self, chunk)


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


def _append(listing: Listing, chunk: "list[os.DirEntry[str]]") -> None:
    """Append ``chunk``'s entries to ``listing``'s columns, a column at a time (one call
    per column, not per entry), the names shortest first (in the directory's order
    among names of one length): a READDIR reply then packs a run of equal records at a
    time."""
    names = _names(chunk)
    inos: list[int] = list(map(_inode_of, chunk))
    types = _types(chunk)
    bits = listing.bits
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
        types = bytes(map(types.__getitem__, order))
        if shape is not None:
            shape = bytes(map(shape.__getitem__, order))
    cols = listing.cols
    ends = listing.ends
    if shape is not None and cols.shape is not None:
        more = list(accumulate(shape.translate(_RECORD_EIGHTHS), initial=ends[-1]))
    else:
        more = list(accumulate([(31 + len(x)) >> 3 for x in names], initial=ends[-1]))
    # A reader on the event loop may look at the columns while a worker thread appends
    # a chunk (io-threads): each column grows in one step, and ``names`` (the length a
    # reader goes by) last, so every entry it counts is whole.
    ends += islice(more, 1, None)       # (without the initial value, already there)
    cols.inos += inos
    cols.types += types
    if shape is not None and cols.shape is not None:
        cols.shape += shape
    else:
        cols.shape = None               # (no packer reads it once a name is too long)
    cols.names += names


def _start(dfd: int, node: Any, parent_ino: int) -> Listing:
    """A new snapshot of the directory open as ``dfd``: "." and "..", and the scandir
    iterator the rest will come from."""
    os.lseek(dfd, 0, os.SEEK_SET)
    cols = DirColumns([b".", b".."], [node.ino, parent_ino], bytearray(_DOTS_TYPES),
                      bytearray(b"\x01\x02"))
    return Listing(cols, os.scandir(dfd), node.devbits)


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
        """The open directory's snapshot; a new one at offset 0 (a rewind), once the
        old one's reading thread (if any) is back: the two share the descriptor's
        offset."""
        listing = of.entries
        if offset == 0 or listing is None:
            while listing is not None and listing.busy:
                async with listing.lock:
                    pass
                listing = of.entries
            if listing is not None:
                listing.close()
            node = of.node
            listing = of.entries = _start(of.fd, node, self._parent_ino(node))
        return listing

    async def _more(self, listing: Listing) -> None:
        """The listing's next chunk: read inline (a chunk is a few blocks of the
        directory), or in a worker thread when posix uses them; one at a time."""
        if self._inline and not listing.busy:
            listing.more()
            return
        async with listing.lock:
            if listing.it is not None:
                await self._read_in_thread(listing)

    async def _read_in_thread(self, listing: Listing) -> None:
        """``listing.more()`` in a worker thread (``listing.lock`` held)."""
        listing.busy = True
        try:
            await self._thread(listing.more)
        finally:
            listing.busy = False
            if listing.closed:
                listing.close()

    async def _filled(self, of: OpenFile, listing: Listing, index: int,
                      eighths: int = 0) -> Listing:
        """Read chunks until the listing holds entry ``index`` and the READDIR records
        from it on take ``eighths`` * 8 bytes (or the directory ends); the listing read,
        which is the open directory's current one: a rewind by another request while
        this one waited for a chunk closes the old listing, and the batch then comes
        from the new one (the old one's end would read as the directory's)."""
        while True:
            cols, ends = listing.cols, listing.ends
            while listing.it is not None and (len(cols) <= index or
                                              ends[-1] - ends[index] < eighths):
                await self._more(listing)
            current = of.entries
            if not listing.closed or current is None or current is listing:
                return listing
            listing = current

    async def readdir(self, frame, fd, offset, size):
        of = self._of(fd)
        if size <= 0:
            return []
        listing = await self._snapshot(of, offset)
        cols, ends = listing.cols, listing.ends
        want = (size + 7) >> 3
        if listing.it is None or (offset < len(cols) and
                                  ends[-1] - ends[offset] >= want):
            n = len(cols)
        else:
            listing = await self._filled(of, listing, offset, want)
            cols, ends = listing.cols, listing.ends
            n = len(cols)
        if offset >= n:
            return []
        # the entries from offset on whose records fit in ``size`` bytes (at least one)
        end = max(bisect_right(ends, ends[offset] + (size >> 3), offset + 1) - 1,
                  offset + 1)
        return DirBatch(cols, offset, end if end < n else n)

    async def readdirp(self, frame, fd, offset, size):
        of = self._of(fd)
        if size <= 0:
            return []                # (a batch must take one entry, or this never ends)
        listing = await self._snapshot(of, offset)
        if offset == 0:
            listing = await self._filled(of, listing, _BIG_LISTING + 2)
        cols = listing.cols
        if offset == 0 and len(cols) > _BIG_LISTING + 2:
            return PlusBatch([cols.entry(0), cols.entry(1)], [], [], [], [], [])
        all_names, all_inos = cols.names, cols.inos
        by_ino = self.itable.by_ino
        dev = self._dev
        i = offset
        while True:              # an empty reply means the end: skip vanished names
            start = i
            budget = size
            while budget > 0:
                if i >= len(all_names):
                    if listing.it is None:
                        break
                    await self._more(listing)
                    current = of.entries
                    if listing.closed and current is not None and current is not listing:
                        listing = current        # a rewind meanwhile (see _filled)
                        cols = listing.cols
                        all_names, all_inos = cols.names, cols.inos
                    continue
                budget -= (159 + len(all_names[i])) & ~7   # fuse_direntplus, padded
                if budget < 0 and i > start:
                    break                        # it would not fit: the next batch's
                i += 1
            n = len(all_names)
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
            if head or stats or (i >= n and listing.it is None):
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
