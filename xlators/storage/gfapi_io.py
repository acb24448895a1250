"""storage/gfapi's fops on open files and directories: open, create, data, listings
(see gfapi for the translator and its volfile, gfapi_locks for the locks of open files).

An open file is a libgfapi ``glfs_fd``; ``OpenFile.owners`` holds the ``glfs_dup`` of it
each lock owner locks through (gfapi_locks).  A directory listing resumes at any cookie
with ``glfs_seekdir``.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Any

import trio

from ..core.bounds import open_flags
from ..core.errors import FopError
from ..core.types import DirEntry
from ..core.types import O_EXEC_OPEN
from .gfapi_names import _name

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
DIRENT_HEAD = 24          # fuse_dirent without the name
DIRENTPLUS_HEAD = 24 + 128
COPY_CHUNK = 1 << 20      # copy_file_range's step
READ_AHEAD_MIN = 32 << 10  # reads at least this large, one after another, read ahead


class OpenFile:
    """gfapi's context of one open file or directory."""
    __slots__ = ("glfd", "owners", "pos", "lock", "is_dir", "node", "ahead", "next",
                 "started", "written")

    def __init__(self, glfd: int, is_dir: bool = False) -> None:
        self.glfd = glfd
        self.owners: dict[int, int] = {}      # lock owner -> its glfs_dup'd glfd
        self.pos = 0                          # directory: the cookie the stream is at
        self.lock = trio.Lock()               # directory: one listing step at a time
        self.is_dir = is_dir
        self.node: Any = None                 # file: the inode's context (its opens)
        self.ahead: Any = None                # file: (offset, size, job) read ahead
        self.next: Any = -1                   # file: where the last read ended
        self.started: list = []               # file: reads ahead maybe still running
        self.written = False                  # file: written since its last flush, with
                                              # libgfapi's write-behind holding writes


class GfapiIo:
    """Mixed into storage/gfapi's translator class."""

    def _of(self, fd: Any) -> OpenFile:
        of = fd.ctx.get(self) if fd is not None else None
        if of is None:
            raise FopError(errno.EBADF)
        return of

    def _glfd_or_none(self, fd: Any) -> int:
        of = fd.ctx.get(self) if fd is not None else None
        return of.glfd if of is not None and not of.is_dir else 0

    def _open_flags(self, flags: int) -> int:
        flags = open_flags(flags)
        if flags & O_EXEC_OPEN:
            flags = (flags & ~(O_EXEC_OPEN | os.O_ACCMODE)) | os.O_RDONLY
        return flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)

    def _opened(self, fd: Any, node: Any, of: OpenFile) -> None:
        of.node = node
        node.opens.append(of)
        fd.ctx[self] = of

    def _keep_cache(self, fd: Any, node: Any, flags: int) -> None:
        """Let the kernel keep its page cache of the file across this open (the
        ``keep_cache`` hint, FOPEN_KEEP_CACHE) when its mtime, ctime and size in the
        last attributes this client answered are those at its previous open (md-cache's
        rule): no change seen since.  A change by another client is seen through an
        upcall (the pages are dropped at once and ``node.opened`` forgotten) or, without
        upcalls, through the attributes the kernel asks for once its timeouts expire;
        a change by this client also drops them at the next open (its own writes moved
        the mtime).  O_TRUNC never keeps.  See docs/gluster.md, "Page cache"."""
        version = None if flags & os.O_TRUNC else node.seen
        hints = getattr(fd, "open_flags", None)
        if version is not None and version == node.opened and isinstance(hints, set):
            hints.add("keep_cache")
            self._kept += 1
        node.opened = version

    # -- opening -------------------------------------------------------------------
    async def open(self, frame, inode, flags, fd):
        node = self._node(inode)
        if node.kind == stat.S_IFDIR and flags & os.O_ACCMODE != os.O_RDONLY:
            raise FopError(errno.EISDIR)
        b = self._b
        fl = self._open_flags(flags)
        if fl & os.O_TRUNC:
            self._drop_ahead(node)
        try:
            glfd = await self._call(frame, lambda: b.check_ptr(
                b.lib.glfs_h_open(self._fsp(), node.obj, fl), "open"))
        finally:
            if fl & os.O_TRUNC:               # and what was read ahead meanwhile
                self._drop_ahead(node)
        of = OpenFile(glfd)
        if fl & os.O_DIRECT:
            of.next = None                    # what it reads is read when asked
        self._opened(fd, node, of)
        if node.kind == stat.S_IFREG:
            self._keep_cache(fd, node, fl)

    async def create(self, frame, loc, flags, mode, umask, fd):
        pnode, name = self._node(loc.parent), _name(loc)
        b = self._b
        fs = self._fsp()
        fl = (open_flags(flags) & ~O_EXEC_OPEN) | os.O_CREAT
        perm = mode & 0o7777 & ~(umask or 0)

        def run() -> tuple:
            st = b.Stat()
            glfd = ctypes.c_void_p()
            obj = b.lib.glfs_h_creat_open(fs, pnode.obj, name, fl, perm, ctypes.byref(st),
                                          ctypes.byref(glfd))
            b.check_ptr(obj, "create")
            return obj, st, glfd.value
        obj, st, glfd = await self._call(frame, run)
        entry = self._named(self._entry(obj, st), pnode, name)
        node = entry.inode.ctx[self]
        if fl & os.O_EXCL:
            self._caps_absent(node)           # a new file: no capabilities yet
        elif fl & os.O_TRUNC:
            self._drop_ahead(node)
        of = OpenFile(glfd)
        if fl & os.O_DIRECT:
            of.next = None
        self._opened(fd, node, of)
        self._keep_cache(fd, node, fl)
        return entry

    async def opendir(self, frame, inode, fd):
        node = self._node(inode)
        if node.kind != stat.S_IFDIR:
            raise FopError(errno.ENOTDIR)
        b = self._b
        glfd = await self._call(frame, lambda: b.check_ptr(
            b.lib.glfs_h_opendir(self._fsp(), node.obj), "opendir"))
        self._opened(fd, node, OpenFile(glfd, is_dir=True))

    async def fsync(self, frame, fd, datasync):
        of = self._of(fd)
        b = self._b
        fn = b.lib.glfs_fdatasync if datasync else b.lib.glfs_fsync
        await self._call(frame, lambda: b.check(fn(of.glfd, None, None), "fsync"))

    async def fsyncdir(self, frame, fd, datasync):
        self._of(fd)

    # -- data ----------------------------------------------------------------------
    async def readv(self, frame, fd, size, offset, flags=None):
        """A read; a read that continues the previous one also starts the read of the
        same size after it (the kernel's read-ahead sends the next READ while this
        one runs: answered in parallel, as GlusterFS's own client does, instead of
        one after the other).  A write or truncate through this client, an upcall
        and a release drop what was read ahead."""
        of = self._of(fd)
        ahead, of.ahead = of.ahead, None
        job = None
        if ahead is not None and ahead[0] == offset and ahead[1] == size:
            job = ahead[2]
        node = of.node
        if (offset == of.next and size >= READ_AHEAD_MIN and node is not None
                and node.seen is not None and offset + 2 * size <= node.seen[2]):
            started = self._workers.start(self._as_caller, self._creds(frame),
                                          self._pread, (of.glfd, size, offset + size))
            of.ahead = (offset + size, size, started)
            of.started = [j for j in of.started if not j.finished]
            of.started.append(started)
        if of.next is not None:               # None: O_DIRECT, never read ahead
            of.next = offset + size
        if job is not None:
            self._interruptible(frame)
            try:
                data = await self._workers.result(job)
            except OSError:
                pass                          # asked again below, errors handled there
            else:
                self._read_ahead_used += 1
                return data
        return await self._call(frame, self._pread, of.glfd, size, offset)

    def _pread(self, glfd: int, size: int, offset: int) -> bytes:
        b = self._b
        data, address = b.read_buffer(size)
        n = b.check(b.lib.glfs_pread(glfd, address, size, offset, 0, None), "read")
        return data if n == size else data[:n]

    def _drop_ahead(self, node: Any) -> None:
        """Forget what was read ahead of ``node``'s open files (it changes: called
        before a change, and after it for what was read ahead meanwhile)."""
        if node is not None:
            for of in node.opens:
                of.ahead = None

    async def writev(self, frame, fd, data, offset, flags=None):
        of = self._of(fd)
        b = self._b
        data = bytes(data)
        self._drop_ahead(of.node)
        of.written = self._holds_writes
        try:
            return await self._call(frame, lambda: b.check(
                b.lib.glfs_pwrite(of.glfd, data, len(data), offset, 0, None, None),
                "write"))
        finally:
            self._drop_ahead(of.node)       # read ahead while it ran: maybe older

    async def fallocate(self, frame, fd, mode, offset, length):
        of = self._of(fd)
        b = self._b
        if offset < 0 or length <= 0:
            raise FopError(errno.EINVAL)
        keep = bool(mode & FALLOC_FL_KEEP_SIZE)
        kind = mode & ~FALLOC_FL_KEEP_SIZE
        self._drop_ahead(of.node)
        if kind == 0:
            call = lambda: b.lib.glfs_fallocate(of.glfd, int(keep), offset, length)  # noqa
        elif kind == FALLOC_FL_PUNCH_HOLE and keep:
            call = lambda: b.lib.glfs_discard(of.glfd, offset, length)  # noqa: E731
        elif kind == FALLOC_FL_ZERO_RANGE:
            def call() -> int:
                # glfs_zerofill extends the file to offset+length: with KEEP_SIZE only
                # the part below EOF is zeroed (beyond it just gets allocated)
                st = b.Stat()
                b.check(b.lib.glfs_fstat(of.glfd, ctypes.byref(st)), "fstat")
                size = st.st_size
                if not keep or offset + length <= size:
                    rc = b.lib.glfs_zerofill(of.glfd, offset, length)
                    if rc == 0 and not keep and size < offset + length:
                        st2 = b.Stat()
                        b.check(b.lib.glfs_fstat(of.glfd, ctypes.byref(st2)), "fstat")
                        if st2.st_size < offset + length:
                            rc = b.lib.glfs_ftruncate(of.glfd, offset + length, None, None)
                    return rc
                if offset < size:
                    b.check(b.lib.glfs_zerofill(of.glfd, offset, size - offset), "zerofill")
                return b.lib.glfs_fallocate(of.glfd, 1, offset, length)
        else:
            raise FopError(errno.EOPNOTSUPP)
        try:
            await self._call(frame, lambda: b.check(call(), "fallocate"))
        finally:
            self._drop_ahead(of.node)

    async def lseek(self, frame, fd, offset, whence):
        of = self._of(fd)
        b = self._b
        return await self._call(frame, lambda: b.check(
            b.lib.glfs_lseek(of.glfd, offset, whence), "lseek"))

    async def copy_file_range(self, frame, fd_in, off_in, fd_out, off_out, length, flags):
        """Copied through this client (pread + pwrite in one worker-thread call):
        libgfapi's own glfs_copy_file_range reached only one brick of a replica-2
        volume in GlusterFS 10.3 (measured), leaving the replicas different."""
        src, dst = self._of(fd_in), self._of(fd_out)
        self._drop_ahead(dst.node)
        dst.written = self._holds_writes
        if flags:
            raise FopError(errno.EINVAL)
        if off_in < 0 or off_out < 0 or length < 0:
            raise FopError(errno.EINVAL)
        b = self._b

        def run() -> int:
            done = 0
            buf = ctypes.create_string_buffer(min(length, COPY_CHUNK) or 1)
            while done < length:
                want = min(length - done, COPY_CHUNK)
                n = b.check(b.lib.glfs_pread(src.glfd, buf, want, off_in + done, 0, None),
                            "copy_file_range read")
                if n == 0:
                    break
                w = b.check(b.lib.glfs_pwrite(dst.glfd, buf, n, off_out + done, 0, None,
                                              None), "copy_file_range write")
                done += w
                if w < n:
                    break
            return done
        try:
            return await self._call(frame, run)
        finally:
            self._drop_ahead(dst.node)

    # -- listings ------------------------------------------------------------------
    async def readdir(self, frame, fd, offset, size):
        return await self._list(frame, fd, offset, size, False)

    async def readdirp(self, frame, fd, offset, size):
        return await self._list(frame, fd, offset, size, True)

    async def _list(self, frame: Any, fd: Any, offset: int, size: int,
                    plus: bool) -> list[DirEntry]:
        of = self._of(fd)
        if size <= 0:
            return []
        async with of.lock:
            try:
                rows = await self._call(frame, self._read_dir, of, offset, size, plus)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ESTALE):
                    return []                 # a removed directory reads as empty
                raise
        out = []
        for name, ino, dtype, off, obj, st in rows:
            entry = None
            if obj:
                entry = self._entry(obj, st)
                ino = entry.attr.ino
            out.append(DirEntry(name, ino, dtype, off, entry))
        return out

    def _read_dir(self, of: OpenFile, offset: int, size: int, plus: bool) -> list[tuple]:
        """Entries from cookie ``offset`` that fit ``size`` bytes of the kernel's buffer,
        as many as fit in one worker-thread call (libgfapi fetches 128 KiB of entries
        per network request and hands them out one by one).  readdirp's carry a handle
        copy and a stat (None for . and ..).  A plain readdir also asks the bricks for
        READDIRP: their READDIR's inode numbers are the bricks' own, and ``d_ino`` must
        be the file's ``st_ino`` (the gfid's); option readdir-names-only asks for
        names only.  A readdirp reading entries libgfapi fetched by a names-only
        readdir gets them with no handle (the kernel then does not instantiate them)."""
        b = self._b
        lib = b.lib
        if offset != of.pos:
            lib.glfs_seekdir(of.glfd, offset)
            of.pos = offset
        head = DIRENTPLUS_HEAD if plus else DIRENT_HEAD
        used = 0
        rows: list[tuple] = []
        dent = b.Dirent()
        res = ctypes.POINTER(b.Dirent)()
        xstat = ctypes.c_void_p()
        names_only = not plus and self.opts.readdir_names_only
        st = b.Stat()
        flags = b.XREADDIRP_STAT | b.XREADDIRP_HANDLE
        most = self.opts.readdir_batch or size
        while len(rows) < most:
            xstat.value = None
            if plus:
                rc = lib.glfs_xreaddirplus_r(of.glfd, flags, ctypes.byref(xstat),
                                             ctypes.byref(dent), ctypes.byref(res))
            elif names_only:
                rc = lib.glfs_readdir_r(of.glfd, ctypes.byref(dent), ctypes.byref(res))
            else:
                rc = lib.glfs_readdirplus_r(of.glfd, ctypes.byref(st), ctypes.byref(dent),
                                            ctypes.byref(res))
            try:
                if rc < 0:
                    if rows:
                        break
                    b.check(rc, "readdir")
                if not res:
                    break                           # end of the directory
                name = dent.d_name
                need = head + ((len(name) + 7) & ~7)
                if used + need > size and rows:
                    lib.glfs_seekdir(of.glfd, of.pos)   # give this one back
                    break
                used += need
                obj, est = 0, None
                if plus and name not in (b".", b"..") and xstat.value:
                    src = lib.glfs_xreaddirplus_get_object(xstat)
                    sp = lib.glfs_xreaddirplus_get_stat(xstat)
                    if src and sp and rc & b.XREADDIRP_HANDLE:
                        obj = lib.glfs_object_copy(src) or 0
                        est = b.Stat.from_buffer_copy(sp.contents)
                rows.append((name, dent.d_ino, dent.d_type, dent.d_off, obj, est))
                of.pos = dent.d_off
            finally:
                if xstat.value:
                    lib.glfs_free(xstat)
        return rows
