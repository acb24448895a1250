"""Fixtures shared by the translator tests."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Mapping

import outcome
import pytest
import trio

from tests.xlators.perflib import build


@pytest.fixture
def watched_brick(tmp_path):
    """``await watched_brick(XL, options)``: XL (a caching translator) over storage/posix
    with watch-brick on.  A file of the brick is read through XL, then rewritten in the
    brick behind the stack's back at the same size (only the watch's upcall can tell);
    XL still serves what it cached until the watch's events are dispatched, and the new
    bytes after.  Root only (storage/posix tests run as root)."""
    if os.geteuid() != 0:
        pytest.skip("storage/posix tests run as root")
    stacks = []

    async def check(xl_type: str, options: Mapping[str, str]) -> None:
        brick = tmp_path / "brick"
        brick.mkdir()
        (brick / "f").write_bytes(b"before")
        h, _, _ = build(xl_type, options, leaf="storage/posix",
                        leaf_options={"directory": str(brick), "reserve": "0",
                                      "watch-brick": "on"})
        stacks.append(h)
        fd = await h.open("/f", os.O_RDONLY)
        assert await h.read(fd, 100) == b"before"
        with open(brick / "f", "r+b") as f:
            f.write(b"AFTER!")
        assert await h.read(fd, 100) == b"before"
        watch = h.top.child.child._watch
        assert watch.dispatch(watch.read_available()) >= 1
        assert await h.read(fd, 100) == b"AFTER!"
        await h.close(fd)

    yield check
    for h in stacks:
        h.fini()


WORKER_DELAY = 0.05
"""Seconds of real time a worker thread idles first under ``thread_timing`` "slow"."""


@pytest.fixture(params=["threaded", "worker-first", "slow"])
def thread_timing(request, monkeypatch) -> str:
    """Runs a test three times, with ``trio.to_thread.run_sync`` as it is and in the two
    orders a loaded machine can give a worker thread and the trio loop that waits for it:

    * "worker-first": the thread runs its function to the end before any other task of
      the loop runs (the loop's thread lost the CPU meanwhile);
    * "slow": the thread idles 50 ms of real time first.  Under trio's autojump clock
      the loop is idle meanwhile, so the mock clock jumps to the next deadline (a
      test's ``fail_after`` fires, a periodic task's next tick comes) while the thread
      still runs.

    A test that passes all three neither looks for a thread's effect before it has
    awaited it nor lets a timer of its own race a thread."""
    real = trio.to_thread.run_sync

    async def worker_first(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
        box: list[outcome.Outcome] = []
        worker = threading.Thread(target=lambda: box.append(outcome.capture(fn, *args)))
        worker.start()
        worker.join()                     # the loop does nothing until the thread is done
        await trio.lowlevel.checkpoint()
        return box[0].unwrap()

    async def slow(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        def late() -> Any:
            time.sleep(WORKER_DELAY)
            return fn(*args)
        return await real(late, **kw)

    if request.param != "threaded":
        monkeypatch.setattr(trio.to_thread, "run_sync",
                            worker_first if request.param == "worker-first" else slow)
    return request.param
