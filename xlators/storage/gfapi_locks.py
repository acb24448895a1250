"""storage/gfapi's POSIX locks and flocks of open files (see gfapi for the translator and
its volfile, gfapi_io for the open files, gfapi_close for the closes that drop locks).

- POSIX locks need one lock owner per glfs_fd (``glfs_fd_set_lkowner``), so each kernel
  lock owner gets its own ``glfs_dup`` of the open file (``OpenFile.owners``); closing
  that duplicate releases the owner's locks on the bricks.
- A blocking lock request (F_SETLKW) is retried with F_SETLK from the event loop, so it
  stays interruptible between tries.
- A try stuck on the bricks (every brick frozen or unreachable: libgfapi waits up to
  protocol/client's ping-timeout, per brick) can be given up: an interrupted SETLK, or
  an interrupted SETLKW with ``--fuse-setlk-handle-interrupt`` (the bridge asks
  ``cancel_blocked``), answers EINTR at once and leaves the call to its worker thread.
  When the bricks grant such a given-up request later, that thread unlocks the range
  again: the process was told EINTR, so it must hold nothing (the stale lock of
  GlusterFS issue #3179).  A range the owner held before the request is unlocked with
  it (nothing records what the owner held there).  A close of the owner's descriptor
  waits for such tries first (``settle_tries``), so none runs on a closed glfs_fd.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import threading
from typing import Any

import trio

from ..core.errors import FopError
from ..core.types import LK_GET, LK_SETW, OFFSET_MAX, Lock


class _Try:
    """One F_SETLK call in a worker thread, which the event loop may give up while it
    runs; ``guard`` orders the loop's giving up against the thread's grant."""
    __slots__ = ("guard", "started", "given_up", "granted", "done")

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.started = False               # a worker thread began the call
        self.given_up = False
        self.granted = False
        self.done = threading.Event()      # the call (and its undo, if any) returned,
                                           # or it was given up before it started

    def give_up(self) -> bool:
        """Give this try up unless it was granted already: True when it was (the
        grant stands, or the caller undoes it); else the thread undoes a later one,
        or never makes the call if it had not started it."""
        with self.guard:
            if not self.granted:
                self.given_up = True
                if not self.started:
                    self.done.set()
            return self.granted

    def start(self) -> bool:
        """In the worker thread, before the call: False when given up already."""
        with self.guard:
            self.started = not self.given_up
            return self.started


class GfapiLocks:
    """Mixed into storage/gfapi's translator class."""

    async def lk(self, frame, fd, cmd, lock: Lock):
        of = self._of(fd)
        b = self._b
        owner = lock.owner or getattr(frame, "lk_owner", 0) or id(of)
        if lock.type not in (fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK):
            raise FopError(errno.EINVAL)
        if lock.type == fcntl.F_UNLCK and owner not in of.owners:
            return lock
        fl = b.Flock()
        fl.l_type, fl.l_whence = lock.type, os.SEEK_SET
        start, end = (0, OFFSET_MAX) if lock.flock else (lock.start, lock.end)
        fl.l_start = start
        fl.l_len = 0 if end >= OFFSET_MAX else end - start + 1
        fl.l_pid = lock.pid or getattr(frame, "pid", 0)
        glfd = await self._owner_fd(frame, of, owner)
        if cmd == LK_GET:
            if lock.flock:
                return Lock(fcntl.F_UNLCK, lock.start, lock.end, 0, 0, True)

            def get() -> Lock:
                b.check(b.lib.glfs_posix_lock(glfd, fcntl.F_GETLK, ctypes.byref(fl)),
                        "getlk")
                if fl.l_type == fcntl.F_UNLCK:
                    return Lock(fcntl.F_UNLCK, lock.start, lock.end, 0, 0)
                e = OFFSET_MAX if fl.l_len == 0 else fl.l_start + fl.l_len - 1
                return Lock(fl.l_type, fl.l_start, e, fl.l_pid, 0)
            return await self._call(frame, get)

        waiting = [trio.CancelScope(), None]     # withdrawn by cancel_blocked
        self._lock_waits[id(frame)] = waiting
        try:
            with waiting[0]:
                delay = 0.002
                while not await self._try(frame, glfd, fl, waiting):
                    if cmd != LK_SETW:
                        raise FopError(errno.EAGAIN)
                    await trio.sleep(delay)
                    delay = min(delay * 2, 0.1)
                return lock
        finally:
            if self._lock_waits.get(id(frame)) is waiting:
                del self._lock_waits[id(frame)]
        raise FopError(errno.EINTR)              # withdrawn: the bridge answered EINTR

    async def _try(self, frame: Any, glfd: int, fl: Any, waiting: list) -> bool:
        """One F_SETLK through the owner's ``glfd``: True granted, False held by
        another owner.  Given up (cancelled) while it runs: its grant is undone."""
        attempt = self._track(glfd)
        waiting[1] = attempt
        try:
            return await self._call(frame, self._set_lock, glfd, fl, attempt)
        except trio.Cancelled:
            granted = attempt.give_up()
            if attempt.done.is_set():            # a worker will never run it
                self._done(glfd, attempt)
            if granted and fl.l_type != fcntl.F_UNLCK:
                # granted, but the answer is lost with the cancellation: let go of it
                # (shielded: the request is being cancelled; the bricks just answered)
                undo = self._track(glfd)
                with trio.CancelScope(shield=True):
                    await self._workers.run(self._as_caller, self._creds(frame),
                                            self._unlock, (glfd, fl, undo),
                                            abandon=False)
            raise
        finally:
            waiting[1] = None

    def _track(self, glfd: int) -> _Try:
        """A new try on ``glfd``, known to ``settle_tries`` until it is done."""
        attempt = _Try()
        self._tries.setdefault(glfd, set()).add(attempt)
        return attempt

    def _done(self, glfd: int, attempt: _Try) -> None:
        attempt.done.set()
        self._tries.get(glfd, set()).discard(attempt)

    def _set_lock(self, glfd: int, fl: Any, attempt: _Try) -> bool:
        """In a worker: F_SETLK; a grant the loop gave up meanwhile is unlocked."""
        b = self._b
        try:
            if not attempt.start():
                return False
            if b.lib.glfs_posix_lock(glfd, fcntl.F_SETLK, ctypes.byref(fl)) == 0:
                with attempt.guard:
                    if not attempt.given_up:
                        attempt.granted = True
                        return True
                if fl.l_type != fcntl.F_UNLCK:
                    self._unlock(glfd, fl)
                return False
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EACCES):
                return False
            raise OSError(err, f"setlk: {os.strerror(err)}")
        finally:
            self._done(glfd, attempt)

    def _unlock(self, glfd: int, fl: Any, attempt: Any = None) -> None:
        """In a worker: unlock ``fl``'s range (a failure is logged: the owner's close
        drops its locks anyway)."""
        b = self._b
        undo = b.Flock()
        undo.l_type, undo.l_whence = fcntl.F_UNLCK, os.SEEK_SET
        undo.l_start, undo.l_len, undo.l_pid = fl.l_start, fl.l_len, fl.l_pid
        try:
            if b.lib.glfs_posix_lock(glfd, fcntl.F_SETLK, ctypes.byref(undo)) != 0:
                self.log.warning("%s: could not unlock a lock granted after its request "
                                 "was interrupted: %s", self.name,
                                 os.strerror(ctypes.get_errno() or errno.EIO))
            else:
                self._undone += 1
        finally:
            if attempt is not None:
                self._done(glfd, attempt)

    def settle_tries(self, glfd: int) -> None:
        """In a worker, before closing ``glfd``: wait for the lock tries on it (one
        given up ends by the bricks' ping-timeout at the latest), so none runs on a
        closed glfs_fd."""
        for attempt in list(self._tries.get(glfd, ())):
            attempt.done.wait()
        self._tries.pop(glfd, None)

    def cancel_blocked(self, frame: Any) -> bool:
        """Withdraw ``frame``'s lock wait (an interrupted SETLKW with
        ``--fuse-setlk-handle-interrupt``): True when it was waiting here, between tries
        or in one stuck on the bricks; False when that try was granted already (the
        grant stands) or the request waits nowhere here."""
        waiting = self._lock_waits.get(id(frame))
        if waiting is None:
            return False
        scope, attempt = waiting
        if attempt is not None and attempt.give_up():
            return False
        scope.cancel()
        return True

    async def _owner_fd(self, frame: Any, of: Any, owner: int) -> int:
        glfd = of.owners.get(owner)
        if glfd is None:
            b = self._b
            key = struct.pack("<Q", owner & 0xFFFFFFFFFFFFFFFF)

            def dup() -> int:
                new = b.check_ptr(b.lib.glfs_dup(of.glfd), "dup")
                b.check(b.lib.glfs_fd_set_lkowner(new, key, len(key)), "set_lkowner")
                return new
            glfd = await self._call(frame, dup)
            if owner in of.owners:                      # raced: keep the first
                b.lib.glfs_close(glfd)
                glfd = of.owners[owner]
            else:
                of.owners[owner] = glfd
        return glfd
