"""Interrupted lock waits on real mounts: fcntl(F_SETLKW) and flock(LOCK_EX), with and
without --fuse-setlk-handle-interrupt, and a check that no lock survives (GlusterFS
issue #3179: an interrupted lock request was granted later and left stale).

The test process holds the lock; the victim blocks on it and gets a signal; then the
holder unlocks and a third process tries the lock without waiting.

- With the flag: the blocked request is withdrawn from features/locks and the victim gets
  EINTR (handled SIGINT) or dies (SIGKILL) at once.  After the unlock the third process
  gets the lock immediately: the victim holds nothing, alive or dead.
- Without it: the victim keeps waiting (SIGKILL leaves it in D state: the request is in
  userspace) until the holder unlocks; then it is granted the lock (handled SIGINT: the
  call succeeds) or dies and its exit releases it.
"""
from __future__ import annotations

import fcntl
import os
import signal
import time

import pytest

from tests.interrupts.intrlib import LOCAL, Victim, log_since, third_gets_it
from tests.mountlib import Mounted, can_mount

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

FAST = 1.0
HOLD = 1.5             # how long the holder keeps the lock after the signal (flag off)

@pytest.fixture(scope="module", params=[True, False], ids=["flag-on", "flag-off"])
def lock_mount(request, tmp_path_factory):
    flag = request.param
    work = tmp_path_factory.mktemp("setlk-on" if flag else "setlk-off")
    flags = ["--fuse-setlk-handle-interrupt"] if flag else []
    with Mounted(LOCAL, work, *flags, limit=600.0) as m:
        yield m, flag
        log = m.read_log()
        assert "Traceback" not in log and "corrupted" not in log


def lock(fd: int, kind: str, how: int) -> None:
    if kind == "flock":
        fcntl.flock(fd, how)
    else:
        fcntl.lockf(fd, how)


@pytest.mark.parametrize("kind", ["fcntl", "flock"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_lock_wait(lock_mount, kind, sig):
    m, flag = lock_mount
    path = m.path(f"lock-{kind}-{sig.name}")
    offset = len(m.read_log())
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        lock(fd, kind, fcntl.LOCK_EX)                       # the holder
        with Victim(kind, path) as v:
            v.wait_blocked()
            v.signal(sig)
            if flag:
                if sig == signal.SIGINT:
                    result = v.wait_returned(FAST + 1)
                    assert v.returned_after < FAST, v.returned_after
                    assert (result["rc"], result["errno"]) == (-1, "EINTR")
                    assert v.state() in ("S", "R")            # alive, waiting for stdin
                else:
                    assert v.wait_exit(FAST + 1) < FAST
                assert not third_gets_it(path, kind)          # the holder still holds it
                lock(fd, kind, fcntl.LOCK_UN)
                assert third_gets_it(path, kind)              # nothing stale, nobody else
                v.release()
                v.wait_exit(5)
                log = log_since(m, offset)
                assert "SETLKW unique" in log and "interrupt handler triggered" in log
                assert "blocked lock withdrawn" in log
            else:
                time.sleep(HOLD)
                if sig == signal.SIGKILL:
                    assert v.state() == "D"                   # in userspace: waits it out
                else:
                    assert v.wait_returned(0) is None         # still blocked
                lock(fd, kind, fcntl.LOCK_UN)
                if sig == signal.SIGINT:
                    result = v.wait_returned(5)
                    assert (result["rc"], result["errno"]) == (0, None)   # granted
                    assert not third_gets_it(path, kind)      # the victim holds it now
                    v.release()
                    v.wait_exit(5)
                else:
                    assert v.proc.wait(5) == -signal.SIGKILL
                assert third_gets_it(path, kind)              # released by its exit
                log = log_since(m, offset)
                assert "(SETLKW): no handler found" in log
                assert "interrupt handler triggered" not in log
    finally:
        os.close(fd)
