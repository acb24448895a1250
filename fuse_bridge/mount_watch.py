"""The daemon's view of its own mount's VFS flags, kept current across remounts.

``mount -o remount,ro MNT`` (or ``rw``, ``noatime``, ...) changes the flags of the live
mount in the kernel (fuse_bridge.mount.remount, run by mount.xlfs or by ``xlfs`` under
mount.fuse3; or mount(8) alone): nobody tells the daemon.  It reads them from
/proc/self/mountinfo, whose poll() reports POLLPRI once the mount table has changed
since the last poll.  A zero-timeout poll before each request that depends on the flags
costs one system call, and the first such request after a remount always sees the new
flags: the remount had finished before the request was made.  Opens always depend on
them (``noatime``); the other modifying requests only while --read-only's translator is
in the graph (without it nothing else reads the flags), so a plain mount spends no
system call on its unlinks, renames, mkdirs...

What the flags change in the daemon:

- ``noatime`` (and ``nodiratime``, for directories): files and directories are opened
  with O_NOATIME (storage/posix then leaves the brick's atimes alone where the caller
  owns the file or is root).  ``relatime`` and ``strictatime`` leave atime updates to
  the brick's own mount options.
- ``ro``/``rw``: the features/read-only translator that ``--read-only`` / ``-o ro`` put
  on top of the graph follows the mount, so ``remount,rw`` makes such a mount writable
  and ``remount,ro`` read-only again.  Without it nothing is needed: on a read-only
  mount the kernel refuses every modification (EROFS) before a request is sent.

Every change is logged, and the flags are in the statedump.
"""
from __future__ import annotations

import logging
import os
import select
from typing import Any, Callable, Optional

from . import abi
from . import mount as mnt
from .mount import VfsFlags

log = logging.getLogger("xlfs.mount")

READ_ONLY_VOLUME = "xlfs-read-only"      # the translator --read-only puts on top

_O = abi.Opcode
#: Requests whose handling depends on the flags whatever the graph (O_NOATIME).
OPEN_OPCODES = frozenset(int(op) for op in (_O.OPEN, _O.CREATE, _O.OPENDIR, _O.TMPFILE))
#: Requests that modify something: they depend on the flags only through the
#: read-only translator (its ``read-only`` option follows ``ro``/``rw``).
MODIFYING_OPCODES = frozenset(int(op) for op in (
    _O.SETATTR, _O.MKNOD, _O.MKDIR, _O.SYMLINK, _O.LINK, _O.UNLINK, _O.RMDIR, _O.RENAME,
    _O.RENAME2, _O.SETXATTR, _O.REMOVEXATTR, _O.FALLOCATE, _O.COPY_FILE_RANGE,
    _O.COPY_FILE_RANGE_64))
WATCHED_OPCODES = OPEN_OPCODES | MODIFYING_OPCODES


class MountWatch:
    """The VFS flags of one mount (by its mount id), re-read when the table changes.

    ``on_change(old, new)`` runs once at ``start`` (old is None) and after every change.
    """

    def __init__(self, mountpoint: str,
                 on_change: Callable[[Optional[VfsFlags], VfsFlags], None]) -> None:
        self.mountpoint = mountpoint            # absolute, symlinks resolved
        self.on_change = on_change
        self.mount_id: Optional[int] = None
        self._minor = -1                        # the connection: mount ids are reused
        self.flags: Optional[VfsFlags] = None
        self._file = open("/proc/self/mountinfo", "rb", buffering=0)
        self._poll = select.poll()
        self._poll.register(self._file.fileno(), select.POLLPRI)

    def start(self) -> None:
        """Find the mount (just made: never stat it) and report its flags."""
        entry = mnt.find_mount(self.mountpoint, resolved=True)
        if entry is None or not entry["fstype"].startswith("fuse"):
            log.warning("%s: not in /proc/self/mountinfo; remounts will go unnoticed",
                        self.mountpoint)
            return
        self.mount_id, self._minor = entry["id"], entry["minor"]
        self.flags = VfsFlags.from_mountinfo(entry)
        self.on_change(None, self.flags)

    def check(self) -> None:
        """Re-read the flags if the mount table changed since the last check."""
        if self.mount_id is None or not self._poll.poll(0):
            return
        entry = mnt.mount_by_id(self.mount_id)
        if entry is None or entry["minor"] != self._minor:
            return          # unmounted (lazily; its id may be reused): keep the last flags
        new = VfsFlags.from_mountinfo(entry)
        if new != self.flags:
            old, self.flags = self.flags, new
            self.on_change(old, new)

    def current(self) -> Optional[VfsFlags]:
        """The flags as they are now (checked first: a statedump)."""
        self.check()
        return self.flags

    def install(self, session: Any) -> None:
        """Check before every handler of OPEN_OPCODES runs, and before those of
        MODIFYING_OPCODES while the session's graph has the read-only translator (looked
        up per request: a graph switch keeps it, but costs nothing to follow)."""
        for op in WATCHED_OPCODES:
            handler = session.handler(op)
            if handler is not None:
                session.set_handler(op, self._checking(handler) if op in OPEN_OPCODES
                                    else self._checking_read_only(handler))

    def _checking(self, handler: Any) -> Any:
        check = self.check

        # Not a coroutine function: it checks, then hands back the handler's coroutine
        # for the session to await (no coroutine of its own per modifying request).
        def checked(c: Any, req: Any, body: Any) -> Any:
            check()
            return handler(c, req, body)
        return _wraps(checked, handler)

    def _checking_read_only(self, handler: Any) -> Any:
        check = self.check

        def checked(c: Any, req: Any, body: Any) -> Any:
            if READ_ONLY_VOLUME in c.graph.xlators:       # c: the session's client
                check()
            return handler(c, req, body)
        return _wraps(checked, handler)

    def close(self) -> None:
        self._file.close()


def _wraps(wrapper: Any, handler: Any) -> Any:
    """``wrapper`` with ``handler``'s name and marks (encode.whole_reply)."""
    wrapper.__name__ = getattr(handler, "__name__", "handler")
    wrapper.__dict__.update(getattr(handler, "__dict__", {}))
    return wrapper


def apply_flags(session: Any, old: Optional[VfsFlags], new: VfsFlags) -> None:
    """What the daemon does with its mount's flags (see the module docstring)."""
    noatime = new.atime == "noatime"
    client = session.client
    client.open_noatime = os.O_NOATIME if noatime else 0
    client.opendir_noatime = os.O_NOATIME if noatime or new.nodiratime else 0
    if old is None:
        log.info("%s mounted %s", session.mountpoint, new.words())
        return
    log.info("%s remounted: %s -> %s", session.mountpoint, old.words(), new.words())
    ro = session.graph.xlators.get(READ_ONLY_VOLUME)
    if ro is not None and old.read_only != new.read_only:
        ro.reconfigure({"read-only": "on" if new.read_only else "off"})
        log.info("%s: translator %s %s", session.mountpoint, READ_ONLY_VOLUME,
                 "refuses modifications again" if new.read_only else "lets writes through")
