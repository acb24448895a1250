"""performance/write-behind's per-inode queue (see write_behind.py for the translator).

Each inode with queued writes has an :class:`InodeQueue`: the writes waiting to be wound
(``queue``), the one being wound (``inflight``), sequence numbers that let a caller wait for
"everything queued so far" (``done_seq``/``last_seq``), and the failure recorded for the
next writev/fsync/flush to report.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Optional

import trio

from ..core.frame import Frame


def bg_frame(frame: Frame) -> Frame:
    """A copy of ``frame``'s identity for work that outlives the request."""
    f = Frame(frame.unique, frame.uid, frame.gid, frame.pid, frame.lk_owner, frame._groups)
    f.opcode = frame.opcode
    return f


class Write:
    """One queued write (possibly several merged)."""
    __slots__ = ("seq", "offset", "data", "fd", "flags", "frame")

    def __init__(self, seq: int, offset: int, data: Any, fd: Any, flags: Any,
                 frame: Frame) -> None:
        self.seq = seq
        self.offset = offset
        self.data = data          # bytes, or a bytearray once merged
        self.fd = fd
        self.flags = flags
        self.frame = frame

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


class InodeQueue:
    """Write-behind state of one inode."""
    __slots__ = ("inode", "queue", "inflight", "pending", "next_seq", "done_seq",
                 "sync_target", "pressure", "worker", "changed", "error", "failures",
                 "bg_flushes", "landed_at")

    def __init__(self, inode: Any) -> None:
        self.inode = inode
        self.queue: deque[Write] = deque()
        self.inflight: Optional[Write] = None
        self.pending = 0          # bytes queued or in flight
        self.next_seq = 1
        self.done_seq = 0         # every write with seq <= done_seq has completed
        self.sync_target = 0      # someone waits for writes up to this seq
        self.pressure = 0         # writers waiting for window room
        self.worker = False
        self.changed: Optional[trio.Event] = None
        self.error = 0            # recorded failure, reported once
        self.failures = 0
        self.bg_flushes = 0
        self.landed_at = 0        # WriteBehind._landed when its last write landed

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def max_end(self) -> int:
        end = self.inflight.end if self.inflight is not None else 0
        for w in self.queue:
            if w.end > end:
                end = w.end
        return end

    def idle(self) -> bool:
        return not self.queue and self.inflight is None

    def notify(self) -> None:
        ev = self.changed
        if ev is not None:
            self.changed = None
            ev.set()

    async def wait_changed(self) -> None:
        ev = self.changed
        if ev is None:
            ev = self.changed = trio.Event()
        await ev.wait()
