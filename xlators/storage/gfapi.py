"""storage/gfapi: a GlusterFS volume as the storage of an xlfs graph, through libgfapi.

    volume gv0
        type storage/gfapi
        option volfile-server server1
        option backup-volfile-servers server2,server3
        option "volume" gv0        # quoted (a volfile keyword), or: volume-name
    end-volume

or, with no glusterd (a GlusterFS client volfile: protocol/client volumes under
cluster/replicate, disperse or distribute):

    volume gv0
        type storage/gfapi
        option volfile /etc/xlfs/gv0-client.vol
    end-volume

The whole GlusterFS client graph (protocol/client, replicate, distribute, disperse, its
own caches) runs inside libgfapi in this process; the xlfs graph sits on top.  Our own
ctypes binding (gfapi_binding) speaks the GFAPI_6.0 prototypes.

- Identity: every object is a libgfapi handle (``glfs_object``) carrying the gfid; the
  inode number is the one GlusterFS derives from the gfid (its low 64 bits, ``st_ino``
  of every stat), so the same file has the same number on every client and across
  restarts.  One handle per live inode (a second handle for a known inode is closed).
- Credentials: every call runs with the caller's uid, gid and supplementary groups
  (``glfs_setfsuid``/``setfsgid``/``setfsgroups``, per thread, set before each call);
  the bricks check permissions as for GlusterFS's own FUSE client.
- The event loop never blocks: each library call runs in one of ``io-thread-count``
  worker threads (gfapi_workers).  A request cancelled while
  its call runs (an interrupt, with the bridge's interrupt flags on) answers EINTR at
  once: the call is abandoned and its thread finishes it by itself;
  the operation may still complete on the bricks, as when a GlusterFS client is killed.
  Blocking lock requests are retried with F_SETLK from the event loop instead, so a
  waiting lock is interruptible and never left granted to an abandoned thread.
- Lifecycle: ``glfs_init`` runs in ``init()``, which the daemon calls after it forked
  (libgfapi is not fork-safe), so CHILD_UP (the answer to PARENT_UP) comes only after
  the volume answered. An unreachable server, an unknown volume or a bad client volfile
  fails ``init()`` with a one-line error: no mount (the bad volfile case leaves
  GlusterFS's global volfile parser unusable for the rest of the process: harmless for
  the daemon, which exits). When the volume becomes unreachable (every brick of a
  replica set gone) calls fail with ENOTCONN (at the latest after protocol/client's
  ping-timeout): the first such failure logs it and sends CHILD_DOWN up the graph, the
  first success after it CHILD_UP. ``glfs_fini`` of a running volume is never called: it
  takes 9-10 s, and run in a background thread it aborted the process (SIGABRT,
  GlusterFS 10.3, measured in the test suite); fini() unregisters the upcalls and drops
  every handle, and the daemon's exit closes the connections. An in-process graph
  (tests, the harness) keeps libgfapi's threads until the process ends.
- Coherence: upcalls from the bricks (features/upcall; the client volfile's or the
  volume's ``features.cache-invalidation on``) about files changed by other clients
  become ``InvalidateInode`` / ``InvalidateEntry`` upcalls up the graph, which the FUSE
  bridge turns into kernel invalidations (gfapi_upcall).
- Limits: libgfapi has no renameat2: RENAME_EXCHANGE is EINVAL and RENAME_NOREPLACE is a
  lookup then a rename (not atomic against another client); flock is a whole-file POSIX
  lock of the open file's owner (as GlusterFS's own FUSE client does), so a flock and a
  POSIX lock of another owner conflict; ``resolve`` of a forgotten inode is ESTALE (a
  gfid does not fit a 64-bit nodeid). copy_file_range copies through this client
  (libgfapi's own reached one replica only).

The code is split by concern: gfapi (options, lifecycle, namespace fops), gfapi_io (open
files, directories, locks), gfapi_attr (attributes and xattrs), gfapi_upcall
(invalidations), gfapi_binding (ctypes).
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Any, Callable, Optional


from ..core.errors import FopError
from ..core.events import Event
from ..core.inode import Inode
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import Attr, Entry
from .gfapi_attr import GfapiAttr
from .gfapi_io import GfapiIo
from .gfapi_workers import Workers

LOG_LEVELS = {"none": 0, "emerg": 1, "alert": 2, "critical": 3, "error": 4, "warning": 5,
              "notice": 6, "info": 7, "debug": 8, "trace": 9}
S_IFMT = 0o170000
S_IFDIR = 0o040000
NAME_MAX = 255
RENAME_NOREPLACE = 1
MAX_NAMES = 8             # names remembered per inode for entry invalidations


def _binding() -> Any:
    """gfapi_binding, imported on first use: a graph without storage/gfapi never needs
    libgfapi, and a missing library is a one-line init error naming the package."""
    from . import gfapi_binding
    return gfapi_binding


class Node:
    """gfapi's context of one inode: its libgfapi handle."""
    __slots__ = ("obj", "ino", "kind", "names", "opens")

    def __init__(self, obj: int, ino: int, mode: int) -> None:
        self.obj = obj
        self.ino = ino
        self.kind = mode & S_IFMT
        self.names: set[tuple[int, bytes]] = set()   # (parent ino, name) looked up
        self.opens: list[Any] = []    # open files (fstat of a file deleted while open)

    def __repr__(self) -> str:
        return f"<gfapi.Node ino={self.ino} obj={self.obj:#x}>"


def _name(loc: Any) -> bytes:
    name = loc.name
    if isinstance(name, str):
        name = os.fsencode(name)
    if not name:
        raise FopError(errno.ENOENT)
    if b"/" in name or b"\0" in name:
        raise FopError(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > NAME_MAX:
        raise FopError(errno.ENAMETOOLONG)
    return name


class Gfapi(GfapiAttr, GfapiIo, Translator):
    """storage/gfapi: a GlusterFS volume through libgfapi (GlusterFS's client library)."""
    type = "storage/gfapi"
    children_range = (0, 0)
    # POSIX locks and flocks are the bricks' (features/locks), so they hold across
    # clients: the bridge negotiates POSIX_LOCKS/FLOCK_LOCKS and sends them here
    handles_locks = True
    options = (
        Option.str("volfile-server", None, "Host of a GlusterFS server (glusterd) to "
                   "fetch the volume's client volfile from; with option volume. "
                   "Exclusive with option volfile."),
        Option.str("backup-volfile-servers", "", "More servers to try, comma or space "
                   "separated (each takes volfile-server-port and -transport)."),
        Option.int("volfile-server-port", 24007, "Port of glusterd on the volfile "
                   "servers.", min=1, max=65535),
        Option.str("volfile-server-transport", "tcp", "Transport to the volfile servers.",
                   values=("tcp", "rdma", "unix")),
        Option.str("volume", None, "Name of the GlusterFS volume (with volfile-server). "
                   "'volume' is a volfile keyword: write it quoted (option \"volume\" gv0) "
                   "or as volume-name.", aliases=("volume-name", "volfile-id")),
        Option.path("volfile", None, "A GlusterFS client volfile to use instead of "
                    "asking glusterd (setups with no glusterd). Exclusive with "
                    "volfile-server."),
        Option.path("log-file", None, "libgfapi's log file (default: "
                    "/var/log/glusterfs/xlfs-VOLUME.log, GlusterFS's own default place)."),
        Option.str("log-level", "warning", "libgfapi's log level.",
                   values=tuple(LOG_LEVELS)),
        Option.int("io-thread-count", 16, "Most libgfapi calls running at once (each "
                   "blocks a worker thread).", min=1, max=1024),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._b: Any = None
        self._fs: Optional[int] = None
        self._live: dict[int, Node] = {}
        self._by_name: dict[tuple[int, bytes], Node] = {}   # names looked up -> node
        self._workers = Workers(self.opts.io_thread_count, f"gfapi-{self.name}")
        self._upcalls: Any = None
        self._source = ""
        self._down = False            # the last call failed with ENOTCONN
        self._check_form(kw.get("option_where") or (lambda key: ""))

    def _check_form(self, where: Callable[[str], str]) -> None:
        o = self.opts
        server, volfile = o.volfile_server, o.volfile
        if bool(server) == bool(volfile):
            place = where("volfile-server" if server else "volfile")
            prefix = f"{place}: " if place else ""
            what = "both" if server else "neither"
            raise ValueError(f"{prefix}volume '{self.name}' (storage/gfapi): give exactly "
                             f"one of option volfile-server (with volume) and option "
                             f"volfile; {what} given")
        if server and not o.volume:
            place = where("volfile-server")
            prefix = f"{place}: " if place else ""
            raise ValueError(f"{prefix}volume '{self.name}' (storage/gfapi): option "
                             "volfile-server needs option volume (the volume's name)")

    # -- lifecycle -----------------------------------------------------------------
    def init(self) -> None:
        b = self._b = _binding()
        o = self.opts
        volname = (o.volume or os.path.basename(o.volfile).split(".")[0] or "xlfs")
        fs = b.lib.glfs_new(volname.encode())
        if not fs:
            raise RuntimeError("glfs_new failed (out of memory?)")
        try:
            if o.volfile:
                if not os.path.isfile(o.volfile):
                    raise RuntimeError(f"client volfile {o.volfile}: no such file")
                b.check(b.lib.glfs_set_volfile(fs, o.volfile.encode()), "glfs_set_volfile")
                self._source = o.volfile
            else:
                servers = [o.volfile_server] + [
                    s for s in o.backup_volfile_servers.replace(",", " ").split() if s]
                for host in servers:
                    b.check(b.lib.glfs_set_volfile_server(
                        fs, o.volfile_server_transport.encode(), host.encode(),
                        o.volfile_server_port), f"glfs_set_volfile_server {host}")
                self._source = f"{','.join(servers)}:{o.volfile_server_port}/{o.volume}"
            log_file = o.log_file or f"/var/log/glusterfs/xlfs-{volname}.log"
            if b.lib.glfs_set_logging(fs, log_file.encode(), LOG_LEVELS[o.log_level]) < 0:
                self.log.warning("%s: cannot log to %s", self.name, log_file)
                b.lib.glfs_set_logging(fs, b"/dev/null", 0)
            self._log_file = log_file
            if b.lib.glfs_init(fs) != 0:
                err = ctypes.get_errno()
                why = os.strerror(err) if err else "glfs_init failed"
                if o.volfile:
                    raise RuntimeError(f"GlusterFS client volfile {o.volfile} does not "
                                       f"work: {why} (details in {log_file})")
                raise RuntimeError(f"cannot reach GlusterFS volume {self._source}: {why} "
                                   f"(details in {log_file})")
            st = b.Stat()
            root = b.lib.glfs_h_lookupat(fs, None, b"/", ctypes.byref(st), 0)
            if not root:
                err = ctypes.get_errno()
                raise RuntimeError(f"GlusterFS volume {self._source}: cannot look up its "
                                   f"root: {os.strerror(err or errno.EIO)} (details in "
                                   f"{log_file})")
        except BaseException:
            _fini_in_background(b, fs)
            raise
        self._fs = fs
        ino = st.st_ino
        if self.itable.root.ino != ino:
            self.itable.set_root_ino(ino)
        node = Node(root, ino, st.st_mode)
        self._live[ino] = node
        self.itable.root.ctx[self] = node
        from .gfapi_upcall import Upcalls
        self._upcalls = Upcalls(self, b, fs)
        self.log.info("%s: GlusterFS volume %s is up", self.name, self._source)

    def fini(self) -> None:
        fs, self._fs = self._fs, None
        if fs is None:
            return
        if self._upcalls is not None:
            self._upcalls.stop()
        for inode in self.itable:
            inode.ctx.pop(self, None)
        self._live.clear()
        self._by_name.clear()
        # glfs_fini is not called: see the module docstring

    def reconfigured(self, old: Any) -> None:
        self._workers.resize(self.opts.io_thread_count)
        for key in ("volfile-server", "volume", "volfile"):
            if self.opts[key] != old[key]:
                self.log.warning("%s: option %s cannot change at run time", self.name, key)

    def dump(self) -> dict[str, Any]:
        return {"source": self._source, "live-inodes": len(self._live),
                "threads-busy": self._workers.busy,
                "io-thread-count": self._workers.size,
                "calls-abandoned": self._workers.abandoned,
                **(self._upcalls.dump() if self._upcalls is not None else {})}

    # -- calling the library -----------------------------------------------------------
    def _fsp(self) -> int:
        if self._fs is None:
            raise FopError(errno.ENOTCONN)
        return self._fs

    async def _call(self, frame: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread, as the caller (uid, gid, groups)."""
        if frame is None:
            creds = (0, 0, ())
        else:
            creds = (frame.uid, frame.gid, tuple(frame.groups) if frame.uid else ())
        self._start_upcalls()
        if frame is not None and frame.interrupt is not None:
            # an interrupt cancels the request's scope: the thread is abandoned below
            frame.on_interrupt(_abandon)
        try:
            result = await self._workers.run(self._as_caller, creds, fn, args)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN and not self._down:
                self._down = True
                self.log.warning("%s: GlusterFS volume %s is unreachable (%s): requests "
                                 "fail with ENOTCONN until it is back", self.name,
                                 self._source, exc.strerror)
                self.notify_parents(Event.CHILD_DOWN, None)
            raise
        if self._down:
            self._down = False
            self.log.warning("%s: GlusterFS volume %s is reachable again", self.name,
                             self._source)
            self.notify_parents(Event.CHILD_UP, None)
        return result

    def _as_caller(self, creds: tuple, fn: Callable[..., Any], args: tuple) -> Any:
        self._b.set_credentials(*creds)
        return fn(*args)

    def _start_upcalls(self) -> None:
        if self._upcalls is not None and not self._upcalls.started:
            self._upcalls.start()

    # -- inodes ------------------------------------------------------------------------
    def _node(self, inode: Any) -> Node:
        node = inode.ctx.get(self) if inode is not None else None
        if node is None:
            raise FopError(errno.ESTALE)
        return node

    def _attr(self, st: Any) -> Attr:
        attr = Attr(*self._b.stat_tuple(st))
        if not attr.blksize:          # some replies (glfs_h_stat) leave it out
            attr.blksize = 4096
        return attr

    def _entry(self, obj: int, st: Any) -> Entry:
        """The table's inode for handle ``obj`` (closed when the inode has one)."""
        attr = self._attr(st)
        ino = attr.ino
        inode = self.itable.find(ino)
        node = inode.ctx.get(self) if inode is not None else None
        if node is None:
            node = self._live.get(ino)
            if node is None:
                node = self._live[ino] = Node(obj, ino, attr.mode)
                obj = 0
            if inode is None:
                inode = self.itable.link(ino)
            inode.ctx[self] = node
        if obj:
            self._b.lib.glfs_h_close(obj)
        return Entry(inode, attr)

    def _named(self, entry: Entry, pnode: Node, name: bytes) -> Entry:
        """Remember a name of the entry's object (upcalls carry no names)."""
        node = entry.inode.ctx.get(self)
        if node is not None and len(node.names) < MAX_NAMES:
            key = (pnode.ino, name)
            node.names.add(key)
            self._by_name[key] = node
        return entry

    def _unnamed(self, pnode: Node, name: bytes) -> None:
        node = self._by_name.pop((pnode.ino, name), None)
        if node is not None:
            node.names.discard((pnode.ino, name))

    def names_of(self, inode: Any) -> set[tuple[int, bytes]]:
        node = inode.ctx.get(self)
        return node.names if node is not None else set()

    def _made(self, what: str) -> Callable[..., Any]:
        """A creating handle call returning (object, stat) or raising OSError."""
        b = self._b

        def run(fn: Callable[..., Any], *args: Any) -> tuple[int, Any]:
            st = b.Stat()
            obj = fn(*args, ctypes.byref(st))
            b.check_ptr(obj, what)
            return obj, st
        return run

    # -- namespace fops ----------------------------------------------------------------
    async def lookup(self, frame, loc):
        if loc.name is None:
            return Entry(loc.inode, await self.getattr(frame, loc.inode))
        pnode = self._node(loc.parent)
        name = _name(loc)
        b = self._b
        fs = self._fsp()

        def run() -> tuple[int, Any]:
            st = b.Stat()
            obj = b.lib.glfs_h_lookupat(fs, pnode.obj, name, ctypes.byref(st), 0)
            return b.check_ptr(obj, "lookup"), st
        obj, st = await self._call(frame, run)
        if name in (b".", b".."):
            return self._entry(obj, st)
        return self._named(self._entry(obj, st), pnode, name)

    async def getattr(self, frame, inode, fd=None):
        b = self._b
        glfd = self._glfd_or_none(fd)

        def run() -> Any:
            st = b.Stat()
            if glfd:
                b.check(b.lib.glfs_fstat(glfd, ctypes.byref(st)), "fstat")
                return st
            if b.lib.glfs_h_stat(self._fsp(), node.obj, ctypes.byref(st)) == 0:
                return st
            err = ctypes.get_errno()
            for of in list(node.opens):       # deleted while open: ask an open file
                if err in (errno.ENOENT, errno.ESTALE) and \
                        b.lib.glfs_fstat(of.glfd, ctypes.byref(st)) == 0:
                    return st
            raise OSError(err or errno.EIO, "stat")
        node = self._node(inode)
        return self._attr(await self._call(frame, run))

    async def readlink(self, frame, inode):
        node = self._node(inode)
        b = self._b

        def run() -> bytes:
            buf = ctypes.create_string_buffer(4097)
            n = b.check(b.lib.glfs_h_readlink(self._fsp(), node.obj, buf, 4096), "readlink")
            return buf.raw[:n] if n else buf.value
        return await self._call(frame, run)

    async def mknod(self, frame, loc, mode, rdev, umask):
        pnode, name = self._node(loc.parent), _name(loc)
        b = self._b
        perm = mode & 0o7777 & ~(umask or 0)
        obj, st = await self._call(frame, self._made("mknod"), b.lib.glfs_h_mknod,
                                   self._fsp(), pnode.obj, name, (mode & S_IFMT) | perm,
                                   rdev or 0)
        return self._named(self._entry(obj, st), pnode, name)

    async def mkdir(self, frame, loc, mode, umask):
        pnode, name = self._node(loc.parent), _name(loc)
        b = self._b
        obj, st = await self._call(frame, self._made("mkdir"), b.lib.glfs_h_mkdir,
                                   self._fsp(), pnode.obj, name,
                                   mode & 0o7777 & ~(umask or 0))
        return self._named(self._entry(obj, st), pnode, name)

    async def symlink(self, frame, target, loc):
        pnode, name = self._node(loc.parent), _name(loc)
        if isinstance(target, str):
            target = os.fsencode(target)
        if b"\0" in target:
            raise FopError(errno.EINVAL)
        b = self._b
        obj, st = await self._call(frame, self._made("symlink"), b.lib.glfs_h_symlink,
                                   self._fsp(), pnode.obj, name, target)
        return self._named(self._entry(obj, st), pnode, name)

    async def unlink(self, frame, loc):
        await self._remove(frame, loc, False)

    async def rmdir(self, frame, loc):
        await self._remove(frame, loc, True)

    async def _remove(self, frame: Any, loc: Any, is_dir: bool) -> None:
        pnode, name = self._node(loc.parent), _name(loc)
        if name in (b".", b".."):
            raise FopError(errno.EINVAL if is_dir else errno.EISDIR)
        b = self._b
        fs = self._fsp()
        known = self._by_name.get((pnode.ino, name))
        if known is not None and self._live.get(known.ino) is known:
            if is_dir != (known.kind == S_IFDIR):
                raise FopError(errno.ENOTDIR if is_dir else errno.EISDIR)
            await self._call(frame, lambda: b.check(
                b.lib.glfs_h_unlink(fs, pnode.obj, name), "unlink"))
            self._unnamed(pnode, name)
            return

        def run() -> None:
            # glfs_h_unlink picks unlink or rmdir by the entry's type: check it first
            st = b.Stat()
            obj = b.check_ptr(b.lib.glfs_h_lookupat(fs, pnode.obj, name,
                                                    ctypes.byref(st), 0), "lookup")
            b.lib.glfs_h_close(obj)
            if is_dir and st.st_mode & S_IFMT != S_IFDIR:
                raise FopError(errno.ENOTDIR)
            if not is_dir and st.st_mode & S_IFMT == S_IFDIR:
                raise FopError(errno.EISDIR)
            b.check(b.lib.glfs_h_unlink(fs, pnode.obj, name), "unlink")
        await self._call(frame, run)
        self._unnamed(pnode, name)

    async def rename(self, frame, oldloc, newloc, flags=None):
        if flags and flags != RENAME_NOREPLACE:
            raise FopError(errno.EINVAL, "libgfapi has no RENAME_EXCHANGE")
        op, old = self._node(oldloc.parent), _name(oldloc)
        np, new = self._node(newloc.parent), _name(newloc)
        b = self._b
        fs = self._fsp()

        def run() -> None:
            if flags:
                # libgfapi has no renameat2: NOREPLACE is a lookup, then the rename
                # (not atomic against another client creating the name in between)
                st = b.Stat()
                obj = b.lib.glfs_h_lookupat(fs, np.obj, new, ctypes.byref(st), 0)
                if obj:
                    b.lib.glfs_h_close(obj)
                    raise FopError(errno.EEXIST)
                if ctypes.get_errno() != errno.ENOENT:
                    b.check(-1, "lookup")
            b.check(b.lib.glfs_h_rename(fs, op.obj, old, np.obj, new), "rename")
        await self._call(frame, run)
        moved = self._by_name.get((op.ino, old))
        self._unnamed(op, old)
        self._unnamed(np, new)
        if moved is not None and len(moved.names) < MAX_NAMES:
            moved.names.add((np.ino, new))
            self._by_name[(np.ino, new)] = moved

    async def link(self, frame, inode, newloc):
        node = self._node(inode)
        np, name = self._node(newloc.parent), _name(newloc)
        if node.kind == S_IFDIR:
            raise FopError(errno.EPERM)
        b = self._b
        fs = self._fsp()

        def run() -> Any:
            b.check(b.lib.glfs_h_link(fs, node.obj, np.obj, name), "link")
            st = b.Stat()
            b.check(b.lib.glfs_h_stat(fs, node.obj, ctypes.byref(st)), "stat")
            return st
        return Entry(inode, self._attr(await self._call(frame, run)))

    # -- the rest ---------------------------------------------------------------------
    async def forget(self, frame, inode: Inode):
        node = inode.ctx.pop(self, None)
        if node is None or inode is self.itable.root:
            if node is not None:
                inode.ctx[self] = node
            return None
        current = self.itable.find(node.ino)
        if current is not None and current is not inode and current.ctx.get(self) is node:
            return None
        if self._live.get(node.ino) is node:
            del self._live[node.ino]
        for key in node.names:
            if self._by_name.get(key) is node:
                del self._by_name[key]
        if self._fs is not None:
            self._b.lib.glfs_h_close(node.obj)
        return None

    async def resolve(self, frame, nodeid):
        raise FopError(errno.ESTALE)        # a gfid does not fit a 64-bit export key

    async def ipc(self, frame, op, xdata=None):
        raise FopError(errno.EOPNOTSUPP)


def _abandon() -> None:
    """Interrupt handler: nothing to undo; the bridge then cancels the request's scope,
    which abandons the worker thread (its call completes by itself)."""


def _fini_in_background(b: Any, fs: int) -> None:
    """Release a glfs_t whose glfs_init failed (nothing runs on it yet): in a daemon
    thread, since even that can take seconds."""
    t = threading.Thread(target=b.lib.glfs_fini, args=(fs,), name="glfs_fini", daemon=True)
    t.start()
