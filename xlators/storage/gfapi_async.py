"""storage/gfapi's asynchronous data calls: libgfapi's ``glfs_*_async`` wound from the
event loop, answered through ``TrioToken.run_sync_soon``.

A call through the worker threads (gfapi_workers) wakes four threads per request: the
loop wakes a worker, the worker sends and sleeps on libgfapi's condition variable, the
network thread wakes the worker, the worker wakes the loop.  An ``*_async`` call sends
from the calling thread and returns (GlusterFS 10.3: 25-50 us for a 4 KiB read on a
replica-2 volume, against 100-150 us until the answer; glfs-fops.c winds the frame down
the client graph and protocol/client writes it on a non-blocking socket), and libgfapi's
network thread runs the callback: two wake-ups.  When the request fails at once (a brick
connection down: ENOTCONN) the callback runs on the calling thread before the call
returns; the caller then takes the result without waiting.

- One ctypes callback (``CALLBACK``) for the life of the process; the per-call state is
  in ``_calls``, keyed by an integer passed as the call's ``data`` (never a pointer to a
  Python object).  The callback pops the entry: a late callback (its caller cancelled,
  the trio run over, the translator finished) finds the state it needs or nothing, and
  does nothing more.
- A read's buffer is the entry's: libgfapi copies the answer into it just before the
  callback, so it stays alive until then even when the caller gave up (a cancelled call
  answers at once, the request still completes on the bricks, as with the workers).
- Credentials: libgfapi takes the caller's identity from the calling thread when it
  creates the frame (``syncop_create_frame``), so the loop thread sets it before winding
  (gfapi_binding.set_credentials, which skips the library calls when it is unchanged).
- A glfs_fd must not be closed while a call on it is in flight: libgfapi then drops the
  answer without calling back (``glfs_is_glfd_still_valid``).  ``on_done`` lets the
  translator count the calls in flight per open file; release waits for them.
"""
from __future__ import annotations

import ctypes
import itertools
import os
import threading
from typing import Any, Callable, Optional

import trio

from . import gfapi_binding as _b

_calls: dict[int, "_Call"] = {}
_keys = itertools.count(1)


class _Call:
    __slots__ = ("token", "task", "thread", "keep", "on_done", "winding", "done",
                 "abandoned", "ret", "err")

    def __init__(self, keep: Any, on_done: Optional[Callable[[], None]]) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.task = trio.lowlevel.current_task()
        self.thread = threading.get_ident()
        self.keep = keep                  # what libgfapi writes into until the callback
        self.on_done = on_done
        self.winding = False              # the caller is inside the *_async call
        self.done = False
        self.abandoned = False
        self.ret = -1
        self.err = 0


def _completed(glfd: Any, ret: int, prestat: Any, poststat: Any, data: Any) -> None:
    """glfs_io_cbk: on libgfapi's network thread (or on the caller's, during the call)."""
    try:
        call = _calls.pop(data or 0, None)
        if call is None:
            return
        call.ret = ret
        call.err = ctypes.get_errno() if ret < 0 else 0
        if call.winding and threading.get_ident() == call.thread:
            call.done = True              # the caller takes it when the call returns
            return
        try:
            call.token.run_sync_soon(_deliver, call)
        except trio.RunFinishedError:
            pass
    except BaseException:                 # noqa: BLE001 - never raise into libgfapi
        pass


CALLBACK = _b.IO_CBK(_completed)


def _deliver(call: _Call) -> None:
    """In the trio thread: the answer is in; wake the caller unless it gave up."""
    call.done = True
    call.keep = None
    if call.on_done is not None:
        call.on_done()
    if not call.abandoned:
        trio.lowlevel.reschedule(call.task)


class AsyncCalls:
    """Counters and the waiting side of the ``*_async`` calls of one translator."""

    def __init__(self) -> None:
        self.calls = 0
        self.abandoned = 0

    @property
    def in_flight(self) -> int:
        return len(_calls)

    async def run(self, fn: Any, args: tuple, keep: Any = None,
                  on_done: Optional[Callable[[], None]] = None, what: str = "") -> int:
        """``fn(*args, CALLBACK, key)`` from this (the loop's) thread; the callback's
        ``ret``, or OSError(its errno).  Cancelled: returns at once (Cancelled), the
        late answer is dropped.  ``on_done`` runs in the trio thread once libgfapi is
        done with the call (at once when it failed to start)."""
        key = next(_keys)
        call = _Call(keep, on_done)
        _calls[key] = call
        self.calls += 1
        call.winding = True
        try:
            rc = fn(*args, CALLBACK, key)
        finally:
            call.winding = False
        if rc < 0 and _calls.pop(key, None) is not None:
            err = ctypes.get_errno() or 5
            call.done = True              # refused before winding: no callback comes
            call.ret, call.err = -1, err
        if call.done:
            call.keep = None
            if on_done is not None:
                on_done()
        else:
            def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
                call.abandoned = True
                self.abandoned += 1
                return trio.lowlevel.Abort.SUCCEEDED
            await trio.lowlevel.wait_task_rescheduled(abort)
        if call.ret < 0:
            err = call.err or 5           # EIO when the library forgot errno
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return call.ret
