"""features/locks: POSIX record locks, flocks, blocking, cancellation, release rules."""
from __future__ import annotations

import errno
import logging
import os
from fcntl import F_RDLCK, F_UNLCK, F_WRLCK

import pytest
import trio
import trio.testing

from xlators import LK_GET, LK_SET, LK_SETW, OFFSET_MAX, Fd, FopError, Lock, default_registry
from xlators.core.options import OptionError
from xlators.features.locks import Locks
from xlators.testing import Harness, RecordingLeaf, check_passthrough

R, W, U = F_RDLCK, F_WRLCK, F_UNLCK
A, B, C = 0xA, 0xB, 0xC


class Env:
    """Locks over a recording leaf, with ready-made inodes and fds (lk never reaches
    the leaf; flush and release do)."""

    def __init__(self, **options: str) -> None:
        self.leaf = RecordingLeaf()
        self.xl = Locks("locks", [self.leaf], options, itable=self.leaf.itable)
        self.h = Harness(self.xl)
        self.h.init()
        self.inode = self.h.itable.link(100)
        self.inode2 = self.h.itable.link(200)

    def fd(self, inode=None, flags=os.O_RDWR) -> Fd:
        return Fd(inode or self.inode, flags, 1)

    def frame(self, owner=0):
        return self.h.frame(lk_owner=owner)

    async def lk(self, fd, cmd, type, start=0, end=OFFSET_MAX, owner=A, pid=None,
                 frame=None, flock=False):
        lock = Lock(type, start, end, owner if pid is None else pid, owner, flock)
        return await self.xl.lk(frame or self.frame(owner), fd, cmd, lock)

    def held(self, inode=None):
        st = (inode or self.inode).ctx.get(self.xl)
        if st is None:
            return []
        return [(h.type, h.start, h.end, h.owner) for h in st.posix]

    def flocks(self, inode=None):
        st = (inode or self.inode).ctx.get(self.xl)
        return {} if st is None else {o: h.type for o, h in st.flocks.items()}

    def blocked(self, inode=None):
        st = (inode or self.inode).ctx.get(self.xl)
        return [] if st is None else [(w.owner, w.lock.type) for w in st.blocked]


# -- POSIX: set, merge, split -----------------------------------------------------------

async def test_split_on_unlock():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 99)
    await e.lk(fd, LK_SET, U, 40, 59)
    assert e.held() == [(W, 0, 39, A), (W, 60, 99, A)]
    # another owner: the first conflict, then the hole, then a conflict again
    got = await e.lk(fd, LK_GET, W, 0, 99, owner=B)
    assert got == Lock(W, 0, 39, A, A, False)
    assert (await e.lk(fd, LK_GET, W, 40, 59, owner=B)).type == U
    await e.lk(fd, LK_SET, W, 40, 59, owner=B)
    with pytest.raises(FopError) as ei:
        await e.lk(fd, LK_SET, W, 59, 60, owner=B)
    assert ei.value.errno == errno.EAGAIN
    # the failed request changed nothing
    assert e.held() == [(W, 0, 39, A), (W, 40, 59, B), (W, 60, 99, A)]


async def test_merge_same_type_adjacent_and_overlapping():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, R, 0, 9)
    await e.lk(fd, LK_SET, R, 10, 19)
    assert e.held() == [(R, 0, 19, A)]
    await e.lk(fd, LK_SET, R, 30, 39)
    await e.lk(fd, LK_SET, R, 15, 35)
    assert e.held() == [(R, 0, 39, A)]
    # adjacent but of another type: kept apart
    await e.lk(fd, LK_SET, W, 40, 49)
    assert e.held() == [(R, 0, 39, A), (W, 40, 49, A)]
    await e.lk(fd, LK_SET, R, 45, 60)
    assert e.held() == [(R, 0, 39, A), (W, 40, 44, A), (R, 45, 60, A)]
    await e.lk(fd, LK_SET, R, 40, 44)
    assert e.held() == [(R, 0, 60, A)]
    # another owner's lock next door never merges
    await e.lk(fd, LK_SET, R, 61, 70, owner=B)
    assert e.held() == [(R, 0, 60, A), (R, 61, 70, B)]


async def test_upgrade_and_downgrade_inside_a_range():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, R, 0, 99)
    await e.lk(fd, LK_SET, W, 50, 59)
    assert e.held() == [(R, 0, 49, A), (W, 50, 59, A), (R, 60, 99, A)]
    await e.lk(fd, LK_SET, R, 55, 55)
    assert e.held() == [(R, 0, 49, A), (W, 50, 54, A), (R, 55, 55, A), (W, 56, 59, A),
                        (R, 60, 99, A)]
    await e.lk(fd, LK_SET, R, 0, OFFSET_MAX)
    assert e.held() == [(R, 0, OFFSET_MAX, A)]
    await e.lk(fd, LK_SET, U, 0, OFFSET_MAX)
    assert e.held() == []


async def test_replace_covering_range():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 10, 20)
    await e.lk(fd, LK_SET, R, 30, 40)
    await e.lk(fd, LK_SET, W, 0, 100)
    assert e.held() == [(W, 0, 100, A)]
    await e.lk(fd, LK_SET, U, 0, 0)
    await e.lk(fd, LK_SET, U, 100, 100)
    assert e.held() == [(W, 1, 99, A)]


async def test_to_eof_locks():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 1000)           # end defaults to OFFSET_MAX
    got = await e.lk(fd, LK_GET, R, 5000, 5000, owner=B)
    assert got == Lock(W, 1000, OFFSET_MAX, A, A, False)
    assert (await e.lk(fd, LK_GET, R, 0, 999, owner=B)).type == U
    await e.lk(fd, LK_SET, U, 2000)
    assert e.held() == [(W, 1000, 1999, A)]


async def test_conflicts_and_getlk():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, R, 0, 9, owner=A, pid=111)
    await e.lk(fd, LK_SET, R, 5, 14, owner=B, pid=222)       # readers share
    with pytest.raises(FopError) as ei:
        await e.lk(fd, LK_SET, W, 8, 8, owner=C)
    assert ei.value.errno == errno.EAGAIN
    # GETLK: the first conflict by start, with its pid and owner
    assert await e.lk(fd, LK_GET, W, 8, 8, owner=C) == Lock(R, 0, 9, 111, A, False)
    assert await e.lk(fd, LK_GET, W, 12, 20, owner=C) == Lock(R, 5, 14, 222, B, False)
    # a read lock does not conflict with read locks
    probe = Lock(R, 0, 100, 333, C)
    assert await e.xl.lk(e.frame(C), fd, LK_GET, probe) == probe._replace(type=U)
    # an owner never conflicts with itself
    assert (await e.lk(fd, LK_GET, W, 0, 4, owner=A)).type == U
    with pytest.raises(FopError):
        await e.lk(fd, LK_SET, W, 0, 9, owner=A)              # B's read lock on 5..9
    await e.lk(fd, LK_SET, W, 0, 4, owner=A)                  # only A there
    assert e.held() == [(W, 0, 4, A), (R, 5, 9, A), (R, 5, 14, B)]


async def test_owner_falls_back_to_frame_lk_owner():
    e = Env()
    fd = e.fd()
    await e.xl.lk(e.frame(A), fd, LK_SET, Lock(W, 0, 9, 1, 0))
    assert e.held() == [(W, 0, 9, A)]
    with pytest.raises(FopError):
        await e.xl.lk(e.frame(B), fd, LK_SET, Lock(W, 0, 9, 1, 0))


async def test_invalid_requests():
    e = Env()
    fd = e.fd()
    for cmd, lock in [(LK_SET, Lock(W, 10, 5)), (LK_SET, Lock(W, -1, 5)),
                      (LK_GET, Lock(U, 0, 5)), ("bogus", Lock(W)), (LK_SET, Lock(99))]:
        with pytest.raises(FopError) as ei:
            await e.xl.lk(e.frame(A), fd, cmd, lock)
        assert ei.value.errno == errno.EINVAL
    assert e.xl.ctx_get(e.inode) is None


async def test_unlock_of_nothing_and_state_removed_when_empty():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, U, 0, 10)
    assert e.xl not in e.inode.ctx
    await e.lk(fd, LK_SET, W, 0, 10)
    assert e.xl in e.inode.ctx and e.xl.dump()["inodes"] == 1
    await e.lk(fd, LK_SET, U)
    assert e.xl not in e.inode.ctx
    assert e.xl.dump() == {"inodes": 0, "blocked": 0}


async def test_lk_never_reaches_the_child():
    e = Env()
    await e.lk(e.fd(), LK_SET, W)
    await e.lk(e.fd(), LK_GET, W, owner=B)
    assert not e.leaf.calls
    assert Locks.handles_locks is True


# -- POSIX: blocking --------------------------------------------------------------------

async def test_setlkw_waits_and_is_granted_on_unlock():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 99, owner=A)
    results = []

    async def waiter(owner, start, end):
        results.append((owner, await e.lk(fd, LK_SETW, W, start, end, owner=owner)))

    async with trio.open_nursery() as n:
        n.start_soon(waiter, B, 50, 59)
        await trio.testing.wait_all_tasks_blocked()
        assert e.blocked() == [(B, W)]
        dump = e.xl.dump()
        assert dump["blocked"] == 1
        assert any("(BLOCKED)" in k for k in dump)
        # unlocking something else does not grant it
        await e.lk(fd, LK_SET, U, 0, 9, owner=A)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []
        # unlocking the range it needs does
        await e.lk(fd, LK_SET, U, 40, 69, owner=A)
    assert results == [(B, Lock(W, 50, 59, B, B, False))]
    assert e.held() == [(W, 10, 39, A), (W, 50, 59, B), (W, 70, 99, A)]
    assert e.blocked() == []


async def test_setlkw_fifo_granting():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 9, owner=A)
    order = []

    async def waiter(owner, type):
        await e.lk(fd, LK_SETW, type, 0, 9, owner=owner)
        order.append(owner)

    async with trio.open_nursery() as n:
        n.start_soon(waiter, B, W)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(waiter, C, W)
        await trio.testing.wait_all_tasks_blocked()
        await e.lk(fd, LK_SET, U, owner=A)
        await trio.testing.wait_all_tasks_blocked()
        assert order == [B] and e.blocked() == [(C, W)]
        await e.lk(fd, LK_SET, U, owner=B)
    assert order == [B, C]
    assert e.held() == [(W, 0, 9, C)]


async def test_readers_granted_together_writer_waits():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 9, owner=A)
    got = []

    async def waiter(owner, type):
        await e.lk(fd, LK_SETW, type, 0, 9, owner=owner)
        got.append(owner)

    async with trio.open_nursery() as n:
        n.start_soon(waiter, B, R)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(waiter, C, R)
        await trio.testing.wait_all_tasks_blocked()
        # A downgrades to a read lock: both readers are compatible with it
        await e.lk(fd, LK_SET, R, 0, 9, owner=A)
    assert sorted(got) == [B, C]
    assert sorted(e.held()) == [(R, 0, 9, A), (R, 0, 9, B), (R, 0, 9, C)]


async def test_deadlock_detection_same_inode():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 0, owner=A)
    await e.lk(fd, LK_SET, W, 10, 10, owner=B)
    async with trio.open_nursery() as n:
        n.start_soon(lambda: e.lk(fd, LK_SETW, W, 10, 10, owner=A))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(FopError) as ei:
            await e.lk(fd, LK_SETW, W, 0, 0, owner=B)
        assert ei.value.errno == errno.EDEADLK
        assert e.blocked() == [(A, W)]
        await e.lk(fd, LK_SET, U, owner=B)
    assert e.held() == [(W, 0, 0, A), (W, 10, 10, A)]


async def test_deadlock_detection_across_inodes_and_three_owners(autojump_clock):
    e = Env()
    f1, f2 = e.fd(e.inode), e.fd(e.inode2)
    await e.lk(f1, LK_SET, W, 0, 0, owner=A)
    await e.lk(f2, LK_SET, W, 0, 0, owner=B)
    await e.lk(f1, LK_SET, W, 5, 5, owner=C)
    async with trio.open_nursery() as n:
        n.start_soon(lambda: e.lk(f2, LK_SETW, W, 0, 0, owner=A))   # A waits for B
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(lambda: e.lk(f1, LK_SETW, W, 5, 5, owner=B))   # B waits for C
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(FopError) as ei:                         # C would wait for A
            await e.lk(f1, LK_SETW, W, 0, 0, owner=C)
        assert ei.value.errno == errno.EDEADLK
        # not a cycle: a fresh owner D just waits (then gets cancelled)
        with trio.move_on_after(1):
            await e.lk(f1, LK_SETW, W, 0, 0, owner=0xD)
        await e.lk(f1, LK_SET, U, owner=C)      # B granted 5..5 on inode 1
        await trio.testing.wait_all_tasks_blocked()
        await e.lk(f2, LK_SET, U, owner=B)      # A granted on inode 2
    assert e.held(e.inode2) == [(W, 0, 0, A)]
    assert e.blocked() == [] and e.blocked(e.inode2) == []


# -- cancellation and interrupts ---------------------------------------------------------

async def test_cancelled_wait_is_withdrawn(autojump_clock):
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 9, owner=A)
    with trio.move_on_after(5) as cs:
        await e.lk(fd, LK_SETW, W, 0, 9, owner=B)
    assert cs.cancelled_caught
    assert e.blocked() == [] and e.xl.dump()["blocked"] == 0
    assert not e.xl._by_frame and not e.xl._waiting
    await e.lk(fd, LK_SET, U, owner=A)
    # B never got the lock: no stale entry, a third party locks at once
    assert e.held() == [] and e.xl not in e.inode.ctx
    await e.lk(fd, LK_SET, W, 0, 9, owner=C)
    assert e.held() == [(W, 0, 9, C)]


async def test_cancelled_flock_wait_is_withdrawn(autojump_clock):
    e = Env()
    f1, f2, f3 = e.fd(), e.fd(), e.fd()
    await e.lk(f1, LK_SET, W, owner=A, flock=True)
    with trio.move_on_after(5):
        await e.lk(f2, LK_SETW, W, owner=B, flock=True)
    await e.lk(f1, LK_SET, U, owner=A, flock=True)
    assert e.flocks() == {} and e.blocked() == []
    await e.lk(f3, LK_SET, W, owner=C, flock=True)
    assert e.flocks() == {C: W}


async def test_cancel_racing_a_grant_keeps_the_grant():
    """Granted and cancelled in the same instant: the fop succeeds and the lock is held
    (never granted-but-reported-failed, never lost)."""
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 9, owner=A)
    outcome = []

    async def waiter(task_status=trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as cs:
            task_status.started(cs)
            outcome.append(await e.lk(fd, LK_SETW, W, 0, 9, owner=B))
        outcome.append(cs.cancelled_caught)

    async with trio.open_nursery() as n:
        cs = await n.start(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await e.lk(fd, LK_SET, U, owner=A)     # grants B (no checkpoint in between) ...
        cs.cancel()                            # ... then B's scope is cancelled
    assert outcome == [Lock(W, 0, 9, B, B, False), False]
    assert e.held() == [(W, 0, 9, B)]


async def test_cancel_blocked_api():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 9, owner=A)
    frame = e.frame(B)
    errors = []

    async def waiter():
        try:
            await e.lk(fd, LK_SETW, W, 0, 9, owner=B, frame=frame)
        except FopError as exc:
            errors.append(exc.errno)

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert e.xl.cancel_blocked(e.frame(B)) is False       # another frame
        assert e.xl.cancel_blocked(frame) is True
        assert e.xl.cancel_blocked(frame) is False            # already withdrawn
    assert errors == [errno.EINTR]
    assert e.blocked() == []
    await e.lk(fd, LK_SET, U, owner=A)
    assert e.held() == []
    # granted requests cannot be cancelled any more
    await e.lk(fd, LK_SET, W, 0, 9, owner=C, frame=frame)
    assert e.xl.cancel_blocked(frame) is False


class FakeInterrupt:
    """What the bridge puts in frame.interrupt: add_handler(fn) -> True."""

    def __init__(self):
        self.handlers = []

    def add_handler(self, handler):
        self.handlers.append(handler)
        return True

    def fire(self):
        for h in self.handlers:
            h()


async def test_interrupt_handler_withdraws_with_eintr():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, R, 0, 9, owner=A)
    frame = e.frame(B)
    frame.interrupt = FakeInterrupt()
    errors = []

    async def waiter():
        try:
            await e.lk(fd, LK_SETW, W, 0, 9, owner=B, frame=frame)
        except FopError as exc:
            errors.append(exc.errno)

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert len(frame.interrupt.handlers) == 1
        frame.interrupt.fire()
        frame.interrupt.fire()                 # a second interrupt is harmless
    assert errors == [errno.EINTR]
    assert e.blocked() == []
    await e.lk(fd, LK_SET, U, owner=A)
    await e.lk(fd, LK_SET, W, 0, 9, owner=C)
    assert e.held() == [(W, 0, 9, C)]


async def test_interrupt_after_grant_is_ignored():
    e = Env()
    fd = e.fd()
    frame = e.frame(B)
    frame.interrupt = FakeInterrupt()
    assert await e.lk(fd, LK_SETW, W, 0, 9, owner=B, frame=frame) == Lock(W, 0, 9, B, B)
    assert frame.interrupt.handlers == []      # never blocked: nothing registered
    assert e.xl.cancel_blocked(frame) is False


# -- flock -----------------------------------------------------------------------------

async def test_flock_shared_and_exclusive():
    e = Env()
    f1, f2, f3 = e.fd(), e.fd(), e.fd()
    await e.lk(f1, LK_SET, R, owner=A, flock=True)
    await e.lk(f2, LK_SET, R, owner=B, flock=True)
    with pytest.raises(FopError) as ei:
        await e.lk(f3, LK_SET, W, owner=C, flock=True)
    assert ei.value.errno == errno.EAGAIN           # EWOULDBLOCK
    assert await e.lk(f3, LK_GET, W, owner=C, flock=True) == Lock(R, 0, OFFSET_MAX, A, A,
                                                                   True)
    await e.lk(f1, LK_SET, R, owner=A, flock=True)  # the same lock again: no-op
    await e.lk(f1, LK_SET, U, owner=A, flock=True)
    await e.lk(f2, LK_SET, U, owner=B, flock=True)
    await e.lk(f3, LK_SET, W, owner=C, flock=True)
    with pytest.raises(FopError):
        await e.lk(f1, LK_SET, R, owner=A, flock=True)
    assert e.flocks() == {C: W}


async def test_flock_and_posix_are_independent():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, owner=A, flock=True)
    await e.lk(fd, LK_SET, W, 0, OFFSET_MAX, owner=B)
    assert e.flocks() == {A: W} and e.held() == [(W, 0, OFFSET_MAX, B)]


async def test_flock_upgrade_is_not_atomic():
    e = Env()
    f1, f2 = e.fd(), e.fd()
    await e.lk(f1, LK_SET, R, owner=A, flock=True)
    await e.lk(f2, LK_SET, R, owner=B, flock=True)
    # A's non-blocking upgrade fails, and (flock(2): drop, then acquire) A's lock is gone
    with pytest.raises(FopError) as ei:
        await e.lk(f1, LK_SET, W, owner=A, flock=True)
    assert ei.value.errno == errno.EAGAIN
    assert e.flocks() == {B: R}
    # B upgrades: nobody else holds anything
    await e.lk(f2, LK_SET, W, owner=B, flock=True)
    assert e.flocks() == {B: W}
    # and downgrades
    await e.lk(f2, LK_SET, R, owner=B, flock=True)
    await e.lk(f1, LK_SET, R, owner=A, flock=True)
    assert e.flocks() == {A: R, B: R}


async def test_flock_blocking_upgrade_lets_a_waiter_in_first():
    e = Env()
    f1, f2 = e.fd(), e.fd()
    await e.lk(f1, LK_SET, R, owner=A, flock=True)
    order = []

    async def lock(fd, owner, type):
        await e.lk(fd, LK_SETW, type, owner=owner, flock=True)
        order.append((owner, type))

    async with trio.open_nursery() as n:
        n.start_soon(lock, f2, B, W)               # B waits for A's shared lock
        await trio.testing.wait_all_tasks_blocked()
        assert e.blocked() == [(B, W)]
        n.start_soon(lock, f1, A, W)               # A upgrades: drops SH, B gets EX first
        await trio.testing.wait_all_tasks_blocked()
        assert order == [(B, W)] and e.flocks() == {B: W} and e.blocked() == [(A, W)]
        await e.lk(f2, LK_SET, U, owner=B, flock=True)
    assert order == [(B, W), (A, W)] and e.flocks() == {A: W}


async def test_flock_downgrade_grants_shared_waiters():
    e = Env()
    f1, f2 = e.fd(), e.fd()
    await e.lk(f1, LK_SET, W, owner=A, flock=True)
    async with trio.open_nursery() as n:
        n.start_soon(lambda: e.lk(f2, LK_SETW, R, owner=B, flock=True))
        await trio.testing.wait_all_tasks_blocked()
        await e.lk(f1, LK_SET, R, owner=A, flock=True)
    assert e.flocks() == {A: R, B: R}


# -- release rules ---------------------------------------------------------------------

async def test_posix_locks_dropped_on_flush_of_their_owner():
    e = Env()
    f1, f2 = e.fd(), e.fd()
    await e.lk(f1, LK_SET, W, 0, 9, owner=A)
    await e.lk(f1, LK_SET, W, 20, 29, owner=B)
    await e.lk(e.fd(e.inode2), LK_SET, W, 0, 9, owner=A)
    got = []
    async with trio.open_nursery() as n:
        async def waiter():
            got.append(await e.lk(f2, LK_SETW, W, 0, 9, owner=C))
        n.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await e.xl.flush(e.frame(C), f2)                # C holds nothing: no change
        assert e.held() == [(W, 0, 9, A), (W, 20, 29, B)]
        # POSIX: closing ANY fd of the file drops all of the owner's locks on it
        await e.xl.flush(e.frame(A), f2)
    assert got and e.held() == [(W, 0, 9, C), (W, 20, 29, B)]
    assert e.held(e.inode2) == [(W, 0, 9, A)]          # other files keep theirs
    assert [c[0] for c in e.leaf.calls] == ["flush", "flush"]


async def test_flocks_dropped_on_release_of_their_fd():
    e = Env()
    f1, f2 = e.fd(), e.fd()
    await e.lk(f1, LK_SET, W, owner=A, flock=True)
    await e.xl.flush(e.frame(A), f1)                  # flush leaves flocks alone
    assert e.flocks() == {A: W}
    await e.xl.release(e.frame(0), f2)                # another fd's release: no change
    assert e.flocks() == {A: W}
    async with trio.open_nursery() as n:
        n.start_soon(lambda: e.lk(f2, LK_SETW, W, owner=B, flock=True))
        await trio.testing.wait_all_tasks_blocked()
        await e.xl.release(e.frame(0), f1)
    assert e.flocks() == {B: W}
    assert [c[0] for c in e.leaf.calls] == ["flush", "release", "release"]


async def test_release_drops_posix_locks_taken_through_the_fd():
    e = Env()
    f1, f2 = e.fd(), e.fd()
    await e.lk(f1, LK_SET, W, 0, 9, owner=A)
    await e.lk(f2, LK_SET, W, 10, 19, owner=B)
    await e.xl.release(e.frame(0), f1)
    assert e.held() == [(W, 10, 19, B)]


async def test_forget_drops_state():
    e = Env()
    await e.lk(e.fd(), LK_SET, W, owner=A)
    await e.xl.forget(e.frame(0), e.inode)
    assert e.xl not in e.inode.ctx and e.xl.dump()["inodes"] == 0


# -- statedump, options, conformance ---------------------------------------------------

async def test_dump_shows_held_and_blocked():
    e = Env()
    fd = e.fd()
    await e.lk(fd, LK_SET, W, 0, 9, owner=A, pid=77)
    await e.lk(fd, LK_SET, R, owner=B, flock=True)
    async with trio.open_nursery() as n:
        n.start_soon(lambda: e.lk(fd, LK_SETW, R, 5, 5, owner=C))
        await trio.testing.wait_all_tasks_blocked()
        d = e.xl.dump()
        await e.lk(fd, LK_SET, U, owner=A)
    assert d["inodes"] == 1 and d["blocked"] == 1
    assert d["inode.100.posixlk[0](ACTIVE)"] == "type=WRITE, start=0, end=9, pid=77, owner=a"
    assert d["inode.100.flock[0](ACTIVE)"].startswith("type=READ")
    assert d["inode.100.posixlk[0](BLOCKED)"].startswith("type=READ, start=5, end=5")


async def test_trace_option_logs(caplog):
    e = Env(trace="on")
    with caplog.at_level(logging.INFO, logger="xlfs"):
        await e.lk(e.fd(), LK_SET, W, 0, 9, owner=A)
        with pytest.raises(FopError):
            await e.lk(e.fd(), LK_SET, W, 0, 9, owner=B)
        fd = e.fd()
        await e.lk(fd, LK_SET, R, owner=C, flock=True)
        await e.xl.flush(e.frame(A), fd)
        await e.xl.release(e.frame(0), fd)
    text = caplog.text
    assert "[GRANTED] POSIX" in text and "[EAGAIN] POSIX" in text
    assert "[GRANTED] FLOCK" in text and "(flush)" in text and "(release)" in text


def test_options():
    leaf = RecordingLeaf()
    xl = Locks("l", [leaf], {"mandatory-locking": "file"}, itable=leaf.itable)
    with pytest.raises(ValueError, match="mandatory-locking"):
        xl.init()
    with pytest.raises(OptionError):
        Locks("l", [RecordingLeaf()], {"trace": "maybe"})
    assert default_registry().get("features/locks") is Locks


async def test_passthrough():
    checked = await check_passthrough(Locks)
    assert "lk" not in checked and "flush" not in checked and "release" not in checked
    assert "writev" in checked and "lookup" in checked


async def test_through_a_storage_stack():
    h = Harness.stack("features/locks")
    fd1 = await h.create("/f")
    fd2 = await h.open("/f")
    lk = h.top.lk
    await lk(h.frame(lk_owner=A), fd1, LK_SET, Lock(W, 0, 9, 1, A))
    with pytest.raises(FopError):
        await lk(h.frame(lk_owner=B), fd2, LK_SET, Lock(R, 0, 0, 2, B))
    await h.close(fd1, frame=h.frame(lk_owner=A))     # flush with A's owner drops it
    await lk(h.frame(lk_owner=B), fd2, LK_SET, Lock(R, 0, 0, 2, B))
    await h.close(fd2, frame=h.frame(lk_owner=B))
    assert h.top.dump()["inodes"] == 0
