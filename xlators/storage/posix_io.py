"""storage/posix: open files and their data fops (a mixin of the Posix translator).

Reads try preadv2(RWF_NOWAIT) inline first: cached data costs a few microseconds and
never blocks; only a miss (EAGAIN) goes to a worker thread.  Writes, fallocate and
copy_file_range run inline up to ``io-thread-threshold`` bytes and in a thread above it;
fsync always runs in a thread.  O_DIRECT descriptors read and write through page-aligned
buffers, and use a buffered twin descriptor for unaligned requests.
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
from typing import Any, Optional

from xlators.core.bounds import (LOFF_MAX, MAX_RW_COUNT, VALID_OPEN_FLAGS, copy_range,
                                  falloc_range, loff, open_flags, rw_range)
from xlators.core.errors import FopError
from xlators.core.types import KILL_SUIDGID, O_EXEC_OPEN

from . import posix_lk
from .posix_attr import killed_mode
from .posix_sys import faccessat
from .posix_sys import fallocate as _fallocate

_ALIGN = 4096
_STRIP_OPEN = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_NOFOLLOW | O_EXEC_OPEN
_PRIVS = stat.S_ISUID | stat.S_ISGID
_FALLOC_FL_PUNCH_HOLE = 0x02
_ACCMODE = os.O_ACCMODE
_BIG_READ = 16 << 20
# Reads up to this size go through one buffer kept by the translator (see readv).
_READ_BUF_MAX = 1 << 20
_OPEN_FLAGS = VALID_OPEN_FLAGS | O_EXEC_OPEN      # bounds.open_flags, for create inline
_CREATE_DROP = os.O_NOCTTY | os.O_DIRECTORY
_CREATE_ADD = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class OpenFile:
    """posix's context of an open Fd: the descriptor it reads and writes."""
    __slots__ = ("fd", "node", "flags", "direct", "plain", "writable", "entries")

    def __init__(self, fd: int, node: Any, flags: int, direct: bool) -> None:
        self.fd = fd
        self.node = node
        self.flags = flags
        self.direct = direct            # O_DIRECT: aligned buffers, ``plain`` for the rest
        self.plain = -1                 # buffered twin of a direct descriptor
        self.writable = (flags & _ACCMODE) != os.O_RDONLY
        self.entries: Any = None        # directories: the listing snapshot

    def __repr__(self) -> str:
        return f"<posix.OpenFile fd={self.fd} flags={self.flags:#o}>"


def open_noatime(path: Any, flags: int, mode: int = 0o777,
                 dir_fd: Any = None) -> tuple[int, int]:
    """os.open, then without O_NOATIME when that is what failed: only the file's owner
    (or CAP_FOWNER, which the caller's fsuid drops) may have it.  Returns (fd, flags)."""
    try:
        return os.open(path, flags, mode, dir_fd=dir_fd), flags
    except PermissionError as e:
        if e.errno != errno.EPERM or not flags & os.O_NOATIME:
            raise
    flags &= ~os.O_NOATIME
    return os.open(path, flags, mode, dir_fd=dir_fd), flags


def keep_noatime(fd: int, wanted: int, have: int) -> int:
    """Open flags ``have`` plus O_NOATIME if ``wanted`` asks for it and the open as the
    caller could not have it: set afterwards with the daemon's own CAP_FOWNER.  Safe,
    because any O_NOATIME that reaches the storage was allowed above it: the kernel
    checked the caller's right to it on the FUSE inode (same owner as the brick's), or
    the bridge added it for a noatime mount, where no read may change an atime."""
    if not wanted & os.O_NOATIME or have & os.O_NOATIME:
        return have
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NOATIME)
    except OSError:
        return have
    return have | os.O_NOATIME


def _reopen(node_fd: int, flags: int) -> tuple[int, int]:
    """(fd, the flags it has): without O_DIRECT where the filesystem refuses it, without
    O_NOATIME where the caller may not have it."""
    path = f"/proc/self/fd/{node_fd}"
    try:
        return open_noatime(path, flags)
    except OSError as e:
        if e.errno != errno.EINVAL or not flags & os.O_DIRECT:
            raise
    return open_noatime(path, flags & ~os.O_DIRECT)


def _create_at(pfd: int, name: bytes, flags: int, perm: int, fix: Any):
    """Create (or, without O_EXCL, open) ``name`` (then ``fix`` its mode unless None);
    returns (fd, stat, flags, created)
    (flags as opened: without O_DIRECT or O_NOATIME where refused).  What O_CREAT|O_EXCL
    makes is a new regular file; an existing object (it may be a FIFO, whose open would
    block) is opened O_NONBLOCK, set back to blocking unless ``flags`` asked for it."""
    for _ in range(3):
        try:
            fd = os.open(name, flags | os.O_EXCL, perm, dir_fd=pfd)
            created = True
        except OSError as e:
            if e.errno == errno.EINVAL and flags & os.O_DIRECT:
                flags &= ~os.O_DIRECT
                continue
            if e.errno != errno.EEXIST or flags & os.O_EXCL:
                raise
            try:
                fd, opened = open_noatime(name, flags & ~os.O_CREAT | os.O_NONBLOCK, 0,
                                          dir_fd=pfd)
                flags = opened & ~os.O_NONBLOCK | flags & os.O_NONBLOCK | os.O_CREAT
            except FileNotFoundError:
                continue             # removed in between: create it after all
            created = False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FopError(errno.EEXIST if stat.S_ISDIR(st.st_mode) else errno.ENXIO)
            if created:
                if fix is not None:
                    st = fix(fd, st, perm)
            elif not flags & os.O_NONBLOCK:
                os.set_blocking(fd, True)
            return fd, st, flags, created
        except BaseException:
            os.close(fd)
            raise
    raise FopError(errno.EAGAIN)


def _pread(fd: int, size: int, offset: int) -> bytes:
    return os.pread(fd, size, offset)


def _pwrite(fd: int, data: Any, offset: int) -> int:
    """Write all of ``data`` at ``offset`` unless the disk refuses: what was written
    (an error after a short write returns what got there; one before anything raises)."""
    total = len(data)
    if not total:
        return 0
    done = os.pwrite(fd, data, offset)       # all of it, nearly always: no view, no loop
    if done >= total or done <= 0:
        return done
    view = memoryview(data)
    while done < total:
        try:
            n = os.pwrite(fd, view[done:], offset + done)
        except OSError:
            if done:
                return done
            raise
        if n <= 0:
            break
        done += n
    return done


def _plain_call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _direct_read(fd: int, size: int, offset: int) -> bytes:
    buf = mmap.mmap(-1, max(size, _ALIGN))
    try:
        n = os.preadv(fd, [memoryview(buf)[:size]], offset)
        return buf[:n]
    finally:
        buf.close()


def _direct_write(fd: int, data: Any, offset: int) -> int:
    size = len(data)
    buf = mmap.mmap(-1, max(size, _ALIGN))
    try:
        buf[:size] = data
        return os.pwritev(fd, [memoryview(buf)[:size]], offset)
    finally:
        buf.close()


class PosixIOOps:
    """open/create/read/write/... for Posix (needs its _node/_do/_thread/_entry)."""

    # The buffer of inline reads (readv): made on first use, as large as the largest
    # read up to _READ_BUF_MAX.  One per translator: an inline read copies what it read
    # out of it before it can be suspended, so no two reads ever share it.
    _read_buf: Optional[bytearray] = None

    def passthrough_fd(self, fd: Any) -> Optional[int]:
        """The brick descriptor of an open regular file, for FUSE passthrough (the kernel
        then reads, writes and maps the brick file itself).  None with ``o-direct`` (the
        kernel would cache what the brick was asked not to) and for set-id files (the
        kernel writes with the daemon's credentials, which would keep the bits a write
        by the caller clears)."""
        of = fd.ctx.get(self) if fd is not None else None
        if of is None or of.fd < 0 or self._odirect or of.node.kind != stat.S_IFREG \
                or of.node.mode & _PRIVS:
            return None
        return of.fd

    def passthrough_blocker(self) -> Optional[str]:
        if self._odirect:
            return f"volume '{self.name}' (storage/posix) has option o-direct on"
        return None

    def _plain(self, of: OpenFile) -> int:
        if of.plain < 0:
            of.plain, _ = open_noatime(f"/proc/self/fd/{of.fd}",
                                       of.flags & ~(os.O_DIRECT | os.O_TRUNC | _STRIP_OPEN)
                                       | os.O_CLOEXEC)
        return of.plain

    def _of(self, fd: Any) -> OpenFile:
        of = fd.ctx.get(self) if fd is not None else None
        if of is None:
            raise FopError(errno.EBADF)
        return of

    def _opened(self, fd: Any, of: OpenFile) -> None:
        fd.ctx[self] = of
        of.node.opens += 1
        self._opens.add(of)

    def _close_open(self, of: OpenFile) -> None:
        self._opens.discard(of)
        if of.entries is not None:      # a directory's snapshot: its scandir iterator
            of.entries.close()
        for d in (of.fd, of.plain):
            if d >= 0:
                try:
                    os.close(d)
                except OSError:
                    pass
        of.fd = of.plain = -1
        node = of.node
        node.opens -= 1
        if node.opens <= 0 and node.locks:
            posix_lk.drop_all(node)

    async def open(self, frame, inode, flags, fd):
        flags = open_flags(flags)
        node = self._node(inode)
        kind = node.kind
        if kind == stat.S_IFLNK:
            raise FopError(errno.ELOOP)
        if kind != stat.S_IFREG and kind != stat.S_IFDIR:
            raise FopError(errno.ENXIO)
        fl = (flags & ~_STRIP_OPEN) | os.O_CLOEXEC
        if self._odirect and kind == stat.S_IFREG:
            fl |= os.O_DIRECT
        if flags & O_EXEC_OPEN and kind == stat.S_IFREG and fl & _ACCMODE == os.O_RDONLY:
            # execve: the caller may execute a file it cannot read (mode 0711); the
            # kernel checked that, and so do we, then read it as the daemon.
            await self._do(frame, False, faccessat, node.fd, os.X_OK)
            iofd, fl = (_reopen(node.fd, fl) if self._inline
                        else await self._thread(_reopen, node.fd, fl))
        else:
            iofd, fl = await self._do(frame, False, _reopen, node.fd, fl)
            fl = keep_noatime(iofd, flags, fl)
            if fl & os.O_TRUNC and node.mode & _PRIVS:
                self._kill_after(frame, node)
        self._opened(fd, OpenFile(iofd, node, fl, bool(fl & os.O_DIRECT)))

    def _by_caller(self, frame: Any) -> bool:
        """True when brick I/O for this frame runs as the caller, without CAP_FSETID:
        the brick's own write/truncate/fallocate then clears set-id bits."""
        return self._switch and frame.uid != 0

    def _writer_call(self, frame: Any, node: Any) -> tuple[Any, tuple]:
        """How to run a write or fallocate: as the caller when the file has set-id bits
        (the brick then clears them, as for a local writer: the daemon has CAP_FSETID),
        else plainly."""
        if node.mode & _PRIVS and self._by_caller(frame):
            return self._call, (frame, False)
        return _plain_call, ()

    def _kill_after(self, frame: Any, node: Any) -> None:
        """After a write, truncate or fallocate that ran as the daemon: clear set-id bits
        as a local filesystem would for this caller (see killed_mode).  The brick
        itself already cleared security.capability."""
        if self._by_caller(frame) or not (frame.uid != 0 or frame.xdata.get(KILL_SUIDGID)):
            return
        st = os.fstat(node.fd)
        new = killed_mode(st, frame)
        if new != st.st_mode & 0o7777 and stat.S_ISREG(st.st_mode):
            os.chmod(f"/proc/self/fd/{node.fd}", new)
            st = os.fstat(node.fd)
        node.mode = st.st_mode

    async def create(self, frame, loc, flags, mode, umask, fd):
        flags &= _OPEN_FLAGS                    # open_flags(flags)
        pnode, name = self._ploc(loc)
        self._space()
        fl = (flags & ~_CREATE_DROP) | _CREATE_ADD
        if self._odirect:
            fl |= os.O_DIRECT
        perm, fix = self._new_mode(pnode, mode, umask, False)
        if self._inline_always and (not self._switch or frame.uid == 0 and frame.gid == 0):
            iofd, st, fl, created = _create_at(pnode.fd, name, fl, perm, fix)  # _do, inline
        else:
            iofd, st, fl, created = await self._do(frame, True, _create_at, pnode.fd, name,
                                                   fl, perm, fix)
        if created and self._watch is not None:
            self._watch.created(pnode, name)
        if flags & os.O_NOATIME and not fl & os.O_NOATIME:
            fl = keep_noatime(iofd, flags, fl)
        direct = bool(fl & os.O_DIRECT)
        try:
            entry = self._entry(st, iofd=iofd)
            if created and not self._switch:    # (_give gives nothing with the switch)
                entry = self._give(frame, pnode, entry)
        except BaseException:
            os.close(iofd)
            raise
        if not direct:
            fl &= ~os.O_DIRECT
        self._opened(fd, OpenFile(iofd, entry.inode.ctx[self], fl & ~_STRIP_OPEN, direct))
        return entry

    async def readv(self, frame, fd, size, offset, flags=None):
        of = fd.ctx.get(self)
        if of is None:
            raise FopError(errno.EBADF)
        if not (0 <= offset and 0 <= size <= MAX_RW_COUNT and offset + size <= LOFF_MAX):
            offset, size = rw_range(offset, size)   # (every read the kernel sends passes)
        if size > _BIG_READ:
            # Far above any kernel's max_read: read no more than the file holds, in a
            # thread (a buffer of the requested size would be zeroed on the loop).
            size = max(0, min(size, os.fstat(of.fd).st_size - offset))
            if size > _BIG_READ:
                return await self._thread(_pread, self._plain(of) if of.direct else of.fd,
                                          size, offset)
        if size == 0:
            return b""
        if of.direct:
            if offset % _ALIGN or size % _ALIGN:
                return await self._thread(_pread, self._plain(of), size, offset)
            return await self._thread(_direct_read, of.fd, size, offset)
        if not self._inline:
            return await self._thread(_pread, of.fd, size, offset)
        if self._nowait:
            # Into the translator's buffer (no buffer of ``size`` zeroed and freed per
            # read), then copied out once.
            buf = self._read_buf
            if buf is None or len(buf) < size:
                buf = bytearray(size)
                if size <= _READ_BUF_MAX:
                    self._read_buf = buf
            buf = memoryview(buf)[:size]
            try:
                n = os.preadv(of.fd, (buf,), offset, os.RWF_NOWAIT)
            except BlockingIOError:
                return await self._thread(_pread, of.fd, size, offset)
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise
                self._nowait = False
            else:
                if n == size:
                    return bytes(buf)
                if n == 0 or offset + n >= os.fstat(of.fd).st_size:
                    return bytes(buf[:n])
                got = bytes(buf[:n])    # out of the shared buffer before waiting
                rest = await self._thread(_pread, of.fd, size - n, offset + n)
                return got + rest
        if size > self._threshold:
            return await self._thread(_pread, of.fd, size, offset)
        return os.pread(of.fd, size, offset)

    async def writev(self, frame, fd, data, offset, flags=None):
        of = fd.ctx.get(self)
        if of is None:
            raise FopError(errno.EBADF)
        if not (0 <= offset and len(data) <= MAX_RW_COUNT
                and offset + len(data) <= LOFF_MAX):
            offset = rw_range(offset, len(data))[0]   # (every write the kernel sends passes)
        self._space()
        privs = of.node.mode & _PRIVS
        if not privs and not of.direct and self._inline and len(data) <= self._threshold:
            return _pwrite(of.fd, data, offset)     # the usual write: plain, inline
        call, args = self._writer_call(frame, of.node)
        if of.direct:
            if offset % _ALIGN or len(data) % _ALIGN:
                n = await self._thread(call, *args, _pwrite, self._plain(of), data, offset)
            else:
                n = await self._thread(call, *args, _direct_write, of.fd, data, offset)
        elif self._inline and len(data) <= self._threshold:
            n = call(*args, _pwrite, of.fd, data, offset)
        else:
            n = await self._thread(call, *args, _pwrite, of.fd, data, offset)
        if privs:
            self._kill_after(frame, of.node)
        return n

    async def flush(self, frame, fd):
        of = fd.ctx.get(self)
        if of is not None and of.node.locks:
            posix_lk.drop(of.node, (frame.lk_owner, False))   # close() drops POSIX locks
        return None

    async def fsync(self, frame, fd, datasync):
        of = self._of(fd)
        await self._thread(os.fdatasync if datasync else os.fsync, of.fd)

    async def release(self, frame, fd):
        of = fd.ctx.pop(self, None)
        if of is None:
            return None
        if of.node.locks and fd.lk_owner:
            posix_lk.drop(of.node, (fd.lk_owner, True))
        self._close_open(of)
        return None

    async def lk(self, frame, fd, cmd, lock):
        of = self._of(fd)
        return await posix_lk.lk(of.node, lock.owner or frame.lk_owner, lock.pid or frame.pid,
                                cmd, lock)

    async def fallocate(self, frame, fd, mode, offset, length):
        of = self._of(fd)
        offset, length = falloc_range(offset, length)
        if mode >= 1 << 31:
            raise FopError(errno.EOPNOTSUPP)      # unknown mode bits
        if not mode & _FALLOC_FL_PUNCH_HOLE:
            self._space()
        privs = of.node.mode & _PRIVS
        call, args = self._writer_call(frame, of.node)
        if self._inline and length <= self._threshold:
            call(*args, _fallocate, of.fd, mode, offset, length)
        else:
            await self._thread(call, *args, _fallocate, of.fd, mode, offset, length)
        if privs:
            self._kill_after(frame, of.node)

    async def lseek(self, frame, fd, offset, whence):
        of = self._of(fd)
        offset = loff(offset)
        if not 0 <= whence <= os.SEEK_HOLE:
            raise FopError(errno.EINVAL)
        if self._inline:
            return os.lseek(of.fd, offset, whence)
        return await self._thread(os.lseek, of.fd, offset, whence)

    async def copy_file_range(self, frame, fd_in, off_in, fd_out, off_out, length, flags):
        src, dst = self._of(fd_in), self._of(fd_out)
        if flags:
            raise FopError(errno.EINVAL)
        off_in, off_out, length = copy_range(off_in, off_out, length)
        self._space()
        args = (src.fd, dst.fd, length, off_in, off_out)
        if self._inline and length <= self._threshold:
            return os.copy_file_range(*args)
        return await self._thread(os.copy_file_range, *args)
