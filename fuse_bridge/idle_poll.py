"""How a reader waits for the next request when the event loop has nothing else to do:
blocked in ``poll()`` on the device, instead of trio's wait path.

Why: when the daemon sleeps between requests (a single-threaded application doing one
system call at a time, the common case), every request is a wake-up, and everything the
daemon runs after it pays for cold caches.  trio's way of waiting (``wait_readable``: an
``epoll_ctl`` to re-arm the descriptor, a pass of the scheduler, ``epoll_wait``, then on
wake-up event processing, rescheduling and a task step before the reader runs again)
measured ~8 us of user CPU more per request than a blocking read when the application and
the daemon sit on different CPUs (docs/benchmarks.md, "Daemon CPU per request").  A reader
that blocks in ``poll([device, trio's epoll descriptor])`` when trio has no runnable task
skips all of that, and still wakes for everything trio would have woken for: I/O, worker
thread completions and signals all make trio's epoll descriptor readable, and the poll's
timeout stops at trio's next deadline.

What it cannot see: tasks trio already took into the batch it is running (the batch is a
local of trio's loop).  So a reader blocks at most ``streak_max`` times in a row before it
waits trio's way once (every task runnable then gets its turn), and never longer than
``hold`` seconds at a time; after a ``hold`` with no request the reader sleeps in trio as
before (an idle daemon wakes no more often than it did).

This looks into trio's runner (its run queue, its next deadline, its epoll descriptor),
which is not public API.  :func:`for_current_run` returns None, and the reader keeps
trio's way, wherever that is not what it expects: another trio version's internals, guest
mode, a clock other than the system clock (tests with ``MockClock``), a platform without
epoll.  ``--fuse-idle-poll=0`` turns it off.
"""
from __future__ import annotations

import logging
import select
from typing import Any, Optional

log = logging.getLogger("xlfs.fuse")

_POLLIN = select.POLLIN


class IdlePoll:
    """Blocks a reader in ``poll()`` on ``fd`` while trio has nothing to run."""

    __slots__ = ("runner", "poller", "fd", "hold_ms", "streak_max", "streak",
                 "blocked", "loop_woke", "held_out")

    def __init__(self, runner: Any, epoll_fd: int, fd: int, hold: float,
                 streak_max: int = 16) -> None:
        self.runner = runner
        self.fd = fd
        self.poller = select.poll()
        self.poller.register(fd, _POLLIN)
        self.poller.register(epoll_fd, _POLLIN)
        self.hold_ms = max(1, int(hold * 1000))
        self.streak_max = streak_max
        self.streak = 0          # requests served from poll() since trio last ran
        # Polls that blocked (statedump, tests), and what ended them: trio's epoll (the
        # loop has something to do), the hold or trio's next deadline, else the device
        # (``served``).
        self.blocked = 0
        self.loop_woke = 0
        self.held_out = 0

    @property
    def served(self) -> int:
        """Polls that the device ended: it was readable."""
        return self.blocked - self.loop_woke - self.held_out

    def wait(self) -> bool:
        """The device had nothing.  True: it is readable now (read it again).  False: wait
        trio's way (trio has something to run, or the hold ran out, or it is time to let
        trio's current batch run)."""
        runner = self.runner
        if runner.runq or self.streak >= self.streak_max:
            self.streak = 0
            return False
        timeout = self.hold_ms
        # No deadline at all (a serving daemon's usual state): no call to find the next.
        if runner.deadlines._heap:
            left = runner.clock.deadline_to_sleep_time(runner.deadlines.next_deadline())
            if left * 1000 < timeout:       # (no deadline left: inf, never less)
                if left <= 0:
                    self.streak = 0
                    return False
                timeout = max(1, int(left * 1000))
        self.blocked += 1
        events = self.poller.poll(timeout)
        if not events:                # the hold ran out: sleep trio's way
            self.held_out += 1
            self.streak = 0
            return False
        if len(events) > 1 or events[0][0] != self.fd:
            self.loop_woke += 1       # trio's epoll: I/O, a thread, a signal
            self.streak = 0
            return False
        self.streak += 1
        return True


    def dump(self) -> dict[str, int]:
        return {"blocked": self.blocked, "served": self.served,
                "loop-woke": self.loop_woke, "held-out": self.held_out}


def for_current_run(fd: int, hold: float) -> Optional[IdlePoll]:
    """An :class:`IdlePoll` for the reader of ``fd`` in the current trio run, or None where
    trio's internals are not what this module expects (see the module docstring)."""
    if hold <= 0:
        return None
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT
        runner = GLOBAL_RUN_CONTEXT.runner
        if runner.is_guest or type(runner.clock) is not _system_clock_type():
            return None
        epoll = runner.io_manager._epoll
        epoll_fd = epoll.fileno()
        runner.runq.__len__
        runner.deadlines.next_deadline
        if not isinstance(runner.deadlines._heap, list):
            raise AttributeError("trio's deadlines are not a heap list")
        runner.clock.deadline_to_sleep_time
    except (ImportError, AttributeError, RuntimeError, ValueError) as exc:
        log.debug("idle poll off: trio's internals differ (%s)", exc)
        return None
    return IdlePoll(runner, epoll_fd, fd, hold)


def _system_clock_type() -> type:
    from trio._core._run import SystemClock
    return SystemClock


