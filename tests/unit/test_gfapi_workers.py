"""storage/gfapi's worker threads (xlators/storage/gfapi_workers.py): results, errors,
the bound on calls at once, abandonment on cancel, resizing.  No libgfapi needed."""
from __future__ import annotations

import sys
import threading

import pytest
import trio

from xlators.storage.gfapi_workers import Workers


async def test_result_and_exception_come_back():
    w = Workers(2)
    assert await w.run(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(OSError) as ei:
        await w.run(_raise, OSError(5, "io"))
    assert ei.value.errno == 5
    assert threading.current_thread() is threading.main_thread()


def _raise(exc):
    raise exc


async def test_calls_run_off_the_event_loop_and_in_parallel_up_to_size():
    w = Workers(3)
    running = []
    peak = [0]
    lock = threading.Lock()
    gate = threading.Event()

    def call():
        with lock:
            running.append(threading.current_thread())
            peak[0] = max(peak[0], len(running))
        gate.wait(10)
        with lock:
            running.pop()
        return threading.current_thread()

    async with trio.open_nursery() as n:
        for _ in range(6):
            n.start_soon(w.run, call)
        while len(running) < 3:
            await trio.sleep(0.01)
        await trio.sleep(0.05)
        assert len(running) == 3             # the fourth waits for a thread
        gate.set()
    assert peak[0] == 3
    assert threading.main_thread() not in running


async def test_cancel_abandons_a_running_call_at_once():
    w = Workers(1)
    release = threading.Event()
    finished = threading.Event()

    def stuck():
        release.wait(10)
        finished.set()
        return "late"

    with trio.move_on_after(0.1) as scope:
        await w.run(stuck)
    assert scope.cancelled_caught and not finished.is_set()
    assert w.abandoned == 1
    release.set()
    assert await w.run(lambda: "next") == "next"       # the thread came back
    assert finished.is_set()


async def test_cancel_skips_a_queued_call():
    w = Workers(1)
    release = threading.Event()
    ran = []
    async with trio.open_nursery() as n:
        n.start_soon(w.run, release.wait, 10)
        await trio.sleep(0.05)
        with trio.move_on_after(0.05):
            await w.run(ran.append, 1)          # queued behind the stuck call
        release.set()
    assert await w.run(lambda: len(ran)) == 0   # never run


async def test_not_abandoned_waits_for_the_call():
    w = Workers(1)
    done = threading.Event()

    def close():
        threading.Event().wait(0.2)
        done.set()
        return "closed"

    with trio.move_on_after(0.05):
        assert await w.run(close, abandon=False) == "closed"
    assert done.is_set()                         # the cancel waited for it
    assert w.abandoned == 0


async def test_resize_changes_the_bound():
    w = Workers(1)
    await w.run(lambda: None)
    w.resize(3)
    gate = threading.Event()
    started = []

    def call():
        started.append(1)
        gate.wait(10)

    async with trio.open_nursery() as n:
        for _ in range(3):
            n.start_soon(w.run, call)
        with trio.fail_after(5):
            while len(started) < 3:
                await trio.sleep(0.01)
        gate.set()
    w.resize(1)
    assert w.size == 1
    assert await w.run(lambda: 7) == 7


def test_a_result_after_its_run_ended_is_dropped():
    w = Workers(1)
    release = threading.Event()

    async def main():
        with trio.move_on_after(0.05):
            await w.run(release.wait, 10)
    trio.run(main)
    release.set()                # the thread finishes after the run: no error, no hang

    async def again():
        return await w.run(lambda: "ok")
    assert trio.run(again) == "ok"


async def test_a_sequential_load_stays_on_one_warm_thread():
    """Idle threads are a stack: each call goes to the thread that finished last."""
    w = Workers(4)
    async with trio.open_nursery() as n:        # start all four threads
        gate = threading.Event()
        for _ in range(4):
            n.start_soon(w.run, gate.wait, 10)
        await trio.sleep(0.05)
        gate.set()
    idents = {await w.run(threading.get_ident) for _ in range(50)}
    assert len(idents) == 1


async def _idle(w: Workers) -> None:
    """Start ``w``'s threads and wait until every one of them is idle."""
    await w.run(lambda: None)
    with trio.fail_after(5):
        while w.busy:
            await trio.sleep(0.005)


async def _call_and_see_others_run(w: Workers, fn, *args):
    """(result of ``w.run(fn, *args)``, whether another task ran meanwhile)."""
    ran = []
    async with trio.open_nursery() as n:
        n.start_soon(_append, ran)
        result = await w.run(fn, *args)
        others_ran = bool(ran)
    return result, others_ran


async def _append(ran):
    ran.append(1)


async def test_a_quick_call_alone_is_answered_inline():
    """inline-wait: the loop's thread waits for the call itself, so the request goes
    on without a suspension (no other task runs in between)."""
    w = Workers(2, wait=5.0)
    await _idle(w)
    result, others_ran = await _call_and_see_others_run(w, threading.get_ident)
    assert result != threading.get_ident()          # still ran in a worker thread
    assert not others_ran
    assert w.inline >= 1 and w.inline_missed == 0
    with pytest.raises(OSError):                    # an error comes back inline too
        await w.run(_raise, OSError(5, "io"))


async def test_without_inline_wait_every_answer_comes_through_trio():
    w = Workers(2, wait=0)
    await _idle(w)
    result, others_ran = await _call_and_see_others_run(w, lambda: "x")
    assert result == "x" and others_ran
    assert w.inline == 0


async def test_a_call_longer_than_the_wait_comes_back_the_trio_way():
    w = Workers(2, wait=0.01)
    await _idle(w)
    slow = threading.Event()
    result, others_ran = await _call_and_see_others_run(
        w, lambda: slow.wait(0.3) or "late")
    assert result == "late" and others_ran
    assert w.inline_missed == 1


async def test_no_inline_wait_while_another_call_runs():
    """The loop would stop reading requests while it waits: a call made while another
    one runs is never waited for inline."""
    w = Workers(2, wait=5.0)
    await _idle(w)
    gate = threading.Event()
    async with trio.open_nursery() as n:
        w.wait = 0                      # the long call itself is not waited for inline
        n.start_soon(w.run, gate.wait, 10)
        with trio.fail_after(5):
            while not w.busy:
                await trio.sleep(0.005)
        w.wait = 5.0
        before = w.inline
        result, others_ran = await _call_and_see_others_run(w, lambda: 3)
        assert result == 3 and others_ran
        assert w.inline == before
        gate.set()


async def test_waits_running_out_as_calls_finish_lose_no_answer():
    """The wait running out and the call finishing race: every answer arrives once."""
    import random
    import time
    w = Workers(2, wait=0.0003)
    await _idle(w)
    rnd = random.Random(7)
    with trio.fail_after(60):
        for i in range(300):
            d = rnd.choice((0, 0.0001, 0.0003, 0.0005, 0.001))
            assert await w.run(lambda i=i, d=d: time.sleep(d) or i) == i
    assert w.inline > 0 and w.inline_missed > 0


def _blocking(ev: threading.Event) -> bytes:
    ev.wait(10)
    return b"data"


@pytest.mark.parametrize("inline", [0.0, 0.0005])
@pytest.mark.parametrize("queued", [False, True])
async def test_a_started_job_given_up_by_one_caller_is_still_delivered_to_the_next(
        inline, queued):
    # gfapi_io: an interrupted READ gives up the read-ahead it was collecting; the
    # file's RELEASE then waits for that job (it reads through the glfd RELEASE closes)
    w = Workers(1, "t", wait=inline)
    go, block = threading.Event(), threading.Event()
    if queued:                          # the one thread is busy: the job stays queued
        w.start(_blocking, block)
    job = w.start(_blocking, go)
    with trio.move_on_after(0.05):
        await w.result(job)
    assert job.abandoned
    if queued:
        block.set()                     # the queued job is taken and skipped
        with trio.fail_after(5):
            while not job.finished:
                await trio.sleep(0.01)
    threading.Timer(0.05, go.set).start()
    with trio.fail_after(5):
        if queued:                      # never ran: an error release can catch
            with pytest.raises(OSError):
                await w.result(job, abandon=False)
        else:
            assert await w.result(job, abandon=False) == b"data"
    go.set()


def test_the_gil_free_release_releases_the_lock_it_is_given():
    # the worker wakes the loop's inline wait through PyThread_release_lock (GIL
    # released); on interpreters where that cannot be checked it is a plain release
    from xlators.storage.gfapi_workers import _gil_free_release, _wake_loop
    release = _gil_free_release()
    if sys.version_info[:2] in ((3, 10), (3, 11), (3, 12)):
        assert release is not None and _wake_loop.__qualname__ == release.__qualname__
    lock = threading.Lock()
    lock.acquire()
    _wake_loop(lock)
    assert lock.acquire(False)
    waiter = threading.Lock()
    waiter.acquire()
    threading.Timer(0.05, _wake_loop, (waiter,)).start()
    assert waiter.acquire(True, 5)      # a blocked acquire is woken by it


def test_fini_waits_for_closes_behind_within_one_deadline():
    """storage/gfapi's fini (not async) waits for the closes it ran behind: one that
    finishes meanwhile is waited for, whether its answer would come to an inline
    waiter or the trio way; what still runs at the deadline is counted, not waited."""
    from xlators.storage.gfapi_close import wait_closes
    w = Workers(4)
    gate, stuck = threading.Event(), threading.Event()
    quick = w.start(gate.wait, 10)
    trio_way = w.start(gate.wait, 10)
    trio_way.waiter = None                    # as a drain cut short leaves it
    threading.Timer(0.05, gate.set).start()
    assert wait_closes([quick, trio_way], 10) == 0
    assert quick.finished and trio_way.finished
    never = [w.start(stuck.wait, 10) for _ in range(2)]
    assert wait_closes(never, 0.05) == 2
    stuck.set()
