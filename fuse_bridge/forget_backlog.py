"""When the kernel's FORGETs are applied: when the daemon has nothing else to do, and
those of files that still have a name only once it has had nothing to do for a while.

The kernel hands queued forgets to the daemon ahead of waiting requests (fs/fuse/dev.c:
while both wait, 16 reads of forgets for 8 of requests), and one BATCH_FORGET carries as
many as the read buffer holds: after ``echo 3 > /proc/sys/vm/drop_caches`` one read brings
thousands.  Applied on arrival (a few microseconds each: the table, then the graph's
forget, posix closing its descriptor) they held up the requests behind them: a cold
``os.listdir`` of 10,000 files right after dropping caches waited up to ~100 ms for the
forgets of those files (docs/benchmarks.md, "Issue 10").

So FORGET and BATCH_FORGET only record what they forget (``ClientState.defer_forgets``:
the batch's bytes, copied once), and a task of the session applies them in chunks of
:data:`CHUNK`, looking at the device between chunks: a request that comes meanwhile
usually waits for one chunk at most (and for none when a translator's forget waits: the
task waits, not a reader; the exceptions, which apply every waiting forget at once, are
below).  When depends on whether the forgotten files may have lost their last name:

- after an UNLINK, RMDIR or RENAME (``FuseClient.removals``; within :data:`LINGER`
  seconds of one) they may: an unlinked file's blocks are freed only when posix closes
  its descriptor, at the forget.  The forgets are applied once no other request came
  for :data:`QUIET` seconds (forget messages do not count), and traffic holds them
  for :data:`MAX_WAIT` seconds at most: then a chunk every :data:`QUIET` seconds
  however busy the device is, until none wait;
- otherwise (the kernel forgets files it merely evicted: memory pressure, dropping
  caches, the LRU's invalidations) the files keep their names, and the daemon keeps
  what it knows of them a little longer, as GlusterFS's inode table keeps forgotten
  inodes on its LRU: the forgets wait until no request came for :data:`LINGER` seconds
  (a LOOKUP of one of them meanwhile finds its inode, descriptor and cached attributes
  still there), and traffic holds them for :data:`MAX_LINGER` seconds at most.  A file
  unlinked behind the mount's back, or unlinked while open and closed later with no
  removal near, is freed that late.

Reference counting commutes: a LOOKUP that hands out an inode whose forget waits adds
one lookup, which the forget takes back later; the inode, its nodeid and generation and
its translators' state stay meanwhile, as if the kernel had sent the forget a little
later.  What needs exact counts applies every waiting forget first: a graph switch, a
statedump, DESTROY, the LRU before it evicts (``ClientState._lru_evict``).  At most
:data:`HELD_MAX` wait (past it a FORGET or BATCH_FORGET applies the oldest at once), and
none while the table holds more inodes than the LRU limit (posix holds a descriptor per
inode: the forgets of the names the LRU invalidated are what frees them).
"""
from __future__ import annotations

import logging
import select
from typing import Any, Optional

import trio

log = logging.getLogger("xlfs.fuse")

QUIET = 0.001       # seconds without a request before forgets are applied
CHUNK = 128         # forgets per chunk: ~0.5 ms, what a request arriving meanwhile waits
ROUNDS = 8          # chunks at most before the loop's other tasks get a turn
HELD_MAX = 65536    # forgets waiting at most (16 bytes each)
MAX_WAIT = 0.1      # seconds after which forgets are applied whatever the traffic
LINGER = 1.0        # seconds without a request before forgets of named files are applied
MAX_LINGER = 5.0    # ... and after which they are applied whatever the traffic


class _Applier:
    """Per session: whether its task runs, and the FORGET/BATCH_FORGET messages read
    (they do not make the device busy: the kernel sends them while it is idle too,
    dropping caches sends one every few hundred microseconds)."""
    __slots__ = ("running", "forget_messages", "removals_seen", "removal_until", "nap")

    def __init__(self) -> None:
        self.running = False
        self.forget_messages = 0
        self.removals_seen = 0          # FuseClient.removals when last looked at
        self.removal_until = -1.0       # trio time until which a removal is recent
        self.nap: Optional[trio.CancelScope] = None     # the task's LINGER wait


def deferred(session: Any) -> None:
    """A FORGET or BATCH_FORGET was deferred: make sure ``session`` has its task
    applying them."""
    state = session.forget_applier
    if state is None:
        state = session.forget_applier = _Applier()
    state.forget_messages += 1
    if state.nap is not None and session.client.removals != state.removals_seen:
        state.nap.cancel()              # forgets after a removal: do not linger
    if not state.running and session.nursery is not None:
        state.running = True
        session.nursery.start_soon(apply_when_quiet, session, state)


async def apply_when_quiet(session: Any, state: _Applier) -> None:
    """Apply ``session``'s deferred forgets, :data:`CHUNK` at a time, until none wait:
    once no other request came for :data:`QUIET` seconds while a removal is recent
    (:func:`removal_recent`), for :data:`LINGER` seconds otherwise, then between
    requests as long as they do not come; past :data:`MAX_WAIT` (:data:`MAX_LINGER`)
    a chunk every :data:`QUIET` seconds even while requests keep coming."""
    client = session.client
    poller = select.poll()
    polled: list[int] = []
    start = trio.current_time()
    draining = False                # quiet for long enough: apply until a request comes
    try:
        while client.forgets_pending:
            seen = session.requests - state.forget_messages
            now = trio.current_time()
            prompt = removal_recent(client, state)
            due = start + (MAX_WAIT if prompt else MAX_LINGER)
            if prompt or draining or now >= due:
                await trio.sleep(QUIET)
            else:
                with trio.CancelScope() as state.nap:
                    await trio.sleep(min(LINGER, due - now))
                state.nap = None
                if removal_recent(client, state):
                    continue                        # woken: a removal came meanwhile
            if session.switching is not None:
                continue
            if session.requests - state.forget_messages != seen:
                draining = False
                if trio.current_time() >= due:
                    await _apply(client, CHUNK)     # busy for long: one chunk anyway
                continue                            # not quiet: requests go first
            draining = True
            fds = [chan.fd for chan in session.channels]
            if fds != polled:                       # (a clone channel was added)
                for fd in polled:
                    poller.unregister(fd)
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                polled = fds
            for i in range(ROUNDS):
                if i and poller.poll(0):
                    draining = False
                    break                           # something to read: it goes first
                await _apply(client, CHUNK)
                if not client.forgets_pending or session.switching is not None:
                    break
    finally:
        state.running = False
        state.nap = None


def removal_recent(client: Any, state: _Applier) -> bool:
    """Did the client serve an UNLINK, RMDIR or RENAME (``client.removals``) in the
    last :data:`LINGER` seconds that this task looked (or since it last looked)?  Then
    the forgets waiting may be of files whose last name went: their forgets are what
    frees their blocks."""
    now = trio.current_time()
    if client.removals != state.removals_seen:
        state.removals_seen = client.removals
        state.removal_until = now + LINGER
    return now < state.removal_until


async def _apply(client: Any, limit: int) -> None:
    try:
        await client.apply_forgets(limit)
    except Exception:                           # (the graph's forgets log their own)
        log.exception("applying deferred forgets failed")
