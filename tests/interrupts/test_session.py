"""FUSE_INTERRUPT through a real Session, every order forced by a scripted kernel.

The kernel's side is a SOCK_SEQPACKET socket (tests/interrupts/fakekernel.py): requests
and INTERRUPTs go in in exactly the order each test wants, and every reply is read, so
"exactly one reply per request" and "an INTERRUPT is never answered" are checked on the
wire.
"""
from __future__ import annotations

import errno
import logging
from fcntl import F_RDLCK, F_UNLCK, F_WRLCK

import pytest
import trio

from tests.interrupts.fakekernel import O, fake_kernel

EINTR = -errno.EINTR


@pytest.fixture(autouse=True)
def debug_log(caplog):
    caplog.set_level(logging.DEBUG, logger="xlfs")
    return caplog


def lines(caplog, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


async def held(k, opcode, body, nodeid):
    """Send a request the gate holds; return its unique once it is held."""
    unique = await k.send(opcode, body, nodeid)
    with trio.fail_after(5):
        await k.gate.entered.wait()
    return unique


# -- FLUSH -------------------------------------------------------------------------------

async def test_flush_flag_on_interrupt_answers_eintr_once(caplog):
    async with fake_kernel(flush_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("flush")
        unique = await held(k, O.FLUSH, k.flush_body(fh), nodeid)
        await k.interrupt(unique)
        assert await k.reply() == (unique, EINTR, b"")        # at once, from the handler
        assert k.session.interrupts.records == 1                # the flush goes on
        k.gate.release.set()
        await k.no_reply()                                      # its answer is suppressed
        error, _ = await k.call(O.GETATTR, b"\0" * 16, nodeid)  # the session still serves
        assert error == 0
        assert k.gate.finished == 1 and k.gate.cancelled == 0   # finished unseen
        assert k.session.interrupts.records == 0 and not k.session.interrupts.pending
    assert lines(caplog, f"FLUSH unique {unique}: interrupt handler triggered")
    assert lines(caplog, f"FLUSH unique {unique}: answered EINTR by the interrupt handler")
    assert not lines(caplog, "no handler found")


async def test_flush_flag_off_interrupt_waits_for_the_flush(caplog):
    async with fake_kernel() as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("flush")                       # registers on_interrupt like delay-gen
        unique = await held(k, O.FLUSH, k.flush_body(fh), nodeid)
        await k.interrupt(unique)
        await k.no_reply()                        # never EINTR, never ENOSYS/EAGAIN
        assert k.gate.interrupted == 0            # FLUSH refuses translator handlers
        k.gate.release.set()
        assert await k.reply() == (unique, 0, b"")
        assert k.session.interrupts.unhandled == 1
    assert lines(caplog, f"INTERRUPT unique {unique} (FLUSH): no handler found")
    assert not lines(caplog, "interrupt handler triggered")


async def test_flush_finishes_before_the_interrupt_is_read(caplog):
    """The reply is on its way when the INTERRUPT comes: dropped, nothing answered."""
    async with fake_kernel(flush_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        error, _ = await k.call(O.FLUSH, k.flush_body(fh), nodeid)
        assert error == 0
        unique = k._unique
        await k.interrupt(unique)
        await k.no_reply()
        assert k.session.interrupts.dropped == 1
    assert lines(caplog, f"INTERRUPT unique {unique}: already answered; dropped")


async def test_two_interrupts_for_one_flush(caplog):
    async with fake_kernel(flush_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("flush")
        unique = await held(k, O.FLUSH, k.flush_body(fh), nodeid)
        await k.interrupt(unique)
        await k.interrupt(unique)
        assert await k.reply() == (unique, EINTR, b"")
        k.gate.release.set()
        await k.no_reply()
        assert k.session.interrupts.received == 2
    assert len(lines(caplog, "interrupt handler triggered")) == 1


async def test_two_interrupts_flag_off(caplog):
    async with fake_kernel() as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("flush")
        unique = await held(k, O.FLUSH, k.flush_body(fh), nodeid)
        await k.interrupt(unique)
        await k.interrupt(unique)
        await k.no_reply()
        k.gate.release.set()
        assert await k.reply() == (unique, 0, b"")
        await k.no_reply()
    assert len(lines(caplog, "no handler found")) == 1
    assert lines(caplog, f"INTERRUPT unique {unique} (FLUSH): interrupted already; dropped")


async def test_flush_error_after_handled_interrupt_sends_only_eintr():
    async with fake_kernel(flush_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("flush", fail=errno.EIO)
        unique = await held(k, O.FLUSH, k.flush_body(fh), nodeid)
        await k.interrupt(unique)
        assert await k.reply() == (unique, EINTR, b"")
        k.gate.release.set()
        await k.no_reply()
        assert k.session.interrupts.records == 0


async def test_flush_error_without_interrupt_reaps_the_record():
    async with fake_kernel(flush_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("flush", fail=errno.EIO)
        unique = await held(k, O.FLUSH, k.flush_body(fh), nodeid)
        k.gate.release.set()
        assert await k.reply() == (unique, -errno.EIO, b"")
        assert k.session.interrupts.records == 0 and not k.session.interrupts.pending
        await k.interrupt(unique)                 # late: dropped
        await k.no_reply()


async def test_unknown_target_is_dropped():
    async with fake_kernel() as k:
        await k.interrupt(0x7770)
        await k.no_reply()
        error, _ = await k.call(O.GETATTR, b"\0" * 16, 1)
        assert error == 0
        assert k.session.interrupts.dropped == 1


# -- cancellation through the graph ------------------------------------------------------

async def test_translator_handler_cancels_a_write(caplog):
    async with fake_kernel() as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("writev")
        unique = await held(k, O.WRITE, k.write_body(fh, b"abc"), nodeid)
        await k.interrupt(unique)
        assert await k.reply() == (unique, EINTR, b"")
        assert k.gate.interrupted == 1 and k.gate.cancelled == 1 and k.gate.finished == 0
        await k.interrupt(unique)                 # a second one: already answered
        await k.no_reply()
        # the request's scope was its own: the next one runs normally on that reader
        k.gate.hold.clear()
        error, _ = await k.call(O.WRITE, k.write_body(fh, b"xyz"), nodeid)
        assert error == 0
    assert lines(caplog, f"WRITE unique {unique}: interrupt: cancelling through the graph")


async def test_worker_thread_call_is_abandoned():
    """A translator waiting on a worker thread (abandon_on_cancel=True): the request
    unwinds at once, the thread finishes on its own and its result is ignored."""
    async with fake_kernel() as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("writev", thread=1.0)
        unique = await held(k, O.WRITE, k.write_body(fh, b"abc"), nodeid)
        t0 = trio.current_time()
        await k.interrupt(unique)
        assert await k.reply() == (unique, EINTR, b"")
        assert trio.current_time() - t0 < 0.5
        assert k.gate.cancelled == 1 and k.gate.finished == 0


async def test_interrupt_before_the_handler_is_registered(caplog):
    """No handler yet: remembered ('no handler found'); the late handler fires at once."""
    async with fake_kernel() as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("writev", register_late=True)
        unique = await held(k, O.WRITE, k.write_body(fh, b"abc"), nodeid)
        await k.interrupt(unique)
        await k.no_reply()
        k.gate.release.set()                      # the gate now registers its handler
        assert await k.reply() == (unique, EINTR, b"")
        assert k.gate.interrupted == 1 and k.gate.cancelled == 1
    assert lines(caplog, f"INTERRUPT unique {unique} (WRITE): no handler found")
    assert lines(caplog, "handler registered after the interrupt")


async def test_waiting_request_that_opened_a_scope_first():
    """Regression: a handler that enters a cancel scope (trio.sleep) before it first
    waits, then finishes, must not corrupt the reader's scopes."""
    stack = """
volume mem
    type storage/memory
    option size 64MB
end-volume
volume delay
    type debug/delay-gen
    option delay-percentage 100%
    option delay-duration 50000
    option enable flush,writev
    subvolumes mem
end-volume
"""
    async with fake_kernel(stack) as k:
        nodeid, fh = await k.create("f")
        for _ in range(3):
            error, _ = await k.call(O.FLUSH, k.flush_body(fh), nodeid)
            assert error == 0
            error, _ = await k.call(O.WRITE, k.write_body(fh, b"abc"), nodeid)
            assert error == 0
        unique = await k.send(O.WRITE, k.write_body(fh, b"abc"), nodeid)
        await trio.sleep(0.01)
        await k.interrupt(unique)
        assert await k.reply() == (unique, EINTR, b"")
        error, _ = await k.call(O.WRITE, k.write_body(fh, b"abc"), nodeid)
        assert error == 0


async def test_many_requests_interrupted_at_once():
    async with fake_kernel(flush_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        k.gate.arm("writev")
        uniques = [await k.send(O.WRITE, k.write_body(fh, b"x" * 10, i * 10), nodeid)
                   for i in range(20)]
        await trio.testing.wait_all_tasks_blocked()
        for u in reversed(uniques):
            await k.interrupt(u)
            await k.interrupt(u)
        got = sorted([await k.reply() for _ in uniques])
        assert got == sorted((u, EINTR, b"") for u in uniques)
        await k.no_reply()
        assert not k.session.interrupts.pending


# -- SETLKW ------------------------------------------------------------------------------

async def lock_state(k):
    return k.session.graph.xlators["locks"].dump()


async def test_setlkw_flag_on_withdraws_and_leaves_no_stale_lock(caplog):
    async with fake_kernel(setlk_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        error, _ = await k.call(O.SETLK, k.lk_body(fh, 1, F_WRLCK), nodeid)     # A holds
        assert error == 0
        unique = await k.send(O.SETLKW, k.lk_body(fh, 2, F_WRLCK), nodeid)     # B waits
        await trio.testing.wait_all_tasks_blocked()
        assert (await lock_state(k))["blocked"] == 1
        await k.interrupt(unique)
        assert await k.reply() == (unique, EINTR, b"")
        await k.no_reply()
        assert (await lock_state(k))["blocked"] == 0
        error, _ = await k.call(O.SETLK, k.lk_body(fh, 1, F_UNLCK), nodeid)     # A unlocks
        assert error == 0
        error, _ = await k.call(O.SETLK, k.lk_body(fh, 3, F_WRLCK), nodeid)     # C: free
        assert error == 0
        assert k.session.interrupts.records == 0
    assert lines(caplog, f"SETLKW unique {unique}: interrupt handler triggered")
    assert lines(caplog, f"SETLKW unique {unique}: blocked lock withdrawn")


async def test_setlkw_flag_on_flock(caplog):
    async with fake_kernel(setlk_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        _, fh2 = await k.create("f")
        error, _ = await k.call(O.SETLK, k.lk_body(fh, 1, F_WRLCK, flock=True), nodeid)
        assert error == 0
        unique = await k.send(O.SETLKW, k.lk_body(fh2, 2, F_WRLCK, flock=True), nodeid)
        await trio.testing.wait_all_tasks_blocked()
        await k.interrupt(unique)
        assert await k.reply() == (unique, EINTR, b"")
        error, _ = await k.call(O.SETLK, k.lk_body(fh, 1, F_UNLCK, flock=True), nodeid)
        assert error == 0
        assert (await lock_state(k))["inodes"] == 0        # nothing held, nothing queued


async def test_setlkw_granted_before_the_interrupt_keeps_the_lock(caplog):
    """Unlock and INTERRUPT read back to back: the waiter is granted but has not run;
    the handler finds nothing to withdraw (SQUELCHED) and the grant is answered."""
    async with fake_kernel(setlk_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        assert (await k.call(O.SETLK, k.lk_body(fh, 1, F_WRLCK), nodeid))[0] == 0
        unique = await k.send(O.SETLKW, k.lk_body(fh, 2, F_WRLCK), nodeid)
        await trio.testing.wait_all_tasks_blocked()
        unlock = k.send_nowait(O.SETLK, k.lk_body(fh, 1, F_UNLCK), nodeid)
        k.interrupt_nowait(unique)                # both queued before the session runs
        replies = {u: e for u, e, _ in [await k.reply(), await k.reply()]}
        assert replies == {unlock: 0, unique: 0}
        await k.no_reply()
        # B holds it, legitimately: C conflicts until B unlocks
        busy = await k.call(O.SETLK, k.lk_body(fh, 3, F_WRLCK), nodeid)
        assert busy[0] == -errno.EAGAIN
        assert (await k.call(O.SETLK, k.lk_body(fh, 2, F_UNLCK), nodeid))[0] == 0
        assert (await k.call(O.SETLK, k.lk_body(fh, 3, F_WRLCK), nodeid))[0] == 0
    assert lines(caplog, f"SETLKW unique {unique}: no blocked lock to withdraw; squelched")


async def test_setlkw_interrupted_before_it_reaches_the_lock_queue():
    """The interrupt comes while the request waits above features/locks: squelched and
    remembered, so the lock wait that starts later is withdrawn at once."""
    async with fake_kernel(setlk_handle_interrupt=True) as k:
        nodeid, fh = await k.create("f")
        assert (await k.call(O.SETLK, k.lk_body(fh, 1, F_WRLCK), nodeid))[0] == 0
        k.gate.arm("lk", register=False)
        unique = await held(k, O.SETLKW, k.lk_body(fh, 2, F_WRLCK), nodeid)
        await k.interrupt(unique)
        await k.no_reply()
        k.gate.release.set()
        assert await k.reply() == (unique, EINTR, b"")
        assert (await lock_state(k))["blocked"] == 0


async def test_setlkw_flag_off_waits_until_granted(caplog):
    async with fake_kernel() as k:
        nodeid, fh = await k.create("f")
        assert (await k.call(O.SETLK, k.lk_body(fh, 1, F_WRLCK), nodeid))[0] == 0
        unique = await k.send(O.SETLKW, k.lk_body(fh, 2, F_RDLCK), nodeid)
        await trio.testing.wait_all_tasks_blocked()
        await k.interrupt(unique)
        await k.no_reply()
        assert (await lock_state(k))["blocked"] == 1
        assert (await k.call(O.SETLK, k.lk_body(fh, 1, F_UNLCK), nodeid))[0] == 0
        assert await k.reply() == (unique, 0, b"")
    assert lines(caplog, f"INTERRUPT unique {unique} (SETLKW): no handler found")
