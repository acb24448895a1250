"""When the kernel's FORGETs are applied: when the daemon has nothing else to do.

The kernel hands queued forgets to the daemon ahead of waiting requests (fs/fuse/dev.c:
while both wait, 16 reads of forgets for 8 of requests), and one BATCH_FORGET carries as
many as the read buffer holds: after ``echo 3 > /proc/sys/vm/drop_caches`` one read brings
thousands.  Applied on arrival (a few microseconds each: the table, then the graph's
forget, posix closing its descriptor) they held up the requests behind them: a cold
``os.listdir`` of 10,000 files right after dropping caches waited up to ~100 ms for the
forgets of those files (docs/benchmarks.md, "Issue 10").

So FORGET and BATCH_FORGET only record what they forget (``ClientState.defer_forgets``:
the batch's bytes, copied once), and once the device stayed empty for :data:`QUIET`
seconds a reader applies them in chunks of :data:`CHUNK`, looking at the device between
chunks (``fuse_bridge.readers``): a request that comes meanwhile waits for one chunk at
most.  Reference counting commutes: a LOOKUP that hands out an inode whose forget waits
adds one lookup, which the forget takes back later; the inode, its nodeid and generation and its translators' state stay
meanwhile, as if the kernel had sent the forget a little later.  What needs exact counts
applies every waiting forget first: a graph switch, a statedump, DESTROY, the LRU before
it evicts (``ClientState._lru_evict``): so the table never holds more than the LRU
limit allows because forgets wait (posix holds a descriptor per inode).  At most
:data:`HELD_MAX` wait: past it a FORGET or BATCH_FORGET applies the oldest at once.
"""
from __future__ import annotations

import select
from typing import Any, Coroutine, Optional

import trio

QUIET = 0.001       # seconds the device stays empty before a chunk is applied
CHUNK = 128         # forgets per chunk: ~0.5 ms, what a request arriving meanwhile waits
ROUNDS = 8          # chunks at most before the loop's other tasks get a turn
HELD_MAX = 65536    # forgets waiting at most (16 bytes each)


async def quiet(fd: int) -> bool:
    """Wait until ``fd`` is readable, :data:`QUIET` seconds at most: True when it
    stayed empty (apply a chunk of forgets), False when a request came."""
    with trio.move_on_after(QUIET):
        await trio.lowlevel.wait_readable(fd)
        return False
    return True


def apply_while_idle(client: Any, fd: int) -> Optional[tuple[Coroutine[Any, Any, None], Any]]:
    """Apply waiting forgets, :data:`CHUNK` at a time, until none wait, ``fd`` has a
    request to read (looked at between chunks) or :data:`ROUNDS` chunks are done.  None
    when done without waiting (the usual case); else the chunk that waits, stepped once,
    and what it yielded (for ``readers.resume``; the reader makes sure another one
    listens on the device meanwhile)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    for _ in range(ROUNDS):
        before = client.forgets_pending
        coro = client.apply_forgets(CHUNK)
        try:
            trap = coro.send(None)
        except StopIteration:
            left = client.forgets_pending
            # (none applied: those left are a waiting chunk's, another reader's)
            if not left or left == before or poller.poll(0):
                return None
            continue
        return coro, trap
    return None
