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
- The event loop never blocks on the bricks: each library call runs in one of
  ``io-thread-count`` worker threads (gfapi_workers).  A call made while no other runs
  is waited for by the loop's thread for at most ``inline-wait`` (2 ms), so a quick
  answer finishes the request without a suspension and wake-up of the loop.  A request cancelled while
  its call runs (an interrupt, with the bridge's interrupt flags on) answers EINTR at
  once: the call is abandoned and its thread finishes it by itself;
  the operation may still complete on the bricks, as when a GlusterFS client is killed.
  Blocking lock requests are retried with F_SETLK from the event loop instead, so a
  waiting lock is interruptible; a lock try given up while stuck on the bricks is
  unlocked again if they grant it later (gfapi_locks).
- Lifecycle: ``glfs_init`` runs in ``init()``, which the daemon calls after it forked
  (libgfapi is not fork-safe), so CHILD_UP (the answer to PARENT_UP) comes only after
  the volume answered. An unreachable server, an unknown volume or a bad client volfile
  fails ``init()`` with a one-line error: no mount (the bad volfile case leaves
  GlusterFS's global volfile parser unusable for the rest of the process: harmless for
  the daemon, which exits). When the volume becomes unreachable (every brick of a
  replica set gone or frozen) calls fail with ENOTCONN (a frozen brick after
  protocol/client's ping-timeout, once per brick replicate tries; libgfapi's EBADFD
  for a file opened before, whose connection was lost, becomes ENOTCONN too): the
  first such failure logs it, naming the volume, and sends CHILD_DOWN up the graph,
  the first success after it CHILD_UP. ``glfs_fini`` of a running volume is never called: it
  takes 9-10 s, and run in a background thread it aborted the process (SIGABRT,
  GlusterFS 10.3, measured in the test suite); fini() unregisters the upcalls and drops
  every handle, and the daemon's exit closes the connections. An in-process graph
  (tests, the harness) keeps libgfapi's threads until the process ends.
- Coherence: upcalls from the bricks (features/upcall; the client volfile's or the
  volume's ``features.cache-invalidation on``) about files changed by other clients
  become ``InvalidateInode`` / ``InvalidateEntry`` upcalls up the graph, which the FUSE
  bridge turns into kernel invalidations (gfapi_upcall), attributes and pages.  They
  are taken from libgfapi's queue every ``upcall-poll-interval`` (a registered callback
  costs a libgfapi synctask per notice).  The bricks' notice that they forgot an object
  this client removed itself is dropped.
- Reads: a read continuing the previous one (at least 32 KiB, not O_DIRECT) starts the
  read of the same size after it, so the kernel's read-ahead READs run in parallel, as
  with GlusterFS's own client; a write, truncate or upcall drops it (gfapi_io).
- Page cache: an open lets the kernel keep the file's pages (the ``keep_cache`` hint)
  when its mtime, ctime and size in the last attributes answered are those of its
  previous open and no upcall came about it since (gfapi_io; docs/gluster.md).
- Listings: a listing step reads as many entries as the kernel's buffer holds, in one
  worker call (libgfapi fetches 128 KiB of them per network request).  A plain READDIR
  asks the bricks for READDIRP too: their READDIR's inode numbers are the bricks' own,
  not ``st_ino``; option readdir-names-only trades that for speed (docs/gluster.md,
  "The cold listing").
- Closes: a RELEASE is answered at once and the file's close (libgfapi's FLUSH,
  replicate's post-op and unlock, RELEASE) runs in a worker while the next requests
  go on, at most 4 at a time; a file with a lock owner's descriptor is closed first
  (its locks go with it); ``drain`` waits for the closes still running the trio way (a
  graph switch drains the retired graph), ``fini`` for what is left, at most
  ``CLOSE_WAIT`` in all (gfapi_close).
- Close-to-open: with write-behind in libgfapi's graph, close(2)'s FLUSH of a file
  written since the last one goes through that graph, so close(2) returns once the writes
  landed; every FLUSH and close carries a lock owner of its own, so it drops no other
  owner's locks (gfapi_close).
- Renames go to the bricks without ``glfs_h_rename``'s two forced lookups when this
  client knows the object renamed, does not know one under the new name, and option
  direct-rename is on (off by default: it relies on GlusterFS internals; gfapi_rename).
- Limits: libgfapi has no renameat2: RENAME_EXCHANGE is EINVAL and RENAME_NOREPLACE is a
  lookup then a rename (not atomic against another client); flock is a whole-file POSIX
  lock of the open file's owner (as GlusterFS's own FUSE client does), so a flock and a
  POSIX lock of another owner conflict; ``resolve`` of a forgotten inode is ESTALE (a
  gfid does not fit a 64-bit nodeid). copy_file_range copies through this client
  (libgfapi's own reached one replica only).

The code is split by concern: gfapi (options, lifecycle, calling the library),
gfapi_nodes (inodes: handles, names, forget), gfapi_names (namespace fops), gfapi_io
(open files, directories), gfapi_locks (locks), gfapi_close (flush and release), gfapi_attr
(attributes and xattrs), gfapi_upcall (invalidations), gfapi_workers (the worker
threads), gfapi_rename (rename without lookups), gfapi_binding (ctypes).
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Any, Callable, Optional

from ..core.errors import FopError
from ..core.events import Event
from ..core.options import Option
from ..core.translator import Translator
from .gfapi_attr import GfapiAttr
from .gfapi_close import GfapiClose, wait_closes
from .gfapi_io import GfapiIo
from .gfapi_locks import GfapiLocks
from .gfapi_names import GfapiNames
from .gfapi_nodes import GfapiNodes, Node
from .gfapi_workers import Workers

CLOSE_WAIT = 10.0          # s fini waits, in all, for the closes run behind releases
LOG_LEVELS = {"none": 0, "emerg": 1, "alert": 2, "critical": 3, "error": 4, "warning": 5,
              "notice": 6, "info": 7, "debug": 8, "trace": 9}


def _binding() -> Any:
    """gfapi_binding, imported on first use: a graph without storage/gfapi never needs
    libgfapi, and a missing library is a one-line init error naming the package."""
    from . import gfapi_binding
    return gfapi_binding


class Gfapi(GfapiNames, GfapiNodes, GfapiAttr, GfapiIo, GfapiLocks, GfapiClose,
            Translator):
    """storage/gfapi: a GlusterFS volume through libgfapi (GlusterFS's client library)."""
    type = "storage/gfapi"
    children_range = (0, 0)
    # POSIX locks and flocks are the bricks' (features/locks), so they hold across
    # clients: the bridge negotiates POSIX_LOCKS/FLOCK_LOCKS and sends them here
    handles_locks = True
    # flush closes the closing owner's lock descriptors (its locks go) and pushes what
    # libgfapi's own write-behind holds of a written file (gfapi_close): close(2)
    # returns once the writes are on the bricks, whoever holds the locks
    needs_flush = True
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
                    "/var/log/glusterfs/xlfs-VOLUME.log, GlusterFS's own default place).",
                    own_file=True),
        Option.str("log-level", "warning", "libgfapi's log level.",
                   values=tuple(LOG_LEVELS)),
        Option.int("io-thread-count", 16, "Most libgfapi calls running at once (each "
                   "blocks a worker thread).", min=1, max=1024),
        Option.time("inline-wait", "2ms", "How long the event loop's thread waits, "
                    "blocked, for a library call made while no other call runs; an "
                    "answer within it finishes the request inline, a later one comes "
                    "back the ordinary way. 0: never wait.", min=0, max=1),
        Option.time("upcall-poll-interval", "20ms", "How often libgfapi's queue of "
                    "upcalls (other clients' changes) is looked at: the most a kernel "
                    "invalidation comes later than the bricks' notice.", min=0.001, max=10),
        Option.bool("readdir-names-only", False, "Answer a plain READDIR with the "
                    "bricks' READDIR (names only) instead of their READDIRP (a stat of "
                    "every entry). Faster, but the inode numbers listed are then the "
                    "bricks' own, not the files' (st_ino, from the gfid): off."),
        Option.bool("direct-rename", False, "Rename without libgfapi's two forced "
                    "lookups of the names (glfs_h_rename's): the rename alone, on the "
                    "handles this client knows, through GlusterFS's own syncop_rename. "
                    "Relies on GlusterFS internals beyond libgfapi's public API "
                    "(gfapi_rename), hence off by default; where its checks fail: "
                    "glfs_h_rename."),
        Option.int("readdir-batch", 0, "Most entries one listing step reads in one "
                   "worker call (0: as many as the kernel's buffer holds; storage/gfapi "
                   "read at most 256 before, kept to measure against).", min=0),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._b: Any = None
        self._fs: Optional[int] = None
        self._live: dict[int, Node] = {}
        self._by_name: dict[tuple[int, bytes], Node] = {}   # names looked up -> node
        self._workers = Workers(self.opts.io_thread_count, f"gfapi-{self.name}",
                                self.opts.inline_wait)
        self._upcalls: Any = None
        self._source = ""
        self._label = ""              # the volume's name and where it came from, for logs
        self._down = False            # the last call failed with ENOTCONN
        self._kept = 0                # opens that let the kernel keep its page cache
        self._read_ahead_used = 0     # reads answered by a read started ahead
        self._direct_rename: Any = None   # gfapi_rename.DirectRename, or None
        self._closing: list = []      # closes of released files, maybe still running
        self._closed_behind = 0       # releases answered before their close ran
        self._holds_writes = False    # libgfapi's graph has performance/write-behind
        self._lock_waits: dict = {}   # id(frame) -> [cancel scope, its try] (gfapi_locks)
        self._tries: dict = {}        # owner glfd -> lock tries running on it
        self._undone = 0              # locks granted after their request gave up, undone
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
                self._label = f"{_top_volume(o.volfile) or volname} (client volfile " \
                              f"{o.volfile})"
            else:
                servers = [o.volfile_server] + [
                    s for s in o.backup_volfile_servers.replace(",", " ").split() if s]
                for host in servers:
                    b.check(b.lib.glfs_set_volfile_server(
                        fs, o.volfile_server_transport.encode(), host.encode(),
                        o.volfile_server_port), f"glfs_set_volfile_server {host}")
                self._source = f"{','.join(servers)}:{o.volfile_server_port}/{o.volume}"
                self._label = f"{o.volume} (from {self._source})"
            log_file = o.log_file or f"/var/log/glusterfs/xlfs-{volname}.log"
            if b.lib.glfs_set_logging(fs, log_file.encode(), LOG_LEVELS[o.log_level]) < 0:
                self.log.warning("%s: cannot log to %s", self.name, log_file)
                b.lib.glfs_set_logging(fs, b"/dev/null", 0)
            self._log_file = log_file
            logged = os.path.getsize(log_file) if os.path.isfile(log_file) else 0
            if b.lib.glfs_init(fs) != 0:
                err = ctypes.get_errno()
                why = os.strerror(err) if err else "glfs_init failed"
                if o.volfile:        # the parser's own words name the line, not errno
                    why = _first_logged_error(log_file, logged) or why
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
        self._holds_writes = _holds_writes(b, fs, o.volfile)
        ino = st.st_ino
        if self.itable.root.ino != ino:
            self.itable.set_root_ino(ino)
        if o.direct_rename:
            from .gfapi_rename import DirectRename
            self._direct_rename = DirectRename.probe(fs, root, b.extract_gfid(root))
            if self._direct_rename is None:
                self.log.info("%s: renames go through glfs_h_rename (this libgfapi does "
                              "not pass gfapi_rename's checks)", self.name)
        node = Node(root, ino, st.st_mode)
        self._live[ino] = node
        self.itable.root.ctx[self] = node
        from .gfapi_upcall import Upcalls
        self._upcalls = Upcalls(self, b, fs, o.upcall_poll_interval)
        self.log.info("%s: GlusterFS volume %s is up", self.name, self._label)

    def fini(self) -> None:
        fs, self._fs = self._fs, None
        if fs is None:
            return
        if self._upcalls is not None:
            self._upcalls.stop()
        left = wait_closes(self._closing, CLOSE_WAIT)   # their close must happen
        if left:
            self.log.warning("%s: %d closes of released files still running at fini "
                             "(after %.0f s)", self.name, left, CLOSE_WAIT)
        self._closing.clear()
        for inode in self.itable:
            inode.ctx.pop(self, None)
        self._live.clear()
        self._by_name.clear()
        # glfs_fini is not called: see the module docstring

    async def drain(self) -> None:
        """Wait (the trio way: the loop serves on) for the closes run behind answered
        releases (Graph.drain; a graph switch drains the retired graph before its
        ``fini``, which would otherwise block the loop waiting for them)."""
        while True:
            running = [job for job in self._closing if not job.finished]
            self._closing = running
            if not running:
                return
            for job in running:
                try:
                    await self._workers.result(job, abandon=False)
                except Exception as exc:  # noqa: BLE001 - a failed close: logged, done
                    self.log.warning("%s: a close behind a release failed: %s",
                                     self.name, exc)

    def reconfigured(self, old: Any) -> None:
        self._workers.resize(self.opts.io_thread_count)
        self._workers.wait = self.opts.inline_wait
        if self._upcalls is not None:
            self._upcalls.interval = self.opts.upcall_poll_interval
        for key in ("volfile-server", "volume", "volfile"):
            if self.opts[key] != old[key]:
                self.log.warning("%s: option %s cannot change at run time", self.name, key)

    def locks_held(self) -> int:
        """Open files holding a lock owner's descriptor: a lock this client took may be
        held on the bricks until that owner's flush (counted per file, conservatively:
        an owner that unlocked everything still counts until it closes).  A graph switch
        is refused while this is not 0."""
        return sum(1 for node in self._live.values() for of in node.opens if of.owners)

    def dump(self) -> dict[str, Any]:
        return {"source": self._source, "live-inodes": len(self._live),
                "threads-busy": self._workers.busy,
                "io-thread-count": self._workers.size,
                "calls-abandoned": self._workers.abandoned,
                "calls-answered-inline": self._workers.inline,
                "inline-waits-run-out": self._workers.inline_missed,
                "opens-keeping-page-cache": self._kept,
                "reads-answered-ahead": self._read_ahead_used,
                "releases-closed-behind": self._closed_behind,
                "locks-undone-after-interrupt": self._undone,
                "renames-without-lookups": (self._direct_rename.sent
                                            if self._direct_rename else 0),
                **(self._upcalls.dump() if self._upcalls is not None else {})}

    # -- calling the library -----------------------------------------------------------
    def _fsp(self) -> int:
        if self._fs is None:
            raise FopError(errno.ENOTCONN)
        return self._fs

    async def _call(self, frame: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread, as the caller (uid, gid, groups)."""
        creds = self._creds(frame)
        if self._upcalls is not None and not self._upcalls.started:
            self._upcalls.start()
        self._interruptible(frame)
        try:
            result = await self._workers.run(self._as_caller, creds, fn, args)
        except OSError as exc:
            if exc.errno in (errno.EBADFD, errno.ENOTCONN):
                raise self._unreachable(exc)
            raise
        if self._down:
            self._down = False
            self.log.warning("%s: GlusterFS volume %s answers again: CHILD_UP", self.name,
                             self._label)
            self.notify_parents(Event.CHILD_UP, None)
        return result

    def _unreachable(self, exc: OSError) -> OSError:
        """``exc`` (ENOTCONN, or EBADFD made ENOTCONN), after logging the volume
        unreachable and sending CHILD_DOWN, once until a call succeeds again.  EBADFD:
        protocol/client lost the open file with its brick's connection (it reopens it
        on reconnecting), which applications know as ENOTCONN, not as errno 77."""
        if exc.errno == errno.EBADFD:
            what = (exc.strerror or "a call").split(":")[0]
            exc = OSError(errno.ENOTCONN, (
                f"{what}: {os.strerror(errno.ENOTCONN)} (libgfapi: "
                f"{os.strerror(errno.EBADFD)}: the open file's brick connection was lost)"))
        if not self._down:
            self._down = True
            why = exc.strerror or "a call"
            if os.strerror(exc.errno) not in why:
                why = f"{why}: {os.strerror(exc.errno)}"
            self.log.warning("%s: GlusterFS volume %s is unreachable (%s): CHILD_DOWN; "
                             "requests fail with ENOTCONN until it answers again",
                             self.name, self._label, why)
            self.notify_parents(Event.CHILD_DOWN, None)
        return exc

    @staticmethod
    def _interruptible(frame: Any) -> None:
        """An interrupt of the request cancels its scope: a call waited for the trio
        way is abandoned (its thread finishes it by itself)."""
        if frame is not None and frame.interrupt is not None:
            frame.on_interrupt(_abandon)

    @staticmethod
    def _creds(frame: Any) -> tuple:
        """(uid, gid, groups) a library call runs as."""
        if frame is None:
            return (0, 0, ())
        return (frame.uid, frame.gid, tuple(frame.groups) if frame.uid else ())

    def _as_caller(self, creds: tuple, fn: Callable[..., Any], args: tuple) -> Any:
        self._b.set_credentials(*creds)
        return fn(*args)

    def _start_upcalls(self) -> None:
        if self._upcalls is not None and not self._upcalls.started:
            self._upcalls.start()

    # -- the rest ---------------------------------------------------------------------
    async def resolve(self, frame, nodeid):
        raise FopError(errno.ESTALE)        # a gfid does not fit a 64-bit export key

    async def ipc(self, frame, op, xdata=None):
        raise FopError(errno.EOPNOTSUPP)


def _abandon() -> None:
    """Interrupt handler: nothing to undo; the bridge then cancels the request's scope,
    which abandons the worker thread (its call completes by itself)."""


def _first_logged_error(log_file: str, start: int) -> str:
    """The message of the first error libgfapi logged past byte ``start`` of
    ``log_file`` (``[date] E [MSGID: n] [where] 0-parser: MESSAGE``), or ""."""
    try:
        with open(log_file, "rb") as f:
            f.seek(start)
            for raw in f:
                line = raw.decode(errors="replace").strip()
                if "] E [" in line:
                    return line.rsplit("] ", 1)[-1].split(": ", 1)[-1]
    except OSError:
        pass
    return ""


def _top_volume(volfile: str) -> str:
    """The top volume of a GlusterFS client volfile (the last one no other volume
    lists as a subvolume, as GlusterFS picks it), or "" when it cannot be read."""
    try:
        with open(volfile, encoding="utf-8", errors="replace") as f:
            words = [line.split() for line in f]
    except OSError:
        return ""
    names = [w[1] for w in words if len(w) >= 2 and w[0] == "volume"]
    below = {name for w in words if w and w[0] == "subvolumes" for name in w[1:]}
    tops = [name for name in names if name not in below]
    return tops[-1] if tops else ""


def _holds_writes(b: Any, fs: int, volfile: Optional[str]) -> bool:
    """Whether the volume's client graph has write-behind, which answers writes before
    the bricks have them (a flush waits for them): the client volfile given, or the
    one glusterd sent (``glfs_get_volfile``); True when neither can be read (the safe
    answer: a close(2) of a written file then flushes)."""
    text = b""
    if volfile:
        try:
            with open(volfile, "rb") as f:
                text = f.read()
        except OSError:
            return True
    else:
        # asked for its size first: glfs_get_volfile copies ``len`` bytes whatever
        # the volfile's length (api/src/glfs.c), so the buffer must be exact
        need = b.lib.glfs_get_volfile(fs, None, 0)
        if need >= 0:
            return True
        buf = ctypes.create_string_buffer(-need)
        if b.lib.glfs_get_volfile(fs, buf, -need) != -need:
            return True
        text = buf.raw
    return b"performance/write-behind" in text


def _fini_in_background(b: Any, fs: int) -> None:
    """Release a glfs_t whose glfs_init failed (nothing runs on it yet): in a daemon
    thread, since even that can take seconds."""
    t = threading.Thread(target=b.lib.glfs_fini, args=(fs,), name="glfs_fini", daemon=True)
    t.start()
