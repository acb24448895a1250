"""Seed 002: a kernel notification written while a request holds the lock it needs.

``test/upcall-race`` (tests/deadlocks/xlators_seed.py) sends, from inside a request's
handler, the invalidation of exactly what the kernel holds locked for that request, then
awaits 0.3 s and only then winds the request:

- CREATE of ``race-c``: the kernel holds the directory's inode lock while it waits for the
  reply; INVAL_ENTRY for that directory takes the same lock first;
- the first READ of ``race-r`` (a page-cache read): the kernel holds the page locks of the
  pages being read; INVAL_INODE of that file waits for them.

Hazard: with the notification written on the event loop (``XLFS_DEBUG_SYNC_NOTIFY=1``, a
debug-only mode of fuse_bridge/notify.py), the write blocks in the kernel, the reply can
never be written, and the whole filesystem stops: the caller hangs, and so does every other
request (a stat of an unrelated file).  Only aborting the connection ends it.

Protection (the default): the notifier's own thread writes the notification; it waits in
the kernel until the reply has gone out, then completes.  Both requests finish, with the
right result, while the rest of the filesystem goes on.
"""
from __future__ import annotations

import os

import pytest

from tests.deadlocks.seedlib import (Call, mount_marks, mounted, stat_latency, statedump,
                                     volfile)
from tests.mountlib import wait_until

pytestmark = mount_marks

DELAY = 0.3
CONTENT = b"race " * 20000          # 100 KB: several pages, one READ in flight


def setup(tmp_path):
    brick = tmp_path / "brick"
    brick.mkdir()
    (brick / "race-r").write_bytes(CONTENT)   # made in the brick: not in the page cache
    (brick / "other").write_bytes(b"other")
    return volfile(tmp_path / "seed002.vol",
                   ("race", "test/upcall-race", {"delay": DELAY}))


def create(m):
    with open(m.path("race-c"), "w") as f:
        f.write("created")
    return True


def read(m):
    with open(m.path("race-r"), "rb") as f:
        return f.read()


OPS = {"create": (create, True), "read": (read, CONTENT)}


@pytest.mark.parametrize("op", sorted(OPS))
def test_hazard_notification_on_the_event_loop_wedges_everything(tmp_path, op):
    vol = setup(tmp_path)
    fn, _ = OPS[op]
    with mounted(tmp_path, vol, "--attribute-timeout=0",
                 env={"XLFS_DEBUG_SYNC_NOTIFY": "1"}) as m:
        call = Call(lambda: fn(m), op)
        try:
            assert not call.done(3.0), f"{op} completed: no deadlock"
            assert stat_latency(m.path("other"), 2.0) is None, \
                "another request was served: the event loop is not wedged"
            assert "seed002" in m.read_log()
        finally:
            m.abort()
            assert call.done(10.0), "the abort did not release the caller"


@pytest.mark.parametrize("op", sorted(OPS))
def test_notification_thread_no_deadlock(tmp_path, op):
    vol = setup(tmp_path)
    fn, expected = OPS[op]
    with mounted(tmp_path, vol, "--attribute-timeout=0") as m:
        call = Call(lambda: fn(m), op)
        # meanwhile the filesystem answers
        latency = stat_latency(m.path("other"), 2.0)
        assert latency is not None and latency < DELAY + 0.5
        assert call.done(5.0), f"{op} hung"
        assert call.value() == expected
        assert call.elapsed < DELAY + 2.0
        # the notification itself completed once the reply was out
        state = wait_until(lambda: (lambda s: int(s["notify.sent"])
                                    + int(s["notify.expected-errors"]) >= 1 and s)(
                                        statedump(m)), 5.0, "the notification to complete")
        assert state["notify.errors"] == "0" and state["notify.dropped"] == "0"
        assert state["notify.mode"] == "thread"
        kind = "inval-entry" if op == "create" else "inval-inode"
        assert int(state[f"notify.sent.{kind}"]) == 1
        # the hazard was real: the kernel kept the writer waiting until the reply went
        assert float(state["notify.longest-write-seconds"]) >= DELAY / 2
        if op == "create":
            assert (m.brick / "race-c").read_text() == "created"
            assert os.path.exists(m.path("race-c"))
