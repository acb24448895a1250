"""storage/posix: directory listing fops (a mixin of the Posix translator).

opendir opens the directory for reading with the caller's credentials (through
/proc/self/fd/N: a listing needs read permission only, not search), with O_NOATIME when
the fd asks for it (a noatime or nodiratime mount) and the caller may have it.  A readdir at
offset 0 (or with no snapshot yet) lists the whole directory into the open file's
context; the cookie of entry i is i + 1, "." and ".." are entries 0 and 1, so seeking back
to any cookie the caller was given works and a rewind takes a new snapshot.  readdirp
looks each returned entry up like lookup does (as the daemon: the kernel checks search
permission on the directory before it uses a dentry), skipping names that vanished since
the snapshot.  A batch stops once the kernel's byte budget is spent (and holds at least
one entry; a budget of 0 bytes gets an empty batch, as libfuse answers a buffer too small
for one entry: the kernel never asks for less than a page).  Listing a big
directory (its size above 256 KiB, some thousands of entries) runs in a worker thread.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Any

from xlators.core.errors import FopError
from xlators.core.types import DirEntry

from .posix_io import OpenFile, keep_noatime, open_noatime

_DT_DIR = stat.S_IFDIR >> 12
_DT_REG = stat.S_IFREG >> 12
_DT_LNK = stat.S_IFLNK >> 12
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_O_LOOKUP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_BIG_DIR = 256 << 10     # directory file size above which the listing runs in a thread


def _opendir_at(node_fd: int, noatime: int) -> int:
    # Through /proc, not openat(fd, "."): reading a directory needs only read permission.
    return open_noatime(f"/proc/self/fd/{node_fd}", _O_DIR | noatime)[0]


def _list(dfd: int, node: Any, parent_ino: int) -> list[DirEntry]:
    """Every entry as the DirEntry readdir returns (cookie i + 1 for entry i), "." and ".."
    first: made once per snapshot, so a batch is a slice of it."""
    new = tuple.__new__
    out = [new(DirEntry, (b".", node.ino, _DT_DIR, 1, None)),
           new(DirEntry, (b"..", parent_ino, _DT_DIR, 2, None))]
    append = out.append
    bits = node.devbits
    os.lseek(dfd, 0, os.SEEK_SET)
    fsencode = os.fsencode
    off = 2
    with os.scandir(dfd) as it:
        for e in it:
            if e.is_file(follow_symlinks=False):
                t = _DT_REG
            elif e.is_dir(follow_symlinks=False):
                t = _DT_DIR
            elif e.is_symlink():
                t = _DT_LNK
            else:
                try:
                    t = stat.S_IFMT(e.stat(follow_symlinks=False).st_mode) >> 12
                except OSError:
                    t = 0
            off += 1
            append(new(DirEntry, (fsencode(e.name), e.inode() | bits, t, off, None)))
    return out


def _lookup_many(pfd: int, names: list[bytes]) -> list[Any]:
    """(fd, stat) or None per name, looked up like lookup does."""
    out: list[Any] = []
    for name in names:
        try:
            fd = os.open(name, _O_LOOKUP, 0, dir_fd=pfd)
        except OSError:
            out.append(None)
            continue
        try:
            out.append((fd, os.fstat(fd)))
        except OSError:
            os.close(fd)
            out.append(None)
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

    async def _snapshot(self, of: OpenFile, offset: int) -> list:
        entries = of.entries
        if offset == 0 or entries is None:
            node = of.node
            if self._inline and os.fstat(of.fd).st_size <= _BIG_DIR:
                entries = _list(of.fd, node, self._parent_ino(node))
            else:
                entries = await self._thread(_list, of.fd, node, self._parent_ino(node))
            of.entries = entries
        return entries

    async def readdir(self, frame, fd, offset, size):
        of = self._of(fd)
        if size <= 0:
            return []
        entries = await self._snapshot(of, offset)
        budget = size
        end = offset
        n = len(entries)
        while end < n and budget > 0:
            budget -= (24 + len(entries[end][0]) + 7) & ~7      # struct fuse_dirent, padded
            end += 1
        return entries[offset:end]

    async def readdirp(self, frame, fd, offset, size):
        of = self._of(fd)
        if size <= 0:
            return []                # (a batch must take one entry, or this never ends)
        entries = await self._snapshot(of, offset)
        n = len(entries)
        out: list = []
        i = offset
        while not out and i < n:     # an empty reply means the end: skip vanished names
            batch = []
            budget = size
            while i < n and budget > 0:
                batch.append((entries[i], i + 1))
                budget -= (152 + len(entries[i][0]) + 7) & ~7   # fuse_direntplus, padded
                i += 1
            names = [e[0] for e, _ in batch if e[0] != b"." and e[0] != b".."]
            if self._inline:
                found = _lookup_many(of.node.fd, names)
            else:
                found = await self._thread(_lookup_many, of.node.fd, names)
            k = 0
            for de, off in batch:
                name = de[0]
                if name == b"." or name == b"..":
                    out.append(de)
                    continue
                r = found[k]
                k += 1
                if r is None:
                    continue                     # gone since the snapshot
                try:
                    entry = self._entry(r[1], r[0])
                except OSError:
                    continue                     # another device, with submounts off
                out.append(DirEntry(name, entry.attr.ino, entry.attr.mode >> 12 & 0o17,
                                    off, entry))
        return out

    async def fsyncdir(self, frame, fd, datasync):
        of = self._of(fd)
        await self._thread(os.fdatasync if datasync else os.fsync, of.fd)

    async def releasedir(self, frame, fd):
        of = fd.ctx.pop(self, None)
        if of is not None:
            self._close_open(of)
        return None
