"""storage/posix: serve a local directory (the brick), every fop, as a root daemon must.

    volume posix
        type storage/posix
        option directory /srv/brick
        option reserve 1%
        option io-thread-threshold 128KB
    end-volume

Design (details in docs and in each helper):

- Handles, never paths.  Every live inode holds an ``O_PATH|O_NOFOLLOW`` descriptor (its
  context); every operation is a ``*at()`` call relative to the parent's descriptor or
  an ``AT_EMPTY_PATH``/``/proc/self/fd/N`` call on the inode's own one.  So directory
  chains of any depth work, and renames under an inode never confuse it.
- Nothing escapes the brick: names containing ``/`` or NUL are EINVAL; ``.`` and ``..``
  are EINVAL except for lookup, where ``..`` of the brick root is the root; symlinks are
  never followed (O_NOFOLLOW on every open, the symlink itself for chown/utimens/xattrs,
  EOPNOTSUPP for chmod of a symlink, ELOOP for open of one).
- Identity is the inode number: lookup/create/... dedupe by it through the inode table
  and close the spare descriptor; forget() closes it.  Inodes of another filesystem
  mounted inside the brick get its device folded into the top 8 bits of the number
  (option ``submounts``; off answers EXDEV for them).
- File handles: an inode's nodeid is the brick's own file handle when that fits 64 bits
  (ext4's are), so ``resolve`` finds a forgotten inode again with open_by_handle_at and a
  deleted file's handle is stale (posix_handle; other bricks: counted nodeids).
- Caller credentials: each permission-sensitive syscall runs with the caller's fsuid,
  fsgid and supplementary groups, set on the calling thread only (raw setfsuid/setfsgid/
  setgroups) and restored after; skipped for uid 0 (a root caller with another gid only
  takes that fsgid, when creating).  Without root (or ``caller-credentials off``) all
  runs as the daemon, which then still chowns new objects to the caller when it can.  The kernel then checks permissions
  and gives new files their owner exactly as on the raw directory; trusted.* and
  security.* xattrs, which the daemon's CAP_SYS_ADMIN would allow, are refused to
  non-root callers explicitly.  A lookup in a directory whose permissions plainly allow
  the search (no ACL, search bit for the caller's class) skips the switch.
- What FUSE leaves to the server: an exec open (``O_EXEC_OPEN``) checks execute
  permission as the caller and reads as the daemon (mode 0711 programs run); a parent's
  default ACL replaces the caller's umask; a write, truncate, fallocate or ``O_TRUNC``
  open by another user clears set-id bits and ``security.capability`` as for a local
  writer (the storage capabilities ``posix_acl`` and ``kills_privileges``).
- The event loop: metadata syscalls run inline (about a microsecond each on a local
  disk; a worker-thread round trip costs 50-150 us).  Reads first try RWF_NOWAIT inline
  and only go to a thread when the data is not cached; writes, fallocate and
  copy_file_range go to a thread above ``io-thread-threshold``; fsync always does.
  ``io-threads on`` runs every fop in a thread (slow or network-backed bricks).
- Locks: POSIX record locks and flocks are held by the backing filesystem through an
  open file description per lock owner (see posix_lk); features/locks gives full
  semantics (fair blocking, deadlock detection, interrupts).
- Descriptors: one per live inode plus one per open file; RLIMIT_NOFILE's soft limit is
  raised to the hard limit at init, and the bridge's lru-limit should stay below it.

The code is split by concern: posix (namespace fops, lifecycle, helpers), posix_attr
(setattr, access, statfs, xattrs), posix_io (open files and data), posix_dir (listings),
posix_lk (locks) and posix_sys (raw system calls and credentials).
"""
from __future__ import annotations

import errno
import os
import resource
import stat
import time
from typing import Any, Optional

import trio

from xlators.core.errors import FopError
from xlators.core.offload import offload_limiter
from xlators.core.options import Option
from xlators.core.translator import Translator
from xlators.core.types import Attr, Entry

from . import posix_handle, posix_lk, posix_watch
from .posix_attr import PosixAttrOps
from .posix_dir import PosixDirOps
from .posix_io import PosixIOOps
from .posix_sys import (Creds, check_name, fchown_empty, link_at, lookup_at, mkdir_at,
                        mknod_at, parse_octal, parse_reserve, process_umask, readlink_fd,
                        rename_at, rmdir_at, stat_at, symlink_at, unlink_at)

O_LOOKUP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
S_IFMT = stat.S_IFMT
S_IFDIR = stat.S_IFDIR
S_IFLNK = stat.S_IFLNK
# Entry(inode, attr) without the namedtuple's __new__, a Python function (half the cost):
# once per LOOKUP and per new object
_tuple_new = tuple.__new__


class Node:
    """posix's context of one inode: its O_PATH descriptor and small per-inode state."""
    __slots__ = ("fd", "kind", "ino", "devbits", "mode", "opens", "locks", "lock_pids",
                 "noacl_ctime")

    def __init__(self, fd: int, mode: int, ino: int, devbits: int) -> None:
        self.fd = fd
        self.kind = S_IFMT(mode)
        self.ino = ino
        self.devbits = devbits        # folded into d_ino of entries listed in this dir
        self.mode = mode              # last mode seen (writev's kill-suid decision)
        self.opens = 0                # open Fds (lock descriptors go with the last one)
        self.locks: Optional[dict] = None       # (owner, flock) -> descriptor
        self.lock_pids: Optional[dict] = None   # owner -> pid
        self.noacl_ctime = -1         # ctime at which "no access ACL" was verified

    def __repr__(self) -> str:
        return f"<posix.Node fd={self.fd} ino={self.ino} mode={self.mode:o}>"


def _keep_mode(fd: int, st: os.stat_result, perm: int) -> os.stat_result:
    return st


class Posix(PosixAttrOps, PosixIOOps, PosixDirOps, Translator):
    """storage/posix: a local directory as the storage of the graph."""
    type = "storage/posix"
    children_range = (0, 0)
    # Capabilities (declared on Translator, asked of every storage by Graph.posix_acl and
    # Graph.kills_privileges): the brick's own ACLs govern access and creation, and set-id
    # bits and file capabilities are cleared on write/truncate/chown by the brick or by us.
    posix_acl = True
    kills_privileges = True
    options = (
        Option.path("directory", description="The brick: the directory to serve (required).",
                    brick=True),
        Option.bool("o-direct", False, "Open every regular file with O_DIRECT (bypass the "
                    "page cache; unaligned requests use a buffered twin descriptor)."),
        Option.int("brick-uid", -1, "Owner to give the brick root at start (-1: leave).",
                   min=-1),
        Option.int("brick-gid", -1, "Group to give the brick root at start (-1: leave).",
                   min=-1),
        Option.bool("export-statfs-size", True, "Report the brick's sizes in statfs "
                    "(off: report zero blocks and files)."),
        Option.int("shared-brick-count", 1, "Bricks sharing this filesystem: statfs "
                   "divides sizes by it.", min=1),
        Option("reserve", "percent-or-size", "1", "Space kept free: a percentage of the "
               "disk (\"1\", \"1%\") or a size (\"10GB\"); creating and writing fail with "
               "ENOSPC below it, statfs hides it. 0 disables.", parser=parse_reserve),
        Option.int("max-hardlinks", 100, "Most links to one inode that link() creates "
                   "(EMLINK beyond); 0 is unlimited.", min=0),
        Option("create-mask", "octal", "0777", "Permission bits a new file may keep.",
               parser=parse_octal, min=0, max=0o777),
        Option("create-directory-mask", "octal", "0777", "Permission bits a new directory "
               "may keep.", parser=parse_octal, min=0, max=0o777),
        Option("force-create-mode", "octal", "0000", "Permission bits always set on a new "
               "file.", parser=parse_octal, min=0, max=0o777),
        Option("force-directory-mode", "octal", "0000", "Permission bits always set on a "
               "new directory.", parser=parse_octal, min=0, max=0o777),
        Option.bool("caller-credentials", True, "Run each permission-sensitive syscall "
                    "with the caller's fsuid/fsgid/groups (needs root; when not root, "
                    "everything runs as the daemon)."),
        Option.bool("submounts", True, "Serve filesystems mounted inside the brick (their "
                    "inode numbers get the device in the top 8 bits); off: EXDEV."),
        Option.size("io-thread-threshold", "128KB", "Reads, writes, fallocate and "
                    "copy_file_range larger than this run in a worker thread (reads of "
                    "cached data always run inline).", min=0),
        Option.bool("io-threads", False, "Run every fop in a worker thread (slow or "
                    "network-backed bricks)."),
        Option.int("io-thread-count", 16, "Most worker threads busy at once.", min=1,
                   max=1024),
        Option.bool("watch-brick", False, "Watch the brick with inotify and tell the "
                    "kernel (invalidations) when files or names change in it directly, not "
                    "through the mount; an xlfs option, GlusterFS has none (see "
                    "posix_watch)."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._directory: Optional[str] = None
        self._root: Optional[Node] = None
        self._dev = -1
        self._devs: dict[int, int] = {}         # st_dev -> fold index (1..255)
        self._live: dict[int, Node] = {}        # ino -> Node, every open O_PATH fd
        self._opens: set = set()                # open file/dir contexts (for fini)
        self._creds: Optional[Creds] = None
        self._switch = False
        self._umask = 0
        self._acls = True                       # the brick may have default ACLs
        self._limiter: Optional[trio.CapacityLimiter] = None
        self._space_at = -1e9
        self._space_full = False
        self._nowait = True                     # RWF_NOWAIT reads work here
        self._root_daemon = False
        self._watch: Optional[posix_watch.BrickWatch] = None
        self._handles: Optional[posix_handle.BrickHandles] = None
        self._root_stat: Optional[os.stat_result] = None
        self._apply_opts()

    # -- lifecycle -----------------------------------------------------------------
    def _apply_opts(self) -> None:
        o = self.opts
        self._threshold = o.io_thread_threshold
        self._inline_always = not o.io_threads
        self._fmask, self._fforce = o.create_mask, o.force_create_mode
        self._dmask, self._dforce = o.create_directory_mask, o.force_directory_mode
        self._max_links = o.max_hardlinks
        self._odirect = o.o_direct
        kind, value = o.reserve
        self._reserve = (kind, value) if value > 0 else None
        self._space_at = -1e9
        if self._limiter is not None:
            self._limiter.total_tokens = o.io_thread_count

    def init(self) -> None:
        d = self.opts.directory
        if not d:
            raise ValueError(f"volume '{self.name}' (storage/posix): option 'directory' "
                             "is required")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            except (ValueError, OSError):  # pragma: no cover
                self.log.warning("cannot raise RLIMIT_NOFILE to %s", hard)
        try:
            fd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ValueError(f"volume '{self.name}' (storage/posix): directory {d!r}: "
                             f"{e.strerror}") from None
        try:
            os.stat(f"/proc/self/fd/{fd}")
        except OSError:
            os.close(fd)
            raise ValueError(f"volume '{self.name}' (storage/posix): /proc is not "
                             "mounted (needed to reopen handles)") from None
        o = self.opts
        if o.brick_uid >= 0 or o.brick_gid >= 0:
            fchown_empty(fd, o.brick_uid, o.brick_gid)
        st = os.fstat(fd)
        self._directory = d
        self._dev = st.st_dev
        self._umask = process_umask()
        self._switch = bool(o.caller_credentials) and os.geteuid() == 0
        self._creds = Creds() if self._switch else None
        self._root_daemon = os.geteuid() == 0
        root = self.itable.root
        if root.ino != st.st_ino:
            self.itable.set_root_ino(st.st_ino)
        self._root = Node(fd, st.st_mode, st.st_ino, 0)
        self._live[st.st_ino] = self._root
        root.ctx[self] = self._root
        self._root_stat = st
        self._handles, why = posix_handle.BrickHandles.probe(fd)
        if self._handles is None:
            self.log.info("%s: file handles of forgotten inodes will be stale: %s",
                          self.name, why)
        self._watch = posix_watch.start(self)

    def fini(self) -> None:
        posix_watch.stop(self)
        for of in list(self._opens):
            self._close_open(of)
        self._opens.clear()
        for node in list(self._live.values()):
            posix_lk.drop_all(node)
            try:
                os.close(node.fd)
            except OSError:
                pass
        self._live.clear()
        for inode in self.itable:
            inode.ctx.pop(self, None)
        self._root = None
        if self._handles is not None:
            self._handles.close()
            self._handles = None

    def reconfigured(self, old: Any) -> None:
        if self._directory is not None and self.opts.directory not in (None,
                                                                       self._directory):
            self.log.warning("%s: the directory cannot change at run time; still serving "
                             "%s", self.name, self._directory)
        self._apply_opts()
        posix_watch.reconfigure(self)

    def dump(self) -> dict[str, Any]:
        return {"directory": self._directory, "live-inodes": len(self._live),
                "open-fds": len(self._opens), "submount-devices": dict(self._devs),
                "caller-credentials": self._switch, "inline": self._inline,
                "export-keys": self._handles is not None,
                "io-thread-threshold": self._threshold, "space-full": self._space_full,
                **(self._watch.dump() if self._watch is not None else {})}

    # -- helpers ---------------------------------------------------------------------
    def _node(self, inode: Any) -> Node:
        node = inode.ctx.get(self) if inode is not None else None
        if node is None:
            raise FopError(errno.ESTALE)
        return node

    def _call(self, frame: Any, create: bool, fn: Any, *args: Any) -> Any:
        """fn(*args) with the caller's filesystem credentials (on this thread)."""
        uid = frame.uid
        if not self._switch or (uid == 0 and (not create or frame.gid == 0)):
            return fn(*args)
        creds = self._creds
        token = creds.become(uid, frame.gid, frame.groups if uid else None)
        try:
            return fn(*args)
        finally:
            creds.restore(token)

    async def _do(self, frame: Any, create: bool, fn: Any, *args: Any) -> Any:
        """A metadata syscall: inline, or in a worker thread with ``io-threads``."""
        if self._inline:
            return self._call(frame, create, fn, *args)
        return await self._thread(self._call, frame, create, fn, *args)

    @property
    def _inline(self) -> bool:
        """Small calls run on the event loop unless ``io-threads on`` (performance/io-threads
        above only lends its limiter to the calls that go to a thread anyway)."""
        return self._inline_always

    async def _thread(self, fn: Any, *args: Any) -> Any:
        limiter = offload_limiter()
        if limiter is None:
            if self._limiter is None:
                self._limiter = trio.CapacityLimiter(self.opts.io_thread_count)
            limiter = self._limiter
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)

    def _space(self) -> None:
        """ENOSPC when the free space is below ``reserve`` (checked at most once a second)."""
        if self._reserve is None:
            return
        now = time.monotonic()
        if now - self._space_at > 1.0:
            self._space_at = now
            sv = os.fstatvfs(self._root.fd)
            kind, value = self._reserve
            need = sv.f_blocks * sv.f_frsize * value / 100 if kind == "percent" else value
            self._space_full = sv.f_bavail * sv.f_frsize < need
        if self._space_full:
            raise FopError(errno.ENOSPC)

    def _devbits(self, dev: int, ino: int) -> int:
        idx = self._devs.get(dev)
        if idx is None:
            if not self.opts.submounts or len(self._devs) >= 255:
                raise FopError(errno.EXDEV)
            idx = self._devs[dev] = len(self._devs) + 1
        if ino >> 56:
            raise FopError(errno.EOVERFLOW)
        return idx << 56

    def _entry(self, st: os.stat_result, fd: int = -1, iofd: int = -1, pfd: int = -1,
               name: bytes = b"") -> Entry:
        """Entry for what ``st`` describes: the table's inode, with posix's context.

        When the inode has no descriptor yet, it gets ``fd`` (a fresh O_PATH descriptor,
        closed otherwise), else a reopening of ``iofd`` (an open descriptor of it), else
        an O_PATH open of ``name`` in directory ``pfd`` (``st`` came from a plain stat:
        if the name changed in between, the new file is the answer)."""
        bits = 0
        if st.st_dev != self._dev:
            try:
                bits = self._devbits(st.st_dev, st.st_ino)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                raise
        ino = st.st_ino | bits
        inode = self.itable.by_ino.get(ino)
        node = inode.ctx.get(self) if inode is not None else None
        if node is None:
            node = self._live.get(ino)
            if node is None:
                if fd < 0:
                    if iofd >= 0:
                        fd = os.open(f"/proc/self/fd/{iofd}", os.O_PATH | os.O_CLOEXEC)
                    else:
                        fd, st2 = lookup_at(pfd, name)
                        if st2.st_ino != st.st_ino or st2.st_dev != st.st_dev:
                            return self._entry(st2, fd)
                node = self._live[ino] = Node(fd, st.st_mode, ino, bits)
                fd = -1
                if self._watch is not None:
                    self._watch.new_node(node)
            if inode is None:
                handles = self._handles
                key = handles.key(node.fd) if handles is not None and not bits else 0
                inode = self.itable.link(ino, key)
            inode.ctx[self] = node
        if fd >= 0:
            os.close(fd)
        node.mode = st.st_mode
        return _tuple_new(Entry, (inode, Attr.from_stat(st, ino)))

    def _perm(self, mode: int, umask: Optional[int], is_dir: bool) -> int:
        perm = mode & 0o7777 & ~(umask or 0)
        if is_dir:
            return (perm & 0o7000) | (perm & self._dmask) | self._dforce
        return (perm & 0o7000) | (perm & self._fmask) | self._fforce

    def _new_mode(self, pnode: Node, mode: int, umask: Optional[int],
                  is_dir: bool) -> tuple[int, Any]:
        """Permission bits to create with in ``pnode``, and the fix-up to run on the new
        object.  A default ACL on the parent replaces the caller's umask (POSIX.1e):
        the brick applies the ACL itself, and its result stays as it is.  Without a umask
        to apply and with no bit the process umask would take, both answers are the same
        (the fix-up finds nothing to undo): then the parent is not asked (a getxattr
        through /proc per create)."""
        if not umask:
            perm = self._perm(mode, 0, is_dir)
            if not perm & self._umask & 0o777:
                return perm, self._fix_mode
        if self._default_acl(pnode):
            return self._perm(mode, 0, is_dir), _keep_mode
        return self._perm(mode, umask, is_dir), self._fix_mode

    def _default_acl(self, pnode: Node) -> bool:
        if not self._acls:
            return False
        try:
            os.getxattr(f"/proc/self/fd/{pnode.fd}", "system.posix_acl_default")
            return True
        except OSError as e:
            if e.errno == errno.EOPNOTSUPP:
                self._acls = False           # the brick's filesystem has no ACLs
            return False

    def _fix_mode(self, fd: int, st: os.stat_result, perm: int) -> os.stat_result:
        """Undo the process umask on a new object (the caller's umask is already in
        ``perm``); bits taken for other reasons (a default ACL, setgid rules) stay."""
        got, want = st.st_mode & 0o777, perm & 0o777
        if got != want and got == want & ~self._umask and S_IFMT(st.st_mode) != S_IFLNK:
            os.chmod(f"/proc/self/fd/{fd}", (st.st_mode & 0o7000) | want)
            return os.fstat(fd)
        return st

    def _may_search(self, frame: Any, pnode: Node) -> bool:
        """True when the caller plainly may search ``pnode`` (False: ask the kernel)."""
        st = os.fstat(pnode.fd)
        mode = st.st_mode
        if frame.uid == st.st_uid:
            return bool(mode & 0o100)
        if pnode.noacl_ctime != st.st_ctime_ns:
            try:
                os.getxattr(f"/proc/self/fd/{pnode.fd}", "system.posix_acl_access")
                return False
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
                    return False
            pnode.noacl_ctime = st.st_ctime_ns
        if mode & 0o011 == 0o011:        # group and others may: membership does not matter
            return True
        if frame.gid == st.st_gid or st.st_gid in frame.groups:
            return bool(mode & 0o010)
        return bool(mode & 0o001)

    def _give(self, frame: Any, pnode: Node, entry: Entry) -> Entry:
        """With caller-credentials off, a root daemon still gives new objects to the
        caller (the group of a set-group-ID parent stays)."""
        if self._switch or not self._root_daemon or (frame.uid == 0 and frame.gid == 0):
            return entry
        node = entry.inode.ctx[self]
        gid = None if os.fstat(pnode.fd).st_mode & stat.S_ISGID else frame.gid
        fchown_empty(node.fd, frame.uid, gid)
        return Entry(entry.inode, Attr.from_stat(os.fstat(node.fd), node.ino))

    def _ploc(self, loc: Any) -> tuple[Node, bytes]:
        """(the parent's Node, the checked name) of a location a fop modifies."""
        parent = loc.parent
        pnode = parent.ctx.get(self) if parent is not None else None
        if pnode is None:
            raise FopError(errno.ESTALE)
        name = loc.name
        # check_name's test spelled out for the common case (bytes, valid)
        if (type(name) is not bytes or not name or 47 in name or 0 in name
                or name == b"." or name == b".."):
            name = check_name(name)
        return pnode, name

    # -- namespace fops ----------------------------------------------------------------
    async def lookup(self, frame, loc):
        name = loc.name
        if name is None:                       # nameless: revalidate a known inode
            return Entry(loc.inode, await self.getattr(frame, loc.inode))
        parent = loc.parent                     # self._node(loc.parent), inline
        pnode = parent.ctx.get(self) if parent is not None else None
        if pnode is None:
            raise FopError(errno.ESTALE)
        if isinstance(name, str):
            name = os.fsencode(name)
        if name == b"." or (name == b".." and pnode is self._root):
            if self._inline:
                st = os.fstat(pnode.fd)
            else:
                st = await self._thread(os.fstat, pnode.fd)
            return self._entry(st)
        if not name:
            raise FopError(errno.ENOENT)
        if 47 in name or 0 in name:            # "/" or NUL (see posix_sys.check_name)
            raise FopError(errno.EINVAL, f"invalid name {name!r}")
        if self._inline_always:
            # A plain stat: a known inode needs no new descriptor (opened when it does).
            if frame.uid == 0 or not self._switch or self._may_search(frame, pnode):
                st = os.stat(name, dir_fd=pnode.fd, follow_symlinks=False)
            else:
                st = self._call(frame, False, stat_at, pnode.fd, name)
            # _entry's common case inline: a known inode of the brick's own filesystem
            ino = st.st_ino
            inode = self.itable.by_ino.get(ino) if st.st_dev == self._dev else None
            node = inode.ctx.get(self) if inode is not None else None
            if node is not None:
                node.mode = st.st_mode
                entry = _tuple_new(Entry, (inode, Attr.from_stat(st, ino)))
            else:
                entry = self._entry(st, pfd=pnode.fd, name=name)
        else:
            fd, st = await self._thread(self._call, frame, False, lookup_at, pnode.fd, name)
            entry = self._entry(st, fd)
        if self._watch is not None:
            self._watch.looked_up(pnode, name, entry)
        return entry

    async def getattr(self, frame, inode, fd=None):
        node = inode.ctx.get(self)
        if node is None:
            raise FopError(errno.ESTALE)
        # the _inline property, spelled out: this is the hottest fop
        if self._inline_always:
            st = os.fstat(node.fd)
        else:
            st = await self._thread(os.fstat, node.fd)
        node.mode = st.st_mode
        return Attr.from_stat(st, node.ino)

    async def readlink(self, frame, inode):
        node = self._node(inode)
        if node.kind != S_IFLNK:
            raise FopError(errno.EINVAL)
        if self._inline:
            return os.readlink(b"", dir_fd=node.fd)
        return await self._thread(readlink_fd, node.fd)

    async def mknod(self, frame, loc, mode, rdev, umask):
        pnode, name = self._ploc(loc)
        self._space()
        perm, fix = self._new_mode(pnode, mode, umask, False)
        fd, st = await self._do(frame, True, mknod_at, pnode.fd, name, S_IFMT(mode) | perm,
                                rdev or 0, fix)
        return self._give(frame, pnode, self._entry(st, fd))

    async def mkdir(self, frame, loc, mode, umask):
        pnode, name = self._ploc(loc)
        self._space()
        perm, fix = self._new_mode(pnode, mode, umask, True)
        if self._inline_always and (not self._switch or frame.uid == 0 and frame.gid == 0):
            fd, st = mkdir_at(pnode.fd, name, perm, fix)        # _do, inline
        else:
            fd, st = await self._do(frame, True, mkdir_at, pnode.fd, name, perm, fix)
        if self._switch:                        # _give gives nothing then
            return self._entry(st, fd)
        return self._give(frame, pnode, self._entry(st, fd))

    async def symlink(self, frame, target, loc):
        pnode, name = self._ploc(loc)
        if isinstance(target, str):
            target = os.fsencode(target)
        if b"\0" in target:
            raise FopError(errno.EINVAL)
        self._space()
        fd, st = await self._do(frame, True, symlink_at, pnode.fd, name, target)
        return self._give(frame, pnode, self._entry(st, fd))

    # unlink, rmdir and rename spell out _do's commonest case: inline (no io-threads), as
    # the daemon (a root caller, or no credential switching): two calls fewer each.
    async def unlink(self, frame, loc):
        pnode, name = self._ploc(loc)
        if self._inline_always and (frame.uid == 0 or not self._switch):
            os.unlink(name, dir_fd=pnode.fd)
        else:
            await self._do(frame, False, unlink_at, pnode.fd, name)

    async def rmdir(self, frame, loc):
        pnode, name = self._ploc(loc)
        if self._inline_always and (frame.uid == 0 or not self._switch):
            os.rmdir(name, dir_fd=pnode.fd)
        else:
            await self._do(frame, False, rmdir_at, pnode.fd, name)

    async def rename(self, frame, oldloc, newloc, flags=None):
        opnode, old = self._ploc(oldloc)
        npnode, new = self._ploc(newloc)
        if not flags and self._inline_always and (frame.uid == 0 or not self._switch):
            os.rename(old, new, src_dir_fd=opnode.fd, dst_dir_fd=npnode.fd)
        else:
            await self._do(frame, False, rename_at, opnode.fd, old, npnode.fd, new,
                           flags or 0)

    async def link(self, frame, inode, newloc):
        node = self._node(inode)
        npnode, name = self._ploc(newloc)
        if node.kind == S_IFDIR:
            raise FopError(errno.EPERM)
        self._space()
        if self._max_links and os.fstat(node.fd).st_nlink >= self._max_links:
            raise FopError(errno.EMLINK)
        await self._do(frame, True, link_at, node.fd, npnode.fd, name)
        st = os.fstat(node.fd)
        node.mode = st.st_mode
        return Entry(inode, Attr.from_stat(st, node.ino))

    # -- the rest ---------------------------------------------------------------------
    async def forget(self, frame, inode):
        node = inode.ctx.pop(self, None)
        if node is None or node is self._root:
            if node is not None:
                inode.ctx[self] = node
            return None
        ino = node.ino
        current = self.itable.by_ino.get(ino)
        if current is not None and current is not inode and current.ctx.get(self) is node:
            return None          # a newer Inode for the same file shares the descriptor
        live = self._live
        if live.get(ino) is node:
            del live[ino]
        if node.locks:
            posix_lk.drop_all(node)
        if self._watch is not None:
            self._watch.forget(node)
        os.close(node.fd)
        return None

    async def resolve(self, frame, nodeid):
        """The object whose brick file handle is ``nodeid`` (see posix_handle): ESTALE
        when it is gone, has no name left, or is a directory outside the brick."""
        handles = self._handles
        if handles is None:
            raise FopError(errno.ESTALE)
        try:
            fd = handles.open(nodeid)
        except OSError:
            raise FopError(errno.ESTALE) from None
        try:
            st = os.fstat(fd)
            # ext4 skips the generation check for generation 0: the handle read back
            # must be the key asked for
            if (st.st_dev != self._dev or st.st_nlink == 0 or handles.key(fd) != nodeid
                    or (S_IFMT(st.st_mode) == S_IFDIR
                        and not posix_handle.inside(fd, self._root_stat))):
                raise FopError(errno.ESTALE)
        except BaseException:
            os.close(fd)
            raise
        return self._entry(st, fd)

    async def ipc(self, frame, op, xdata=None):
        raise FopError(errno.EOPNOTSUPP)
