"""storage/posix option ``watch-brick``: tell the kernel about changes made in the brick.

    volume posix
        type storage/posix
        option directory /srv/brick
        option watch-brick on
    end-volume

GlusterFS has no such option (its bricks are never changed behind its back).  xlfs serves a
plain local directory, which other programs may change directly; with long kernel cache
timeouts (``--attribute-timeout=60 --entry-timeout=60 --negative-timeout=60``) such changes
would stay invisible through the mount for up to a minute.  With ``watch-brick on``, posix
watches its brick with inotify and sends upcalls, which the FUSE bridge turns into kernel
notifications (fuse_bridge/notify.py, on its own thread: see docs/deadlocks.md):

- a file written or truncated in the brick (IN_MODIFY, IN_CLOSE_WRITE): ``InvalidateInode``
  of that file (attributes and cached data);
- its attributes changed (IN_ATTRIB): ``InvalidateInode`` with offset -1 (attributes only);
- a name created or moved in (IN_CREATE, IN_MOVED_TO), moved out (IN_MOVED_FROM):
  ``InvalidateEntry(parent, name)`` (this also drops a cached *negative* entry), and
  ``InvalidateInode`` (offset -1) of the inode the new name is when the table knows it:
  a hard link changed its link count, a move its ctime;
- a name deleted (IN_DELETE): ``DeleteEntry(parent, child, name)`` when posix knows which
  inode that name was (it was looked up), else ``InvalidateEntry`` and, for a file,
  ``InvalidateInode`` (offset -1) of every held file known to have had several names
  (inotify does not say which inode lost the name: its link count may be stale);
- and, for every name change, ``InvalidateInode(parent, -1)`` (the directory's mtime and
  link count).

What is watched: every directory the kernel knows, i.e. every directory inode that has a
posix descriptor.  A watch is added when posix first makes a descriptor for a directory
(lookup, mkdir, readdirp, ...: the ``_entry`` path) and removed on ``forget``.  The events
are read by one trio task (``trio.lowlevel.wait_readable`` on the inotify descriptor),
started with ``spawn()`` by the first lookup or new inode once the graph runs (PARENT_UP
comes before the bridge's nursery exists).  Each wake-up reads every
queued event, drops duplicates and sends one upcall per distinct message; after a batch
the task pauses ``COALESCE`` seconds so that a burst (a large write makes an IN_MODIFY per
write call) becomes one invalidation.

Changes made *through the mount* produce inotify events too.  For the namespace changes
posix makes itself they are matched and dropped: right after the system call returns, with
no await in between (so the reader cannot have read the event yet: fsnotify queues it
before the call returns), create, mknod, mkdir, symlink and link record an IN_CREATE of
(the parent's watch, name), unlink and rmdir an IN_DELETE, rename an IN_MOVED_FROM of the
old name and an IN_MOVED_TO of the new one (``BrickWatch.expect``).  The reader takes one
recorded change per matching event and sends nothing for it, not even the parent's
attributes: the kernel invalidates those itself after a CREATE, MKNOD, MKDIR, SYMLINK,
LINK, UNLINK, RMDIR or RENAME reply (fs/fuse/dir.c, ``fuse_dir_changed``), and the
translators above posix see the reply.  Before, the kernel and md-cache dropped the entry
they had just learnt and asked again (docs/benchmarks.md, "What each piece contributes").

This is a count, not a guess by time, and a change made in the brick is never hidden:

- every change in the brick makes its own event, and inotify merges an event only into
  an *identical* (mask, watch, name) one at the tail of the unread queue
  (fs/notify/inotify/inotify_fsnotify.c, ``inotify_merge``/``event_compare``).  Two
  identical namespace events of one name in one directory cannot be adjacent (a name is
  deleted or moved out between two creations, which is an event of that directory), so
  no namespace event is ever merged, and N own changes are exactly N events;
- a directory's namespace changes are made and reported under its lock, in order; the
  events matched are posix's own, or identical ones (the same message), so which of two
  identical events is taken does not matter;
- every change recorded before a read has its event in that read (the reader reads until
  the queue is empty), so whatever is still unmatched after it is dropped and cannot take
  a later event;
- nothing is recorded where no event comes or where it may be read already: a directory
  without a watch, a rename between two names of one inode (the kernel does nothing),
  RENAME_EXCHANGE and RENAME_WHITEOUT (their events keep their invalidations), and any
  call once ``io-threads`` has been on (a call made in a worker thread resumes its fop
  after an await);
- recorded changes are dropped with their watch (``forget``, IN_IGNORED) and on
  IN_Q_OVERFLOW (which invalidates everything anyway); past ``MAX_EXPECTED`` outstanding
  ones, recording pauses until the next read, so the worst case is no matching at all.

IN_MODIFY, IN_ATTRIB and IN_CLOSE_WRITE are never matched (those do merge, so they cannot
be counted): writes, truncates and attribute changes made through the mount still cost an
invalidation of that inode.  The coalescing above bounds that cost.

If the inotify queue overflows (IN_Q_OVERFLOW, more than ``fs.inotify.max_queued_events``
unread), events were lost: every watched directory and every inode posix holds a
descriptor for is invalidated (attributes only), and a warning is logged.  Watches count
against ``fs.inotify.max_user_watches``; when it is reached a warning is logged once and
further directories are served without a watch.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
from typing import Any, Optional

import trio

from xlators.core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode
from xlators.storage.posix_inotify import (
    IN_ATTRIB, IN_CLOEXEC, IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_IGNORED, IN_ISDIR,
    IN_MODIFY, IN_MOVED_FROM, IN_MOVED_TO, IN_NONBLOCK, IN_Q_OVERFLOW, MASK, NAME_EVENTS,
    RENAME_NOREPLACE, libc, parse_events)

log = logging.getLogger("xlfs.storage.posix.watch")

COALESCE = 0.01
_READ_SIZE = 65536
MAX_EXPECTED = 4096     # own changes awaiting their event; past it, matching pauses


class BrickWatch:
    """The inotify watcher of one storage/posix translator (``xl``)."""

    def __init__(self, xl: Any) -> None:
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.xl = xl
        self.fd = fd
        self.wd_ino: dict[int, int] = {}           # watch -> directory's ino (posix's)
        self.ino_wd: dict[int, int] = {}
        self.names: dict[tuple[int, bytes], int] = {}   # (dir ino, name) -> child ino
        self.keys_of: dict[int, set] = {}               # child ino -> its keys in names
        self.linked: set[int] = set()   # held non-directories seen with other names
        self.task_started = False
        self.closed = False
        self.full_warned = False
        # own namespace changes whose inotify event is still unread: (wd, kind, name) ->
        # how many (kind: IN_CREATE, IN_DELETE, IN_MOVED_FROM or IN_MOVED_TO)
        self.expected: dict[tuple[int, int, bytes], int] = {}
        self.n_expected = 0
        self.paused = False        # MAX_EXPECTED was reached: nothing recorded till a read
        self.stats = {"events": 0, "upcalls": 0, "overflows": 0, "watch-failures": 0,
                      "own-events": 0, "own-unmatched": 0, "own-pauses": 0}

    # -- watches ---------------------------------------------------------------------
    def add(self, node: Any) -> None:
        """Watch the directory of posix Node ``node`` (no-op when already watched)."""
        if self.closed or node.ino in self.ino_wd:
            return
        wd = libc.inotify_add_watch(self.fd, f"/proc/self/fd/{node.fd}".encode(), MASK)
        if wd < 0:
            err = ctypes.get_errno()
            self.stats["watch-failures"] += 1
            if err == errno.ENOSPC and not self.full_warned:
                self.full_warned = True
                log.warning("%s: fs.inotify.max_user_watches reached: directories from "
                            "now on are served without a brick watch", self.xl.name)
            elif err != errno.ENOSPC:
                log.debug("inotify_add_watch of ino %d: %s", node.ino, os.strerror(err))
            return
        old = self.wd_ino.get(wd)
        if old is not None and old != node.ino:   # the same directory under another ino
            self.ino_wd.pop(old, None)
        self.wd_ino[wd] = node.ino
        self.ino_wd[node.ino] = wd
        self.start()

    def new_node(self, node: Any, nlink: int = 1) -> None:
        """posix made a descriptor for a new inode: watch it if it is a directory; the
        first one after the graph runs starts the reader task."""
        if node.kind == stat.S_IFDIR:
            self.add(node)
            return
        if nlink > 1:
            self.linked.add(node.ino)
        if not self.task_started:
            self.start()

    def forget(self, node: Any) -> None:
        """posix is closing ``node``'s descriptor: drop its watch and remembered names."""
        self.linked.discard(node.ino)
        keys = self.keys_of.pop(node.ino, None)
        if keys:
            for key in keys:
                if self.names.get(key) == node.ino:
                    del self.names[key]
        wd = self.ino_wd.pop(node.ino, None)
        if wd is not None:
            self.wd_ino.pop(wd, None)
            self._drop_expected(wd)
            if not self.closed:
                libc.inotify_rm_watch(self.fd, wd)

    def looked_up(self, pnode: Any, name: bytes, entry: Any) -> None:
        """Remember which inode ``name`` in ``pnode`` is (for DELETE notifications)."""
        ino = entry.inode.ino
        key = (pnode.ino, name)
        prev = self.names.get(key)
        if prev == ino:
            return
        if prev is not None:
            self.keys_of.get(prev, set()).discard(key)
        self.names[key] = ino
        self.keys_of.setdefault(ino, set()).add(key)
        if not self.task_started:
            self.start()

    # -- own changes --------------------------------------------------------------------
    def expect(self, pnode: Any, name: bytes, kind: int) -> None:
        """posix has just changed ``name`` in directory ``pnode`` itself (``kind``: the
        inotify event that change makes, IN_CREATE, IN_DELETE, IN_MOVED_FROM or
        IN_MOVED_TO): the watcher is to take that one event as its own and send nothing
        for it.  Call right after the system call succeeded, with no await in between
        (the event is queued before the call returns and the reader cannot have read it
        yet).  Nothing is recorded for a directory without a watch, and nothing once
        ``io-threads`` has been on (a call made in a worker thread may already have been
        read when its fop resumes)."""
        if self.paused or self.xl._threads_seen:
            return
        wd = self.ino_wd.get(pnode.ino)
        if wd is None:
            return
        if self.n_expected >= MAX_EXPECTED:     # the worst case is no matching at all
            self.stats["own-pauses"] += 1
            self.expected.clear()
            self.n_expected = 0
            self.paused = True
            return
        key = (wd, kind, name)
        self.expected[key] = self.expected.get(key, 0) + 1
        self.n_expected += 1

    def created(self, pnode: Any, name: bytes) -> None:
        """posix created ``name`` in ``pnode`` (create, mknod, mkdir, symlink, link)."""
        self.expect(pnode, name, IN_CREATE)

    def deleted(self, pnode: Any, name: bytes) -> None:
        """posix removed ``name`` from ``pnode`` (unlink, rmdir)."""
        self.expect(pnode, name, IN_DELETE)

    def renamed(self, opnode: Any, old: bytes, npnode: Any, new: bytes,
                flags: int = 0) -> None:
        """posix renamed ``old`` in ``opnode`` to ``new`` in ``npnode``.  A rename
        onto another name of the same inode succeeds without changing anything and
        without an event (vfs_rename returns early): then the old name is still there,
        and nothing is recorded.  RENAME_EXCHANGE and RENAME_WHITEOUT record nothing
        either (their other events keep their invalidations)."""
        if flags & ~RENAME_NOREPLACE:
            return
        if opnode.ino not in self.ino_wd and npnode.ino not in self.ino_wd:
            return
        if os.access(old, os.F_OK, dir_fd=opnode.fd, follow_symlinks=False):
            return
        self.expect(opnode, old, IN_MOVED_FROM)
        self.expect(npnode, new, IN_MOVED_TO)

    def _own(self, wd: int, kind: int, name: bytes) -> bool:
        """Take one recorded own change matching this event, if there is one."""
        key = (wd, kind, name)
        n = self.expected.get(key)
        if not n:
            return False
        if n == 1:
            del self.expected[key]
        else:
            self.expected[key] = n - 1
        self.n_expected -= 1
        self.stats["own-events"] += 1
        return True

    def _drop_expected(self, wd: Optional[int] = None) -> None:
        """Forget the own changes recorded for watch ``wd`` (None: all of them)."""
        if not self.expected:
            return
        if wd is None:
            self.expected.clear()
            self.n_expected = 0
            return
        for key in [k for k in self.expected if k[0] == wd]:
            self.n_expected -= self.expected.pop(key)

    # -- the reader task --------------------------------------------------------------
    def start(self) -> None:
        """Start the reader task once the graph runs (there is a nursery)."""
        if self.task_started or self.closed:
            return
        try:
            self.xl.spawn(self._reader)
        except RuntimeError:      # no running graph yet: the next fop starts it
            return
        self.task_started = True

    async def _reader(self) -> None:
        try:
            while not self.closed:
                await trio.lowlevel.wait_readable(self.fd)
                data = self.read_available()
                if data:
                    self.dispatch(data)
                await trio.sleep(COALESCE)
        except (trio.ClosedResourceError, OSError) as exc:
            if not self.closed:
                log.error("%s: brick watch stopped: %s", self.xl.name, exc)
        finally:
            self.task_started = False

    def read_available(self) -> bytes:
        chunks = []
        while not self.closed:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def dispatch(self, data: bytes) -> int:
        """Turn raw inotify events into upcalls (duplicates dropped); returns how many.
        ``data`` is everything the queue held: an own change recorded before it was read
        and still unmatched after it will never be matched (it cannot happen with the
        checks in ``renamed``, short of a race with a change in the brick), and is
        dropped so that it cannot take a later event of the brick's."""
        msgs = self.messages(parse_events(data))
        if self.expected:
            self.stats["own-unmatched"] += self.n_expected
            self._drop_expected()
        self.paused = False
        for msg in msgs:
            self.xl.upcall(msg)
        self.stats["upcalls"] += len(msgs)
        return len(msgs)

    # -- events -> messages ---------------------------------------------------------------
    def messages(self, events: list[tuple[int, int, bytes]]) -> list[Any]:
        itable = self.xl.itable
        out: dict[Any, Any] = {}            # key -> message, in first-seen order

        def put(key: Any, msg: Any) -> None:
            if key not in out:
                out[key] = msg
        for wd, mask, name in events:
            self.stats["events"] += 1
            if mask & IN_Q_OVERFLOW:
                self._overflow(put)
                continue
            if mask & IN_IGNORED:          # the kernel removed the watch (dir deleted)
                ino = self.wd_ino.pop(wd, None)
                if ino is not None and self.ino_wd.get(ino) == wd:
                    del self.ino_wd[ino]
                self._drop_expected(wd)
                continue
            dino = self.wd_ino.get(wd)
            if dino is None:
                continue
            if mask & NAME_EVENTS and self.expected and self._own(wd, mask & NAME_EVENTS, name):
                if mask & (IN_DELETE | IN_MOVED_FROM):
                    self._forget_name((dino, name))
                continue                   # posix's own change: its reply told everyone
            parent = itable.find(dino)
            if parent is None:
                continue
            if not name:                   # the watched directory itself
                if mask & IN_ATTRIB:
                    put(("attr", parent.nodeid), InvalidateInode(parent, -1, 0))
                continue
            if mask & NAME_EVENTS:
                if ("data", parent.nodeid) not in out:
                    put(("attr", parent.nodeid), InvalidateInode(parent, -1, 0))
                key = (dino, name)
                if mask & IN_DELETE:
                    child = self._forget_name(key)
                    inode = itable.find(child) if child is not None else None
                    if inode is not None:
                        put(("del", parent.nodeid, name), DeleteEntry(parent, inode, name))
                        continue
                    if not mask & IN_ISDIR:     # which file lost a name? any held one
                        self._linked_changed(put)   # with several may have
                elif mask & IN_MOVED_FROM:
                    self._forget_name(key)
                else:
                    # a held inode's new name: a hard link (nlink) or a move (ctime)
                    inode = self._child(dino, name, linked=True)
                    if inode is not None and ("data", inode.nodeid) not in out:
                        put(("attr", inode.nodeid), InvalidateInode(inode, -1, 0))
                put(("entry", parent.nodeid, name), InvalidateEntry(parent, name))
                continue
            if mask & (IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB):
                inode = self._child(dino, name)
                if inode is None:
                    continue
                if mask & (IN_MODIFY | IN_CLOSE_WRITE):
                    out.pop(("attr", inode.nodeid), None)
                    put(("data", inode.nodeid), InvalidateInode(inode, 0, 0))
                elif ("data", inode.nodeid) not in out:
                    put(("attr", inode.nodeid), InvalidateInode(inode, -1, 0))
        return list(out.values())

    def _linked_changed(self, put: Any) -> None:
        """A name nobody looked up was removed: inotify does not say which inode it was,
        so the attributes (link count) of every held file known to have several names
        are invalidated."""
        find = self.xl.itable.find
        for ino in self.linked:
            inode = find(ino)
            if inode is not None:
                put(("attr", inode.nodeid), InvalidateInode(inode, -1, 0))

    def _forget_name(self, key: tuple[int, bytes]) -> Optional[int]:
        child = self.names.pop(key, None)
        if child is not None:
            self.keys_of.get(child, set()).discard(key)
        return child

    def _child(self, dino: int, name: bytes, linked: bool = False) -> Any:
        """The table's inode that ``name`` in directory ``dino`` is now, if any;
        ``linked``: a file found with several names joins ``self.linked``."""
        xl = self.xl
        dnode = xl._live.get(dino)
        if dnode is None:
            return None
        try:
            st = os.stat(name, dir_fd=dnode.fd, follow_symlinks=False)
        except OSError:
            ino = self.names.get((dino, name))
            return xl.itable.find(ino) if ino is not None else None
        ino = xl._known_ino(st)
        inode = xl.itable.find(ino) if ino is not None else None
        if linked and inode is not None and st.st_nlink > 1 \
                and not stat.S_ISDIR(st.st_mode):
            self.linked.add(ino)
        return inode

    def _overflow(self, put: Any) -> None:
        self.stats["overflows"] += 1
        self._drop_expected()              # their events may be among the lost ones
        log.warning("%s: inotify queue overflow: brick changes were lost; invalidating "
                    "the attributes of every inode posix holds", self.xl.name)
        for ino in list(self.xl._live):
            inode = self.xl.itable.find(ino)
            if inode is not None:
                put(("attr", inode.nodeid), InvalidateInode(inode, -1, 0))

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            trio.lowlevel.notify_closing(self.fd)
        except RuntimeError:      # not inside trio (fini after the run): nobody waits
            pass
        os.close(self.fd)
        self.wd_ino.clear()
        self.ino_wd.clear()
        self.names.clear()
        self.keys_of.clear()
        self._drop_expected()

    def dump(self) -> dict[str, Any]:
        return {"watch.directories": len(self.ino_wd), "watch.names": len(self.names),
                "watch.expected": self.n_expected,
                **{f"watch.{k}": v for k, v in self.stats.items()}}


def start(xl: Any) -> Optional[BrickWatch]:
    """A watcher for posix translator ``xl`` if its ``watch-brick`` option is on, with
    every directory it already holds watched; else None."""
    if not xl.opts.watch_brick:
        return None
    try:
        watch = BrickWatch(xl)
    except OSError as exc:
        log.warning("%s: watch-brick: %s; brick changes will show only when the kernel's "
                    "caches time out", xl.name, exc)
        return None
    for node in list(xl._live.values()):
        if stat.S_ISDIR(node.mode):
            watch.add(node)
    return watch


def stop(xl: Any) -> None:
    """Close ``xl``'s watcher, if any (fini)."""
    if xl._watch is not None:
        xl._watch.close()
        xl._watch = None


def reconfigure(xl: Any) -> None:
    """Apply a changed ``watch-brick`` at run time."""
    if xl.opts.watch_brick and xl._watch is None and xl._root is not None:
        xl._watch = start(xl)
    elif not xl.opts.watch_brick:
        stop(xl)
