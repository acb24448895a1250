"""The protocol fuzzer's machinery: request generation (valid, truncated, oversized,
garbage, bad ids, huge numbers, duplicate uniques) drawn with hypothesis, a model of
what the kernel holds (lookups and handles it received), and the invariants.

Every request the fuzzer sends is made harmless for the machine first (``sanitize``):
no device numbers (MKNOD rdev 0), no symlink target or name leaving the brick except
into the watched ``outside`` directories next to it, no large allocation on disk
(FALLOCATE and COPY_FILE_RANGE lengths small or absurd), and one lock owner for every
lock request (so that a SETLKW, which the bridge does not let an interrupt cancel by
default, can never wait forever).
"""
from __future__ import annotations

import collections
import functools
import logging
import os
import stat
import struct
from typing import Any, Optional

from hypothesis import strategies as st

from fuse_bridge import abi, opcodes
from tests.protocol.kernel import FakeKernel, cstr, decode_direntplus

O = abi.Opcode
HDR = abi.IN_HEADER.size
NO_REPLY = opcodes.NO_REPLY
LOCK_OWNER = 7
_ENTRY_OPS = frozenset({O.LOOKUP, O.MKNOD, O.MKDIR, O.SYMLINK, O.LINK})
SENTINEL_BASE = 1 << 56            # uniques of the fuzzer's own GETATTRs
U64 = (1 << 64) - 1
SMALL_IO = 1 << 20                 # the most FALLOCATE / COPY_FILE_RANGE may touch

# Opcodes the fuzzer sends anywhere in a run (DESTROY ends the session: last, separately).
OPCODES = [int(o) for o in abi.Opcode if o != O.DESTROY] + [0, 7, 19, 54, 999, U64 >> 32]

INTERESTING = [0, 1, 2, 7, 8, 255, 4095, 4096, 4097, 65535, 65536, 131072, (1 << 20) - 1,
               1 << 20, (1 << 20) + 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
               (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 63) + 1, U64 - 1, U64]

NAMES = [b"a", b"b", b"c", b"dir", b"file", b".", b"..", b"", b"x" * 255, b"y" * 256,
         b"z" * 4200, b"../outside/s", b"../outside", b"a/b", b"/", b"//", b"\xff\xfe",
         b" ", b"-", b"..." , b"a\nb", b"..\\..", b"../../top-sentinel"]
TARGETS = [b"a", b"dir/file", b"..", b"../outside/s", b"../outside/new", b"/nonexistent",
           b"", b"x" * 4200, b"../../top-sentinel"]
XATTR_NAMES = [b"user.a", b"user.b", b"trusted.t", b"security.s", b"system.posix_acl_access",
               b"", b"user." + b"n" * 300, b"user", b"bogus.x", b"user.\xff"]
# Names with a slash the fuzzer may send: all of them stay inside the watched tree.
SAFE_SLASHED = frozenset(n for n in NAMES + TARGETS if b"/" in n)


# Strategies are built once and reused: building them per draw made drawing the
# requests cost more than serving them.
@functools.lru_cache(maxsize=None)
def _sampled(values: tuple) -> st.SearchStrategy:
    return st.sampled_from(values)


def sample(values) -> st.SearchStrategy:
    return _sampled(tuple(values))


ints = functools.lru_cache(maxsize=None)(st.integers)
binary = functools.lru_cache(maxsize=None)(st.binary)


@functools.lru_cache(maxsize=None)
def u(bits: int) -> st.SearchStrategy[int]:
    """An unsigned field of ``bits`` bits, biased to the edges."""
    top = (1 << bits) - 1
    return st.one_of(st.sampled_from([v & top for v in INTERESTING]),
                     st.integers(0, top), st.integers(0, 64))


OFFSET = st.one_of(st.integers(0, 1 << 14), u(64))
SETATTR_VALID = st.one_of(st.sampled_from([0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100,
                                           0x200, 0x400, 0x800, 0x1000, 0x8 | 0x40,
                                           0x30 | 0x180]), u(32))


# --------------------------------------------------------------------------- the model

class Model:
    """What the kernel would hold: lookups per nodeid, handles, requests awaiting a
    reply (per unique, in order), and everything broken found on the way."""

    def __init__(self) -> None:
        self.lookups: collections.Counter = collections.Counter()
        self.kinds: dict[int, int] = {1: stat.S_IFDIR}    # nodeid -> S_IFMT, as last seen
        self.ambiguous: set[int] = set()
        self.fhs: dict[int, bool] = {}          # fh -> is a directory
        self.awaiting: dict[int, collections.deque] = collections.defaultdict(
            collections.deque)
        self.recent: list[int] = []             # uniques sent, for duplicates/interrupts
        self.overlapped: set[int] = set()       # uniques sent again while pending
        self.shared: dict[int, set[int]] = {}   # every opcode sent with an overlapped unique
        self.next_unique = 0
        self.sentinels = 0
        self.violations: list[str] = []

    def nodeids(self, kind: Optional[int] = None) -> list[int]:
        live = [1] + [n for n, c in self.lookups.items() if c > 0]
        if kind is None:
            return live
        return [n for n in live if self.kinds.get(n) == kind] or live

    # -- what the fuzzer sent -----------------------------------------------------------
    def sent(self, msg: bytes, initialized: bool = True) -> None:
        if len(msg) < HDR:
            return                               # no header: nothing can answer it
        _len, opcode, unique, nodeid, *_ = abi.IN_HEADER.unpack_from(msg)
        self.recent.append(unique)
        if opcode in NO_REPLY:
            if initialized and _len == len(msg):   # the session ignores a wrong length
                self._forgets(opcode, nodeid, msg[HDR:])
            return
        q = self.awaiting[unique]
        if q:                 # a duplicate while one is pending: replies may come in any order
            self.overlapped.add(unique)
            self.shared.setdefault(unique, set(q)).add(opcode)
        q.append(opcode)

    def _forgets(self, opcode: int, nodeid: int, body: bytes) -> None:
        """Lower the model's counts only where the bridge surely does (never below 0)."""
        if opcode == O.FORGET and len(body) >= 8:
            self._forget(nodeid, abi.FORGET_IN.unpack_from(body)[0])
        elif opcode == O.BATCH_FORGET and len(body) >= 8:
            (count,) = abi.BATCH_FORGET_IN.unpack_from(body)
            if len(body) >= 8 + count * 16:
                for i in range(count):
                    self._forget(*abi.FORGET_ONE.unpack_from(body, 8 + 16 * i))

    def _forget(self, nodeid: int, n: int) -> None:
        if nodeid in self.lookups:
            self.lookups[nodeid] = max(0, self.lookups[nodeid] - n)

    # -- what came back -------------------------------------------------------------------
    def received(self, raw: bytes) -> Optional[int]:
        """Account one reply; its unique."""
        if len(raw) < 16:
            self.violations.append(f"reply of {len(raw)} bytes")
            return None
        length, error, unique = abi.OUT_HEADER.unpack_from(raw)
        if length != len(raw):
            self.violations.append(f"reply to {unique}: header says {length}, "
                                   f"{len(raw)} bytes")
        q = self.awaiting.get(unique)
        if not q:
            self.violations.append(f"reply to unique {unique} that awaits none "
                                   f"(error {error})")
            return unique
        # Any request that shared the unique may be the one answered (a refused duplicate
        # is answered first, before the request it collided with).
        candidates = self.shared.get(unique) if unique in self.overlapped else None
        opcode = q.popleft()
        if not q:
            del self.awaiting[unique]
            self.overlapped.discard(unique)
            self.shared.pop(unique, None)
        if error == 0:
            if candidates is None:
                self._handed(opcode, raw[16:])
            else:
                self._guessed(candidates, raw[16:])
        return unique

    def _guessed(self, opcodes: set, body: bytes) -> None:
        """A reply to one of several requests with the same unique: count whatever it
        may have handed out (forgotten in full at the end: over-forgetting is harmless)."""
        nodeids: list[int] = []
        if len(body) == abi.ENTRY_OUT.size and opcodes & _ENTRY_OPS:
            nodeids.append(self._entry(body, 0))
        if len(body) == abi.ENTRY_OUT.size + abi.OPEN_OUT.size and O.CREATE in opcodes:
            nodeids.append(self._entry(body, 0))
            self.fhs.setdefault(abi.OPEN_OUT.unpack_from(body, 128)[0], False)
        if len(body) == abi.OPEN_OUT.size and opcodes & {O.OPEN, O.OPENDIR}:
            self.fhs.setdefault(abi.OPEN_OUT.unpack_from(body)[0], O.OPENDIR in opcodes)
        if O.READDIRPLUS in opcodes:
            try:
                nodeids += [d.entry.nodeid for d in decode_direntplus(body)]
            except (AssertionError, struct.error):
                pass
        for n in nodeids:
            if n:
                self.ambiguous.add(n)
                self.lookups[n] += 1

    def _entry(self, body: bytes, at: int) -> int:
        v = abi.ENTRY_OUT.unpack_from(body, at)
        self.kinds[v[0]] = stat.S_IFMT(v[15])
        return v[0]

    def _handed(self, opcode: int, body: bytes) -> None:
        nodeids: list[int] = []
        fhs: list[tuple[int, bool]] = []
        if opcode in _ENTRY_OPS:
            if len(body) != abi.ENTRY_OUT.size:
                self.violations.append(f"{O(opcode).name} reply of {len(body)} bytes")
                return
            nodeids.append(self._entry(body, 0))
        elif opcode == O.CREATE:
            if len(body) != abi.ENTRY_OUT.size + abi.OPEN_OUT.size:
                self.violations.append(f"CREATE reply of {len(body)} bytes")
                return
            nodeids.append(self._entry(body, 0))
            fhs.append((abi.OPEN_OUT.unpack_from(body, 128)[0], False))
        elif opcode in (O.OPEN, O.OPENDIR):
            if len(body) != abi.OPEN_OUT.size:
                self.violations.append(f"{O(opcode).name} reply of {len(body)} bytes")
                return
            fhs.append((abi.OPEN_OUT.unpack_from(body)[0], opcode == O.OPENDIR))
        elif opcode == O.READDIRPLUS:
            try:
                for d in decode_direntplus(body):
                    nodeids.append(d.entry.nodeid)
                    if d.entry.nodeid:
                        self.kinds[d.entry.nodeid] = stat.S_IFMT(d.entry.attr.mode)
            except (AssertionError, struct.error) as exc:
                self.violations.append(f"READDIRPLUS reply does not parse: {exc!r}")
        for n in nodeids:
            if n:
                self.lookups[n] += 1
        for fh, d in fhs:
            self.fhs[fh] = d


# --------------------------------------------------------------------------- requests

class Requests:
    """Draws requests for a run from hypothesis ``data``, aware of the model's ids."""

    def __init__(self, data: Any, model: Model) -> None:
        self.data = data
        self.model = model
        self.draw = data.draw

    def pick(self, seq: list):
        """One of ``seq``, or None when it is empty.  The draw never depends on the
        length (replies, hence the model's lists, may vary between runs of an example
        when requests wait: hypothesis must see the same draws)."""
        i = self.draw(ints(0, 255))
        return seq[i % len(seq)] if seq else None

    def unique(self) -> int:
        m = self.model
        kind = self.draw(sample(["fresh"] * 6 + ["dup", "odd", "edge"]))
        dup = self.pick(m.recent[-16:])
        edge = self.draw(sample([0, 1 << 63, (1 << 63) | 2, U64 - 1, U64]))
        if kind == "dup" and dup is not None:
            return dup
        if kind == "odd":
            return self._fresh() | 1
        if kind == "edge":
            return edge
        return self._fresh()

    def _fresh(self) -> int:
        self.model.next_unique += 2
        return self.model.next_unique

    def nodeid(self, kind: Optional[int] = None) -> int:
        """A known nodeid (of that kind when there is one) mostly, else a bad one."""
        good = self.draw(ints(0, 9)) < 9
        known = self.pick(self.model.nodeids(kind))
        bad = self.draw(sample([0, 2, 999, 1 << 32, 1 << 63, U64]))
        return known if good else bad

    def fh(self, is_dir: Optional[bool] = False) -> int:
        """An open handle (a directory's when ``is_dir``) mostly, else a bad one."""
        fhs = [f for f, d in self.model.fhs.items() if is_dir is None or d == is_dir]
        good = self.draw(ints(0, 9)) < 9
        known = self.pick(fhs or list(self.model.fhs))
        bad = self.draw(sample([0, 1, 2, 3, 999, 1 << 63, U64]))
        return known if good and known is not None else bad

    def name(self) -> bytes:
        if self.draw(ints(0, 4)):
            return self.draw(sample(NAMES))
        return self.draw(binary(max_size=12)).replace(b"\0", b"").replace(b"/", b"_")

    def names(self, n: int = 1, pool=NAMES) -> bytes:
        out = b""
        for _ in range(n):
            out += cstr(self.draw(sample(pool)) if pool is not NAMES
                        else self.name())
        return out

    def num(self, bits: int) -> int:
        return self.draw(u(bits))

    def offset(self) -> int:
        """An offset or length: small and plausible, or any 64-bit value."""
        return self.draw(OFFSET)

    # -- one valid-looking body per opcode -----------------------------------------------
    def body(self, opcode: int) -> tuple[bytes, int]:
        """(body, header nodeid) of a well-formed request for ``opcode``."""
        d, n = self.draw, self.num
        if opcode in _PARENT_OPS:
            nid = self.nodeid(stat.S_IFDIR)
        elif opcode == O.READLINK:
            nid = self.nodeid(stat.S_IFLNK)
        elif opcode == O.OPEN:
            nid = self.nodeid(stat.S_IFREG)
        else:
            nid = self.nodeid()
        off = self.offset

        def mode_type() -> int:
            return d(sample([stat.S_IFREG, stat.S_IFDIR, stat.S_IFIFO,
                                      stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK,
                                      stat.S_IFLNK, 0, 0o170000]))

        def perm() -> int:
            return d(sample([0o644, 0o755, 0o7777, 0, 0o4755, 0o1777]))

        def open_flags() -> int:
            return d(sample([os.O_RDONLY, os.O_WRONLY, os.O_RDWR,
                                      os.O_RDWR | os.O_TRUNC, os.O_WRONLY | os.O_APPEND,
                                      os.O_RDONLY | os.O_DIRECTORY, os.O_RDWR | os.O_DIRECT,
                                      os.O_RDWR | os.O_CREAT | os.O_EXCL, 3,
                                      os.O_RDONLY | os.O_NOATIME, os.O_RDWR | os.O_SYNC,
                                      0o20200000 | os.O_RDWR, 0xFFFFFFFF]))
        if opcode in (O.LOOKUP, O.UNLINK, O.RMDIR):
            return self.names(), nid
        if opcode == O.GETATTR:
            return abi.GETATTR_IN.pack(d(sample([0, 1, 2, 0xFFFFFFFF])),
                                       self.fh(None)), nid
        if opcode == O.SETATTR:
            valid = d(SETATTR_VALID)
            return abi.SETATTR_IN.pack(valid, self.fh(None), off(), n(64), n(64), n(64), n(64),
                                       n(32), n(32), n(32), mode_type() | perm(), n(32),
                                       n(32)), nid
        if opcode in (O.READLINK, O.STATFS):
            return b"", nid
        if opcode == O.SYMLINK:
            return self.names() + self.names(pool=TARGETS), nid
        if opcode == O.MKNOD:
            return abi.MKNOD_IN.pack(mode_type() | perm(), 0, n(32) & 0o777) + self.names(), nid
        if opcode == O.MKDIR:
            return abi.MKDIR_IN.pack(perm() | d(sample([0, stat.S_IFDIR])),
                                     0o022) + self.names(), nid
        if opcode == O.RENAME:
            return abi.RENAME_IN.pack(self.nodeid()) + self.names(2), nid
        if opcode == O.RENAME2:
            return (abi.RENAME2_IN.pack(self.nodeid(), d(sample([0, 1, 2, 4, 3, 7,
                                                                           0xFFFFFFFF])))
                    + self.names(2)), nid
        if opcode == O.LINK:
            return abi.LINK_IN.pack(self.nodeid()) + self.names(), nid
        if opcode in (O.OPEN, O.OPENDIR):
            return abi.OPEN_IN.pack(open_flags(), n(32)), nid
        if opcode in (O.READ, O.READDIR, O.READDIRPLUS):
            return abi.READ_IN.pack(self.fh(opcode != O.READ), off(), n(32), n(32), n(64),
                                    n(32)), nid
        if opcode == O.WRITE:
            data = d(binary(max_size=64)) * d(sample([1, 1, 64]))
            size = len(data) if d(ints(0, 5)) else n(32)
            return abi.WRITE_IN.pack(self.fh(), off(), size, n(32), n(64), n(32)) + data, nid
        if opcode in (O.RELEASE, O.RELEASEDIR):
            return abi.RELEASE_IN.pack(self.fh(opcode == O.RELEASEDIR), n(32),
                                       d(sample([0, 1, 2, 3])),
                                       n(64)), nid
        if opcode in (O.FSYNC, O.FSYNCDIR):
            return abi.FSYNC_IN.pack(self.fh(opcode == O.FSYNCDIR), n(32)), nid
        if opcode == O.SETXATTR:
            value = d(binary(max_size=40))
            size = len(value) if d(ints(0, 5)) else n(32)
            return (abi.SETXATTR_IN.pack(size, d(sample([0, 1, 2, 3])), n(32))
                    + self.names(pool=XATTR_NAMES) + value), nid
        if opcode == O.GETXATTR:
            return abi.GETXATTR_IN.pack(n(32)) + self.names(pool=XATTR_NAMES), nid
        if opcode == O.LISTXATTR:
            return abi.GETXATTR_IN.pack(n(32)), nid
        if opcode == O.REMOVEXATTR:
            return self.names(pool=XATTR_NAMES), nid
        if opcode == O.FLUSH:
            return abi.FLUSH_IN.pack(self.fh(), n(64)), nid
        if opcode == O.INIT:
            return FakeKernel.init_body(), 0
        if opcode in (O.GETLK, O.SETLK, O.SETLKW):
            return abi.LK_IN.pack(self.fh(), LOCK_OWNER, off(), off(),
                                  d(sample([0, 1, 2, 3, 0xFFFFFFFF])), n(32),
                                  d(sample([0, 1, 2]))), nid
        if opcode == O.ACCESS:
            return abi.ACCESS_IN.pack(d(sample([0, 1, 2, 4, 7, 8, 0xFFFFFFFF]))), nid
        if opcode == O.CREATE:
            return (abi.CREATE_IN.pack(open_flags() | d(sample([0, os.O_EXCL])),
                                       mode_type() | perm(), 0o022, n(32)) + self.names()), nid
        if opcode == O.INTERRUPT:
            target = self.pick(self.model.recent[-8:])
            other = n(64)
            return abi.INTERRUPT_IN.pack(other if target is None else target), 0
        if opcode == O.FORGET:
            return abi.FORGET_IN.pack(d(sample([0, 1, 2, U64]))), nid
        if opcode == O.BATCH_FORGET:
            items = [(self.nodeid(), d(sample([0, 1, 2, U64])))
                     for _ in range(d(ints(0, 3)))]
            count = len(items) if d(ints(0, 5)) else n(32)
            return (abi.BATCH_FORGET_IN.pack(count)
                    + b"".join(abi.FORGET_ONE.pack(*i) for i in items)), 0
        if opcode == O.FALLOCATE:
            return abi.FALLOCATE_IN.pack(self.fh(), off(), off(),
                                         d(sample([0, 1, 2, 3, 0x10, 0x11,
                                                            0xFFFFFFFF]))), nid
        if opcode == O.LSEEK:
            return abi.LSEEK_IN.pack(self.fh(), off(), d(sample([0, 1, 2, 3, 4,
                                                                          5, U64 >> 32]))), nid
        if opcode in (O.COPY_FILE_RANGE, O.COPY_FILE_RANGE_64):
            return abi.COPY_FILE_RANGE_IN.pack(self.fh(), off(), self.nodeid(), self.fh(),
                                               off(), off(), d(sample([0, 1]))), nid
        size = opcodes.min_body(opcode)
        return d(binary(min_size=size, max_size=size + 16)), nid

    # -- one request, possibly broken ------------------------------------------------------
    def message(self) -> bytes:
        d = self.draw
        opcode = d(sample(OPCODES))
        body, nodeid = self.body(opcode)
        variant = d(sample(["valid"] * 8 + ["truncated", "oversized", "garbage",
                                                      "badids", "header"]))
        length = None
        extlen = 0
        uid = gid = 0
        if variant == "truncated" and body:
            body = body[:d(ints(0, len(body) - 1))]
        elif variant == "oversized":
            body += d(binary(min_size=1, max_size=64))
        elif variant == "garbage":
            body = d(binary(max_size=200))
        elif variant == "badids":
            nodeid = d(sample([0, 2, 1 << 63, U64]))
        elif variant == "header":
            length = d(u(32)) if d(st.booleans()) else HDR + len(body) + 8
            extlen = d(ints(0, 0xFFFF))
            uid, gid = d(sample([(0, 0), (1000, 1000), (65534, 65534),
                                          (abi.FUSE_INVALID_UIDGID,) * 2]))
        body = sanitize(opcode, body)
        unique = self.unique()
        if opcode == O.INTERRUPT and d(st.booleans()):       # as the kernel numbers it
            target = self.pick(self.model.recent[-8:])
            unique = unique if target is None else target | 1
        size = HDR + len(body)
        hdr = abi.IN_HEADER.pack(size if length is None else length, opcode, unique,
                                 nodeid, uid, gid, 1, extlen)
        msg = hdr + body
        if variant == "header" and d(ints(0, 5)) == 0:
            # Not even a header (an empty message would read as the end of the device).
            msg = msg[:d(ints(1, HDR - 1))]
        return msg


# --------------------------------------------------------------------------- safety

_PARENT_OPS = frozenset({O.LOOKUP, O.UNLINK, O.RMDIR, O.SYMLINK, O.MKNOD, O.MKDIR,
                         O.RENAME, O.RENAME2, O.LINK, O.CREATE, O.OPENDIR})
_NAME_OPS = {O.LOOKUP: 0, O.UNLINK: 0, O.RMDIR: 0, O.SYMLINK: 0, O.MKNOD: 16,
             O.MKDIR: 8, O.RENAME: 8, O.RENAME2: 16, O.LINK: 8, O.CREATE: 16}


def sanitize(opcode: int, body: bytes) -> bytes:
    """Make ``body`` harmless for the machine the fuzzer runs on (module docstring)."""
    b = bytearray(body)
    if opcode in _NAME_OPS:
        start = _NAME_OPS[opcode]
        tail = bytes(b[start:])
        parts = tail.split(b"\0")
        safe = [p if p in SAFE_SLASHED or b"/" not in p else p.replace(b"/", b"_")
                for p in parts]
        b[start:] = b"\0".join(safe)
    if opcode == O.MKNOD and len(b) >= 8:
        b[4:8] = bytes(4)                                    # rdev: never a device
    if opcode in (O.GETLK, O.SETLK, O.SETLKW) and len(b) >= 16:
        b[8:16] = LOCK_OWNER.to_bytes(8, "little")
    if opcode == O.FALLOCATE and len(b) >= 24:
        _bound(b, 16)
    if opcode in (O.COPY_FILE_RANGE, O.COPY_FILE_RANGE_64) and len(b) >= 48:
        _bound(b, 40)
    return bytes(b)


def _bound(b: bytearray, at: int) -> None:
    """A length that could fill the disk becomes a small one (absurd ones stay)."""
    v = int.from_bytes(b[at:at + 8], "little")
    if SMALL_IO < v < 1 << 62:
        b[at:at + 8] = (v % SMALL_IO).to_bytes(8, "little")


# --------------------------------------------------------------------------- logs

class LogTrap(logging.Handler):
    """Records that betray a bug: a traceback, or a handler that raised."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.exc_info or "Traceback" in msg or "raised; answering EIO" in msg:
            text = self.format(record) if record.exc_info else msg
            self.bad.append(f"{record.name}: {text}")


def snapshot(root: str, skip: str) -> dict[str, tuple]:
    """(mode, size, mtime, ctime, link target) of everything under ``root`` but ``skip``."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.realpath(dirpath) == os.path.realpath(skip):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.realpath(p) == os.path.realpath(skip) and not os.path.islink(p):
                continue
            st_ = os.lstat(p)
            target = os.readlink(p) if stat.S_ISLNK(st_.st_mode) else None
            out[os.path.relpath(p, root)] = (st_.st_mode, st_.st_size, st_.st_mtime_ns,
                                             st_.st_ctime_ns, target)
    return out
