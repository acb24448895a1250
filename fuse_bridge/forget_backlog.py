"""When the kernel's FORGETs are applied: when the daemon has nothing else to do.

The kernel hands queued forgets to the daemon ahead of waiting requests (fs/fuse/dev.c:
while both wait, 16 reads of forgets for 8 of requests), and one BATCH_FORGET carries as
many as the read buffer holds: after ``echo 3 > /proc/sys/vm/drop_caches`` one read brings
thousands.  Applied on arrival (a few microseconds each: the table, then the graph's
forget, posix closing its descriptor) they held up the requests behind them: a cold
``os.listdir`` of 10,000 files right after dropping caches waited up to ~100 ms for the
forgets of those files (docs/benchmarks.md, "Issue 10").

So FORGET and BATCH_FORGET only record what they forget (``ClientState.defer_forgets``:
the batch's bytes, copied once), and a task of the session applies them once no other
request came for :data:`QUIET` seconds (forget messages do not count), in chunks of
:data:`CHUNK`, looking at the device between chunks: a request that comes meanwhile
usually waits for one chunk at most (and for none when a translator's forget waits: the
task waits, not a reader; the exceptions, which apply every waiting forget at once, are
below).  Traffic never holds them for long: once the task has waited
:data:`MAX_WAIT` seconds it applies a chunk every :data:`QUIET` seconds however busy the
device is, until none wait (an unlinked file's blocks are freed only when posix closes
its descriptor, at the forget).  Reference counting commutes: a LOOKUP that hands out an inode
whose forget waits adds one lookup, which the forget takes back later; the inode, its
nodeid and generation and its translators' state stay meanwhile, as if the kernel had
sent the forget a little later.  What needs exact counts applies every waiting forget
first: a graph switch, a statedump, DESTROY, the LRU before it evicts
(``ClientState._lru_evict``).  At most :data:`HELD_MAX` wait (past it a FORGET or
BATCH_FORGET applies the oldest at once), and none while the table holds more inodes
than the LRU limit (posix holds a descriptor per inode: the forgets of the names the LRU
invalidated are what frees them).
"""
from __future__ import annotations

import logging
import select
from typing import Any

import trio

log = logging.getLogger("xlfs.fuse")

QUIET = 0.001       # seconds without a request before forgets are applied
CHUNK = 128         # forgets per chunk: ~0.5 ms, what a request arriving meanwhile waits
ROUNDS = 8          # chunks at most before the loop's other tasks get a turn
HELD_MAX = 65536    # forgets waiting at most (16 bytes each)
MAX_WAIT = 0.1      # seconds after which forgets are applied whatever the traffic


class _Applier:
    """Per session: whether its task runs, and the FORGET/BATCH_FORGET messages read
    (they do not make the device busy: the kernel sends them while it is idle too,
    dropping caches sends one every few hundred microseconds)."""
    __slots__ = ("running", "forget_messages")

    def __init__(self) -> None:
        self.running = False
        self.forget_messages = 0


def deferred(session: Any) -> None:
    """A FORGET or BATCH_FORGET was deferred: make sure ``session`` has its task
    applying them."""
    state = session.forget_applier
    if state is None:
        state = session.forget_applier = _Applier()
    state.forget_messages += 1
    if not state.running and session.nursery is not None:
        state.running = True
        session.nursery.start_soon(apply_when_quiet, session, state)


async def apply_when_quiet(session: Any, state: _Applier) -> None:
    """Apply ``session``'s deferred forgets whenever no other request came for
    :data:`QUIET` seconds, :data:`CHUNK` at a time (the first chunk at once, the next
    ones while the device has nothing to read), until none wait; past :data:`MAX_WAIT`
    a chunk every :data:`QUIET` seconds even while requests keep coming."""
    client = session.client
    poller = select.poll()
    polled: list[int] = []
    overdue = trio.current_time() + MAX_WAIT
    try:
        while client.forgets_pending:
            seen = session.requests - state.forget_messages
            await trio.sleep(QUIET)
            if session.switching is not None:
                continue
            if session.requests - state.forget_messages != seen:
                if trio.current_time() >= overdue:  # busy for long: one chunk anyway
                    await _apply(client, CHUNK)
                continue                            # not quiet: requests go first
            fds = [chan.fd for chan in session.channels]
            if fds != polled:                       # (a clone channel was added)
                for fd in polled:
                    poller.unregister(fd)
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                polled = fds
            for i in range(ROUNDS):
                if i and poller.poll(0):
                    break                           # something to read: it goes first
                await _apply(client, CHUNK)
                if not client.forgets_pending or session.switching is not None:
                    break
    finally:
        state.running = False


async def _apply(client: Any, limit: int) -> None:
    try:
        await client.apply_forgets(limit)
    except Exception:                           # (the graph's forgets log their own)
        log.exception("applying deferred forgets failed")
