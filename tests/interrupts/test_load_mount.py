"""Interrupts under load: several processes blocked in close() and write() on one mount
are signalled at once (handled SIGINT, SIGTERM, SIGKILL mixed) while other processes keep
the mount busy.  Every signalled process is released at once, the busy ones see no error,
an unsignalled process in close() waits out its delay and succeeds, and the in-flight and
record tables drain to zero.  (A writer whose handled SIGINT made write() return EINTR
then exits normally, and its exit-time FLUSH, with no signal pending, waits out the
delay: so for handled signals the call's return is timed, for fatal ones the exit.)
The flush flag is given in mount -o form here.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.interrupts.intrlib import Victim, delay_stack, statedump
from tests.mountlib import Mounted, can_mount

pytestmark = [pytest.mark.mount,
              pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))]

DELAY = 3.0
FAST = 1.0

BUSY = r"""
import os, sys, time
root, until = sys.argv[1], time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < until:
    os.stat(root)
    os.listdir(root)
    n += 1
print(n)
"""


def test_many_interrupts_under_load(tmp_path):
    vol = tmp_path / "delay.vol"
    vol.write_text(delay_stack("flush,writev", DELAY))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    with Mounted(vol, tmp_path, "-o", "fuse-flush-handle-interrupt=yes", limit=120.0,
                 env={"XLFS_DUMP_DIR": str(dumps)}) as m:
        assert statedump(m, dumps)["option.flush_handle_interrupt"] == "yes"
        busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(m.mountpoint), "2.5"],
                                 stdout=subprocess.PIPE, text=True) for _ in range(3)]
        sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
        victims = [Victim("close", m.path(f"c{i}"), "handled", "--no-write")
                   for i in range(6)] + [Victim("write", m.path(f"w{i}")) for i in range(6)]
        bystander = Victim("close", m.path("bystander"), "handled", "--no-write")
        try:
            for v in victims + [bystander]:
                v.wait_blocked(settle=0)
            time.sleep(0.1)
            for i, v in enumerate(victims):
                v.signal(sigs[i % 3])
            for i, v in enumerate(victims):
                if sigs[i % 3] == signal.SIGINT:     # handled: the call returns EINTR
                    assert v.wait_returned(DELAY + 5)["errno"] == "EINTR"
                    took = v.returned_after
                else:                                # fatal: the process is gone
                    took = v.wait_exit(DELAY + 5)
                    assert v.returncode == -sigs[i % 3]
                assert took < FAST + 0.5, f"victim {i} ({v.action}) took {took:.3f}s"
            assert bystander.proc.poll() is None                # still in its delay
            result = bystander.wait_returned(DELAY + 5)
            assert (result["rc"], result["errno"]) == (0, None)
            for b in busy:
                out, _ = b.communicate(timeout=10)
                assert b.returncode == 0 and int(out) > 0
        finally:
            for v in victims + [bystander]:
                v.close()
            for b in busy:
                if b.poll() is None:
                    b.kill()
                    b.wait()
        deadline = time.monotonic() + DELAY + 5
        while True:
            state = statedump(m, dumps)
            if state["in-flight"] == "0" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert state["in-flight"] == "0" and state["records"] == "0", state
        assert int(state["interrupts-received"]) >= len(victims)
        log = m.read_log()
        assert "Traceback" not in log and "corrupted" not in log
        assert log.count("interrupt handler triggered") >= 6
        assert log.count("cancelling through the graph") >= 6
        assert all(os.path.exists(m.path(f"c{i}")) for i in range(6))
