"""features/locks: POSIX record locks and BSD flocks, kept here so the stack below needn't.

    volume locks
        type features/locks
        option trace off
        subvolumes posix
    end-volume

The ``lk`` fop is answered entirely by this translator (nothing below sees it):

- POSIX record locks (``Lock.flock`` false), as fcntl(2) does them: locks belong to a lock
  owner (``lock.owner``, or ``frame.lk_owner`` when the lock carries none); a set replaces,
  merges (adjacent or overlapping, same type) and splits the owner's own locks; only locks
  of different owners conflict, and only when one of them is a write lock.  ``LK_GET``
  returns the first conflicting lock (by start) or the request with type ``F_UNLCK``;
  ``LK_SET`` fails with EAGAIN on a conflict; ``LK_SETW`` waits (trio) until granted, and
  fails with EDEADLK when waiting would close a cycle of owners waiting for each other.
- flocks (``Lock.flock`` true): one whole-file shared or exclusive lock per open file (the
  owner); a conversion drops the old lock before taking the new one, as flock(2) does.
- Released: an owner's POSIX locks on ``flush`` (close sends FLUSH with the lock owner),
  an open file's flocks (and any POSIX lock still recorded against it) on ``release``.
- A waiting ``LK_SETW`` is cancellable: when its cancel scope is cancelled, or the FUSE
  bridge reports an interrupt (``frame.on_interrupt``) or calls :meth:`Locks.cancel_blocked`,
  the request is withdrawn from the queue (no stale lock, GlusterFS issue #3179); an
  interrupt makes the fop fail with EINTR.

Granting is FIFO-ish: when locks are released the blocked queue is scanned oldest first
and every request that no longer conflicts is granted (a later compatible request may pass
an earlier incompatible one, as on Linux).  flocks and POSIX locks never conflict with each
other (Linux semantics).
"""
from __future__ import annotations

import errno
from collections import deque
from fcntl import F_RDLCK, F_UNLCK, F_WRLCK
from typing import Any, Optional

import trio

from ..core.errors import FopError
from ..core.options import Option
from ..core.translator import Translator
from ..core.types import LK_GET, LK_SET, LK_SETW, OFFSET_MAX, Lock

_TYPE_NAMES = {F_RDLCK: "READ", F_WRLCK: "WRITE", F_UNLCK: "UNLOCK"}
_DEADLOCK_MAX_STEPS = 1000

# waiter states
_BLOCKED, _GRANTED, _CANCELLED, _INTERRUPTED = "blocked", "granted", "cancelled", "interrupted"


class _Held:
    """A granted POSIX lock (end inclusive) or flock (start/end unused)."""
    __slots__ = ("type", "start", "end", "owner", "pid", "fd")

    def __init__(self, type: int, start: int, end: int, owner: int, pid: int, fd: Any) -> None:
        self.type = type
        self.start = start
        self.end = end
        self.owner = owner
        self.pid = pid
        self.fd = fd

    def as_lock(self, flock: bool) -> Lock:
        return Lock(self.type, self.start, self.end, self.pid, self.owner, flock)

    def describe(self) -> str:
        end = "EOF" if self.end == OFFSET_MAX else str(self.end)
        return (f"type={_TYPE_NAMES.get(self.type, self.type)}, start={self.start}, "
                f"end={end}, pid={self.pid}, owner={self.owner:x}")


class _Waiter:
    """A blocked LK_SETW request."""
    __slots__ = ("lock", "owner", "fd", "frame", "state", "event", "st")

    def __init__(self, lock: Lock, owner: int, fd: Any, frame: Any, st: "_InodeLocks") -> None:
        self.lock = lock
        self.owner = owner
        self.fd = fd
        self.frame = frame
        self.state = _BLOCKED
        self.event = trio.Event()
        self.st = st


class _InodeLocks:
    """Lock state of one inode (its ctx in this translator)."""
    __slots__ = ("inode", "posix", "flocks", "blocked")

    def __init__(self, inode: Any) -> None:
        self.inode = inode
        self.posix: list[_Held] = []          # sorted by start
        self.flocks: dict[int, _Held] = {}    # owner -> held flock
        self.blocked: deque[_Waiter] = deque()

    def empty(self) -> bool:
        return not (self.posix or self.flocks or self.blocked)

    # -- POSIX ---------------------------------------------------------------------
    def posix_conflicts(self, owner: int, type: int, start: int, end: int):
        """Held POSIX locks of other owners that conflict, in start order."""
        if type == F_UNLCK:
            return
        for h in self.posix:
            if h.start > end:
                return
            if h.end >= start and h.owner != owner and (type == F_WRLCK or h.type == F_WRLCK):
                yield h

    def posix_apply(self, owner: int, type: int, start: int, end: int, pid: int,
                    fd: Any) -> None:
        """Set (or unlock) [start, end] for owner: replace, merge and split its own locks."""
        out: list[_Held] = []
        lo, hi = start, end
        for h in self.posix:
            if h.owner != owner or h.end < start - 1 or h.start > end + 1:
                out.append(h)                       # someone else's, or not touching
            elif h.type == type:                    # same type, touching: merge
                lo = min(lo, h.start)
                hi = max(hi, h.end)
            elif h.end < start or h.start > end:    # other type, only adjacent: keep
                out.append(h)
            else:                                   # other type, overlapping: split
                if h.start < start:
                    out.append(_Held(h.type, h.start, start - 1, owner, h.pid, h.fd))
                if h.end > end:
                    out.append(_Held(h.type, end + 1, h.end, owner, h.pid, h.fd))
        if type != F_UNLCK:
            out.append(_Held(type, lo, hi, owner, pid, fd))
        out.sort(key=lambda h: h.start)
        self.posix = out

    # -- flock ---------------------------------------------------------------------
    def flock_conflict(self, owner: int, type: int) -> Optional[_Held]:
        if type == F_UNLCK:
            return None
        for o, h in self.flocks.items():
            if o != owner and (type == F_WRLCK or h.type == F_WRLCK):
                return h
        return None

    def conflict(self, w: _Waiter) -> Optional[_Held]:
        lk = w.lock
        if lk.flock:
            return self.flock_conflict(w.owner, lk.type)
        return next(self.posix_conflicts(w.owner, lk.type, lk.start, lk.end), None)


class Locks(Translator):
    """features/locks: POSIX record locks and flocks (answers lk itself)."""
    type = "features/locks"
    handles_locks = True      # the bridge negotiates POSIX_LOCKS/FLOCK_LOCKS when true
    passes_data_through = True  # locks never touch READ/WRITE data (advisory only)
    forget_needs_context = True  # its lock state of an inode is inode.ctx[self]
    # close(2) releases the closing owner's POSIX locks at flush: needed only while the
    # kernel hands locks to the daemon, which Graph.needs_flush counts (handles_locks)
    needs_flush = False
    children_range = (1, 1)
    options = (
        Option.bool("trace", default=False,
                    description="Log every lock request, grant, block, release and "
                                "withdrawal (at INFO level)."),
        Option.str("mandatory-locking", default="off",
                   values=("off", "file", "forced", "optimal"),
                   description="GlusterFS mandatory locking mode. Only 'off' (advisory "
                               "locks) is implemented; other values fail at init."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._inodes: dict[Any, _InodeLocks] = {}        # inodes with lock state
        self._by_frame: dict[Any, _Waiter] = {}          # frame -> its blocked request
        self._waiting: dict[int, list[_Waiter]] = {}     # owner -> blocked POSIX requests

    def init(self) -> None:
        if self.opts.mandatory_locking != "off":
            raise ValueError(f"volume '{self.name}': option 'mandatory-locking': only "
                             "'off' is supported")

    # -- state ----------------------------------------------------------------------
    def _state(self, inode: Any) -> _InodeLocks:
        st = inode.ctx.get(self)
        if st is None:
            st = _InodeLocks(inode)
            inode.ctx[self] = st
            self._inodes[inode] = st
        return st

    def _tidy(self, st: _InodeLocks) -> None:
        """Drop an inode's state when it holds and waits for nothing."""
        if st.empty():
            if st.inode.ctx.get(self) is st:
                del st.inode.ctx[self]
            self._inodes.pop(st.inode, None)

    def _trace(self, what: str, inode: Any, lock: Lock, owner: int) -> None:
        if self.opts.trace:
            kind = "FLOCK" if lock.flock else "POSIX"
            end = "EOF" if lock.end == OFFSET_MAX else lock.end
            self.log.info("[%s] %s ino=%s type=%s start=%s end=%s pid=%s owner=%x", what,
                          kind, inode.ino, _TYPE_NAMES.get(lock.type, lock.type),
                          lock.start, end, lock.pid, owner)

    # -- the fop --------------------------------------------------------------------
    async def lk(self, frame, fd, cmd, lock):
        if cmd not in (LK_GET, LK_SET, LK_SETW) or lock.type not in _TYPE_NAMES:
            raise FopError(errno.EINVAL)
        owner = lock.owner or frame.lk_owner
        inode = fd.inode
        if not lock.flock and (lock.start < 0 or lock.end < lock.start):
            raise FopError(errno.EINVAL)
        if cmd == LK_GET:
            return self._getlk(inode, lock, owner)
        self._trace("REQUEST", inode, lock, owner)
        st = self._state(inode)
        if lock.flock:
            granted = self._flock_try(st, lock, owner, fd)
        elif next(st.posix_conflicts(owner, lock.type, lock.start, lock.end), None) is None:
            st.posix_apply(owner, lock.type, lock.start, lock.end, lock.pid, fd)
            self._trace("GRANTED" if lock.type != F_UNLCK else "RELEASED", inode, lock, owner)
            self._grant(st)
            granted = True
        else:
            granted = False
            if cmd == LK_SETW and self._would_deadlock(st, owner, lock):
                self._trace("EDEADLK", inode, lock, owner)
                self._tidy(st)
                raise FopError(errno.EDEADLK)
        if granted:
            self._tidy(st)
            return lock
        if cmd == LK_SET:
            self._trace("EAGAIN", inode, lock, owner)
            self._tidy(st)
            raise FopError(errno.EAGAIN)
        return await self._wait(frame, fd, st, lock, owner)

    def _getlk(self, inode: Any, lock: Lock, owner: int) -> Lock:
        if lock.type == F_UNLCK:
            raise FopError(errno.EINVAL)
        st = inode.ctx.get(self)
        if st is not None:
            if lock.flock:
                h = st.flock_conflict(owner, lock.type)
                if h is not None:
                    return Lock(h.type, 0, OFFSET_MAX, h.pid, h.owner, True)
            else:
                h = next(st.posix_conflicts(owner, lock.type, lock.start, lock.end), None)
                if h is not None:
                    return h.as_lock(False)
        return lock._replace(type=F_UNLCK)

    def _flock_try(self, st: _InodeLocks, lock: Lock, owner: int, fd: Any) -> bool:
        """Unlock, keep, or (after dropping the old one) take a flock; False = conflict."""
        held = st.flocks.get(owner)
        if lock.type == F_UNLCK:
            if held is not None:
                del st.flocks[owner]
                self._trace("RELEASED", st.inode, lock, owner)
                self._grant(st)
            return True
        if held is not None:
            if held.type == lock.type:
                return True
            # flock(2): a conversion is not atomic: drop, let waiters in, then acquire.
            del st.flocks[owner]
            self._grant(st)
        if st.flock_conflict(owner, lock.type) is not None:
            return False
        st.flocks[owner] = _Held(lock.type, 0, OFFSET_MAX, owner, lock.pid, fd)
        self._trace("GRANTED", st.inode, lock, owner)
        return True

    # -- waiting --------------------------------------------------------------------
    async def _wait(self, frame: Any, fd: Any, st: _InodeLocks, lock: Lock, owner: int) -> Lock:
        w = _Waiter(lock, owner, fd, frame, st)
        st.blocked.append(w)
        self._by_frame[frame] = w
        if not lock.flock:
            self._waiting.setdefault(owner, []).append(w)
        self._trace("BLOCKED", st.inode, lock, owner)
        if frame.interrupt is not None:
            frame.on_interrupt(lambda: self._interrupt(w))
        try:
            # Once granted (event set) this await returns normally even if the scope is
            # cancelled at the same moment, so a granted lock is never lost or left stale.
            await w.event.wait()
        except BaseException:
            if w.state == _BLOCKED:
                self._withdraw(w, _CANCELLED)
            raise
        if w.state == _GRANTED:
            return lock
        raise FopError(errno.EINTR)

    def _interrupt(self, w: _Waiter) -> None:
        """frame.on_interrupt handler: withdraw the request; the fop fails with EINTR."""
        if w.state == _BLOCKED:
            self._withdraw(w, _INTERRUPTED)
            w.event.set()

    def cancel_blocked(self, frame: Any) -> bool:
        """Withdraw the blocked lock request of ``frame`` (the bridge's setlk interrupt
        handler calls this).  True when it was blocked and is now withdrawn: the waiting
        fop then fails with EINTR.  False when it was already granted or not waiting."""
        w = self._by_frame.get(frame)
        if w is None or w.state != _BLOCKED:
            return False
        self._withdraw(w, _INTERRUPTED)
        w.event.set()
        return True

    def _unlist(self, w: _Waiter) -> None:
        if self._by_frame.get(w.frame) is w:
            del self._by_frame[w.frame]
        if not w.lock.flock:
            lst = self._waiting.get(w.owner)
            if lst is not None:
                try:
                    lst.remove(w)
                except ValueError:
                    pass
                if not lst:
                    del self._waiting[w.owner]

    def _withdraw(self, w: _Waiter, state: str) -> None:
        w.state = state
        try:
            w.st.blocked.remove(w)
        except ValueError:
            pass
        self._unlist(w)
        self._trace("CANCELLED" if state == _CANCELLED else "INTERRUPTED",
                    w.st.inode, w.lock, w.owner)
        self._tidy(w.st)

    def _grant(self, st: _InodeLocks) -> None:
        """Grant every blocked request that no longer conflicts, oldest first."""
        progress = True
        while progress and st.blocked:
            progress = False
            for w in st.blocked:
                if st.conflict(w) is not None:
                    continue
                st.blocked.remove(w)
                lk = w.lock
                if lk.flock:
                    st.flocks[w.owner] = _Held(lk.type, 0, OFFSET_MAX, w.owner, lk.pid, w.fd)
                else:
                    st.posix_apply(w.owner, lk.type, lk.start, lk.end, lk.pid, w.fd)
                w.state = _GRANTED
                self._unlist(w)
                w.event.set()
                self._trace("GRANTED", st.inode, lk, w.owner)
                progress = True
                break   # the held set changed: rescan from the oldest

    def _would_deadlock(self, st: _InodeLocks, owner: int, lock: Lock) -> bool:
        """Would ``owner`` waiting for ``lock`` close a cycle of POSIX owners?"""
        stack = [h.owner for h in st.posix_conflicts(owner, lock.type, lock.start, lock.end)]
        seen: set[int] = set()
        steps = 0
        while stack and steps < _DEADLOCK_MAX_STEPS:
            o = stack.pop()
            if o == owner:
                return True
            if o in seen:
                continue
            seen.add(o)
            steps += 1
            for w in self._waiting.get(o, ()):
                lk = w.lock
                stack.extend(h.owner for h in
                             w.st.posix_conflicts(w.owner, lk.type, lk.start, lk.end))
        return False

    # -- release rules ----------------------------------------------------------------
    # flush and release hand back the child's coroutine (no coroutine of their own) when
    # the inode has no lock here: the usual close
    def flush(self, frame, fd):
        st = fd.inode.ctx.get(self)
        if st is not None and st.posix:
            owner = frame.lk_owner
            kept = [h for h in st.posix if h.owner != owner]
            if len(kept) != len(st.posix):
                st.posix = kept
                if self.opts.trace:
                    self.log.info("[RELEASED] POSIX ino=%s owner=%x (flush)", fd.inode.ino,
                                  owner)
                self._grant(st)
                self._tidy(st)
        return self.child.flush(frame, fd)

    def release(self, frame, fd):
        st = fd.inode.ctx.get(self)
        if st is not None and (st.flocks or st.posix):
            n = len(st.flocks) + len(st.posix)
            st.flocks = {o: h for o, h in st.flocks.items() if h.fd is not fd}
            st.posix = [h for h in st.posix if h.fd is not fd]
            if len(st.flocks) + len(st.posix) != n:
                if self.opts.trace:
                    self.log.info("[RELEASED] ino=%s fd=%r (release)", fd.inode.ino, fd)
                self._grant(st)
                self._tidy(st)
        return self.child.release(frame, fd)

    async def forget(self, frame, inode):
        st = inode.ctx.pop(self, None)
        if st is not None:
            self._inodes.pop(inode, None)
        return await self.child.forget(frame, inode)

    def locks_held(self) -> int:
        """Granted and waiting locks (a graph switch is refused while there are any)."""
        return sum(len(st.posix) + len(st.flocks) + len(st.blocked)
                   for st in self._inodes.values())

    # -- statedump --------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"inodes": len(self._inodes),
                               "blocked": sum(len(s.blocked) for s in self._inodes.values())}
        for inode, st in self._inodes.items():
            pre = f"inode.{inode.ino}"
            for i, h in enumerate(st.posix):
                out[f"{pre}.posixlk[{i}](ACTIVE)"] = h.describe()
            for i, h in enumerate(st.flocks.values()):
                out[f"{pre}.flock[{i}](ACTIVE)"] = h.describe()
            for i, w in enumerate(st.blocked):
                lk = w.lock
                h = _Held(lk.type, lk.start, lk.end, w.owner, lk.pid, w.fd)
                kind = "flock" if lk.flock else "posixlk"
                out[f"{pre}.{kind}[{i}](BLOCKED)"] = h.describe() + f", unique={w.frame.unique}"
        return out
