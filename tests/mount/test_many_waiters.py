"""No number of waiting requests stops the bridge from reading (issue 13).

1,000 threads of one helper process (tests/mount/waiters.py) block on a lock held by
this process: fcntl OFD write locks (each open file description its own owner) and
flock.  While they wait, GETATTR is still answered and the daemon's memory has grown by
far less than a megabyte per waiter; then this process unlocks and every waiter gets the
lock, one after the other, in the order they asked.  The same for 1,000 STATFS calls
held by debug/delay-gen.  (Before: 64 waiters took every reader and the unlock was never
read.)
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fuse_bridge import mount as mnt
from tests.interrupts.intrlib import LOCAL, delay_stack
from tests.mountlib import Mounted, can_mount

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

WAITERS = 1000
HELPER = Path(__file__).resolve().parent / "waiters.py"
MiB = 1 << 20


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def in_thread(fn, timeout: float) -> bool:
    """Run ``fn`` in a daemon thread; False when it did not return within ``timeout``
    (the thread is abandoned: the mount's abort frees it)."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        finally:
            done.set()
    threading.Thread(target=run, daemon=True).start()
    return done.wait(timeout)


class Helper:
    """waiters.py in a subprocess; killed (and the mount aborted if it stays stuck) on
    every path."""

    def __init__(self, m: Mounted, kind: str, path: str, n: int) -> None:
        self.m = m
        self.proc = subprocess.Popen([sys.executable, str(HELPER), kind, path, str(n)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"helper: no {prefix!r} line; output: {self.lines[-5:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.m.abort()      # threads stuck in requests the daemon never answers
                self.proc.wait(20)
        self._reader.join(5)
        self.proc.stdout.close()


def getattr_answered(m: Mounted, path: str, times: int = 20) -> None:
    for _ in range(times):
        assert mnt.answers_within(path, 10.0), "GETATTR not answered while requests wait"


def check_memory(m: Mounted, before: int) -> None:
    grown = rss(m.proc.pid) - before
    print(f"daemon RSS grew {grown / MiB:.1f} MiB with {WAITERS} waiters")
    # A waiting request costs a task, its frames and an 8 KiB buffer; a megabyte
    # read buffer each would be 1,000 MiB.
    assert grown < WAITERS * MiB // 8, f"daemon grew {grown / MiB:.0f} MiB"


@pytest.mark.parametrize("kind", ["ofd", "flock"])
def test_a_thousand_lock_waiters_then_the_unlock(tmp_path, kind):
    with Mounted(LOCAL, tmp_path, "--attribute-timeout=0", limit=300.0) as m:
        path = m.path("lock")
        probe = m.path("probe")
        open(probe, "w").close()
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        helper = None
        try:
            if kind == "ofd":
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, b"\1\0" + bytes(30))     # F_WRLCK
            else:
                fcntl.flock(fd, fcntl.LOCK_EX)
            before = rss(m.proc.pid)
            helper = Helper(m, kind, path, WAITERS)
            helper.wait_line("blocked", 240)
            getattr_answered(m, probe)
            check_memory(m, before)
            if kind == "ofd":
                unlock = lambda: fcntl.fcntl(fd, fcntl.F_OFD_SETLK, b"\2\0" + bytes(30))
            else:
                unlock = lambda: fcntl.flock(fd, fcntl.LOCK_UN)
            assert in_thread(unlock, 30), "the unlock was not served"
            result = json.loads(helper.wait_line("order", 240)[len("order "):])
            assert result["errors"] == []
            assert result["order"] == list(range(WAITERS))
            getattr_answered(m, probe, 3)
        finally:
            # close() sends FLUSH, which waits uninterruptibly: on a wedged mount abort
            # the connection rather than wait for the watchdog.
            if not in_thread(lambda: os.close(fd), 15):
                m.abort()
            if helper is not None:
                helper.close()
        log = m.read_log()
        assert "Traceback" not in log


def test_a_thousand_delayed_requests(tmp_path):
    vol = tmp_path / "delay-statfs.vol"
    vol.write_text(delay_stack("statfs", 20.0))
    with Mounted(vol, tmp_path, "--attribute-timeout=0", limit=300.0) as m:
        probe = m.path("probe")
        open(probe, "w").close()
        helper = None
        try:
            before = rss(m.proc.pid)
            helper = Helper(m, "statfs", m.path(""), WAITERS)
            helper.wait_line("blocked", 60)
            getattr_answered(m, probe)
            check_memory(m, before)
            result = json.loads(helper.wait_line("order", 120)[len("order "):])
            assert result["errors"] == []
            assert sorted(result["order"]) == list(range(WAITERS))
            getattr_answered(m, probe, 3)
        finally:
            if helper is not None:
                helper.close()
        assert "Traceback" not in m.read_log()
