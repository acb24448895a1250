"""The data model of storage/memory: nodes, file data, directories, permission checks.

No translator here (storage/memory is in memory.py); this module is plain Python with no
I/O, so it can be unit-tested and reused (a tmpfs-like brick, a test double).

- :class:`Node` is an inode: attributes, xattrs, and per kind a :class:`FileData`
  (regular file), a :class:`DirData` (directory) or the target (symlink).
- :class:`FileData` keeps a file's bytes in chunks of ``CHUNK`` bytes, allocated on
  write: a missing chunk is a hole (reads as zeros), so sparse files cost nothing and
  SEEK_DATA/SEEK_HOLE and punch-hole work at chunk granularity, as on tmpfs (pages).
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

CHUNK = 64 * 1024
BLOCK = 4096
MAX_FILE_SIZE = (1 << 63) - 1
NAME_MAX = 255
PATH_MAX = 4096
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536

R_OK, W_OK, X_OK = 4, 2, 1
CAPS = b"security.capability"
FIRST_COOKIE = 3      # 1 is ".", 2 is ".."


def _round_block(n: int) -> int:
    return (n + BLOCK - 1) & ~(BLOCK - 1)


class FileData:
    """A regular file's bytes: ``size`` and chunks (index -> bytearray of at most CHUNK
    bytes; the bytes past a chunk's length, up to CHUNK, are zeros)."""
    __slots__ = ("size", "chunks", "alloc")

    def __init__(self) -> None:
        self.size = 0
        self.chunks: dict[int, bytearray] = {}
        self.alloc = 0          # bytes allocated (chunk lengths rounded up to blocks)

    def read(self, offset: int, size: int) -> bytes:
        end = min(self.size, offset + size)
        if offset >= end:
            return b""
        i, s = divmod(offset, CHUNK)
        if s + (end - offset) <= CHUNK:             # within one chunk: the common case
            c = self.chunks.get(i)
            n = end - offset
            if c is None:
                return bytes(n)
            piece = bytes(c[s:s + n])
            return piece if len(piece) == n else piece + bytes(n - len(piece))
        parts = []
        pos = offset
        while pos < end:
            i, s = divmod(pos, CHUNK)
            n = min(CHUNK - s, end - pos)
            c = self.chunks.get(i)
            if c is None:
                parts.append(bytes(n))
            else:
                piece = c[s:s + n]
                parts.append(piece if len(piece) == n else piece + bytes(n - len(piece)))
            pos += n
        return b"".join(parts)

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
        """(chunk index, start in chunk, length, position in the range) over a range."""
        pos, end = offset, offset + length
        while pos < end:
            i, s = divmod(pos, CHUNK)
            n = min(CHUNK - s, end - pos)
            yield i, s, n, pos - offset
            pos += n

    def growth(self, offset: int, length: int) -> int:
        """Bytes that writing/allocating [offset, offset+length) would add to alloc."""
        grow = 0
        for i, s, n, _ in self._pieces(offset, length):
            c = self.chunks.get(i)
            have = len(c) if c is not None else 0
            if s + n > have:
                grow += _round_block(s + n) - (_round_block(have) if c is not None else 0)
        return grow

    def write(self, offset: int, data: Any) -> None:
        mv = memoryview(data)
        chunks = self.chunks
        for i, s, n, at in self._pieces(offset, len(mv)):
            c = chunks.get(i)
            if c is None:
                c = chunks[i] = bytearray()
            before = len(c)
            if s > before:
                c.extend(bytes(s - before))
            c[s:s + n] = mv[at:at + n]
            if len(c) != before:
                self.alloc += _round_block(len(c)) - _round_block(before)
        if offset + len(mv) > self.size:
            self.size = offset + len(mv)

    def allocate(self, offset: int, length: int) -> None:
        """Back [offset, offset+length) with zeroed memory (fallocate mode 0)."""
        for i, s, n, _ in self._pieces(offset, length):
            c = self.chunks.get(i)
            if c is None:
                c = self.chunks[i] = bytearray()
            if len(c) < s + n:
                before = len(c)
                c.extend(bytes(s + n - before))
                self.alloc += _round_block(len(c)) - _round_block(before)

    def zero(self, offset: int, length: int, punch: bool) -> None:
        """Zero [offset, offset+length); ``punch`` frees whole chunks (holes)."""
        for i, s, n, _ in self._pieces(offset, length):
            c = self.chunks.get(i)
            if c is None:
                continue
            if punch and s == 0 and (n == CHUNK or s + n >= len(c)):
                self.alloc -= _round_block(len(c))
                del self.chunks[i]
            elif s < len(c):
                e = min(s + n, len(c))
                c[s:e] = bytes(e - s)

    def truncate(self, size: int) -> None:
        if size < self.size:
            last = (size + CHUNK - 1) // CHUNK     # first chunk wholly past the end
            for i in [i for i in self.chunks if i >= last]:
                self.alloc -= _round_block(len(self.chunks.pop(i)))
            i, s = divmod(size, CHUNK)
            c = self.chunks.get(i)
            if c is not None and s and len(c) > s:
                before = len(c)
                del c[s:]
                self.alloc += _round_block(len(c)) - _round_block(before)
        self.size = size

    def seek_data(self, offset: int) -> int:
        if offset >= self.size:
            raise FopError(errno.ENXIO)
        i = offset // CHUNK
        if i in self.chunks:
            return offset
        later = [j for j in self.chunks if j > i]
        if not later:
            raise FopError(errno.ENXIO)
        pos = min(later) * CHUNK
        if pos >= self.size:
            raise FopError(errno.ENXIO)
        return pos

    def seek_hole(self, offset: int) -> int:
        if offset >= self.size:
            raise FopError(errno.ENXIO)
        i = offset // CHUNK
        while i in self.chunks:
            i += 1
        return min(self.size, max(offset, i * CHUNK))


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
