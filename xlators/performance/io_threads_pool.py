"""performance/io-threads' scheduler: at most ``total`` fops in the child at once, at most
``caps[p]`` of priority ``p``, waiting fops admitted highest priority first (first come,
first served within a priority).  Priorities are 0 (high) to 3 (least)."""
from __future__ import annotations

from collections import deque
from typing import Sequence

import trio

HIGH, NORMAL, LOW, LEAST = range(4)
NAMES = ("high", "normal", "low", "least")


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.granted = False


class PriorityPool:
    def __init__(self, total: int, caps: Sequence[int]) -> None:
        self.total = total
        self.caps = list(caps)
        self.running = [0, 0, 0, 0]
        self._busy = 0                        # sum(running), kept for the hot path
        self._waiting = 0                     # sum of the queues' lengths
        self.queues: list[deque[_Waiter]] = [deque() for _ in range(4)]
        self.admitted = [0, 0, 0, 0]
        self.waited = [0, 0, 0, 0]

    def configure(self, total: int, caps: Sequence[int]) -> None:
        self.total, self.caps = total, list(caps)
        self._dispatch()

    @property
    def busy(self) -> int:
        return self._busy

    def queued(self) -> int:
        return sum(len(q) for q in self.queues)

    async def acquire(self, prio: int) -> None:
        if (not self._waiting and self._busy < self.total
                and self.running[prio] < self.caps[prio]):
            # a free slot and nobody waiting: admitted without a waiter or an Event
            self.running[prio] += 1
            self._busy += 1
            self.admitted[prio] += 1
            return
        w = _Waiter()
        self.queues[prio].append(w)
        self._waiting += 1
        self._dispatch()
        if w.granted:
            self.admitted[prio] += 1
            return
        self.waited[prio] += 1
        try:
            await w.event.wait()
        except BaseException:
            if w.granted:
                self.release(prio)
            else:
                self.queues[prio].remove(w)
                self._waiting -= 1
            raise
        self.admitted[prio] += 1

    def release(self, prio: int) -> None:
        self.running[prio] -= 1
        self._busy -= 1
        if self._waiting:
            self._dispatch()

    def _dispatch(self) -> None:
        while self._busy < self.total:
            for p in range(4):
                if self.queues[p] and self.running[p] < self.caps[p]:
                    w = self.queues[p].popleft()
                    self._waiting -= 1
                    w.granted = True
                    self.running[p] += 1
                    self._busy += 1
                    w.event.set()
                    break
            else:
                return
