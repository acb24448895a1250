"""fuse_bridge.idle_poll: a reader blocks in poll() only while trio has nothing to do, and
wakes for everything trio would have woken for (I/O, thread completions, signals, its next
deadline).  The "device" here is a pipe.  Holds are long (60 s) on purpose: a wait that
trio's work did not end would show as a test timeout, not as a slow pass."""
from __future__ import annotations

import os
import signal
import threading

import pytest
import trio
import trio.testing

from fuse_bridge import idle_poll
from fuse_bridge.idle_poll import IdlePoll

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def device():
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    os.close(r)
    os.close(w)


async def test_made_for_a_run_with_the_system_clock(device):
    r, _ = device
    poll = idle_poll.for_current_run(r, 0.002)
    assert isinstance(poll, IdlePoll)
    assert idle_poll.for_current_run(r, 0) is None          # --fuse-idle-poll=0


async def test_not_made_under_a_mock_clock(device, autojump_clock):
    r, _ = device
    assert idle_poll.for_current_run(r, 0.002) is None


async def test_a_readable_device_is_served(device):
    r, w = device
    poll = idle_poll.for_current_run(r, 60)
    os.write(w, b"x")
    assert poll.wait() is True
    assert (poll.blocked, poll.served) == (1, 1)


async def test_no_block_while_a_task_is_runnable(device):
    r, _ = device
    poll = idle_poll.for_current_run(r, 60)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)        # in the run queue now
        assert poll.wait() is False
        assert poll.blocked == 0


async def test_a_worker_thread_finishing_ends_the_wait(device):
    r, _ = device
    poll = idle_poll.for_current_run(r, 60)
    go = threading.Event()
    done = []

    async def in_thread():
        await trio.to_thread.run_sync(go.wait)
        done.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(in_thread)
        await trio.testing.wait_all_tasks_blocked()
        threading.Timer(0.05, go.set).start()
        assert poll.wait() is False
        assert (poll.loop_woke, poll.held_out, poll.served) == (1, 0, 0)
    assert done == [True]


async def test_a_signal_ends_the_wait(device):
    r, _ = device
    poll = idle_poll.for_current_run(r, 60)
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        assert poll.wait() is False
        assert poll.loop_woke == 1
        async for signum in signals:
            assert signum == signal.SIGUSR1
            break


async def test_the_next_deadline_ends_the_wait(device):
    r, _ = device
    poll = idle_poll.for_current_run(r, 60)
    woke = []

    async def sleeper():
        await trio.sleep(0.05)
        woke.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        assert poll.wait() is False
        assert poll.held_out == 1 and poll.loop_woke == 0
    assert woke == [True]


async def test_the_hold_runs_out(device):
    r, _ = device
    poll = idle_poll.for_current_run(r, 0.001)
    assert poll.wait() is False
    assert (poll.blocked, poll.held_out) == (1, 1)


async def test_trio_runs_after_a_streak(device):
    r, w = device
    poll = IdlePoll(*_internals(), r, 60, streak_max=3)
    os.write(w, b"x")                   # stays readable: every poll is served
    assert [poll.wait() for _ in range(4)] == [True, True, True, False]
    assert poll.wait() is True          # the streak starts again


def _internals():
    from trio._core._run import GLOBAL_RUN_CONTEXT
    runner = GLOBAL_RUN_CONTEXT.runner
    return runner, runner.io_manager._epoll.fileno()
