"""The kernel notification channel: INVAL_INODE, INVAL_ENTRY, DELETE and STORE.

A notification written to /dev/fuse is not like a reply.  A reply never blocks; a
notification takes kernel locks inside ``write()`` and can wait on them for as long as a
request that holds them is pending (seed 002, docs/deadlocks.md):

- INVAL_ENTRY and DELETE lock the parent directory's inode (``i_rwsem``), which a LOOKUP,
  CREATE, MKDIR, UNLINK, RENAME ... of that directory holds while it waits for our reply;
- INVAL_INODE (with data) and STORE lock page-cache folios, which a page-cache READ holds
  while it waits for our reply.

If the thread that writes the replies also wrote the notification, the reply that would
release the lock could never be written: the whole filesystem deadlocks.  So:

- ``Notifier.send(msg)`` (called on the event loop, from ``Session._graph_event``, when a
  translator calls ``upcall()``) only encodes the message and puts it on a bounded queue
  (``put_nowait``): it never blocks and never waits for the kernel;
- one dedicated OS thread (daemon) takes messages off the queue and writes them, on its
  own duplicate of the /dev/fuse descriptor (notifications may go to any descriptor of
  the connection).  When the kernel makes it wait, only that thread waits; the replies go
  out, the lock is released and the write completes.  No reply ever waits for it.

The queue holds at most ``--invalidate-limit`` messages (default 4096; GlusterFS's 0 means
unbounded, and is honoured, with a warning).  When it is full, the *oldest* queued message
is dropped to make room for the new one, and counted.  Why the oldest: every notification
says "what you cached before this change is stale"; a kernel cache entry that an old
notification targets was filled before that older change, so its own timeout runs out
first, while the newest change is the one the application that made it is about to look
for.  Dropping the oldest keeps the window of staleness shortest.

A ``DeleteEntry`` upcall becomes DELETE when the kernel knows the child (and speaks 7.18),
else INVAL_ENTRY.  DELETE clears the child's link count as if the name were its last
(fs/fuse/dir.c, ``fuse_reverse_inval_entry``): a file that keeps other hard links would
show 0 links through them until its attribute timeout, so a DELETE is always followed by
an INVAL_INODE of the child's attributes, and the next stat asks for the real count.

Errors the kernel returns for notifications are normal in part: ENOENT (the kernel no
longer has that inode or dentry: forgotten, evicted, never looked up), ENOTDIR (the
parent is no longer a directory), ENOTEMPTY and EBUSY (DELETE of a non-empty directory or
of a mountpoint) are counted as *expected*; ENODEV (the connection ended: unmounted or
aborted) and EBADF end the thread; anything else is logged and counted as an error.
``dump()`` reports the counters for the statedump.

``synchronous=True`` (or the environment variable ``XLFS_DEBUG_SYNC_NOTIFY=1``) writes each
notification at once on the caller's thread, i.e. on the event loop.  It exists only to
reproduce the seed 002 deadlock in tests (tests/deadlocks); never use it otherwise.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from typing import Any, Optional

from xlators.core.inode import ROOT_NODEID
from xlators.core.upcall import DeleteEntry, InvalidateEntry, InvalidateInode, StoreData

from . import abi
from .options import DEFAULT_INVALIDATE_LIMIT

log = logging.getLogger("xlfs.fuse.notify")

SYNC_ENV = "XLFS_DEBUG_SYNC_NOTIFY"

#: Errors that only mean "the kernel has nothing to invalidate there".
EXPECTED_ERRORS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENOTEMPTY, errno.EBUSY})
#: Errors after which no notification can ever succeed on this descriptor.
FATAL_ERRORS = frozenset({errno.ENODEV, errno.EBADF})

_N = abi.NotifyCode
KIND_NAMES = {_N.INVAL_INODE: "inval-inode", _N.INVAL_ENTRY: "inval-entry",
              _N.DELETE: "delete", _N.STORE: "store"}
_STOP = object()
_DELETE_MINOR = 18      # NotifyCode.DELETE exists since 7.18
_STORE_MINOR = 15


def _nodeid(obj: Any) -> int:
    """The nodeid of an Inode (the root is 1), or an int taken as a nodeid."""
    if isinstance(obj, int):
        return obj
    return obj.nodeid


def _known(obj: Any) -> bool:
    """Whether the kernel can hold something for this inode (it holds a lookup on it)."""
    if isinstance(obj, int):
        return True
    return obj.nodeid == ROOT_NODEID or getattr(obj, "nlookup", 1) > 0


def _name(name: Any) -> bytes:
    return os.fsencode(name) if isinstance(name, str) else bytes(name)


def encode(msg: Any, minor: int = abi.KERNEL_MINOR_VERSION) -> Optional[tuple[int, bytes]]:
    """(NotifyCode, the whole message as written to /dev/fuse) for an upcall message, or
    None when there is nothing the kernel could act on (an inode it does not know).

    Raises TypeError for a message that is not a notification."""
    kind = type(msg)
    if kind is InvalidateInode:
        if not _known(msg.inode):
            return None
        code, body = _N.INVAL_INODE, abi.NOTIFY_INVAL_INODE_OUT.pack(
            _nodeid(msg.inode), msg.offset, msg.length)
    elif kind is InvalidateEntry or kind is DeleteEntry:
        if not _known(msg.parent):
            return None
        name = _name(msg.name)
        child = msg.child if kind is DeleteEntry else None
        if child is not None and _known(child) and minor >= _DELETE_MINOR:
            code, body = _N.DELETE, b"".join((abi.NOTIFY_DELETE_OUT.pack(
                _nodeid(msg.parent), _nodeid(child), len(name)), name, b"\0"))
        else:   # no child the kernel knows (or an old kernel): drop the dentry only
            code, body = _N.INVAL_ENTRY, b"".join((abi.NOTIFY_INVAL_ENTRY_OUT.pack(
                _nodeid(msg.parent), len(name), 0), name, b"\0"))
    elif kind is StoreData:
        if not _known(msg.inode) or minor < _STORE_MINOR:
            return None
        data = bytes(msg.data)
        code, body = _N.STORE, abi.NOTIFY_STORE_OUT.pack(
            _nodeid(msg.inode), msg.offset, len(data)) + data
    else:
        raise TypeError(f"not a kernel notification: {msg!r}")
    return code, abi.pack_notify_header(abi.OUT_HEADER.size + len(body), code) + body


def describe(data: bytes) -> str:
    """A notification as text, for debug logs: ``nodeid=5 off=0 len=0``."""
    body = memoryview(data)[abi.OUT_HEADER.size:]
    _, code, _ = abi.OUT_HEADER.unpack_from(data)
    if code == _N.INVAL_INODE:
        return "nodeid=%d off=%d len=%d" % abi.NOTIFY_INVAL_INODE_OUT.unpack_from(body)
    if code == _N.INVAL_ENTRY:
        parent, namelen, _flags = abi.NOTIFY_INVAL_ENTRY_OUT.unpack_from(body)
        name = bytes(body[abi.NOTIFY_INVAL_ENTRY_OUT.size:][:namelen])
        return f"parent={parent} name={name!r}"
    if code == _N.DELETE:
        parent, child, namelen = abi.NOTIFY_DELETE_OUT.unpack_from(body)
        name = bytes(body[abi.NOTIFY_DELETE_OUT.size:][:namelen])
        return f"parent={parent} child={child} name={name!r}"
    if code == _N.STORE:
        return "nodeid=%d offset=%d size=%d" % abi.NOTIFY_STORE_OUT.unpack_from(body)
    return f"code {code}"


class Notifier:
    """Kernel notifications through a bounded queue and one writer thread."""

    def __init__(self, devfd: int, limit: int = DEFAULT_INVALIDATE_LIMIT, *,
                 session: Any = None, synchronous: Optional[bool] = None,
                 name: str = "xlfs-notify") -> None:
        self.fd = os.dup(devfd)
        self._os_write = os.write            # replaceable in unit tests
        self.limit = max(0, int(limit))
        self.session = session
        if synchronous is None:
            synchronous = os.environ.get(SYNC_ENV, "") not in ("", "0")
        self.synchronous = synchronous
        self.name = name
        if self.limit == 0:
            log.warning("--invalidate-limit=0: the notification queue is unbounded")
        if synchronous:
            log.warning("notifications are written synchronously on the event loop (%s): "
                        "this deadlocks the filesystem by design; for tests only", SYNC_ENV)
        self._q: queue.Queue = queue.Queue(maxsize=self.limit)
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.ended: Optional[str] = None     # why the writer stopped for good
        # event loop side
        self.enqueued = 0
        self.dropped = 0
        self.skipped = 0          # messages about inodes the kernel does not know
        self.discarded = 0        # sent after the channel ended
        # writer side
        self.sent: dict[str, int] = {k: 0 for k in KIND_NAMES.values()}
        self.expected: dict[str, int] = {}
        self.errors = 0
        self.blocked_since: Optional[float] = None
        self.longest_write = 0.0  # seconds the kernel kept one write() waiting

    # -- the producer side (event loop) -------------------------------------------------
    def send(self, msg: Any) -> bool:
        """Queue ``msg`` for the kernel.  Never blocks; False when it was not queued.

        A DELETE is followed by an INVAL_INODE of the child's attributes: the kernel
        clears the link count of the inode a DELETE names, as if that name were its
        last (fs/fuse/dir.c, ``fuse_reverse_inval_entry``), and until its attribute
        timeout shows 0 through the file's other names when it was one of several
        hard links; invalidated, the next stat asks for the real count."""
        if self.ended is not None:
            self.discarded += 1
            return False
        minor = self._minor()
        try:
            encoded = encode(msg, minor)
        except TypeError:
            log.debug("upcall %r is not a kernel notification; ignored", msg)
            return False
        if encoded is None:
            self.skipped += 1
            return False
        queued = self._put(encoded)
        if encoded[0] == _N.DELETE and self.limit != 1:   # (it would push the DELETE out)
            self._put(encode(InvalidateInode(msg.child, -1, 0), minor))
        return queued

    def _put(self, encoded: tuple[int, bytes]) -> bool:
        """Queue one encoded notification (written at once in synchronous mode)."""
        if self.synchronous:
            self._write(*encoded)
            return True
        if self._thread is None:
            self._start()
        self.enqueued += 1
        q = self._q
        try:
            q.put_nowait(encoded)
            return True
        except queue.Full:
            pass
        try:                      # drop the oldest to make room (see the module doc)
            q.get_nowait()
            self._count_drop()
        except queue.Empty:
            pass
        try:
            q.put_nowait(encoded)
        except queue.Full:
            self._count_drop()
            return False
        return True

    def _count_drop(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("notification queue full (--invalidate-limit=%d): %d dropped so "
                        "far (oldest first); the kernel caches they targeted expire by "
                        "their timeouts", self.limit, self.dropped)

    def _minor(self) -> int:
        client = getattr(self.session, "client", None)
        minor = client.proto_minor if client is not None else 0
        return minor or abi.KERNEL_MINOR_VERSION

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                t = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread = t
                t.start()

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        q = self._q
        try:
            while True:
                item = q.get()
                if item is _STOP:
                    break
                if not self._write(*item):
                    break
        finally:
            self._close_fd()

    def _write(self, code: int, data: bytes) -> bool:
        """Write one notification; False when the channel is gone for good."""
        started = self.blocked_since = time.monotonic()
        try:
            self._os_write(self.fd, data)
        except OSError as exc:
            err = exc.errno
            if err in EXPECTED_ERRORS:
                key = errno.errorcode.get(err, str(err))
                self.expected[key] = self.expected.get(key, 0) + 1
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s: %s (the kernel has nothing cached there): %s",
                              KIND_NAMES.get(code, code), key, describe(data))
                return True
            if err in FATAL_ERRORS:
                self.ended = f"{errno.errorcode.get(err, err)}: the connection ended"
                log.info("notification channel: %s", self.ended)
                return False
            self.errors += 1
            log.warning("%s notification failed: %s", KIND_NAMES.get(code, code), exc)
            return True
        finally:
            self.blocked_since = None
            took = time.monotonic() - started
            if took > self.longest_write:
                self.longest_write = took
        self.sent[KIND_NAMES.get(code, str(code))] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s written: %s", KIND_NAMES.get(code, code), describe(data))
        return True

    def _close_fd(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- lifecycle, introspection -----------------------------------------------------
    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the writer (after what is queued) and join it; True when it ended.

        A writer still blocked in the kernel after ``timeout`` is left behind (a daemon
        thread; it ends with the connection) and the call returns False."""
        if self.ended is None:
            self.ended = "stopped"
        t = self._thread
        if t is None:
            self._close_fd()
            return True
        while True:
            try:
                self._q.put_nowait(_STOP)
                break
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass
        t.join(timeout)
        if t.is_alive():
            log.warning("notification thread still blocked in the kernel after %.1fs; "
                        "leaving it (it ends with the connection)", timeout)
            return False
        return True

    def dump(self) -> dict[str, Any]:
        """Counters for the statedump (``notify.*`` keys)."""
        d: dict[str, Any] = {
            "notify.mode": "synchronous (debug)" if self.synchronous else "thread",
            "notify.limit": self.limit,
            "notify.queued": self._q.qsize(),
            "notify.enqueued": self.enqueued,
            "notify.sent": sum(self.sent.values()),
            "notify.dropped": self.dropped,
            "notify.skipped-unknown-inode": self.skipped,
            "notify.discarded-after-end": self.discarded,
            "notify.expected-errors": sum(self.expected.values()),
            "notify.errors": self.errors,
            "notify.longest-write-seconds": round(self.longest_write, 3),
            "notify.state": self.ended or ("running" if self._thread is not None
                                           else "idle"),
        }
        for kind, n in self.sent.items():
            d[f"notify.sent.{kind}"] = n
        for key, n in sorted(self.expected.items()):
            d[f"notify.expected.{key}"] = n
        if self.blocked_since is not None:
            d["notify.writing-for-seconds"] = round(time.monotonic() - self.blocked_since, 3)
        return d
