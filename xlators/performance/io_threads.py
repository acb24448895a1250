"""performance/io-threads: admit fops by priority and run the blocking work below them
in a bounded pool of worker threads.

    volume iot
        type performance/io-threads
        option thread-count 16
        option high-prio-threads 16
        option normal-prio-threads 16
        option low-prio-threads 16
        option least-prio-threads 1
        option enable-least-priority on
        subvolumes posix
    end-volume

What it means under trio.  In GlusterFS every fop is a C call that blocks the thread it
runs on, so io-threads queues fops and winds each on one of its worker threads.  In xlfs
every request is already a trio task and waiting (delay-gen, locks, write-behind's
queues) costs no thread; what blocks the one event-loop thread is a system call that
waits for the disk.  storage/posix already knows which of its calls those are: a cached
stat, a create or a page-cached pread (RWF_NOWAIT) costs a few microseconds inline, while
a worker-thread round trip costs 50-150 us; reads of uncached data, large writes,
fallocate, copy_file_range and fsync go to a thread.  So io-threads moves:

- **to its worker threads**: exactly the calls posix sends to a thread anyway.  Every
  fop it winds runs with the request marked "offload" (xlators.core.offload), and posix
  runs that request's threaded calls on io-threads' limiter, at most ``thread-count`` at
  once, instead of its own (``io-thread-count``);
- **nothing else**: metadata and cached data stay inline on the event loop.  Forcing
  every system call into a thread (what this translator did first) made each fop pay
  a thread hop for a microsecond of work.  A brick whose every call may block (NFS or
  another network filesystem under the brick) wants storage/posix ``option io-threads
  on``, which runs all of posix's calls in threads.

It also keeps GlusterFS's admission rules: at most ``thread-count`` fops are in the
child at once, at most ``<prio>-prio-threads`` of each priority, and waiting fops are
admitted highest priority first (an uncontended fop is admitted without a waiter):

- high: lookup, getattr, access, readlink, open, opendir, statfs, readdir, readdirp
- normal: create, mknod, mkdir, unlink, rmdir, symlink, rename, link, setattr, flush,
  lk, setxattr, getxattr, listxattr, removexattr, ipc
- low: readv, writev, fsync, fsyncdir, fallocate, lseek, copy_file_range
- least: any fop of a frame with a negative pid (internal work, as in GlusterFS), when
  ``enable-least-priority`` is on (else such fops keep their own priority).

forget, release and releasedir are not queued (nobody waits for them), nor is a blocking
lock request (lk with LK_SETW): it waits below for another owner's unlock, and waiters
holding every slot would keep that unlock, and every other fop, out for good.

Measured effect (``python -m benchmarks.io_threads_bench --ops 100``: in process, 32
concurrent tasks each doing 100 rounds of getattr + 4 KiB pread of a page-cached 1 MiB
file; the code before and after the change run one after the other on this 2-core
machine shared with other jobs, 2026-12-06):

    stack                        every call in a thread   blocking calls only
    posix                              128 679                 105 569   ops/s
    io-threads/posix                    13 747 (9.4x slower)    79 766 (1.3x slower)
    delay-gen/posix                     11 478                   9 332   (1 ms delay)
    io-threads/delay-gen/posix           4 501                   6 106

On a mount (volfiles/io-threads.vol, before and after in one interleaved run at load
average 7-9, ops/s; docs/benchmarks.md, issue 10's section): create 141 -> 369, stat
after dropping caches 672 -> 4,514, rename 453 -> 2,684, unlink 848 -> 6,927,
mkdir+rmdir 291 -> 1,211, now 0.6-1.1x local.vol; perf.vol gained 1.5-8.4x.  What remains
is the admission bookkeeping (about 1-3 us a fop) and, when more than ``thread-count``
fops are in flight, the queueing itself.  It pays when the brick's calls really block
(cold data, a slow disk) and other requests could be answered meanwhile; that case was
not measured here.

FUSE passthrough: io-threads changes no data, so it declares ``passes_data_through``;
with ``--fuse-passthrough=auto|yes`` over posix the kernel then reads and writes the
brick files itself, and READ and WRITE of those files never reach its queues (the
low-priority ones it would have sent to a thread).
"""
from __future__ import annotations

from typing import Any

import trio

from ..core.fops import Fop
from ..core.offload import reset_offload, set_offload
from ..core.options import Option, Opts
from ..core.translator import Translator
from ..core.types import LK_SETW
from ..debug._wrap import INJECTABLE_FOPS, install_fops
from .io_threads_pool import HIGH, LEAST, LOW, NAMES, NORMAL, PriorityPool

PRIORITY = {
    **dict.fromkeys(("lookup", "getattr", "access", "readlink", "open", "opendir",
                     "statfs", "readdir", "readdirp"), HIGH),
    **dict.fromkeys(("readv", "writev", "fsync", "fsyncdir", "fallocate", "lseek",
                     "copy_file_range"), LOW),
}


def priority_of(fop: str) -> int:
    return PRIORITY.get(fop, NORMAL)


class IoThreads(Translator):
    """performance/io-threads: fops admitted by priority; blocking calls on its threads."""
    type = "performance/io-threads"
    children_range = (1, 1)
    needs_flush = False  # flush is queued like any fop, never needed by it
    passes_data_through = True   # changes no data (FUSE passthrough: module docstring)
    options = (
        Option.int("thread-count", default=16, min=1, max=64,
                   description="Most fops in the child at once, and most worker threads "
                               "running the blocking system calls below."),
        Option.int("high-prio-threads", default=16, min=1, max=64,
                   description="Most high-priority fops (lookup, stat, open, readdir...) "
                               "at once."),
        Option.int("normal-prio-threads", default=16, min=1, max=64,
                   description="Most normal-priority fops (create, unlink, setattr, "
                               "xattrs, locks...) at once."),
        Option.int("low-prio-threads", default=16, min=1, max=64,
                   description="Most low-priority fops (read, write, fsync, fallocate...) "
                               "at once."),
        Option.int("least-prio-threads", default=1, min=1, max=64,
                   description="Most least-priority fops (frames with a negative pid) at "
                               "once."),
        Option.bool("enable-least-priority", default=True,
                    description="Give fops of frames with a negative pid (internal work) "
                                "the least priority."),
        Option.bool("pass-through", default=False,
                    description="Turn the translator off: every fop goes to the child "
                                "inline."),
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pool = PriorityPool(self.opts.thread_count, self._caps(self.opts))
        self.limiter = trio.CapacityLimiter(self.opts.thread_count)

    @staticmethod
    def _caps(o: Opts) -> list[int]:
        return [o.high_prio_threads, o.normal_prio_threads, o.low_prio_threads,
                o.least_prio_threads]

    def reconfigured(self, old: Opts) -> None:
        self.pool.configure(self.opts.thread_count, self._caps(self.opts))
        self.limiter.total_tokens = self.opts.thread_count

    def dump(self) -> dict[str, Any]:
        p = self.pool
        out: dict[str, Any] = {"thread-count": p.total, "busy": p.busy,
                               "queued": p.queued()}
        for i, name in enumerate(NAMES):
            out[f"{name}.running"] = p.running[i]
            out[f"{name}.admitted"] = p.admitted[i]
            out[f"{name}.waited"] = p.waited[i]
        return out


def _make(fop: Fop):
    name = fop.name
    prio = priority_of(name)
    is_lk = name == "lk"

    async def wound(self: IoThreads, frame: Any, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self.child, name)
        if self.opts.pass_through or (is_lk and _blocking_lock(args, kwargs)):
            return await call(frame, *args, **kwargs)
        p = LEAST if (self.opts.enable_least_priority and frame.pid < 0) else prio
        await self.pool.acquire(p)
        token = set_offload(self.limiter)
        try:
            return await call(frame, *args, **kwargs)
        finally:
            reset_offload(token)
            self.pool.release(p)
    return wound


def _blocking_lock(args: tuple, kwargs: dict) -> bool:
    """A SETLKW (lk's ``cmd`` is its second parameter, after ``fd``): it waits below for
    another owner's unlock, which must still find a free slot."""
    cmd = args[1] if len(args) > 1 else kwargs.get("cmd")
    return cmd == LK_SETW


install_fops(IoThreads, _make, INJECTABLE_FOPS,
             "Admitted by priority, then wound with blocking calls on its threads.")
