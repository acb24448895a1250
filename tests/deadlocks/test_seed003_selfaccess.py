"""Seed 003, scenario 1: a request whose handling accesses its own mountpoint.

``rm d/victim`` sends UNLINK while the kernel holds the lock of directory ``d``.
``test/self-access`` (tests/deadlocks/xlators_seed.py) serves it by unlinking
``mnt/d/victim`` itself, from a worker thread of the daemon: that unlink waits for the lock
of ``d``, held by the caller, who waits for our reply.  A deadlock between the daemon and
one of its callers.

What xlfs does about it: the access runs in a worker thread, so the event loop (and every
other request) goes on; the request registers an interrupt handler, so a signal to the
caller makes the kernel send INTERRUPT, the bridge cancels the request (the worker thread
is abandoned) and answers EINTR: the caller returns, lets the lock go, and the abandoned
thread's unlink then completes as a request of its own, which the bridge logs as a
self-access ("self-access: UNLINK ... comes from thread N of this daemon").

Hazard: with ``interruptible off`` the same signal changes nothing; the caller stays
stuck (D state), even SIGKILL cannot free it, until the connection is aborted.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.deadlocks.seedlib import (ROOT_DIR, exits_within, in_d_state, mount_marks,
                                     mounted, stat_latency, task_states, volfile)
from tests.mountlib import wait_until

pytestmark = mount_marks

# The caller: unlink PATH; SIGUSR1 is a handled (non-fatal) signal that ends the wait.
CLIENT = r"""
import os, signal, sys
class Interrupted(Exception):
    pass
def handler(signum, frame):
    raise Interrupted()
signal.signal(signal.SIGUSR1, handler)
print("unlinking", flush=True)
try:
    os.unlink(sys.argv[1])
    print("unlinked", flush=True)
except Interrupted:
    print("interrupted", flush=True)
except OSError as exc:
    print("error", exc.errno, flush=True)
"""


def setup(tmp_path, interruptible: bool):
    brick = tmp_path / "brick"
    (brick / "d").mkdir(parents=True)
    (brick / "d" / "victim").write_bytes(b"")
    (brick / "other").mkdir()
    (brick / "other" / "f").write_bytes(b"")
    target = tmp_path / "mnt" / "d" / "victim"
    return volfile(tmp_path / "seed003.vol",
                   ("self", "test/self-access", {"trigger": "victim", "path": target,
                                                 "interruptible":
                                                     "on" if interruptible else "off"}))


def start_rm(m) -> subprocess.Popen:
    os.stat(m.path("d", "victim"))                 # the dentry is cached
    rm = subprocess.Popen([sys.executable, "-c", CLIENT, m.path("d", "victim")],
                          stdout=subprocess.PIPE, text=True)
    assert rm.stdout.readline() == "unlinking\n"
    # the UNLINK reached the translator and its worker thread waits on the lock
    wait_until(lambda: "seed003: UNLINK" in m.read_log(), 5, "the UNLINK in the log",
               detail=m.read_log)
    assert not exits_within(rm, 0.5), rm.stdout.read()
    return rm


def test_hazard_uninterruptible_self_access_holds_the_caller(tmp_path):
    vol = setup(tmp_path, interruptible=False)
    with mounted(tmp_path, vol, "--attribute-timeout=0", "--entry-timeout=0") as m:
        rm = start_rm(m)
        try:
            # the daemon survives: other requests are served meanwhile
            latency = stat_latency(m.path("other", "f"))
            assert latency is not None and latency < 0.5
            rm.send_signal(signal.SIGUSR1)
            assert not exits_within(rm, 2.0), "the signal freed the caller"
            assert in_d_state(rm.pid), task_states(rm.pid)
            rm.kill()                                  # not even SIGKILL
            assert not exits_within(rm, 1.0), "SIGKILL freed the caller"
        finally:
            m.abort()
            assert exits_within(rm, 10.0)
            rm.stdout.close()


@pytest.mark.parametrize("sig", ["handled", "fatal"])
def test_interrupt_resolves_the_self_access(tmp_path, sig):
    vol = setup(tmp_path, interruptible=True)
    with mounted(tmp_path, vol, "--attribute-timeout=0", "--entry-timeout=0") as m:
        rm = start_rm(m)
        latency = stat_latency(m.path("other", "f"))
        assert latency is not None and latency < 0.5
        rm.send_signal(signal.SIGUSR1 if sig == "handled" else signal.SIGKILL)
        assert exits_within(rm, 1.0), f"still stuck: {task_states(rm.pid)}"
        out = rm.stdout.read()
        rm.stdout.close()
        if sig == "handled":
            assert out == "interrupted\n"
        else:
            assert rm.returncode == -signal.SIGKILL
        # the abandoned thread's unlink then goes through, as a request of the daemon
        wait_until(lambda: not (m.brick / "d" / "victim").exists(), 5, "the victim to go")
        wait_until(lambda: "self-access unlink of" in m.read_log(), 5,
                   "the self-access unlink logged", detail=m.read_log)
        assert "interrupted: abandoning the self-access thread" in m.read_log()
        # and the daemon is fine
        assert stat_latency(m.path("other", "f")) is not None
        log = m.read_log()
        assert "self-access: UNLINK" in log and "of this daemon" in log
