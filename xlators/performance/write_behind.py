"""performance/write-behind: acknowledge writes at once, wind them down in the background.

    volume wb
        type performance/write-behind
        option cache-size 1MB
        option flush-behind on
        option trickling-writes on
        subvolumes posix
    end-volume

A ``writev`` is queued on its inode and answered at once while the inode's window
(``cache-size``) has room; otherwise it waits for room (backpressure).  A write that is
contiguous with or overlaps the newest queued write of the same fd is merged into it, up
to ``aggregate-size``.  One background task per inode winds the queue down strictly in
order (so overlapping writes always land in the order they were made).

What the rest of the stack sees:

- Every fop that may change a file's contents waits for the inode's queued writes: the
  fops come from the fop table (``fop_targets.data_changes_of``: today ``fallocate``,
  ``copy_file_range``, ``setattr`` with a size, an ``open`` with O_TRUNC), through the
  ``DataChangeOrdering`` mixin.  Every ``setattr`` waits (a write landing after a chmod
  or utimes would reset its times or set-id bits).  ``readv`` first waits for the queued
  writes that could change its answer; ``lseek`` and the source of ``copy_file_range``
  wait for all of the inode's queued writes.
- ``getattr`` waits for the inode's queued writes (their landing sets mtime and ctime,
  and clears set-id bits for callers other than root); so do ``lookup``, ``link`` and
  ``readdirp`` for the inodes they answer about that have queued writes (then they ask
  for the attributes again): a reply made below before the writes land carries the old
  times, which md-cache and the kernel would keep (GlusterFS's lookup waits too).  Writes
  queued while such a fop is under way add their size to its reply (queued writes only
  ever grow a file: truncates wait); that part is in write_behind_attrs.py.
- ``getxattr`` of ``security.capability`` and ``listxattr`` wait for the inode's queued
  writes too: the storage ends file capabilities where a write lands
  (``kills_privileges``), and md-cache would otherwise cache the capability a write
  acknowledged here is about to end (for ``md-cache-timeout``: no upcall tells it).
- ``fsync`` waits for the queued writes, then winds; ``flush`` does the same in the
  background when ``flush-behind`` is on (answering at once), in the foreground otherwise.
  ``release`` finishes in the background after the fd's writes and flushes.  ``lk``
  waits for the inode's background flushes (a flush drops its owner's POSIX locks).
- O_SYNC/O_DSYNC and O_APPEND fds (an append's offset is only known where it lands),
  O_DIRECT fds with ``strict-O_DIRECT``, read-only fds (so EBADF comes back at once) and
  writes at least as large as the window are written through, after the queued ones.
- A background write (or flush) that fails is recorded on the inode and reported, once,
  by the next ``writev``, ``fsync`` or ``flush`` of that file (that call then fails).

Without a nursery (a harness without ``attach_nursery``) every write is written through.
"""
from __future__ import annotations

import errno
import fcntl
import os
from typing import Any, Optional

from ..core.errors import FopError, errno_of
from ..core.frame import Frame
from ..core.options import Option
from ..core.translator import Translator
from .data_changes import DataChangeOrdering
from .write_behind_attrs import QueuedAttrs
from .write_behind_queue import InodeQueue as _Inode
from .write_behind_queue import Write as _Write
from .write_behind_queue import bg_frame as _bg_frame

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_THROUGH = os.O_SYNC | os.O_DSYNC | os.O_APPEND   # written through (after the queue)


class WriteBehind(QueuedAttrs, DataChangeOrdering, Translator):
    """performance/write-behind: acknowledge writes at once, wind them in the background."""
    type = "performance/write-behind"
    forget_needs_context = True  # its write queue of a file is inode.ctx[self]
    children_range = (1, 1)
    needs_flush = True           # flush waits for the fd's writes: close reports their errors
    options = (
        Option.size("cache-size", default="1MB", aliases=("window-size",), min=4096,
                    max=1 << 30,
                    description="Size of the write-behind buffer for a single file "
                                "(inode): writes beyond it wait for earlier ones to land. "
                                "(GlusterFS's minimum is 512KB; xlfs allows 4KB.)"),
        Option.size("aggregate-size", default="128KB", min=4096, max=1 << 30,
                    description="Largest write made by merging contiguous writes; at most "
                                "cache-size."),
        Option.bool("flush-behind", default=True,
                    description="Answer flush at once and finish it (after the pending "
                                "writes) in the background; a failure is reported by the "
                                "next fsync/flush/write of the file."),
        Option.bool("strict-O_DIRECT", default=False,
                    description="Write O_DIRECT fds through; when off the O_DIRECT flag "
                                "is ignored."),
        Option.bool("strict-write-ordering", default=False,
                    description="Do not let later writes overtake earlier writes even if "
                                "they do not overlap. xlfs always winds an inode's writes "
                                "in order, so this is accepted for compatibility."),
        Option.bool("trickling-writes", default=True,
                    description="Wind a queued write as soon as the previous one is done, "
                                "even if it is smaller than aggregate-size; when off, small "
                                "writes wait to be merged until something needs them."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._active: set[_Inode] = set()   # inodes with pending writes or errors
        self._landed = 0                     # queued writes that reached the child
        self._failures = 0

    def init(self) -> None:
        if self.opts.aggregate_size > self.opts.cache_size:
            raise ValueError(f"volume '{self.name}': aggregate-size "
                             f"({self.opts.aggregate_size}) cannot be more than cache-size "
                             f"({self.opts.cache_size})")

    def reconfigured(self, old: Any) -> None:
        if self.opts.aggregate_size > self.opts.cache_size:
            new, self.opts = self.opts, old
            raise ValueError(f"volume '{self.name}': aggregate-size "
                             f"({new.aggregate_size}) cannot be more than cache-size "
                             f"({new.cache_size})")
        for st in self._active:          # trickling/window changes: let workers re-check
            st.notify()

    # -- state helpers ----------------------------------------------------------------
    def _can_spawn(self) -> bool:
        return self._nursery is not None or (self.graph is not None
                                             and self.graph.nursery is not None)

    def _try_spawn(self, fn: Any, *args: Any) -> bool:
        """spawn(), or False when there is no (open) nursery: then work synchronously."""
        if not self._can_spawn():
            return False
        try:
            self.spawn(fn, *args)
        except RuntimeError:      # the nursery is closed (shutting down)
            return False
        return True

    def _state(self, inode: Any) -> _Inode:
        st = inode.ctx.get(self)
        if st is None:
            st = inode.ctx[self] = _Inode(inode)
        return st

    def _record(self, st: _Inode, err: int, what: str) -> None:
        if not st.error:
            st.error = err
        st.failures += 1
        self._failures += 1
        self._active.add(st)
        self.log.warning("background %s on ino %s failed: %s", what, st.inode.ino,
                         os.strerror(err))

    def _take_error(self, st: Optional[_Inode]) -> int:
        if st is None or not st.error:
            return 0
        err, st.error = st.error, 0
        self._settle(st)
        return err

    def _settle(self, st: _Inode) -> None:
        if st.idle() and not st.error and not st.bg_flushes:
            self._active.discard(st)

    async def _drain(self, st: _Inode, upto: Optional[int] = None) -> None:
        """Wait until every write queued up to seq ``upto`` (default: all now) landed."""
        target = st.last_seq if upto is None else upto
        if st.done_seq >= target:
            return
        if target > st.sync_target:
            st.sync_target = target
            st.notify()
        if st.queue and not st.worker and not self._start_worker(st):
            st.worker = True            # no nursery any more: do the work here
            await self._worker(st)
        while st.done_seq < target:
            await st.wait_changed()

    async def _drain_inode(self, inode: Any) -> None:
        st = inode.ctx.get(self)
        if st is not None and not st.idle():
            await self._drain(st)

    async def _await_held_data(self, inode: Any) -> None:
        """DataChangeOrdering: a fop changing ``inode``'s data lands after its writes."""
        await self._drain_inode(inode)

    async def drain(self) -> None:
        """Let every queued write and background flush land (Graph.drain: a graph switch
        calls it before another graph reads these files)."""
        for st in list(self._active):
            await self._drain(st)
            while st.bg_flushes:
                await st.wait_changed()

    # -- the background worker ----------------------------------------------------------
    def _start_worker(self, st: _Inode) -> bool:
        if not self._try_spawn(self._worker, st):
            return False
        st.worker = True
        self._active.add(st)
        return True

    def _ready(self, st: _Inode, head: _Write) -> bool:
        return (self.opts.trickling_writes or len(st.queue) > 1 or st.pressure > 0
                or st.sync_target >= head.seq or len(head.data) >= self.opts.aggregate_size)

    async def _worker(self, st: _Inode) -> None:
        try:
            while st.queue:
                head = st.queue[0]
                if not self._ready(st, head):
                    await st.wait_changed()
                    continue
                st.queue.popleft()
                st.inflight = head
                try:
                    await self._wind_write(head)
                except Exception as exc:  # noqa: BLE001 - recorded, reported later
                    if not isinstance(exc, OSError):
                        self.log.exception("background writev failed")
                    self._record(st, errno_of(exc), "writev")
                finally:
                    st.inflight = None
                    st.pending -= len(head.data)
                    st.done_seq = head.seq
                    self._landed += 1
                    st.landed_at = self._landed
                    st.notify()
        finally:
            st.worker = False
            st.notify()
            self._settle(st)

    async def _wind_write(self, w: _Write) -> None:
        data, offset = w.data, w.offset
        frame = _bg_frame(w.frame)
        while data:
            n = await self.child.writev(frame, w.fd, data, offset, w.flags)
            if n >= len(data):
                return
            if n <= 0:
                raise FopError(errno.ENOSPC)
            data = memoryview(data)[n:]
            offset += n

    # -- writes -----------------------------------------------------------------------
    async def writev(self, frame, fd, data, offset, flags=None):
        n = len(data)
        inode = fd.inode
        if (not self._can_spawn() or fd.flags & _THROUGH
                or fd.flags & os.O_ACCMODE == os.O_RDONLY
                or (fd.flags & _O_DIRECT and self.opts.strict_O_DIRECT)
                or n >= self.opts.cache_size):
            return await self._write_through(frame, fd, data, offset, flags)
        while True:
            st = self._state(inode)
            err = self._take_error(st)
            if err:
                raise FopError(err)
            if n == 0:
                return 0
            if st.pending and st.pending + n > self.opts.cache_size:
                st.pressure += 1
                if st.pressure == 1:
                    st.notify()     # a worker holding small writes (trickling off) winds now
                try:
                    await st.wait_changed()
                finally:
                    st.pressure -= 1
                continue
            break
        # Merge into the newest queued (not yet wound) write of the same fd when they
        # touch; only the newest, so the order of overlapping writes is kept.
        if st.queue:
            tail = st.queue[-1]
            t0, t1 = tail.offset, tail.end
            end = offset + n
            if (tail.fd is fd and tail.flags == flags and offset <= t1 and end >= t0
                    and max(end, t1) - min(offset, t0) <= self.opts.aggregate_size):
                buf = tail.data
                old = len(buf)
                if not isinstance(buf, bytearray):
                    buf = bytearray(buf)
                if offset < t0:
                    buf = bytearray(data) + (buf[end - t0:] if end < t1 else b"")
                    tail.offset = offset
                else:
                    rel = offset - t0
                    buf[rel:rel + n] = data
                tail.data = buf
                st.pending += len(buf) - old
                if not self.opts.trickling_writes:
                    st.notify()
                return n
        if st.worker:
            if not self.opts.trickling_writes:
                st.notify()
        elif not self._start_worker(st):
            return await self._write_through(frame, fd, data, offset, flags)
        w = _Write(st.next_seq, offset, data if type(data) is bytes else bytes(data), fd,
                   flags, frame)
        st.next_seq += 1
        st.queue.append(w)
        st.pending += n
        return n

    async def _write_through(self, frame, fd, data, offset, flags):
        st = fd.inode.ctx.get(self)
        if st is not None:
            if not st.idle():
                await self._drain(st)
            err = self._take_error(st)
            if err:
                raise FopError(err)
        return await self.child.writev(frame, fd, data, offset, flags)

    # -- fops that must see the queued writes -------------------------------------------
    # (the fops that change data wait through DataChangeOrdering; these read it, or
    # change more than the data)
    async def readv(self, frame, fd, size, offset, flags=None):
        st = fd.inode.ctx.get(self)
        if st is not None and st.pending and st.max_end() > offset:
            await self._drain(st)
        return await self.child.readv(frame, fd, size, offset, flags)

    async def setattr(self, frame, inode, changes, fd=None):
        await self._await_held_data(inode)   # chmod and utimes too, not just a truncate
        return await self.child.setattr(frame, inode, changes, fd)

    async def lseek(self, frame, fd, offset, whence):
        await self._drain_inode(fd.inode)    # SEEK_DATA/SEEK_HOLE see the written data
        return await self.child.lseek(frame, fd, offset, whence)

    async def copy_file_range(self, frame, fd_in, off_in, fd_out, off_out, length, flags):
        await self._drain_inode(fd_in.inode)  # the source is read: its writes land first
        return await super().copy_file_range(frame, fd_in, off_in, fd_out, off_out,
                                             length, flags)

    # -- fsync, flush, release -------------------------------------------------------------
    async def fsync(self, frame, fd, datasync):
        st = fd.inode.ctx.get(self)
        if st is None:
            return await self.child.fsync(frame, fd, datasync)
        return await self._drained_call(st, lambda: self.child.fsync(frame, fd, datasync))

    async def flush(self, frame, fd):
        st = fd.inode.ctx.get(self)
        if self.opts.flush_behind and self._can_spawn():
            st = self._state(fd.inode)
            if not self._try_spawn(self._bg_flush, _bg_frame(frame), fd, st, st.last_seq):
                return await self._flush_now(frame, fd, st)
            st.bg_flushes += 1
            fd.ctx[self] = fd.ctx.get(self, 0) + 1
            self._active.add(st)
            err = self._take_error(st)
            if err:
                raise FopError(err)
            return None
        return await self._flush_now(frame, fd, st)

    async def _flush_now(self, frame: Frame, fd: Any, st: Optional[_Inode]) -> Any:
        if st is None:
            return await self.child.flush(frame, fd)
        return await self._drained_call(st, lambda: self.child.flush(frame, fd))

    async def _drained_call(self, st: _Inode, call: Any) -> Any:
        """Wait for the queued writes, wind ``call()``, then report a recorded background
        failure once (it takes precedence over the call's own error)."""
        if not st.idle():
            await self._drain(st)
        try:
            result = await call()
        except OSError:
            err = self._take_error(st)
            if err:
                raise FopError(err) from None
            raise
        err = self._take_error(st)
        if err:
            raise FopError(err)
        return result

    async def _bg_flush(self, frame: Frame, fd: Any, st: _Inode, upto: int) -> None:
        try:
            await self._drain(st, upto)
            await self.child.flush(frame, fd)
        except Exception as exc:  # noqa: BLE001 - recorded, reported later
            if not isinstance(exc, OSError):
                self.log.exception("background flush failed")
            self._record(st, errno_of(exc), "flush")
        finally:
            st.bg_flushes -= 1
            left = fd.ctx.get(self, 1) - 1
            if left > 0:
                fd.ctx[self] = left
            else:
                fd.ctx.pop(self, None)
            st.notify()
            self._settle(st)

    async def lk(self, frame, fd, cmd, lock):
        # A flush drops the closing owner's POSIX locks where it lands: the background
        # flushes of earlier close() calls land first, or they would undo (or hide from
        # F_GETLK) a lock taken after them.  flock locks and unlocks have nothing to fear
        # from a flush and must not wait: the unlock of a last close() has to land before
        # the next process's lock request.
        st = fd.inode.ctx.get(self)
        posix_lock = not lock.flock and lock.type != fcntl.F_UNLCK
        while posix_lock and st is not None and st.bg_flushes:
            await st.wait_changed()
        return await self.child.lk(frame, fd, cmd, lock)

    async def release(self, frame, fd):
        st = fd.inode.ctx.get(self)
        if st is None or (st.idle() and self not in fd.ctx):
            return await self.child.release(frame, fd)
        if self._try_spawn(self._bg_release, _bg_frame(frame), fd, st, st.last_seq):
            return None
        await self._bg_release(frame, fd, st, st.last_seq)
        return None

    async def _bg_release(self, frame: Frame, fd: Any, st: _Inode, upto: int) -> None:
        try:
            await self._drain(st, upto)
            while self in fd.ctx:           # the fd's background flushes go first
                await st.wait_changed()
            await self.child.release(frame, fd)
        except Exception:  # noqa: BLE001 - release has no one to report to
            self.log.exception("background release failed")

    async def forget(self, frame, inode):
        st = inode.ctx.pop(self, None)
        if st is not None and st.error:
            self.log.warning("ino %s forgotten with an unreported write failure: %s",
                             inode.ino, os.strerror(st.error))
        return await self.child.forget(frame, inode)

    # -- statedump -------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cache-size": self.opts.cache_size,
                               "aggregate-size": self.opts.aggregate_size,
                               "flush-behind": self.opts.flush_behind,
                               "failures": self._failures,
                               "inodes": len(self._active)}
        for st in self._active:
            pre = f"inode.{st.inode.ino}"
            out[f"{pre}.pending_bytes"] = st.pending
            out[f"{pre}.pending_writes"] = len(st.queue) + (st.inflight is not None)
            out[f"{pre}.background_flushes"] = st.bg_flushes
            out[f"{pre}.failures"] = st.failures
            if st.error:
                out[f"{pre}.error"] = errno.errorcode.get(st.error, str(st.error))
        return out
