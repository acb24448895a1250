"""The reader pool of one session: reading /dev/fuse, stepping handlers inline, and the
hand-over when a request waits.

Concurrency (ARCHITECTURE.md, "The request path"): readers handle requests inline.  A
reader steps the handler coroutine itself; if the handler finishes without suspending (the
common case: GETATTR, LOOKUP, small I/O on a local disk) no task switch happens at all.
Only when a handler really waits does the reader make sure another reader listens on the
device, waking an idle one or starting a new one, so a request that waits never stalls the
others and there is no task spawn per request.  There is no cap on readers: the waiting
request owns its reader's task until it is done, however many wait (1,000 blocked lock
requests and the unlock that frees them).

Buffers: a reader reads with ``os.readv`` into ``[small, tail]``: an 8 KiB buffer that
most requests fit in, and the tail of a large buffer (``bufsize``) for the rest.  A request
longer than the small buffer is made contiguous in the large one (an 8 KiB copy next to
the kernel's up to 1 MiB).  A request that waits keeps only the buffer its body is in: if
that is the small one, the large buffer goes to the channel's spare list for the next
reader.  Parked readers hand their large buffer to the spare list (``idle_readers`` + 1
at most) and at most ``idle_readers`` of them stay; so memory per waiting request is one
small buffer, not a megabyte, and buffers are reused rather than allocated anew.
"""
from __future__ import annotations

import errno
import logging
import os
import types
from typing import Any, Optional

import trio

from . import abi, idle_poll

log = logging.getLogger("xlfs.fuse")

_YIELD_EVERY = 64  # consecutive inline requests before a reader lets others run
_SMALL = abi.FUSE_MIN_READ_BUFFER   # the first read buffer; most requests fit in it


@types.coroutine
def resume(coro: Any, trap: Any) -> Any:
    """Continue awaiting ``coro`` after it was stepped by hand once (it yielded ``trap``);
    what it returns."""
    while True:
        try:
            sent = yield trap
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                trap = coro.send(sent)
            except StopIteration as done:
                return done.value


class Channel:
    """One /dev/fuse descriptor (the original or a clone), its reader pool and spare
    large buffers."""

    def __init__(self, fd: int, bufsize: int, idle_max: int) -> None:
        self.fd = fd
        self.bufsize = bufsize
        self.idle_max = idle_max  # parked readers kept; more exit
        self.listening = False    # a reader is waiting for the device to become readable
        self.idle = 0             # parked readers
        self.readers = 0
        self.parking = trio.lowlevel.ParkingLot()
        # Free large buffers: as many as the parked readers gave back, and one for a
        # reader started or woken when a request waits; beyond that they are dropped.
        self.spare: list[bytearray] = []
        self.spare_max = idle_max + 1
        self.large_allocated = 0           # large buffers ever allocated (statedump, tests)
        self.idle_poll: Optional[idle_poll.IdlePoll] = None
        self.idle_poll_hold = 0.0          # --fuse-idle-poll: 0 is off
        self._idle_poll_tried = False

    def set_idle_poll(self, hold: float) -> None:
        """Wait up to ``hold`` seconds in the idle poll (0: never); made on first use."""
        self.idle_poll_hold = hold
        self.idle_poll = None
        self._idle_poll_tried = hold <= 0

    def dump(self, prefix: str) -> dict[str, Any]:
        """Statedump lines of this channel (``prefix``: its name there)."""
        state: dict[str, Any] = {f"{prefix}.readers": self.readers,
                                 f"{prefix}.idle-readers": self.idle,
                                 f"{prefix}.large-buffers": self.large_allocated}
        poll = self.idle_poll
        state[f"{prefix}.idle-poll"] = "on" if poll is not None else "off"
        if poll is not None:
            state.update({f"{prefix}.idle-poll.{k}": v for k, v in poll.dump().items()})
        return state

    def take_large(self) -> bytearray:
        if self.spare:
            return self.spare.pop()
        self.large_allocated += 1
        return bytearray(self.bufsize)

    def give_large(self, buf: bytearray) -> None:
        if len(self.spare) < self.spare_max:
            self.spare.append(buf)


async def read_loop(session: Any, chan: Channel) -> None:
    """One reader of ``chan``: read a request, serve it inline (``session.serve``);
    if it waits, become that request's task (another reader takes the device)."""
    small = bytearray(_SMALL)
    small_view = memoryview(small)        # requests are handed on as views: no copy
    large: Optional[bytearray] = chan.take_large()
    large_view: Optional[memoryview] = memoryview(large)
    bufs = [small, large_view[_SMALL:]]
    fd = chan.fd
    serve = session.serve
    streak = 0
    polled = False      # this reader just waited in the idle poll: do not wait there again
    try:
        while True:
            # The scope of the next request that waits.  It is entered before that
            # request's first step, so every scope the handler opens (trio.sleep's,
            # a nursery's) nests inside it; a fresh one per waiting request, since a
            # cancelled scope stays cancelled.  Fast requests only pass through it.
            with trio.CancelScope() as scope:
                while True:
                    if session.switching is not None:   # a graph switch commits
                        await session.switching.wait()
                        continue
                    try:
                        n = os.readv(fd, bufs)
                    except BlockingIOError:
                        streak = 0
                        poll = chan.idle_poll
                        if poll is None and not chan._idle_poll_tried:
                            chan._idle_poll_tried = True
                            poll = chan.idle_poll = idle_poll.for_current_run(
                                fd, chan.idle_poll_hold)
                        if poll is not None and not polled and poll.wait():
                            polled = True
                            continue        # readable: no trip through the scheduler
                        polled = False
                        if chan.listening:
                            if chan.idle >= chan.idle_max:
                                return          # enough readers: this one goes
                            # Parked readers hold no large buffer.
                            large_view = None
                            chan.give_large(large)
                            large = bufs[1] = None
                            chan.idle += 1
                            await chan.parking.park()
                            large = chan.take_large()
                            large_view = memoryview(large)
                            bufs[1] = large_view[_SMALL:]
                            continue
                        chan.listening = True
                        try:
                            await trio.lowlevel.wait_readable(fd)
                        finally:
                            chan.listening = False
                        continue
                    except InterruptedError:
                        continue
                    except OSError as exc:
                        if exc.errno == errno.ENOENT:   # aborted before we read it
                            continue
                        if exc.errno == errno.ENODEV:
                            session.end("the kernel ended the connection (unmounted)")
                            return
                        log.error("read from /dev/fuse failed: %s", exc)
                        await trio.sleep(0.01)
                        continue
                    polled = False
                    if n <= _SMALL:
                        if not n:
                            session.end("end of file on /dev/fuse")
                            return
                        buf = small_view
                    else:
                        large[:_SMALL] = small      # the request, contiguous in large
                        buf = large_view
                    rest = serve(chan, buf, n)
                    if rest is None:            # done without waiting
                        streak += 1
                        if streak >= _YIELD_EVERY:
                            streak = 0
                            await trio.lowlevel.checkpoint()
                        elif chan.idle_poll is not None and not chan.listening:
                            # Wait for the next request here rather than learn from
                            # an EAGAIN (an exception) that it has not come yet.
                            chan.idle_poll.wait()
                            polled = True
                        continue
                    # The handler waits.  It keeps the buffer its body is in; an
                    # unused large buffer goes to the reader that takes the device
                    # meanwhile.  The scope becomes the request's (code that never
                    # yields cannot be cancelled: the fast path needs no scope).
                    if buf is small_view:
                        large_view = None
                        chan.give_large(large)
                        large = bufs[1] = None
                    ensure_listener(session, chan)
                    streak = 0
                    req = session.wait_begins()     # now in pending: interruptible
                    if req is not None:
                        req.cancel_scope = scope
                        if req.cancel_requested:
                            scope.cancel()
                    await rest
                    break           # that request's scope: take a fresh one
            if large is None:
                large = chan.take_large()
                large_view = memoryview(large)
                bufs[1] = large_view[_SMALL:]
    finally:
        chan.readers -= 1
        if large is not None:
            chan.give_large(large)


def ensure_listener(session: Any, chan: Channel) -> None:
    """A request waits: make sure some reader listens on the device meanwhile."""
    if chan.listening:
        return
    if chan.idle:
        chan.idle -= 1
        chan.parking.unpark()
    else:
        session.start_reader(chan)
