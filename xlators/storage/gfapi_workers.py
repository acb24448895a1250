"""storage/gfapi's worker threads: where the blocking libgfapi calls run.

Every libgfapi call blocks its thread until the bricks answer, so none runs on the event
loop.  ``trio.to_thread.run_sync`` did this at first; measured in-process on this kind of
machine (2 cores, other work running), its round trip for an empty call was 390-780 us,
against 120-360 us for a plain pool (a queue put, the answer handed back with
``TrioToken.run_sync_soon``): the thread cache, the capacity limiter and the
context copy of ``to_thread`` are each a cost paid per call, and a GETATTR is one call.

- ``size`` threads, started on first use (so after the daemon forked: libgfapi is not
  fork-safe) and kept: a thread keeps the caller identity it last set, so most calls skip
  ``glfs_setfs*`` (gfapi_binding.set_credentials).  They are the bound on library calls
  running at once (option io-thread-count); more calls queue.
- Idle threads are a stack: a call goes to the thread that finished last (still warm,
  on the CPU it ran on), each thread sleeping on a lock of its own, so a sequential
  load keeps one thread busy instead of rotating through all of them.
- :meth:`Workers.run` with ``abandon=True`` answers a cancellation at once: the job is
  marked abandoned; if no thread took it yet it is skipped, else its thread finishes the
  call by itself and its result is dropped.  With ``abandon=False`` (closing a file:
  it must happen) the cancellation waits for the call.
- A thread finishing after the trio run that queued the job ended just drops the result.
- The inline wait (``wait`` seconds, option inline-wait): a call made while no other
  call is running is waited for by the event loop's thread itself, blocked on a lock of
  the call's own (the GIL released), for at most ``wait``.  Most calls answer within it,
  and the request then finishes inline, as on a local disk: no trio suspension, no
  wake-up of the loop through ``run_sync_soon``, no hand-over to another reader of the
  device.  Measured on a 128 KiB READ, the loop's thread took 117-127 us of CPU with
  the inline wait against 205-254 us without (docs/gluster.md, "Where a cold READ's
  time went"); a GETATTR 73-77 against 207-240.  A call
  that takes longer is then waited for the ordinary way (the worker hands the answer
  back through trio); while the loop waits, no other request is read, so a call made
  while another one runs never waits inline, and the bound keeps an interrupt or a
  request of another process waiting at most ``wait`` longer.
- The worker wakes the loop's inline wait with the GIL released (``_wake_loop``:
  ``PyThread_release_lock`` through ctypes).  Released the plain way, with the GIL held
  for a few bytecodes more until the worker blocked again, the loop it woke (which
  often preempts the worker on its CPU) found the GIL taken and slept on it: a
  sched_switch trace of a GETATTR loop showed 1.43 sleeps of the loop on the GIL per
  request (0 after) and 1.21 preemptions of the worker while it dropped the GIL (0.01
  after; docs/gluster.md, "The GIL at each hand-over").  The lock is read from the
  ``threading.Lock`` object, so this is used only where its layout is checked at
  import (else a plain release).
- :meth:`Workers.start` runs a call nobody waits for yet (storage/gfapi's read-ahead
  of sequential reads); :meth:`Workers.result` collects it later, inline or the trio
  way.  Such calls do not count as running for the inline wait of other calls: no
  request waits for their answer.
"""
from __future__ import annotations

import collections
import ctypes
import errno
import sys
import threading
from typing import Any, Callable

import trio

_STOP = object()


class _Job:
    __slots__ = ("fn", "args", "token", "task", "ok", "value", "abandoned", "waiter",
                 "finished", "background")

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self.fn = fn
        self.args = args
        # the trio run and task to wake when the answer comes back the trio way (set
        # only then: a call answered during the inline wait needs neither)
        self.token: Any = None
        self.task: Any = None
        self.ok = False
        self.value: Any = None
        self.abandoned = False
        # held while the loop's thread waits inline for this call; the worker releases
        # it instead of waking the loop through trio (None: the trio way).  A fresh lock
        # per call, released once, by the worker, and never from Python: _wake_loop's
        # release bypasses the lock object, whose ``locked()`` then still says True, so
        # a later ``release()`` would pass its check and unlock it a second time.
        self.waiter: Any = None
        self.finished = False             # set under the pool's lock by the worker
        self.background = False           # started by start(): nobody waits for it yet


class _Worker:
    __slots__ = ("wake", "job")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()               # held while idle: release() hands a job over
        self.job: Any = None


class Workers:
    """A fixed set of threads running blocking calls for one trio program."""

    def __init__(self, size: int, name: str = "gfapi", wait: float = 0.0) -> None:
        self.size = size
        self.name = name
        self.wait = wait                  # seconds the loop waits inline (0: never)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []    # a stack: the last thread to finish goes next
        self._pending: collections.deque = collections.deque()
        self._threads = 0
        self._excess = 0                  # threads to stop after their current call
        self._background = 0              # jobs of start() not finished yet
        self.abandoned = 0                # calls given up by their caller so far
        self.inline = 0                   # calls answered while the loop waited inline
        self.inline_missed = 0            # inline waits that ran out

    @property
    def busy(self) -> int:
        """Threads running a call (abandoned ones included)."""
        return self._threads - len(self._idle)

    def resize(self, size: int) -> None:
        """Change the number of threads (extra busy threads stop after their call)."""
        with self._lock:
            self.size = size
            if not self._threads:
                return                            # started on first use
            while self._threads > size and self._idle:
                w = self._idle.pop(0)
                w.job = _STOP
                w.wake.release()
                self._threads -= 1
            self._excess = max(0, self._threads - size)
            if self._threads < size:
                self._start(size - self._threads)

    def _start(self, count: int) -> None:
        for _ in range(count):
            threading.Thread(target=self._work, name=f"{self.name}-worker",
                             daemon=True).start()
            self._threads += 1

    async def run(self, fn: Callable[..., Any], *args: Any, abandon: bool = True) -> Any:
        """``fn(*args)`` in a worker thread; its result or its exception."""
        job = _Job(fn, args)
        w = None
        with self._lock:
            if not self._threads:
                self._start(self.size)
            if self._idle and self.wait > 0 and \
                    self._threads - len(self._idle) <= self._background:
                job.waiter = threading.Lock()         # no other call running
                job.waiter.acquire()
            else:
                job.token = trio.lowlevel.current_trio_token()
                job.task = trio.lowlevel.current_task()
            if self._idle:
                w = self._idle.pop()
                w.job = job
            else:
                self._pending.append(job)
        if w is not None:
            waiter = job.waiter
            if waiter is not None:
                # wake the thread as the last thing before blocking (the GIL released):
                # woken earlier, it would find the GIL held and sleep again on it
                w.wake.release()
                if waiter.acquire(True, self.wait) or self._ran_out(job):
                    self.inline += 1
                    if job.ok:
                        return job.value
                    raise job.value
            else:
                w.wake.release()

        return await self._delivered(job, abandon)

    async def _delivered(self, job: _Job, abandon: bool) -> Any:
        """Wait (the trio way) for the worker to deliver ``job``'s result; a
        cancellation abandons the call when ``abandon``, else waits for it."""
        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            if not abandon:
                return trio.lowlevel.Abort.FAILED
            job.abandoned = True
            self.abandoned += 1
            return trio.lowlevel.Abort.SUCCEEDED
        await trio.lowlevel.wait_task_rescheduled(abort)
        if job.ok:
            return job.value
        raise job.value

    def start(self, fn: Callable[..., Any], *args: Any) -> _Job:
        """Start ``fn(*args)`` in a worker thread without waiting for it (a read
        ahead); :meth:`result` collects it.  Not counted as a call running for the
        inline wait of other calls: nobody waits for it yet."""
        job = _Job(fn, args)
        job.background = True
        job.waiter = threading.Lock()
        job.waiter.acquire()
        w = None
        with self._lock:
            if not self._threads:
                self._start(self.size)
            self._background += 1
            if self._idle:
                w = self._idle.pop()
                w.job = job
            else:
                self._pending.append(job)
        if w is not None:
            w.wake.release()
        return job

    async def result(self, job: _Job, abandon: bool = True) -> Any:
        """The result of a job of :meth:`start`: waited for inline (as :meth:`run`'s
        calls are) when no other call runs, else the trio way."""
        with self._lock:
            inline = (not job.finished and self.wait > 0 and job.waiter is not None
                      and self._threads - len(self._idle) <= self._background)
        if inline:
            # False from _ran_out: decided under the lock, the worker delivers
            wait = not (job.waiter.acquire(True, self.wait) or self._ran_out(job))
        else:
            with self._lock:            # decided under the lock the worker finishes in
                wait = not job.finished
                if wait:
                    job.token = trio.lowlevel.current_trio_token()
                    job.task = trio.lowlevel.current_task()
                    job.waiter = None
                    job.abandoned = False   # given up by an earlier caller: wanted again
        if wait:
            return await self._delivered(job, abandon)
        if job.ok:
            return job.value
        raise job.value

    def _work(self) -> None:
        me = _Worker()
        job = self._next(me, None)
        while job is not _STOP:
            if job is None:                       # idle: wait to be handed a job
                me.wake.acquire()
                job, me.job = me.job, None
                continue
            if job.abandoned:                     # given up before a thread took it
                job.value = OSError(errno.ECANCELED, "abandoned before it ran")
            else:
                try:
                    job.value = job.fn(*job.args)
                    job.ok = True
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    job.value = exc
            done = job
            # back on the idle stack before the caller hears of the result, so the
            # caller's next call finds this (warm) thread on top
            job = self._next(me, done)
            if done.waiter is not None:           # the loop waits inline (fixed once
                _wake_loop(done.waiter)           # finished is set)
            elif done.token is not None:          # somebody waits the trio way
                try:
                    done.token.run_sync_soon(_deliver, done)
                except trio.RunFinishedError:
                    pass

    def _ran_out(self, job: _Job) -> bool:
        """The inline wait for ``job`` ran out: True when it finished meanwhile, else
        it is left to be delivered the trio way."""
        with self._lock:
            if job.finished:                      # finished as the wait ran out
                return True
            job.token = trio.lowlevel.current_trio_token()
            job.task = trio.lowlevel.current_task()
            job.waiter = None
        self.inline_missed += 1
        return False

    def _next(self, me: _Worker, done: Any) -> Any:
        """A queued job, or None after putting ``me`` on the idle stack, or _STOP when
        this thread is one too many.  ``done``: the job this thread just ran."""
        with self._lock:
            if done is not None:
                done.finished = True
                if done.background:
                    self._background -= 1
            if self._excess:
                self._excess -= 1
                self._threads -= 1
                return _STOP
            if self._pending:
                return self._pending.popleft()
            self._idle.append(me)
            return None


def _gil_free_release() -> Any:
    """``lock.release`` for a held ``threading.Lock`` that runs with the GIL released
    (``PyThread_release_lock`` through ctypes), or None where that cannot be checked
    to be safe (another interpreter version or lock layout)."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in (
            (3, 10), (3, 11), (3, 12)) or type(threading.Lock()).__basicsize__ != 40:
        return None
    try:
        fn = ctypes.CDLL(None).PyThread_release_lock
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p], None
    offset = object.__basicsize__             # after PyObject_HEAD: the PyThread lock

    def release(lock: Any) -> None:
        fn(ctypes.c_void_p.from_address(id(lock) + offset).value)

    probe = threading.Lock()
    probe.acquire()
    release(probe)
    if not probe.acquire(False):              # the release did not reach the lock
        return None
    return release


#: The worker wakes the loop's inline wait with the GIL released: with a plain
#: release it held the GIL for a few more bytecodes, and the loop it woke (often
#: preempting the worker on its CPU) found the GIL taken and slept on it once more
#: per request (see the module doc).
_wake_loop: Callable[[Any], None] = _gil_free_release() or (lambda lock: lock.release())


def _deliver(job: _Job) -> None:
    """In the trio thread: wake the caller unless it gave the call up."""
    if not job.abandoned:
        trio.lowlevel.reschedule(job.task)
