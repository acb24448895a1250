"""Record locks and flocks for storage/posix, held by the backing filesystem.

Each lock owner gets its own open file description of the inode (one per owner and lock
kind); POSIX record locks are taken on it as open-file-description locks (F_OFD_SETLK),
BSD flocks with flock(2).  So locks of the same owner merge and split as POSIX says,
different owners conflict, and processes working on the raw brick see the same locks.

Limits (features/locks is the translator to stack for full semantics): a blocked LK_SETW
waits by retrying with a short backoff (cancellable; no FIFO fairness and no EDEADLK
detection), and GETLK names the conflicting owner's pid only when it can tell it.  An
owner's locks go when its FLUSH arrives (the kernel sends one on every close), when it
unlocks the whole file, or when the last open of the inode is released.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Any

import trio

from xlators.core.errors import FopError
from xlators.core.types import LK_GET, LK_SETW, OFFSET_MAX, Lock

# struct flock on LP64 Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid (32 bytes with padding).
_FLOCK = struct.Struct("hh4xqqi4x")
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)


def _span(lock: Lock) -> tuple[int, int]:
    start = max(0, lock.start)
    if lock.end >= OFFSET_MAX or lock.end < start:
        return start, 0
    return start, lock.end - start + 1


def _lock_fd(node: Any, key: tuple[int, bool]) -> int:
    if node.locks is None:
        node.locks, node.lock_pids = {}, {}
    lfd = node.locks.get(key)
    if lfd is None:
        path = f"/proc/self/fd/{node.fd}"
        try:
            lfd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            lfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        node.locks[key] = lfd
    return lfd


def drop(node: Any, key: tuple[int, bool]) -> None:
    """Close an owner's lock descriptor: every lock it held is released."""
    if not node.locks:
        return
    lfd = node.locks.pop(key, None)
    if lfd is not None:
        os.close(lfd)
    node.lock_pids.pop(key[0], None)


def drop_all(node: Any) -> None:
    if node.locks:
        for key in list(node.locks):
            drop(node, key)


def _try(lfd: int, lock: Lock) -> bool:
    """One non-blocking attempt; False when another owner holds a conflicting lock."""
    try:
        if lock.flock:
            op = {fcntl.F_RDLCK: fcntl.LOCK_SH, fcntl.F_WRLCK: fcntl.LOCK_EX}.get(
                lock.type, fcntl.LOCK_UN)
            fcntl.flock(lfd, op | fcntl.LOCK_NB)
        else:
            start, length = _span(lock)
            fcntl.fcntl(lfd, F_OFD_SETLK, _FLOCK.pack(lock.type, os.SEEK_SET, start, length, 0))
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _getlk(node: Any, lfd: int, owner: int, lock: Lock) -> Lock:
    start, length = _span(lock)
    out = fcntl.fcntl(lfd, F_OFD_GETLK, _FLOCK.pack(lock.type, os.SEEK_SET, start, length, 0))
    ltype, _whence, lstart, llen, lpid = _FLOCK.unpack(out)
    if ltype == fcntl.F_UNLCK:
        return Lock(fcntl.F_UNLCK, lock.start, lock.end, 0, 0, lock.flock)
    end = OFFSET_MAX if llen == 0 else lstart + llen - 1
    pid, holder = (lpid, 0) if lpid > 0 else (0, 0)
    if lpid <= 0:  # an OFD lock: another owner's; name it when only one can hold it
        others = [o for (o, fl) in node.locks if not fl and o != owner]
        if len(others) == 1:
            holder = others[0]
            pid = node.lock_pids.get(holder, 0)
    return Lock(ltype, lstart, end, pid, holder, False)


async def lk(node: Any, owner: int, pid: int, cmd: str, lock: Lock) -> Lock:
    """The lk fop on ``node`` (a posix inode context) for lock owner ``owner``."""
    key = (owner, bool(lock.flock))
    if lock.type == fcntl.F_UNLCK:
        if node.locks and key in node.locks:
            if lock.flock or (lock.start <= 0 and lock.end >= OFFSET_MAX):
                drop(node, key)          # whole file: close the description
            else:
                _try(node.locks[key], lock)
        return lock
    if lock.type not in (fcntl.F_RDLCK, fcntl.F_WRLCK):
        raise FopError(errno.EINVAL)
    lfd = _lock_fd(node, key)
    if cmd == LK_GET:
        if lock.flock:
            return Lock(fcntl.F_UNLCK, lock.start, lock.end, 0, 0, True)
        return _getlk(node, lfd, owner, lock)
    node.lock_pids[owner] = pid
    delay = 0.001
    while not _try(lfd, lock):
        if cmd != LK_SETW:
            raise FopError(errno.EAGAIN)
        await trio.sleep(delay)
        delay = min(delay * 2, 0.05)
        lfd = _lock_fd(node, key)      # the owner may have been dropped meanwhile
        node.lock_pids[owner] = pid
    return lock
