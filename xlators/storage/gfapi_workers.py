"""storage/gfapi's worker threads: where the blocking libgfapi calls run.

Every libgfapi call blocks its thread until the bricks answer, so none runs on the event
loop.  ``trio.to_thread.run_sync`` did this at first; measured in-process on this kind of
machine (2 cores, other work running), its round trip for an empty call was 390-780 us,
against 120-360 us for this pool (one ``queue.SimpleQueue`` put, the answer handed back
with ``TrioToken.run_sync_soon``): the thread cache, the capacity limiter and the
context copy of ``to_thread`` are each a cost paid per call, and a GETATTR is one call.

- ``size`` threads, started on first use (so after the daemon forked: libgfapi is not
  fork-safe) and kept: a thread keeps the caller identity it last set, so most calls skip
  ``glfs_setfs*`` (gfapi_binding.set_credentials).  They are the bound on library calls
  running at once (option io-thread-count); more calls queue.
- :meth:`Workers.run` with ``abandon=True`` answers a cancellation at once: the job is
  marked abandoned; if no thread took it yet it is skipped, else its thread finishes the
  call by itself and its result is dropped.  With ``abandon=False`` (closing a file:
  it must happen) the cancellation waits for the call.
- A thread finishing after the trio run that queued the job ended just drops the result.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import trio

_STOP = object()


class _Job:
    __slots__ = ("fn", "args", "token", "task", "ok", "value", "abandoned")

    def __init__(self, fn: Callable[..., Any], args: tuple, token: Any, task: Any) -> None:
        self.fn = fn
        self.args = args
        self.token = token
        self.task = task
        self.ok = False
        self.value: Any = None
        self.abandoned = False


class Workers:
    """A fixed set of threads running blocking calls for one trio program."""

    def __init__(self, size: int, name: str = "gfapi") -> None:
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.busy = 0                 # calls being run (abandoned ones included)
        self.abandoned = 0            # calls given up by their caller so far

    def resize(self, size: int) -> None:
        """Change the number of threads (extra threads stop after their current call)."""
        with self._lock:
            self.size = size
            extra = len(self._threads) - size
            if extra > 0:
                for _ in range(extra):
                    self._queue.put(_STOP)
                self._threads = self._threads[extra:]
            elif self._threads:
                self._start(size - len(self._threads))

    def _start(self, count: int) -> None:
        for _ in range(count):
            t = threading.Thread(target=self._work, name=f"{self.name}-worker",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    async def run(self, fn: Callable[..., Any], *args: Any, abandon: bool = True) -> Any:
        """``fn(*args)`` in a worker thread; its result or its exception."""
        if not self._threads:
            with self._lock:
                if not self._threads:
                    self._start(self.size)
        job = _Job(fn, args, trio.lowlevel.current_trio_token(),
                   trio.lowlevel.current_task())
        self._queue.put(job)

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

    def _work(self) -> None:
        get = self._queue.get
        while True:
            job = get()
            if job is _STOP:
                return
            if job.abandoned:                 # given up before any thread took it
                continue
            with self._count_lock:
                self.busy += 1
            try:
                job.value = job.fn(*job.args)
                job.ok = True
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                job.value = exc
            finally:
                with self._count_lock:
                    self.busy -= 1
            try:
                job.token.run_sync_soon(_deliver, job)
            except trio.RunFinishedError:
                pass


def _deliver(job: _Job) -> None:
    """In the trio thread: wake the caller unless it gave the call up."""
    if not job.abandoned:
        trio.lowlevel.reschedule(job.task)
