"""The fops of storage/memory on open files: open, opendir, release, flush, fsync,
readdir(p), readv, writev, fallocate, lseek, copy_file_range.

A mixin of :class:`xlators.storage.memory.Memory` (kept apart to keep each module short);
it relies on the translator's ``used`` counter, ``opts.size``, ``_node``, ``_fd_node``,
``_entry``, ``_drop_if_unused`` and the Translator's ``ctx_*`` methods.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from typing import Any

from ..core.bounds import copy_range, loff, open_flags, rw_range
from ..core.errors import FopError
from ..core.inode import Fd, Inode
from ..core.types import KILL_SUIDGID, O_EXEC_OPEN, DirEntry
from .memory_extents import Extents
from .memory_node import (BLOCK, CAPS, CHUNK, MAX_FILE_SIZE, R_OK, W_OK, X_OK, DirData,
                          FileData, Node, check, kill_suid)

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE = 0, 1, 2, 3, 4
_DIRENT = 24          # fuse_dirent header (readdir's byte budget)
_DIRENTPLUS = 152     # fuse_direntplus header (entry_out + dirent)


def _file(node: Node) -> Node:
    if node.is_reg:
        return node
    raise FopError(errno.EISDIR if node.is_dir else errno.EINVAL)


def _kills(frame: Any) -> bool:
    """Does a write or truncate by this caller clear set-id bits?  Yes unless root, or
    when the kernel says the caller lacks CAP_FSETID."""
    return frame.uid != 0 or bool(frame.xdata.get(KILL_SUIDGID))


def _kill_suid(node: Node, frame: Any = None) -> None:
    node.mode = kill_suid(node.mode, frame, node.gid)


class MemoryIo:
    """Data fops; mixed into the Memory translator."""

    used: int
    opts: Any
    capacity: Any
    # provided by Memory / Translator
    _node: Any
    _fd_node: Any
    _entry: Any
    _drop_if_unused: Any
    ctx_set: Any
    ctx_del: Any

    # -- open files and directories ----------------------------------------------------
    def _open(self, frame: Any, node: Node, flags: int, fd: Fd) -> None:
        acc = flags & os.O_ACCMODE
        trunc = bool(flags & os.O_TRUNC)
        if node.is_dir and (acc != os.O_RDONLY or trunc):
            raise FopError(errno.EISDIR)
        mask = R_OK if acc == os.O_RDONLY else W_OK if acc == os.O_WRONLY else R_OK | W_OK
        if flags & O_EXEC_OPEN and acc == os.O_RDONLY and node.is_reg:
            mask = X_OK                 # execve of a file the caller may not read (0711)
        if trunc:
            mask |= W_OK
        check(frame, node, mask)
        if trunc and node.is_reg:
            before = node.data.alloc
            node.data.truncate(0)
            self.used += node.data.alloc - before
            now = time.time_ns()
            node.touch(now)
            if _kills(frame):
                node.mode = kill_suid(node.mode, frame, node.gid)
        self.ctx_set(fd, node)
        node.opens += 1

    async def open(self, frame: Any, inode: Inode, flags: int, fd: Fd) -> None:
        self._open(frame, self._node(inode), open_flags(flags), fd)

    async def opendir(self, frame: Any, inode: Inode, fd: Fd) -> None:
        node = self._node(inode)
        if not node.is_dir:
            raise FopError(errno.ENOTDIR)
        check(frame, node, R_OK)
        self.ctx_set(fd, node)
        node.opens += 1

    async def release(self, frame: Any, fd: Fd) -> None:
        node = self.ctx_del(fd)
        if node is not None:
            node.opens -= 1
            self._drop_if_unused(node)

    releasedir = release

    async def flush(self, frame: Any, fd: Fd) -> None:
        self._fd_node(fd)

    async def fsync(self, frame: Any, fd: Fd, datasync: Any) -> None:
        self._fd_node(fd)

    async def fsyncdir(self, frame: Any, fd: Fd, datasync: Any) -> None:
        self._fd_node(fd)

    async def readdir(self, frame: Any, fd: Fd, offset: int, size: int) -> list[DirEntry]:
        return self._readdir(fd, offset, size, False)

    async def readdirp(self, frame: Any, fd: Fd, offset: int, size: int) -> list[DirEntry]:
        return self._readdir(fd, offset, size, True)

    def _readdir(self, fd: Fd, offset: int, size: int, plus: bool) -> list[DirEntry]:
        node = self._fd_node(fd)
        if not node.is_dir:
            raise FopError(errno.ENOTDIR)
        if node.nlink == 0 or size <= 0:
            # a removed directory reads as empty; so does a 0-byte buffer (as libfuse
            # answers a buffer too small for one entry; the kernel asks for a page)
            return []
        d: DirData = node.data
        out: list[DirEntry] = []
        head = _DIRENTPLUS if plus else _DIRENT
        used = 0
        if offset < 1:
            out.append(DirEntry(b".", node.ino, stat.S_IFDIR >> 12, 1))
            used += head + 8
        if offset < 2:
            parent = d.parent or node
            out.append(DirEntry(b"..", parent.ino, stat.S_IFDIR >> 12, 2))
            used += head + 8
        for name, child, cookie in d.after(max(offset, 2)):
            used += head + ((len(name) + 7) & ~7)
            if used > size and out:
                break
            out.append(DirEntry(name, child.ino, (child.mode >> 12) & 0o17, cookie,
                                self._entry(child) if plus else None))
        node.read_touch(time.time_ns())
        return out


    def _reserve(self, node: Node, offset: int, length: int) -> None:
        """ENOSPC if allocating [offset, offset+length) would pass the capacity."""
        self._reserve_bytes(node.data.growth(offset, length))

    def _reserve_bytes(self, grow: int) -> None:
        if grow and self.used + grow > self.capacity():
            raise FopError(errno.ENOSPC)

    def _write(self, node: Node, data: Any, offset: int) -> None:
        fdata = node.data
        before = fdata.alloc
        fdata.write(offset, data)
        self.used += fdata.alloc - before

    async def readv(self, frame: Any, fd: Any, size: int, offset: int,
                    flags: Any = None) -> bytes:
        node = _file(self._fd_node(fd))
        if fd.flags & os.O_ACCMODE == os.O_WRONLY:
            raise FopError(errno.EBADF)
        offset, size = rw_range(offset, size)
        data = node.data.read(offset, size)
        node.read_touch(time.time_ns())
        return data

    async def writev(self, frame: Any, fd: Any, data: Any, offset: int,
                     flags: Any = None) -> int:
        node = _file(self._fd_node(fd))
        if fd.flags & os.O_ACCMODE == os.O_RDONLY:
            raise FopError(errno.EBADF)
        if fd.flags & os.O_APPEND:
            offset = node.data.size
        n = len(data)
        offset = rw_range(offset, n)[0]      # EINVAL past 2**63-1 (= MAX_FILE_SIZE)
        if n == 0:
            return 0
        self._reserve(node, offset, n)
        self._write(node, data, offset)
        if node.mode & (stat.S_ISUID | stat.S_ISGID) and _kills(frame):
            _kill_suid(node, frame)
        if node.xattrs:
            node.xattrs.pop(CAPS, None)     # any write ends file capabilities
        node.touch(time.time_ns())
        return n

    async def fallocate(self, frame: Any, fd: Any, mode: int, offset: int,
                        length: int) -> None:
        node = self._fd_node(fd)
        # The checks in vfs_fallocate's order, then the filesystem's.
        offset, length = loff(offset), loff(length, "length")
        if offset < 0 or length <= 0:
            raise FopError(errno.EINVAL)
        known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE
        if mode & ~known:
            raise FopError(errno.EOPNOTSUPP)
        punch = bool(mode & FALLOC_FL_PUNCH_HOLE)
        zero = bool(mode & FALLOC_FL_ZERO_RANGE)
        keep = bool(mode & FALLOC_FL_KEEP_SIZE)
        if punch and zero:
            raise FopError(errno.EINVAL)
        if punch and not keep:
            raise FopError(errno.EOPNOTSUPP)
        if fd.flags & os.O_ACCMODE == os.O_RDONLY:
            raise FopError(errno.EBADF)
        if stat.S_ISFIFO(node.mode):
            raise FopError(errno.ESPIPE)
        if node.is_dir:
            raise FopError(errno.EISDIR)
        if not node.is_reg:
            raise FopError(errno.ENODEV)
        end = offset + length
        if end > MAX_FILE_SIZE:
            raise FopError(errno.EFBIG)
        fdata = node.data
        before = fdata.alloc
        if punch:
            fdata.zero(offset, length, punch=True)
        else:
            self._reserve(node, offset, length)
            if zero:
                fdata.zero(offset, length, punch=False)
            fdata.allocate(offset, length)
            if not keep and end > fdata.size:
                fdata.size = end
                zero = True                      # the size changed: a modification
        self.used += fdata.alloc - before
        if punch or zero:
            node.touch(time.time_ns())
        # file_modified(), as a local filesystem calls it: like a write
        if frame.uid != 0 and node.mode & (stat.S_ISUID | stat.S_ISGID):
            _kill_suid(node, frame)
        if node.xattrs:
            node.xattrs.pop(CAPS, None)

    async def lseek(self, frame: Any, fd: Any, offset: int, whence: int) -> int:
        node = _file(self._fd_node(fd))
        fdata = node.data
        offset = loff(offset)
        if whence == SEEK_DATA:
            return fdata.seek_data(offset) if offset >= 0 else _enxio()
        if whence == SEEK_HOLE:
            return fdata.seek_hole(offset) if offset >= 0 else _enxio()
        if whence == SEEK_SET:
            pos = offset
        elif whence == SEEK_END:
            pos = fdata.size + offset
        else:
            raise FopError(errno.EINVAL)      # SEEK_CUR: the position is the kernel's
        if pos < 0 or pos > MAX_FILE_SIZE:
            raise FopError(errno.EINVAL)
        return pos

    def _copy(self, src: FileData, off_in: int, dst: FileData, off_out: int,
              n: int) -> None:
        """Copy [off_in, off_in+n) of ``src`` to ``off_out`` in ``dst``, holes as holes:
        the cost is the source's stored chunks and extents in the range, not ``n``."""
        shift = off_out - off_in
        spans = Extents()                     # dst blocks the source's allocation maps to
        for a, b in src.blocks.within(off_in, off_in + n):
            spans.add((a + shift) & ~(BLOCK - 1), -(-(b + shift) // BLOCK) * BLOCK)
        self._reserve_bytes(sum(b - a - dst.blocks.covered(a, b) for a, b in spans.spans()))
        pieces = []                           # the source's bytes, read before any change
        for x, y in src.blocks.within(off_in, off_in + n):
            for i in src._stored(x // CHUNK, (y - 1) // CHUNK):
                base = i * CHUNK
                c = src.chunks[i]
                a, b = max(x, base), min(y, base + len(c))
                if a < b:
                    pieces.append((a + shift, bytes(c[a - base:b - base])))
        before = dst.alloc
        dst.zero(off_out, n, punch=False)     # what was there reads as the source's holes
        for a, b in spans.spans():
            dst.allocate(a, b - a)
        for at, piece in pieces:
            dst.write(at, piece)
        if off_out + n > dst.size:
            dst.size = off_out + n
        self.used += dst.alloc - before

    async def copy_file_range(self, frame: Any, fd_in: Any, off_in: int, fd_out: Any,
                              off_out: int, length: int, flags: int) -> int:
        if flags:
            raise FopError(errno.EINVAL)
        src = _file(self._fd_node(fd_in))
        dst = _file(self._fd_node(fd_out))
        if fd_in.flags & os.O_ACCMODE == os.O_WRONLY:
            raise FopError(errno.EBADF)
        if fd_out.flags & os.O_ACCMODE == os.O_RDONLY or fd_out.flags & os.O_APPEND:
            raise FopError(errno.EBADF)
        off_in, off_out, length = copy_range(off_in, off_out, length)
        n = max(0, min(length, src.data.size - off_in))
        if src is dst and off_in < off_out + n and off_out < off_in + n and n:
            raise FopError(errno.EINVAL)      # overlapping ranges of one file
        if n == 0:
            return 0
        if off_out + n > MAX_FILE_SIZE:
            raise FopError(errno.EFBIG)
        self._copy(src.data, off_in, dst.data, off_out, n)
        now = time.time_ns()
        src.read_touch(now)
        dst.touch(now)
        if frame.uid != 0 and dst.mode & (stat.S_ISUID | stat.S_ISGID):
            _kill_suid(dst, frame)
        return n


def _enxio() -> int:
    raise FopError(errno.ENXIO)
