"""The data model of storage/memory: nodes, file data, directories, permission checks.

No translator here (storage/memory is in memory.py); this module is plain Python with no
I/O, so it can be unit-tested and reused (a tmpfs-like brick, a test double).

- :class:`Node` is an inode: attributes, xattrs, and per kind a :class:`FileData`
  (regular file), a :class:`DirData` (directory) or the target (symlink).
- :class:`FileData` keeps a file's bytes in chunks of ``CHUNK`` bytes, stored on
  write, and its allocated blocks as extents: a hole costs nothing, so sparse files of
  any size are cheap, and SEEK_DATA/SEEK_HOLE, fallocate and punch-hole work at block
  granularity, as on tmpfs (pages), in time independent of the range's length.
- :class:`DirData` maps names to nodes and gives every entry a cookie from a
  per-directory counter that only grows: a readdir offset stays valid while entries come
  and go (an entry added later is returned at the end, one removed is skipped).
- :func:`may` is the owner/group/other check with the caller's groups; uid 0 passes as
  with CAP_DAC_OVERRIDE.
"""
from __future__ import annotations

import bisect
import errno
import stat
import time
from typing import Any, Iterator, Optional

from ..core.errors import FopError
from ..core.types import Attr
from .memory_extents import Extents

CHUNK = 64 * 1024
BLOCK = 4096
MAX_FILE_SIZE = (1 << 63) - 1
NAME_MAX = 255
PATH_MAX = 4096
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536

_NO_END = 1 << 64     # past any offset
R_OK, W_OK, X_OK = 4, 2, 1
CAPS = b"security.capability"
FIRST_COOKIE = 3      # 1 is ".", 2 is ".."


def _round_block(n: int) -> int:
    return (n + BLOCK - 1) & ~(BLOCK - 1)


class FileData:
    """A regular file's bytes: ``size``; the allocated blocks (``blocks``, an
    :class:`Extents` of block-aligned ranges: what st_blocks and statfs count); the blocks
    written (``written``, within ``blocks``: what SEEK_DATA finds; fallocated blocks read
    as zeros and are holes to SEEK_DATA until written, as on tmpfs); and the bytes
    (``chunks``: index -> bytearray of at most CHUNK bytes; bytes past a chunk's length,
    and missing chunks, read as zeros).  No operation costs more than the chunks and
    extents stored in its range (or the bytes it returns or writes): a 4 EiB truncate,
    punch or SEEK_HOLE is as cheap as a 4 KiB one."""
    __slots__ = ("size", "chunks", "blocks", "written", "alloc")

    def __init__(self) -> None:
        self.size = 0
        self.chunks: dict[int, bytearray] = {}
        self.blocks = Extents()
        self.written = Extents()
        self.alloc = 0          # bytes allocated: blocks.total

    def clear(self) -> None:
        self.chunks.clear()
        self.blocks.clear()
        self.written.clear()
        self.alloc = 0

    def _stored(self, first: int, last: int) -> list[int]:
        """Indexes of the stored chunks from ``first`` to ``last`` (inclusive), in order,
        found in the fewer steps of walking the range or the stored chunks."""
        chunks = self.chunks
        if last - first < len(chunks):
            return [i for i in range(first, last + 1) if i in chunks]
        return sorted(i for i in chunks if first <= i <= last)

    def read(self, offset: int, size: int) -> bytes:
        end = min(self.size, offset + size)
        if offset >= end:
            return b""
        n = end - offset
        i, s = divmod(offset, CHUNK)
        if s + n <= CHUNK:                          # within one chunk: the common case
            c = self.chunks.get(i)
            if c is None:
                return bytes(n)
            piece = bytes(c[s:s + n])
            return piece if len(piece) == n else piece + bytes(n - len(piece))
        out = bytearray(n)
        for i in self._stored(i, (end - 1) // CHUNK):
            c = self.chunks[i]
            base = i * CHUNK
            a, b = max(offset, base), min(end, base + len(c))
            if a < b:
                out[a - offset:b - offset] = c[a - base:b - base]
        return bytes(out)

    def growth(self, offset: int, length: int) -> int:
        """Bytes that writing/allocating [offset, offset+length) would add to alloc."""
        a, b = offset & ~(BLOCK - 1), _round_block(offset + length)
        return (b - a) - self.blocks.covered(a, b)

    def write(self, offset: int, data: Any) -> None:
        mv = memoryview(data)
        n = len(mv)
        if not n:
            return
        chunks = self.chunks
        pos, end = offset, offset + n
        while pos < end:
            i, s = divmod(pos, CHUNK)
            k = min(CHUNK - s, end - pos)
            c = chunks.get(i)
            if c is None:
                c = chunks[i] = bytearray()
            if s > len(c):
                c.extend(bytes(s - len(c)))
            c[s:s + k] = mv[pos - offset:pos - offset + k]
            pos += k
        a, b = offset & ~(BLOCK - 1), _round_block(end)
        self.alloc += self.blocks.add(a, b)
        self.written.add(a, b)
        if end > self.size:
            self.size = end

    def allocate(self, offset: int, length: int) -> None:
        """Allocate the blocks of [offset, offset+length) (fallocate mode 0): counted in
        st_blocks and statfs, read as zeros, holes to SEEK_DATA until written; no memory
        is used until then."""
        self.alloc += self.blocks.add(offset & ~(BLOCK - 1), _round_block(offset + length))

    def zero(self, offset: int, length: int, punch: bool) -> None:
        """Zero [offset, offset+length): the blocks wholly inside become unwritten (as
        ext4's zero-range makes them); ``punch`` also frees them."""
        end = offset + length
        chunks = self.chunks
        for i in self._stored(offset // CHUNK, (end - 1) // CHUNK):
            c = chunks[i]
            base = i * CHUNK
            a, b = max(offset, base) - base, min(end, base + len(c)) - base
            if a >= b:
                continue
            if b == len(c):
                if a == 0:
                    del chunks[i]
                else:
                    del c[a:]
            else:
                c[a:b] = bytes(b - a)
        a, b = _round_block(offset), end & ~(BLOCK - 1)
        self.written.remove(a, b)
        if punch:
            self.alloc -= self.blocks.remove(a, b)

    def truncate(self, size: int) -> None:
        if size < self.size:
            chunks = self.chunks
            first = size // CHUNK
            for i in [i for i in chunks if i >= first]:
                s = size - i * CHUNK
                if s <= 0:
                    del chunks[i]
                elif len(chunks[i]) > s:
                    del chunks[i][s:]
            self.alloc -= self.blocks.remove(_round_block(size), _NO_END)
            self.written.remove(_round_block(size), _NO_END)
        self.size = size

    def seek_data(self, offset: int) -> int:
        if offset >= self.size:
            raise FopError(errno.ENXIO)
        pos = self.written.next_in(offset)
        if pos is None or pos >= self.size:
            raise FopError(errno.ENXIO)
        return pos

    def seek_hole(self, offset: int) -> int:
        if offset >= self.size:
            raise FopError(errno.ENXIO)
        return min(self.size, self.written.next_out(offset))


class DirData:
    """A directory's entries with stable readdir cookies."""
    __slots__ = ("entries", "cookie_of", "_cookies", "_names", "next_cookie", "parent")

    def __init__(self, parent: Optional["Node"]) -> None:
        self.entries: dict[bytes, Node] = {}
        self.cookie_of: dict[bytes, int] = {}
        self._cookies: list[int] = []        # ascending; may hold stale (removed) entries
        self._names: list[bytes] = []
        self.next_cookie = FIRST_COOKIE
        self.parent = parent                 # None: this directory is the root

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: bytes) -> Optional["Node"]:
        return self.entries.get(name)

    def add(self, name: bytes, node: "Node") -> None:
        """Add ``name`` (or point an existing name at ``node``, keeping its cookie)."""
        if name in self.entries:
            self.entries[name] = node
            return
        cookie = self.next_cookie
        self.next_cookie += 1
        self.entries[name] = node
        self.cookie_of[name] = cookie
        self._cookies.append(cookie)
        self._names.append(name)

    def remove(self, name: bytes) -> "Node":
        node = self.entries.pop(name)
        del self.cookie_of[name]
        if len(self._cookies) > 2 * len(self.entries) + 32:
            self._compact()
        return node

    def _compact(self) -> None:
        live = [(c, n) for c, n in zip(self._cookies, self._names)
                if self.cookie_of.get(n) == c]
        self._cookies = [c for c, _ in live]
        self._names = [n for _, n in live]

    def after(self, cookie: int) -> Iterator[tuple[bytes, "Node", int]]:
        """(name, node, cookie) of the entries whose cookie is above ``cookie``, in cookie
        order.  Safe against changes between calls (not during one iteration)."""
        i = bisect.bisect_right(self._cookies, cookie)
        cookies, names, cookie_of, entries = self._cookies, self._names, self.cookie_of, \
            self.entries
        while i < len(cookies):
            c, n = cookies[i], names[i]
            if cookie_of.get(n) == c:
                yield n, entries[n], c
            i += 1


class Node:
    """One inode of the in-memory filesystem."""
    __slots__ = ("ino", "mode", "uid", "gid", "nlink", "rdev", "atime_ns", "mtime_ns",
                 "ctime_ns", "xattrs", "opens", "data", "__weakref__")

    def __init__(self, ino: int, mode: int, uid: int, gid: int, rdev: int = 0,
                 now: Optional[int] = None, parent: Optional["Node"] = None) -> None:
        now = time.time_ns() if now is None else now
        self.ino = ino
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.atime_ns = self.mtime_ns = self.ctime_ns = now
        self.xattrs: Optional[dict[bytes, bytes]] = None
        self.opens = 0
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFDIR:
            self.nlink = 2
            self.data: Any = DirData(parent)
        elif kind == stat.S_IFREG:
            self.nlink = 1
            self.data = FileData()
        else:
            self.nlink = 1
            self.data = b""          # symlink target; nothing for devices, fifos, sockets

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def size(self) -> int:
        d = self.data
        if isinstance(d, FileData):
            return d.size
        if isinstance(d, DirData):
            return BLOCK
        return len(d)

    @property
    def alloc(self) -> int:
        d = self.data
        if isinstance(d, FileData):
            return d.alloc
        if isinstance(d, DirData):
            return BLOCK
        return _round_block(len(d)) if len(d) > 60 else 0   # short targets live inline

    def attr(self) -> Attr:
        d = self.data
        if d.__class__ is FileData:            # the hot path: no property calls
            size, alloc = d.size, d.alloc
        else:
            size, alloc = self.size, self.alloc
        return Attr(self.ino, size, alloc >> 9, self.atime_ns, self.mtime_ns,
                    self.ctime_ns, self.mode, self.nlink, self.uid, self.gid, self.rdev,
                    BLOCK)

    def touch(self, now: int, atime: bool = False, mtime: bool = True,
              ctime: bool = True) -> None:
        if atime:
            self.atime_ns = now
        if mtime:
            self.mtime_ns = now
        if ctime:
            self.ctime_ns = now

    def read_touch(self, now: int) -> None:
        """relatime: update atime when it is not newer than mtime/ctime, or a day old."""
        a = self.atime_ns
        if a <= self.mtime_ns or a <= self.ctime_ns or now - a >= 86400 * 10**9:
            self.atime_ns = now

    def __repr__(self) -> str:
        return f"<Node ino={self.ino} mode={self.mode:#o} nlink={self.nlink}>"


def kill_suid(mode: int, frame: Any = None, gid: int = -1) -> int:
    """Drop set-user-ID, and set-group-ID when group-executable or (given the writer
    ``frame`` and the file's ``gid``) when the writer is neither root nor in the group
    (Linux's setattr_should_drop_suidgid)."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP or (frame is not None and frame.uid != 0
                               and not in_group(frame, gid)):
        mode &= ~stat.S_ISGID
    return mode


# -- permissions ---------------------------------------------------------------------
def in_group(frame: Any, gid: int) -> bool:
    return frame.gid == gid or gid in frame.groups


def may(frame: Any, node: Node, mask: int) -> bool:
    """POSIX owner/group/other check of ``mask`` (R_OK|W_OK|X_OK) for the caller."""
    uid = frame.uid
    if uid == 0:
        # CAP_DAC_OVERRIDE: everything, except executing a file with no x bit at all.
        return not (mask & X_OK) or node.is_dir or bool(node.mode & 0o111)
    mode = node.mode
    if uid == node.uid:
        bits = (mode >> 6) & 7
    elif in_group(frame, node.gid):
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & mask == mask


def check(frame: Any, node: Node, mask: int) -> None:
    if frame.uid != 0 and not may(frame, node, mask):
        raise FopError(errno.EACCES)


def is_owner(frame: Any, node: Node) -> bool:
    """Owner or CAP_FOWNER (root)."""
    return frame.uid == 0 or frame.uid == node.uid


def check_sticky(frame: Any, parent: Node, node: Node) -> None:
    """In a sticky directory only the owner of the entry or of the directory (or root)
    may remove or rename it."""
    if (parent.mode & stat.S_ISVTX and frame.uid != 0 and frame.uid != parent.uid
            and frame.uid != node.uid):
        raise FopError(errno.EPERM)


def check_name(name: Optional[bytes]) -> bytes:
    if not name or b"/" in name or b"\0" in name:
        raise FopError(errno.EINVAL)
    if len(name) > NAME_MAX:
        raise FopError(errno.ENAMETOOLONG)
    return name


def xattr_check(frame: Any, node: Node, name: bytes, write: bool) -> None:
    """Linux's xattr_permission plus the capability rules, for user/trusted/security;
    other namespaces (system.* ACLs, unknown prefixes) are not supported."""
    if not name:
        raise FopError(errno.ERANGE)
    if len(name) > XATTR_NAME_MAX:
        raise FopError(errno.ERANGE)
    if name.startswith(b"user."):
        if not (node.is_reg or node.is_dir):
            raise FopError(errno.EPERM if write else errno.ENODATA)
        if write and node.is_dir and node.mode & stat.S_ISVTX and not is_owner(frame, node):
            raise FopError(errno.EPERM)
        check(frame, node, W_OK if write else R_OK)
    elif name.startswith(b"trusted."):
        if frame.uid != 0:
            raise FopError(errno.EPERM if write else errno.ENODATA)
    elif name.startswith(b"security."):
        if write and frame.uid != 0:
            raise FopError(errno.EPERM)
    else:
        raise FopError(errno.EOPNOTSUPP)


def visible_xattr(frame: Any, name: bytes) -> bool:
    return frame.uid == 0 or not name.startswith(b"trusted.")
