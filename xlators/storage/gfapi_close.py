"""storage/gfapi's closes: FLUSH (close(2)) and RELEASE of open files (see gfapi for
the translator and its volfile, gfapi_io for the open files).

- A RELEASE is answered at once and its close (libgfapi's FLUSH, replicate's post-op
  and unlock, RELEASE) runs in a worker, at most ``CLOSES_BEHIND`` at a time; a file
  with a lock owner's descriptor is closed before the answer (its locks go with it).
  ``drain`` (gfapi) waits for them.
- close(2)'s FLUSH closes the closing owner's descriptors on every open of the file
  (POSIX: its locks on the file go), and, for a file written since the last such
  flush while libgfapi's graph holds writes back (performance/write-behind), closes a
  ``glfs_dup`` of it: write-behind answers that FLUSH once the writes landed, so
  close(2) returns after them (libgfapi has no flush call of its own).
- A descriptor no lock owner used is closed under a lock owner of its own
  (``_close_ownerless``).
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from typing import Any

from ..core.errors import FopError

CLOSES_BEHIND = 4         # most closes of released files running unwaited for


def _close_ownerless(b: Any, glfd: int) -> int:
    """``glfs_close`` of a descriptor no lock owner used, under a lock owner of its own.
    Its FLUSH to the bricks carries the thread's lock owner, which a glfd without one
    leaves as the last lock call or owner's close on that thread set it (libgfapi's
    per-thread context): the bricks' features/locks then dropped that other owner's
    locks on the file.  16 bytes: never equal to a kernel lock owner (8)."""
    key = b"xlfs-cl\0" + struct.pack("<Q", glfd)
    b.lib.glfs_fd_set_lkowner(glfd, key, len(key))
    return b.lib.glfs_close(glfd)


class GfapiClose:
    """Mixed into storage/gfapi's translator class."""

    async def release(self, frame, fd):
        of = fd.ctx.pop(self, None)
        if of is None or self._fs is None:
            return
        if of.node is not None and of in of.node.opens:
            of.node.opens.remove(of)
        of.ahead = None
        for job in of.started:                # they read through the glfd closed below,
            if not job.finished:              # used or dropped
                try:
                    await self._workers.result(job, abandon=False)
                except OSError:
                    pass
        b = self._b

        def run() -> None:
            for dup in of.owners.values():
                self.settle_tries(dup)
                b.lib.glfs_close(dup)
            if of.is_dir:
                b.lib.glfs_closedir(of.glfd)
            else:
                _close_ownerless(b, of.glfd)
        if of.owners or not self._close_behind(run):
            # locks go with the close: answered after it, before the next request
            # (not abandoned on cancel: the close must happen)
            await self._workers.run(run, abandon=False)

    def _close_behind(self, run: Any) -> bool:
        """Close a released file in a worker while the next requests go on (False:
        ``CLOSES_BEHIND`` are running already; the caller waits for this one).  Nobody
        waits for a RELEASE's answer, but its close (libgfapi's FLUSH, replicate's
        post-op and unlock, RELEASE: 0.7-0.9 ms on a replica-2 volume) held up the
        request after it, waited for inline.  ``drain`` (and, for what is left, ``fini``)
        waits for those still running."""
        self._closing = [job for job in self._closing if not job.finished]
        if len(self._closing) >= CLOSES_BEHIND:
            return False
        self._closing.append(self._workers.start(run))
        self._closed_behind += 1
        return True

    releasedir = release

    async def flush(self, frame, fd):
        """close(2) of a descriptor: the caller's POSIX locks on the file go, whichever
        of its open files took them (closing the owner's descriptors: their FLUSH makes
        the bricks drop the owner's locks on the file).  A file written (through any of
        its descriptors) while libgfapi's graph holds writes back
        (performance/write-behind) gets a FLUSH through that graph, which write-behind answers once the writes
        landed: close(2) returns after them, as with GlusterFS's own client (the
        RELEASE's close, which the kernel does not wait for, flushed them only later).
        Its error (a write that failed behind) is close(2)'s."""
        of = fd.ctx.get(self)
        owner = getattr(frame, "lk_owner", 0)
        if of is None:
            return
        opens = [of] + [o for o in (of.node.opens if of.node is not None else ())
                        if o is not of]
        dups = [o.owners.pop(owner) for o in opens if owner and owner in o.owners]
        # write-behind's FLUSH waits for all of the file's writes, whichever descriptor
        # wrote them (the kernel's writeback writes through any writable one)
        written = any(o.written for o in opens)
        for o in opens:
            o.written = False
        if not dups and not written:
            return
        b = self._b

        def run() -> int:
            for dup in dups:
                self.settle_tries(dup)
                b.lib.glfs_close(dup)
            if not written:
                return 0
            dup = b.lib.glfs_dup(of.glfd)
            if not dup or _close_ownerless(b, dup) < 0:
                return ctypes.get_errno() or errno.EIO
            return 0
        # not abandoned on cancel: the owners' descriptors are closed only here
        err = await self._workers.run(run, abandon=False)
        if err in (errno.EBADFD, errno.ENOTCONN):
            raise self._unreachable(FopError(err, f"flush: {os.strerror(err)}"))
        if err:
            raise FopError(err)


def wait_closes(jobs: list, timeout: float) -> int:
    """Block (fini is not async) until every job of ``jobs`` finished or ``timeout``
    seconds in all went by; how many are still running."""
    deadline = time.monotonic() + timeout
    for job in jobs:
        while not job.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                return sum(1 for j in jobs if not j.finished)
            waiter = job.waiter
            if waiter is None:        # waited for the trio way by a drain cut short
                time.sleep(min(left, 0.01))
            elif waiter.acquire(True, left):
                break
    return 0
