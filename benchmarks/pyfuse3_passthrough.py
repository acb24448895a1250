"""A minimal passthrough filesystem on pyfuse3: the benchmark's "plain Python FUSE" peer.

    python -m benchmarks.pyfuse3_passthrough SOURCE MOUNTPOINT \
        [--attr-timeout=S] [--entry-timeout=S] [--negative-timeout=S]

It serves the directory SOURCE at MOUNTPOINT with the same kernel cache settings the
benchmark gives xlfs (attribute, entry and negative-entry timeouts; ``default_permissions``
and ``allow_other``), so the two Python filesystems are compared on equal terms.

Inodes are the backing files' ``st_ino`` (the backing root is FUSE inode 1), each with the
paths it is known by and its kernel lookup count; an inode is dropped once the kernel has
forgotten every lookup.  A directory listing is snapshotted at opendir, so the offsets the
kernel hands back are indexes into a fixed list (nothing skipped or repeated).

Not handled (a benchmark peer, not a product): hard links across renames of a parent
directory keep their other paths, extended attributes and locks are not passed through,
and a backing tree must not span several filesystems (inode numbers would collide).
SIGTERM and SIGINT unmount and exit.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import stat as stat_mod
import sys
from typing import Dict, List, Optional, Set, Tuple

import pyfuse3
import trio
from pyfuse3 import FUSEError


class Passthrough(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, source: str, attr_timeout: float, entry_timeout: float,
                 negative_timeout: float) -> None:
        super().__init__()
        self.source = os.fsencode(os.path.abspath(source))
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.negative_timeout = negative_timeout
        self.root_ino = os.lstat(self.source).st_ino
        # FUSE inode -> paths it is known by; FUSE inode -> kernel lookup count.
        self.paths: Dict[int, Set[bytes]] = {pyfuse3.ROOT_INODE: {self.source}}
        self.lookups: Dict[int, int] = {pyfuse3.ROOT_INODE: 1}
        # open file descriptors: fh (= the OS fd) -> FUSE inode; inode -> its open fds.
        self.fd_inode: Dict[int, int] = {}
        self.inode_fds: Dict[int, Set[int]] = {}
        # open directories: handle -> (inode, snapshot of (name, attrs-or-None)).
        self.dirs: Dict[int, Tuple[int, List[bytes]]] = {}
        self.next_dir_handle = 1

    # -- the inode table ----------------------------------------------------------------

    def _ino(self, st_ino: int) -> int:
        return pyfuse3.ROOT_INODE if st_ino == self.root_ino else st_ino

    def _path(self, inode: int) -> bytes:
        try:
            return next(iter(self.paths[inode]))
        except (KeyError, StopIteration):
            raise FUSEError(errno.ESTALE) from None

    def _child(self, parent: int, name: bytes) -> bytes:
        return os.path.join(self._path(parent), name)

    def _remember(self, path: bytes, st: os.stat_result) -> int:
        """Count one kernel lookup of the inode behind ``path``."""
        inode = self._ino(st.st_ino)
        self.paths.setdefault(inode, set()).add(path)
        self.lookups[inode] = self.lookups.get(inode, 0) + 1
        return inode

    def _forget_path(self, inode: Optional[int], path: bytes) -> None:
        if inode is None:
            return
        known = self.paths.get(inode)
        if known is not None:
            known.discard(path)

    def _attrs(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._ino(st.st_ino)
        a.generation = 0
        a.entry_timeout = self.entry_timeout
        a.attr_timeout = self.attr_timeout
        a.st_mode = st.st_mode
        a.st_nlink = st.st_nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    def _stat(self, inode: int) -> os.stat_result:
        fds = self.inode_fds.get(inode)
        try:
            if fds:
                return os.fstat(next(iter(fds)))
            return os.lstat(self._path(inode))
        except OSError as exc:
            raise FUSEError(exc.errno) from None

    def _own(self, path: bytes, ctx: pyfuse3.RequestContext) -> None:
        """New entries belong to the caller (we may run as root for another user)."""
        if ctx.uid != os.geteuid() or ctx.gid != os.getegid():
            os.lchown(path, ctx.uid, ctx.gid)

    # -- lookups ------------------------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx):
        if name == b".":
            path = self._path(parent_inode)
        elif name == b"..":
            path = os.path.dirname(self._path(parent_inode))
            if len(path) < len(self.source):
                path = self.source
        else:
            path = self._child(parent_inode, name)
        try:
            st = os.lstat(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT and self.negative_timeout > 0:
                neg = pyfuse3.EntryAttributes()
                neg.st_ino = 0
                neg.entry_timeout = self.negative_timeout
                return neg
            raise FUSEError(exc.errno) from None
        self._remember(path, st)
        return self._attrs(st)

    async def forget(self, inode_list):
        for inode, count in inode_list:
            left = self.lookups.get(inode, 0) - count
            if left > 0:
                self.lookups[inode] = left
            elif inode != pyfuse3.ROOT_INODE:
                self.lookups.pop(inode, None)
                if not self.inode_fds.get(inode):
                    self.paths.pop(inode, None)

    async def getattr(self, inode, ctx=None):
        return self._attrs(self._stat(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        try:
            target = fh if fh is not None else self._path(inode)
            if fields.update_size:
                os.truncate(target, attr.st_size)
            if fields.update_mode:
                if fh is None and stat_mod.S_ISLNK(os.lstat(target).st_mode):
                    raise FUSEError(errno.EINVAL)
                os.chmod(target, stat_mod.S_IMODE(attr.st_mode))
            if fields.update_uid or fields.update_gid:
                uid = attr.st_uid if fields.update_uid else -1
                gid = attr.st_gid if fields.update_gid else -1
                if fh is None:
                    os.lchown(target, uid, gid)
                else:
                    os.chown(target, uid, gid)
            if fields.update_atime or fields.update_mtime:
                st = os.fstat(fh) if fh is not None else os.lstat(target)
                atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
                mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
                if fh is None:
                    os.utime(target, ns=(atime, mtime), follow_symlinks=False)
                else:
                    os.utime(target, ns=(atime, mtime))
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        return await self.getattr(inode)

    async def readlink(self, inode, ctx):
        try:
            return os.readlink(self._path(inode))
        except OSError as exc:
            raise FUSEError(exc.errno) from None

    # -- namespace changes --------------------------------------------------------------

    def _make(self, path: bytes, ctx, make, *args):
        """``make(*args)`` (os.mknod, os.mkdir, os.symlink) creates ``path``: give it to
        the caller, remember it, and answer its attributes."""
        try:
            make(*args)
            self._own(path, ctx)
            st = os.lstat(path)
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        self._remember(path, st)
        return self._attrs(st)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        path = self._child(parent_inode, name)
        return self._make(path, ctx, os.mknod, path, mode & ~ctx.umask, rdev)

    async def mkdir(self, parent_inode, name, mode, ctx):
        path = self._child(parent_inode, name)
        return self._make(path, ctx, os.mkdir, path, mode & ~ctx.umask)

    async def symlink(self, parent_inode, name, target, ctx):
        path = self._child(parent_inode, name)
        return self._make(path, ctx, os.symlink, target, path)

    def _remove(self, parent_inode, name, remove) -> None:
        path = self._child(parent_inode, name)
        try:
            inode = self._ino(os.lstat(path).st_ino)
            remove(path)
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        self._forget_path(inode, path)

    async def unlink(self, parent_inode, name, ctx):
        self._remove(parent_inode, name, os.unlink)

    async def rmdir(self, parent_inode, name, ctx):
        self._remove(parent_inode, name, os.rmdir)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags:
            raise FUSEError(errno.EINVAL)  # RENAME_NOREPLACE/EXCHANGE are not passed on
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        try:
            moved = os.lstat(old)
            try:
                replaced: Optional[int] = self._ino(os.lstat(new).st_ino)
            except FileNotFoundError:
                replaced = None
            os.rename(old, new)
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        inode = self._ino(moved.st_ino)
        if replaced == inode:
            return  # both names were links to one inode: rename(2) did nothing
        self._forget_path(replaced, new)
        self._forget_path(inode, old)
        self.paths.setdefault(inode, set()).add(new)
        if stat_mod.S_ISDIR(moved.st_mode):
            self._rebase(old + b"/", new + b"/")

    def _rebase(self, old_prefix: bytes, new_prefix: bytes) -> None:
        """After a directory rename, every path below it moves too."""
        for known in self.paths.values():
            stale = [p for p in known if p.startswith(old_prefix)]
            for p in stale:
                known.discard(p)
                known.add(new_prefix + p[len(old_prefix):])

    async def link(self, inode, new_parent_inode, new_name, ctx):
        path = self._child(new_parent_inode, new_name)
        try:
            os.link(self._path(inode), path, follow_symlinks=False)
            st = os.lstat(path)
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        self._remember(path, st)
        return self._attrs(st)

    # -- directories --------------------------------------------------------------------

    async def opendir(self, inode, ctx):
        try:
            names = [os.fsencode(e.name) for e in os.scandir(self._path(inode))]
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        handle = self.next_dir_handle
        self.next_dir_handle += 1
        self.dirs[handle] = (inode, names)
        return handle

    async def readdir(self, fh, start_id, token):
        inode, names = self.dirs[fh]
        base = self._path(inode)
        for index in range(start_id, len(names)):
            path = os.path.join(base, names[index])
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed since opendir: skip it
            except OSError as exc:
                raise FUSEError(exc.errno) from None
            if not pyfuse3.readdir_reply(token, names[index], self._attrs(st), index + 1):
                return
            self._remember(path, st)

    async def releasedir(self, fh):
        self.dirs.pop(fh, None)

    async def fsyncdir(self, fh, datasync):
        pass

    # -- files --------------------------------------------------------------------------

    def _opened(self, fd: int, inode: int) -> pyfuse3.FileInfo:
        self.fd_inode[fd] = inode
        self.inode_fds.setdefault(inode, set()).add(fd)
        return pyfuse3.FileInfo(fh=fd)

    async def open(self, inode, flags, ctx):
        try:
            fd = os.open(self._path(inode), flags & ~os.O_CREAT)
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        return self._opened(fd, inode)

    async def create(self, parent_inode, name, mode, flags, ctx):
        path = self._child(parent_inode, name)
        try:
            fd = os.open(path, flags | os.O_CREAT, mode & ~ctx.umask)
            self._own(path, ctx)
            st = os.fstat(fd)
        except OSError as exc:
            raise FUSEError(exc.errno) from None
        inode = self._remember(path, st)
        return self._opened(fd, inode), self._attrs(st)

    async def read(self, fh, off, size):
        try:
            return os.pread(fh, size, off)
        except OSError as exc:
            raise FUSEError(exc.errno) from None

    async def write(self, fh, off, buf):
        try:
            return os.pwrite(fh, buf, off)
        except OSError as exc:
            raise FUSEError(exc.errno) from None

    async def fsync(self, fh, datasync):
        try:
            (os.fdatasync if datasync else os.fsync)(fh)
        except OSError as exc:
            raise FUSEError(exc.errno) from None

    async def release(self, fh):
        inode = self.fd_inode.pop(fh, None)
        if inode is not None:
            fds = self.inode_fds.get(inode)
            if fds is not None:
                fds.discard(fh)
                if not fds:
                    del self.inode_fds[inode]
                    if inode not in self.lookups:
                        self.paths.pop(inode, None)
        os.close(fh)

    async def statfs(self, ctx):
        sv = os.statvfs(self.source)
        out = pyfuse3.StatvfsData()
        for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                    "f_ffree", "f_favail", "f_namemax"):
            setattr(out, key, getattr(sv, key))
        return out


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument("--attr-timeout", type=float, default=1.0)
    p.add_argument("--entry-timeout", type=float, default=1.0)
    p.add_argument("--negative-timeout", type=float, default=0.0)
    p.add_argument("--fsname", default="pyfuse3-passthrough")
    return p.parse_args(argv)


async def _serve() -> None:
    """pyfuse3's main loop until SIGTERM or SIGINT."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            nursery.start_soon(pyfuse3.main)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    ops = Passthrough(args.source, args.attr_timeout, args.entry_timeout,
                      args.negative_timeout)
    options = set(pyfuse3.default_options)  # default_permissions, as xlfs
    options |= {"allow_other", f"fsname={args.fsname}", "subtype=passthrough"}
    os.umask(0)  # modes arrive already masked by the caller's umask
    pyfuse3.init(ops, args.mountpoint, options)
    try:
        trio.run(_serve)
    except KeyboardInterrupt:
        pass
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
