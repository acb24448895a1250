"""A fake kernel for driving fuse_bridge.Session in-process, with no mount.

The "device" is one end of a ``socketpair(AF_UNIX, SOCK_SEQPACKET)``: SEQPACKET keeps
message boundaries, so one ``os.readv`` in the session reads exactly one request and one
``os.write``/``os.writev`` is exactly one reply, as with /dev/fuse.  The test end encodes
requests with the layouts of ``fuse_bridge.abi`` and decodes the replies.

    async with serve(memory_graph()) as (k, s):      # INIT done, 7.45, everything offered
        e = (await k.lookup(1, b"f")).entry()
        ...

Closing the test end makes the session's ``readv`` return 0, which ends the session as
ENODEV (unmount) does.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, NamedTuple, Optional, Sequence

import trio

from fuse_bridge import abi
from fuse_bridge.options import BridgeOptions
from fuse_bridge.session import Session
from xlators.core.errors import FopError
from xlators.core.graph import Graph
from xlators.core.registry import Registry
from xlators.core.translator import Translator

O = abi.Opcode
I = abi.InitFlag

ALL_FLAGS = (1 << 31) - 1                               # every bit but INIT_RESERVED
ALL_FLAGS2 = (1 << 11) - 1                              # bits 32..42
SOCK_BUF = 4 << 20

MEMORY_VOL = """\
volume memory
    type storage/memory
    option size 1GB
end-volume
"""


# --------------------------------------------------------------------------- test xlators

class Gate(Translator):
    """Passes everything through, except that LOOKUP of a name in ``slow`` waits for
    ``gate_open`` (then raises RuntimeError if the name ends in b"-boom") and LOOKUP of b"boom"/b"fop"/b"oserr" raises (RuntimeError / FopError
    EACCES / OSError ENOTCONN).  Records every forget."""
    type = "test/gate"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.gate_open = trio.Event()
        self.slow: set[bytes] = {b"slow"}
        self.waiting = 0
        self.forgotten: list[Any] = []
        self.interruptible = False      # slow lookups register frame.on_interrupt
        self.interrupted: list[bytes] = []

    async def lookup(self, frame, loc):
        if loc.name in self.slow:
            if self.interruptible:
                frame.on_interrupt(lambda: self.interrupted.append(loc.name))
            self.waiting += 1
            try:
                await self.gate_open.wait()
            finally:
                self.waiting -= 1
            if loc.name.endswith(b"-boom"):
                raise RuntimeError("a translator bug after waiting")
        elif loc.name == b"boom":
            raise RuntimeError("a translator bug")
        elif loc.name == b"fop":
            raise FopError(errno.EACCES)
        elif loc.name == b"oserr":
            raise OSError(errno.ENOTCONN, "not connected")
        return await self.child.lookup(frame, loc)

    async def forget(self, frame, inode):
        self.forgotten.append(inode)
        await self.child.forget(frame, inode)


class Greedy(Translator):
    """Asks its child for far more directory entries than the kernel's buffer holds, so
    the bridge must drop (and release) the entries that do not fit."""
    type = "test/greedy"

    async def readdirp(self, frame, fd, offset, size):
        return await self.child.readdirp(frame, fd, offset, 1 << 16)

    async def readdir(self, frame, fd, offset, size):
        return await self.child.readdir(frame, fd, offset, 1 << 16)


def registry() -> Registry:
    r = Registry(load_entrypoints=False)
    for cls in (Gate, Greedy):
        r.register(cls, "tests.protocol")
    return r


def memory_graph(*over: str) -> Graph:
    """storage/memory, with the named test translators stacked on it (bottom first)."""
    text = MEMORY_VOL
    below = "memory"
    for t in over:
        name = t.split("/")[1]
        text += f"\nvolume {name}\n    type {t}\n    subvolumes {below}\nend-volume\n"
        below = name
    g = Graph.from_text(text, registry=registry())
    g.init()
    g.activate()
    return g


# --------------------------------------------------------------------------- replies

class EntryOut(NamedTuple):
    nodeid: int
    generation: int
    entry_valid: int
    attr_valid: int
    entry_valid_nsec: int
    attr_valid_nsec: int
    attr: abi.Attr


class AttrOut(NamedTuple):
    attr_valid: int
    attr_valid_nsec: int
    attr: abi.Attr


class Dirent(NamedTuple):
    ino: int
    off: int
    type: int
    name: bytes
    entry: Optional[EntryOut] = None


def decode_entry(data: bytes, offset: int = 0) -> EntryOut:
    v = abi.ENTRY_OUT.unpack_from(data, offset)
    return EntryOut(*v[:6], abi.Attr(*v[6:]))


def decode_dirents(data: bytes) -> list[Dirent]:
    out, pos = [], 0
    while pos < len(data):
        ino, off, namelen, type_ = abi.DIRENT.unpack_from(data, pos)
        start = pos + abi.DIRENT.size
        out.append(Dirent(ino, off, type_, data[start:start + namelen]))
        pos = abi.rec_align(start + namelen)
        assert data[start + namelen:pos] == bytes(pos - start - namelen), "dirty padding"
    assert pos == len(data)
    return out


def decode_direntplus(data: bytes) -> list[Dirent]:
    out, pos = [], 0
    while pos < len(data):
        entry = decode_entry(data, pos)
        ino, off, namelen, type_ = abi.DIRENT.unpack_from(data, pos + abi.ENTRY_OUT.size)
        start = pos + abi.DIRENTPLUS.size
        out.append(Dirent(ino, off, type_, data[start:start + namelen], entry))
        pos = abi.rec_align(start + namelen)
    assert pos == len(data)
    return out


class Reply(NamedTuple):
    len: int
    error: int
    unique: int
    body: bytes
    raw: bytes

    @property
    def errno(self) -> int:
        return -self.error

    def ok(self) -> "Reply":
        if self.error:
            name = errno.errorcode.get(-self.error, str(self.error))
            raise AssertionError(f"unique {self.unique}: expected success, got {name}")
        return self

    def entry(self) -> EntryOut:
        assert len(self.ok().body) == abi.ENTRY_OUT.size, len(self.body)
        return decode_entry(self.body)

    def attr(self) -> AttrOut:
        assert len(self.ok().body) == abi.ATTR_OUT.size, len(self.body)
        v = abi.ATTR_OUT.unpack(self.body)
        return AttrOut(v[0], v[1], abi.Attr(*v[2:]))

    def open(self) -> abi.OpenOut:
        return abi.OpenOut._make(abi.OPEN_OUT.unpack(self.ok().body))

    def create(self) -> tuple[EntryOut, abi.OpenOut]:
        assert len(self.ok().body) == abi.ENTRY_OUT.size + abi.OPEN_OUT.size
        return (decode_entry(self.body),
                abi.OpenOut._make(abi.OPEN_OUT.unpack_from(self.body, abi.ENTRY_OUT.size)))

    def init(self) -> abi.InitOut:
        body = self.ok().body + bytes(abi.INIT_OUT.size - len(self.body))
        return abi.InitOut._make(abi.INIT_OUT.unpack(body))

    def dirents(self) -> list[Dirent]:
        return decode_dirents(self.ok().body)

    def direntplus(self) -> list[Dirent]:
        return decode_direntplus(self.ok().body)

    def statfs(self) -> abi.Kstatfs:
        return abi.Kstatfs._make(abi.KSTATFS.unpack(self.ok().body))

    def u32(self) -> int:
        assert len(self.ok().body) == 8
        return abi.WRITE_OUT.unpack(self.body)[0]

    def u64(self) -> int:
        assert len(self.ok().body) == 8
        return abi.LSEEK_OUT.unpack(self.body)[0]


def decode_reply(raw: bytes) -> Reply:
    length, error, unique = abi.OUT_HEADER.unpack_from(raw)
    assert length == len(raw), f"reply header says {length} bytes, message has {len(raw)}"
    return Reply(length, error, unique, raw[abi.OUT_HEADER.size:], raw)


def cstr(name: bytes) -> bytes:
    return bytes(name) + b"\0"


# --------------------------------------------------------------------------- the kernel

class FakeKernel:
    """The kernel's side of the device: send requests, receive replies."""

    def __init__(self) -> None:
        self.ksock, self.dsock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (self.ksock, self.dsock):
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
                except OSError:
                    pass
        self.dsock.setblocking(False)
        self.sock = trio.socket.from_stdlib_socket(self.ksock)
        self.next_unique = 0
        self.uid = self.gid = 0
        self.pid = os.getpid()
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self.log: list[tuple[str, bytes]] = []    # ("R", request) / ("W", reply), in order
        self.init_reply: Optional[abi.InitOut] = None
        self.session: Any = None       # the Session served (serve()): sync() waits for it

    @property
    def device_fd(self) -> int:
        """The descriptor to hand to Session as /dev/fuse (non-blocking)."""
        return self.dsock.fileno()

    def close(self) -> None:
        """Close the kernel's end: the session then reads end of file."""
        self.sock.close()

    def close_all(self) -> None:
        self.sock.close()
        self.dsock.close()

    # -- raw I/O -----------------------------------------------------------------------
    def unique(self) -> int:
        self.next_unique += 2          # the kernel steps by 2: N|1 is N's INTERRUPT
        return self.next_unique

    def message(self, opcode: int, body: bytes = b"", nodeid: int = 0, *,
                unique: Optional[int] = None, length: Optional[int] = None,
                extlen: int = 0, uid: Optional[int] = None, gid: Optional[int] = None,
                pid: Optional[int] = None) -> bytes:
        if unique is None:
            unique = self.unique()
        size = abi.IN_HEADER.size + len(body)
        hdr = abi.IN_HEADER.pack(size if length is None else length, int(opcode), unique,
                                 nodeid, self.uid if uid is None else uid,
                                 self.gid if gid is None else gid,
                                 self.pid if pid is None else pid, extlen)
        return hdr + bytes(body)

    async def send_raw(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        self.log.append(("R", bytes(data)))
        n = await self.sock.send(data)
        assert n == len(data)

    async def send(self, opcode: int, body: bytes = b"", nodeid: int = 0, **kw: Any) -> int:
        """Send one request; returns its unique."""
        msg = self.message(opcode, body, nodeid, **kw)
        await self.send_raw(msg)
        return abi.IN_HEADER.unpack_from(msg)[2]

    async def recv(self, timeout: float = 5.0) -> Reply:
        with trio.fail_after(timeout):
            raw = await self.sock.recv(SOCK_BUF)
        if not raw:
            raise EOFError("the session closed the device")
        self.received.append(raw)
        self.log.append(("W", raw))
        return decode_reply(raw)

    async def silence(self, timeout: float = 0.1) -> bool:
        """True when nothing arrives within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            raw = await self.sock.recv(SOCK_BUF)
            raise AssertionError(f"unexpected message: {decode_reply(raw)}")
        return True

    async def call(self, opcode: int, body: bytes = b"", nodeid: int = 0,
                   **kw: Any) -> Reply:
        unique = await self.send(opcode, body, nodeid, **kw)
        r = await self.recv()
        assert r.unique == unique, f"reply to {r.unique}, expected {unique}"
        return r

    # -- INIT ------------------------------------------------------------------------
    @staticmethod
    def init_body(major: int = 7, minor: int = 45, max_readahead: int = 128 << 10,
                  flags: int = ALL_FLAGS, flags2: int = 0) -> bytes:
        if minor >= 36:
            return abi.INIT_IN.pack(major, minor, max_readahead, flags, flags2)
        return abi.INIT_IN_COMPAT.pack(major, minor, max_readahead, flags)

    async def init(self, **kw: Any) -> Reply:
        return await self.call(O.INIT, self.init_body(**kw))

    # -- one helper per request --------------------------------------------------------
    async def lookup(self, parent: int, name: bytes) -> Reply:
        return await self.call(O.LOOKUP, cstr(name), parent)

    async def getattr(self, nodeid: int, fh: Optional[int] = None) -> Reply:
        flags = abi.GetattrFlag.FH if fh is not None else 0
        return await self.call(O.GETATTR, abi.GETATTR_IN.pack(flags, fh or 0), nodeid)

    async def setattr(self, nodeid: int, valid: int, *, fh: int = 0, size: int = 0,
                      lock_owner: int = 0, atime: int = 0, mtime: int = 0, ctime: int = 0,
                      atimensec: int = 0, mtimensec: int = 0, ctimensec: int = 0,
                      mode: int = 0, uid: int = 0, gid: int = 0) -> Reply:
        body = abi.SETATTR_IN.pack(valid, fh, size, lock_owner, atime, mtime, ctime,
                                   atimensec, mtimensec, ctimensec, mode, uid, gid)
        return await self.call(O.SETATTR, body, nodeid)

    async def mkdir(self, parent: int, name: bytes, mode: int = 0o755,
                    umask: int = 0o022) -> Reply:
        return await self.call(O.MKDIR, abi.MKDIR_IN.pack(mode, umask) + cstr(name), parent)

    async def mknod(self, parent: int, name: bytes, mode: int = stat.S_IFIFO | 0o644,
                    rdev: int = 0, umask: int = 0o022) -> Reply:
        return await self.call(O.MKNOD, abi.MKNOD_IN.pack(mode, rdev, umask) + cstr(name),
                               parent)

    async def create(self, parent: int, name: bytes, flags: int = os.O_RDWR | os.O_CREAT,
                     mode: int = stat.S_IFREG | 0o644, umask: int = 0o022) -> Reply:
        return await self.call(O.CREATE, abi.CREATE_IN.pack(flags, mode, umask, 0)
                               + cstr(name), parent)

    async def open(self, nodeid: int, flags: int = os.O_RDWR) -> Reply:
        return await self.call(O.OPEN, abi.OPEN_IN.pack(flags, 0), nodeid)

    async def opendir(self, nodeid: int, flags: int = os.O_RDONLY) -> Reply:
        return await self.call(O.OPENDIR, abi.OPEN_IN.pack(flags, 0), nodeid)

    async def read(self, nodeid: int, fh: int, size: int, offset: int = 0) -> Reply:
        return await self.call(O.READ, abi.READ_IN.pack(fh, offset, size, 0, 0, 0), nodeid)

    async def write(self, nodeid: int, fh: int, data: bytes, offset: int = 0,
                    write_flags: int = 0, lock_owner: int = 0) -> Reply:
        body = abi.WRITE_IN.pack(fh, offset, len(data), write_flags, lock_owner, 0) + data
        return await self.call(O.WRITE, body, nodeid)

    async def readdir(self, nodeid: int, fh: int, offset: int, size: int,
                      plus: bool = False) -> Reply:
        return await self.call(O.READDIRPLUS if plus else O.READDIR,
                               abi.READ_IN.pack(fh, offset, size, 0, 0, 0), nodeid)

    async def flush(self, nodeid: int, fh: int, lock_owner: int = 0) -> Reply:
        return await self.call(O.FLUSH, abi.FLUSH_IN.pack(fh, lock_owner), nodeid)

    async def release(self, nodeid: int, fh: int, flags: int = 0, release_flags: int = 0,
                      lock_owner: int = 0) -> Reply:
        return await self.call(O.RELEASE, abi.RELEASE_IN.pack(fh, flags, release_flags,
                                                              lock_owner), nodeid)

    async def releasedir(self, nodeid: int, fh: int) -> Reply:
        return await self.call(O.RELEASEDIR, abi.RELEASE_IN.pack(fh, 0, 0, 0), nodeid)

    async def fsync(self, nodeid: int, fh: int, datasync: bool = False,
                    dir: bool = False) -> Reply:
        return await self.call(O.FSYNCDIR if dir else O.FSYNC,
                               abi.FSYNC_IN.pack(fh, int(datasync)), nodeid)

    async def forget(self, nodeid: int, nlookup: int = 1) -> None:
        await self.send(O.FORGET, abi.FORGET_IN.pack(nlookup), nodeid)

    async def batch_forget(self, items: Sequence[tuple[int, int]]) -> None:
        body = abi.BATCH_FORGET_IN.pack(len(items)) + b"".join(
            abi.FORGET_ONE.pack(n, c) for n, c in items)
        await self.send(O.BATCH_FORGET, body)

    async def interrupt(self, target: int) -> None:
        await self.send(O.INTERRUPT, abi.INTERRUPT_IN.pack(target), unique=target | 1)

    async def unlink(self, parent: int, name: bytes) -> Reply:
        return await self.call(O.UNLINK, cstr(name), parent)

    async def rmdir(self, parent: int, name: bytes) -> Reply:
        return await self.call(O.RMDIR, cstr(name), parent)

    async def rename(self, parent: int, old: bytes, newdir: int, new: bytes,
                     flags: Optional[int] = None) -> Reply:
        if flags is None:
            return await self.call(O.RENAME, abi.RENAME_IN.pack(newdir) + cstr(old)
                                   + cstr(new), parent)
        return await self.call(O.RENAME2, abi.RENAME2_IN.pack(newdir, flags) + cstr(old)
                               + cstr(new), parent)

    async def link(self, oldnodeid: int, parent: int, name: bytes) -> Reply:
        return await self.call(O.LINK, abi.LINK_IN.pack(oldnodeid) + cstr(name), parent)

    async def symlink(self, parent: int, name: bytes, target: bytes) -> Reply:
        return await self.call(O.SYMLINK, cstr(name) + cstr(target), parent)

    async def readlink(self, nodeid: int) -> Reply:
        return await self.call(O.READLINK, b"", nodeid)

    async def access(self, nodeid: int, mask: int) -> Reply:
        return await self.call(O.ACCESS, abi.ACCESS_IN.pack(mask), nodeid)

    async def statfs(self, nodeid: int = 1) -> Reply:
        return await self.call(O.STATFS, b"", nodeid)

    async def setxattr(self, nodeid: int, name: bytes, value: bytes, flags: int = 0, *,
                       ext: bool, setxattr_flags: int = 0) -> Reply:
        head = (abi.SETXATTR_IN.pack(len(value), flags, setxattr_flags) if ext
                else abi.SETXATTR_IN_COMPAT.pack(len(value), flags))
        return await self.call(O.SETXATTR, head + cstr(name) + value, nodeid)

    async def getxattr(self, nodeid: int, name: bytes, size: int) -> Reply:
        return await self.call(O.GETXATTR, abi.GETXATTR_IN.pack(size) + cstr(name), nodeid)

    async def listxattr(self, nodeid: int, size: int) -> Reply:
        return await self.call(O.LISTXATTR, abi.GETXATTR_IN.pack(size), nodeid)

    async def removexattr(self, nodeid: int, name: bytes) -> Reply:
        return await self.call(O.REMOVEXATTR, cstr(name), nodeid)

    async def fallocate(self, nodeid: int, fh: int, offset: int, length: int,
                        mode: int = 0) -> Reply:
        return await self.call(O.FALLOCATE, abi.FALLOCATE_IN.pack(fh, offset, length, mode),
                               nodeid)

    async def lseek(self, nodeid: int, fh: int, offset: int, whence: int) -> Reply:
        return await self.call(O.LSEEK, abi.LSEEK_IN.pack(fh, offset, whence), nodeid)

    async def copy_file_range(self, nodeid_in: int, fh_in: int, off_in: int,
                              nodeid_out: int, fh_out: int, off_out: int, length: int,
                              flags: int = 0, wide: bool = False) -> Reply:
        body = abi.COPY_FILE_RANGE_IN.pack(fh_in, off_in, nodeid_out, fh_out, off_out,
                                           length, flags)
        return await self.call(O.COPY_FILE_RANGE_64 if wide else O.COPY_FILE_RANGE, body,
                               nodeid_in)

    async def sync(self) -> None:
        """A round trip (GETATTR of the root): every request sent before it is done
        (the session reads in order and the ones sent before did not wait); then, with
        a session (``serve``), until the forgets it deferred are applied (it does so
        when the device stays empty: fuse_bridge.forget_backlog)."""
        (await self.getattr(1)).ok()
        if self.session is not None:
            with trio.fail_after(5):
                while self.session.client.forgets_pending:
                    await trio.sleep(0.001)

    async def listdir(self, nodeid: int, size: int = 4096, plus: bool = False
                      ) -> tuple[list[Dirent], int]:
        """OPENDIR, READDIR(PLUS) until empty, RELEASEDIR: (entries, requests)."""
        fh = (await self.opendir(nodeid)).open().fh
        out: list[Dirent] = []
        offset = 0
        calls = 0
        while True:
            r = await self.readdir(nodeid, fh, offset, size, plus)
            calls += 1
            batch = r.direntplus() if plus else r.dirents()
            if not batch:
                break
            out += batch
            offset = batch[-1].off
        (await self.releasedir(nodeid, fh)).ok()
        return out, calls


@asynccontextmanager
async def serve(graph: Optional[Graph] = None, options: Optional[BridgeOptions] = None,
                *, init: bool = True, **init_kw: Any
                ) -> AsyncIterator[tuple[FakeKernel, Session]]:
    """Run a Session over a fake kernel; INIT first unless ``init=False``."""
    kernel = FakeKernel()
    session = Session(graph if graph is not None else memory_graph(), kernel.device_fd,
                      options or BridgeOptions(), mountpoint="/fake")
    kernel.session = session
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            if init:
                kernel.init_reply = (await kernel.init(**init_kw)).init()
            yield kernel, session
            nursery.cancel_scope.cancel()
    finally:
        kernel.close_all()
