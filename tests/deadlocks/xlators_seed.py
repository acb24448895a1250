"""Test translators that reproduce the deadlock scenarios of seeds 001, 002 and 003.

Not packaged: the daemon loads them with ``XLFS_PLUGINS=tests.deadlocks.xlators_seed``
(xlators.core.registry).  Each one misbehaves on purpose, the way a real stack can:

``test/flush-callback`` (seed 001) answers FLUSH only after a round trip to an
application over a UNIX socket (like the FUSE server of the FUSE_ASYNC_FLUSH patch)::

    volume cb
        type test/flush-callback
        option socket /tmp/app.sock
        subvolumes posix
    end-volume

``test/upcall-race`` (seed 002) sends an invalidation of the very object a pending request
holds locked in the kernel, then waits a little and only then winds the request: CREATE of
a name starting with ``race`` sends INVAL_ENTRY for its directory, the first READ of a file
whose name starts with ``race`` sends INVAL_INODE for it (once: the invalidation drops the
pages the READ fills, so the kernel reads them again, and invalidating on every READ would
never end)::

    volume race
        type test/upcall-race
        option delay 0.3
        subvolumes posix
    end-volume

``test/self-access`` (seed 003, scenario 1) serves the UNLINK of ``trigger`` by unlinking
``path`` (the same file, through the mount) from a worker thread: the kernel holds the
directory's lock for the UNLINK it is serving, so the thread waits for the caller, which
waits for us.  With ``interruptible on`` the request registers an interrupt handler and
abandons the thread when interrupted (the caller gets EINTR and lets the lock go)::

    volume self
        type test/self-access
        option trigger victim
        option path /mnt/d/victim
        option interruptible on
        subvolumes posix
    end-volume
"""
from __future__ import annotations

import os

import trio

from xlators import hookimpl
from xlators.core.options import Option
from xlators.core.translator import Translator
from xlators.core.upcall import InvalidateEntry, InvalidateInode


class FlushCallback(Translator):
    """test/flush-callback: FLUSH waits for a reply from an application (seed 001)."""
    type = "test/flush-callback"
    children_range = (1, 1)
    options = (
        Option.str("socket", "", "UNIX socket of the application asked on every flush."),
    )

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.outcomes: list[str] = []

    async def flush(self, frame, fd):
        nodeid = fd.inode.nodeid
        outcome = await self._ask(b"flush %d %d\n" % (nodeid, frame.pid))
        self.log.info("seed001: flush of nodeid %d (pid %d): %s", nodeid, frame.pid, outcome)
        result = await self.child.flush(frame, fd)
        self.log.info("seed001: flush of nodeid %d wound to the child", nodeid)
        return result

    async def _ask(self, message: bytes) -> str:
        path = self.opts.socket
        if not path:
            return "no application configured"
        try:
            stream = await trio.open_unix_socket(path)
        except OSError as exc:
            return f"application unreachable ({exc.strerror})"
        try:
            async with stream:
                await stream.send_all(message)
                reply = await stream.receive_some(256)
        except (OSError, trio.BrokenResourceError) as exc:
            return f"application gone ({exc})"
        if not reply:
            return "application gone (end of file)"
        return "answered " + reply.decode(errors="replace").strip()


class UpcallRace(Translator):
    """test/upcall-race: invalidate what a pending request holds locked (seed 002)."""
    type = "test/upcall-race"
    children_range = (1, 1)
    options = (
        Option.double("delay", 0.3, "Seconds to wait between the upcall and winding."),
    )

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._race_inos: set[int] = set()
        self._raced: set[int] = set()

    def _note(self, name, entry):
        if name and bytes(name).startswith(b"race"):
            self._race_inos.add(entry.inode.ino)
        return entry

    async def lookup(self, frame, loc):
        return self._note(loc.name, await self.child.lookup(frame, loc))

    async def create(self, frame, loc, flags, mode, umask, fd):
        if loc.name.startswith(b"race"):
            self.log.info("seed002: CREATE %r pending; INVAL_ENTRY of its directory",
                          loc.name)
            self.upcall(InvalidateEntry(loc.parent, loc.name))
            await trio.sleep(self.opts.delay)
        return self._note(loc.name, await self.child.create(frame, loc, flags, mode, umask,
                                                            fd))

    async def readv(self, frame, fd, size, offset, flags):
        if fd.inode.ino in self._race_inos and fd.inode.ino not in self._raced:
            self._raced.add(fd.inode.ino)
            self.log.info("seed002: READ of nodeid %d pending; INVAL_INODE of it",
                          fd.inode.nodeid)
            self.upcall(InvalidateInode(fd.inode, 0, 0))
            await trio.sleep(self.opts.delay)
        return await self.child.readv(frame, fd, size, offset, flags)


def _own_thread(pid: int) -> bool:
    return pid == os.getpid() or os.path.exists(f"/proc/self/task/{pid}")


class SelfAccess(Translator):
    """test/self-access: UNLINK served by an unlink through the mount (seed 003)."""
    type = "test/self-access"
    children_range = (1, 1)
    options = (
        Option.str("trigger", "victim", "Name whose unlink triggers the self-access."),
        Option.str("path", "", "Path, through the mount, that the worker thread unlinks."),
        Option.bool("interruptible", True, "Register an interrupt handler and abandon "
                    "the worker thread when the request is interrupted."),
    )

    async def unlink(self, frame, loc):
        if loc.name != os.fsencode(self.opts.trigger) or _own_thread(frame.pid):
            return await self.child.unlink(frame, loc)
        path = self.opts.path
        interruptible = self.opts.interruptible
        self.log.info("seed003: UNLINK %r from pid %d: unlinking %s through the mount in a "
                      "worker thread (interruptible %s)", loc.name, frame.pid, path,
                      interruptible)
        if interruptible:
            frame.on_interrupt(lambda: self.log.info(
                "seed003: interrupted: abandoning the self-access thread"))
        await trio.to_thread.run_sync(self._unlink, path, abandon_on_cancel=interruptible)
        return None

    def _unlink(self, path: str) -> None:
        try:
            os.unlink(path)
            self.log.info("seed003: the self-access unlink of %s completed", path)
        except OSError as exc:
            self.log.info("seed003: the self-access unlink of %s failed: %s", path, exc)


@hookimpl
def xlfs_register_xlators(register):
    register(FlushCallback)
    register(UpcallRace)
    register(SelfAccess)
