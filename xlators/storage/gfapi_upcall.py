"""storage/gfapi's upcalls: changes made by other clients become invalidations.

The bricks' features/upcall tells every client that holds a file when another client
changes it (``cache-invalidation on``).  libgfapi queues each notice (once the
application asked for them with ``glfs_h_poll_upcall``), and one thread of ours,
``gfapi-upcalls``, takes them from the queue every ``upcall-poll-interval`` (20 ms)
with ``glfs_h_poll_upcall``.  It copies what it needs (the gfids and flags: the notice
is freed right after) into a queue and wakes one trio task through a pipe; the task
maps gfids to live inodes and sends ``InvalidateInode`` (attributes and data) for the
changed object and its parents, and ``InvalidateEntry`` for the names under which this
client knows an object that was removed or renamed (a notice carries no names:
storage/gfapi remembers the names it looked up).  The FUSE bridge turns those into
kernel notifications; translators above see them as UPCALL events.  Nothing here
blocks the event loop or waits for the kernel.

Why polled, not ``glfs_upcall_register``'s callback: with a callback registered,
libgfapi runs every notice as a synctask of its own (a new task with its own stack,
scheduled on its syncenv threads, which all wake for it) before the callback takes the
GIL.  The bricks send one UP_FORGET per brick for each of this client's own unlinks and
rmdirs, so that was two synctasks per removal: measured, an unlink loop ran at half
the speed with the callback registered (docs/gluster.md, "Upcalls: polled").  Queued
notices cost libgfapi's network thread a copy and a list insertion.  The price is the
delay: a notice is seen at most one interval late, and the thread wakes once per
interval while the volume is mounted.
"""
from __future__ import annotations

import collections
import ctypes
import os
import threading
import time
from typing import Any

import trio

from ..core.upcall import InvalidateEntry, InvalidateInode

GONE_FLAGS_NAMES = ("UP_NLINK", "UP_RENAME", "UP_FORGET")
POLL_INTERVAL = 0.02          # seconds between two looks at libgfapi's queue
REMOVED_REMEMBERED = 4096      # own removals whose UP_FORGET is dropped (the newest)
OWN_FORGET_WINDOW = 5.0        # seconds after an own removal its UP_FORGETs are dropped


def gfid_ino(gfid: bytes) -> int:
    """GlusterFS's inode number of a gfid (what every stat reports): its low 64 bits."""
    return int.from_bytes(gfid[8:16], "big")


class Upcalls:
    def __init__(self, xl: Any, b: Any, fs: int, interval: float = POLL_INTERVAL) -> None:
        self.xl = xl
        self.b = b
        self.fs = fs
        self.started = False
        self.received = 0
        self.sent = 0
        self._queue: collections.deque = collections.deque(maxlen=65536)
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._closed = False
        self._gone = 0
        for name in GONE_FLAGS_NAMES:
            self._gone |= getattr(b, name)
        self._forget = b.UP_FORGET
        # inode numbers of the objects this client removed a name of lately, oldest
        # first: read in libgfapi's threads, written in the loop's and the workers'
        # (each operation one step under the GIL; see removed())
        # object -> when this client removed a name of it (time.monotonic)
        self.removed_here: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.own_forgets = 0
        self.interval = interval
        self.polls = 0
        self._stop = threading.Event()
        self._thread: Any = None
        # the first poll tells libgfapi to queue notices from now on
        up = ctypes.c_void_p()
        self.registered = b.lib.glfs_h_poll_upcall(fs, ctypes.byref(up)) == 0
        if up.value:
            b.lib.glfs_free(up)
        if not self.registered:
            xl.log.warning("%s: upcalls unavailable: changes by other clients are seen "
                           "only after the cache timeouts", xl.name)

    # -- the polling thread ------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> int:
        """Take every queued notice from libgfapi; how many there were."""
        lib = self.b.lib
        up = ctypes.c_void_p()
        found = 0
        self.polls += 1
        while not self._stop.is_set():
            up.value = None
            if lib.glfs_h_poll_upcall(self.fs, ctypes.byref(up)) != 0 or not up.value:
                break                           # empty (ENOENT), or shutting down
            found += 1
            self._take(up.value)
        if found:
            with self._lock:
                if not self._closed:
                    try:
                        os.write(self._wfd, b"\0")
                    except BlockingIOError:
                        pass                       # the task is awake already
        return found

    def _take(self, up: int) -> None:
        """Queue what one notice says for the event loop, unless it is news of this
        client's own removal; ``up`` is freed."""
        b = self.b
        lib = b.lib
        try:
            if lib.glfs_upcall_get_reason(up) != b.UPCALL_INODE_INVALIDATE:
                return
            ev = lib.glfs_upcall_get_event(up)
            if not ev:
                return
            flags = lib.glfs_upcall_inode_get_flags(ev)
            obj = lib.glfs_upcall_inode_get_object(ev)
            ino = gfid_ino(b.extract_gfid(obj)) if obj else 0
            if flags == self._forget and self.own_forget(ino):
                self.own_forgets += 1          # news of our own removal: nothing new
                return
            inos = [ino]
            for getter in (lib.glfs_upcall_inode_get_pobject,
                           lib.glfs_upcall_inode_get_oldpobject):
                obj = getter(ev)
                inos.append(gfid_ino(b.extract_gfid(obj)) if obj else 0)
            self._queue.append((flags, *inos))
        except Exception:  # noqa: BLE001 - one bad notice must not stop the thread
            self.xl.log.exception("upcall handling failed")
        finally:
            lib.glfs_free(up)

    # -- the event loop ----------------------------------------------------------------
    def start(self) -> None:
        try:
            self.xl.spawn(self._reader)
        except RuntimeError:
            return                              # no running graph yet
        self.started = True
        if self._thread is None and self.registered:
            self._thread = threading.Thread(target=self._poll_loop, daemon=True,
                                            name="gfapi-upcalls")
            self._thread.start()

    async def _reader(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self._rfd)
                try:
                    os.read(self._rfd, 4096)
                except BlockingIOError:
                    pass
                while self._queue:
                    self._deliver(*self._queue.popleft())
        except (trio.ClosedResourceError, OSError):
            return

    def _deliver(self, flags: int, ino: int, pino: int, oldpino: int) -> None:
        self.received += 1
        xl = self.xl
        table = xl.itable
        inode = table.find(ino) if ino else None
        if inode is not None:
            node = inode.ctx.get(xl)
            if node is not None:
                node.caps_absent_until = 0.0       # its xattrs may have changed
                node.opened = None                 # the next open drops the pages too
                xl._drop_ahead(node)               # nor keeps what was read ahead
            xl.upcall(InvalidateInode(inode, 0, 0))    # attributes and all its pages
            self.sent += 1
            if flags & self._gone:
                for parent_ino, name in list(xl.names_of(inode)):
                    parent = table.find(parent_ino)
                    if parent is not None:
                        xl.upcall(InvalidateEntry(parent, name))
                        self.sent += 1
        for p in (pino, oldpino):
            parent = table.find(p) if p else None
            if parent is not None:
                xl.upcall(InvalidateInode(parent, 0, 0))
                self.sent += 1

    def removed(self, ino: int, removing: bool = True) -> None:
        """This client removes a name of object ``ino`` (unlink, rmdir; False: that
        failed).  When the bricks then drop the inode they send UP_FORGET to every
        client that used it, the remover too (one per brick: two per removal on a
        replica-2 volume).  For the remover it tells nothing new, so it is dropped in
        the polling thread, before it wakes the event loop.  Another client's removal
        still comes with its own UP_NLINK notice."""
        if not ino:
            return
        if not removing:
            self.removed_here.pop(ino, None)
            return
        self.removed_here[ino] = time.monotonic()
        self.removed_here.move_to_end(ino)
        if len(self.removed_here) > REMOVED_REMEMBERED:
            self.removed_here.popitem(last=False)

    def own_forget(self, ino: int) -> bool:
        """Whether an UP_FORGET of ``ino`` is news of this client's own removal: one came
        within :data:`OWN_FORGET_WINDOW` seconds.  Not for longer: a name removed here
        may not have been the object's last (``ln f g; rm f``), and a much later
        UP_FORGET of ``g``'s object (a brick dropping it from its own cache) must go
        through, or this client would stop hearing of other clients' changes to it."""
        when = self.removed_here.get(ino)
        if when is None:
            return False
        if time.monotonic() - when <= OWN_FORGET_WINDOW:
            return True
        self.removed_here.pop(ino, None)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.registered:
            # no events registered: libgfapi stops queueing notices
            self.b.lib.glfs_upcall_unregister(self.fs, self.b.EVENT_INODE_INVALIDATE)
        with self._lock:
            self._closed = True
            try:
                trio.lowlevel.notify_closing(self._rfd)
            except RuntimeError:
                pass                            # not inside trio
            for fd in (self._rfd, self._wfd):
                os.close(fd)

    def dump(self) -> dict[str, Any]:
        return {"upcalls-registered": self.registered, "upcalls-received": self.received,
                "upcall-polls": self.polls,
                "upcalls-of-own-removals-dropped": self.own_forgets,
                "invalidations-sent": self.sent}
