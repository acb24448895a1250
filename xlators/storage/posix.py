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

The code is split by concern: posix (the translator: options, lifecycle, how a system
call runs), posix_node (each inode's descriptor and the inode table), posix_entry
(namespace fops), posix_attr (getattr, setattr, access, statfs, xattrs), posix_io (open
files and data), posix_dir (listings), posix_lk (locks), posix_handle (export keys),
posix_watch (watch-brick) and posix_sys (raw system calls and credentials).
"""
from __future__ import annotations

import errno
import os
import resource
import time
from typing import Any, Optional

import trio

from xlators.core.errors import FopError
from xlators.core.offload import offload_limiter
from xlators.core.options import Option
from xlators.core.translator import Translator

from . import posix_handle, posix_lk, posix_watch
from .posix_attr import PosixAttrOps
from .posix_dir import PosixDirOps
from .posix_entry import PosixEntryOps
from .posix_io import PosixIOOps
from .posix_node import Node, PosixNodes
from .posix_sys import Creds, fchown_empty, parse_octal, parse_reserve, process_umask


class Posix(PosixEntryOps, PosixAttrOps, PosixIOOps, PosixDirOps, PosixNodes,
            Translator):
    """storage/posix: a local directory as the storage of the graph."""
    type = "storage/posix"
    children_range = (0, 0)
    # Capabilities (declared on Translator, asked of every storage by Graph.posix_acl and
    # Graph.kills_privileges): the brick's own ACLs govern access and creation, and set-id
    # bits and file capabilities are cleared on write/truncate/chown by the brick or by us.
    posix_acl = True
    kills_privileges = True
    # flush drops the record locks its own lk took, and lk reaches it only in a graph
    # that handles locks, which then needs FLUSH anyway (Graph.needs_flush)
    needs_flush = False
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
        self._threads_seen = False              # io-threads was on once (posix_watch)
        self._apply_opts()

    # -- lifecycle -----------------------------------------------------------------
    def _apply_opts(self) -> None:
        o = self.opts
        self._threshold = o.io_thread_threshold
        self._inline_always = not o.io_threads
        self._threads_seen = self._threads_seen or bool(o.io_threads)
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

    # -- the rest ---------------------------------------------------------------------
    async def ipc(self, frame, op, xdata=None):
        raise FopError(errno.EOPNOTSUPP)
