"""Seed 001: an application killed while a FLUSH needs the application itself.

The stack: storage/posix under ``test/flush-callback``, which answers FLUSH only after a
round trip to the application over a UNIX socket (tests/deadlocks/xlators_seed.py).  The
application (app_seed001.py, a child process) opens two files on the mount, writes 256 KiB
into each and keeps them open, then listens on the socket.  It is SIGKILLed.  At exit the
kernel closes its descriptors in order: the files first, each with a FLUSH the exiting
thread waits for *uninterruptibly* (fuse_flush -> a forced request); the translator's
question reaches the socket, which is still open (it closes later) but nobody will ever
answer it.

Hazard: without protection the killed process never finishes exiting (a thread in D
state, waitpid does not return) until the connection is aborted.

Protection (each within a second, and no data lost):
- ``performance/write-behind`` with ``flush-behind on`` above the translator answers FLUSH
  at once and finishes it in the background;
- ``--fuse-flush-handle-interrupt``: SIGKILL makes the kernel send INTERRUPT for the
  pending FLUSH; the bridge answers it EINTR at once and lets the flush run on.

"No data lost" means, concretely: after the process is gone and the flush it started has
been wound down to storage/posix (the translator logs "wound to the child" for the file),
each file in the brick, read directly, holds exactly the 256 KiB the application's
``write()`` calls had been acknowledged for before the kill, and so does a read through
the mount.
"""
from __future__ import annotations

import os
import re
import subprocess

from tests.deadlocks.app_seed001 import data_for
from tests.deadlocks.seedlib import (HERE, exits_within, in_d_state, mount_marks, mounted,
                                     python, stat_latency, task_states, volfile)
from tests.mountlib import wait_until

pytestmark = mount_marks

FILES = ("a", "b")


def stack(tmp_path, flush_behind: bool):
    sock = tmp_path / "app.sock"
    layers = [("cb", "test/flush-callback", {"socket": sock})]
    if flush_behind:
        layers.append(("wb", "performance/write-behind", {"flush-behind": "on"}))
    return volfile(tmp_path / "seed001.vol", *layers), sock


def start_app(m, sock) -> subprocess.Popen:
    app = python(str(HERE / "app_seed001.py"), str(sock), *(m.path(f) for f in FILES),
                 stdout=subprocess.PIPE)
    line = app.stdout.readline()
    assert line == b"ready\n", f"the application did not start: {line!r}"
    return app


def wound(m) -> set:
    """Nodeids whose flush the translator has wound down to storage/posix."""
    return set(re.findall(r"seed001: flush of nodeid (\d+) wound to the child", m.read_log()))


def assert_no_data_lost(m) -> None:
    # The exit-time flushes of both files reach storage (in the background).
    wait_until(lambda: len(wound(m)) >= len(FILES), 10, "every file's flush wound",
               detail=m.read_log)
    for name in FILES:
        path = m.path(name)
        want = data_for(path)
        assert (m.brick / name).read_bytes() == want, f"{name}: the brick lost data"
        with open(path, "rb") as f:
            assert f.read() == want, f"{name}: the mount shows other data"


def test_hazard_killed_app_hangs_in_exit_flush(tmp_path):
    vol, sock = stack(tmp_path, flush_behind=False)
    with mounted(tmp_path, vol, "--attribute-timeout=0") as m:
        (m.brick / "other").write_bytes(b"")
        app = start_app(m, sock)
        try:
            app.kill()
            assert not exits_within(app, 2.0), "the killed application exited"
            wait_until(lambda: in_d_state(app.pid), 2.0, "the app in D state",
                       detail=lambda: str(task_states(app.pid)))
            # only the application is stuck: the daemon keeps serving others
            latency = stat_latency(m.path("other"))
            assert latency is not None and latency < 0.5
            assert "INTERRUPT" in m.read_log() and not wound(m)
        finally:
            m.abort()                       # the only way out
            assert exits_within(app, 10.0)
            app.stdout.close()


def test_flush_behind_lets_the_killed_app_exit(tmp_path):
    vol, sock = stack(tmp_path, flush_behind=True)
    with mounted(tmp_path, vol, "--attribute-timeout=0") as m:
        app = start_app(m, sock)
        app.kill()
        assert exits_within(app, 1.0), f"hung: {task_states(app.pid)}"
        app.stdout.close()
        assert_no_data_lost(m)


def test_flush_interrupt_handling_lets_the_killed_app_exit(tmp_path):
    vol, sock = stack(tmp_path, flush_behind=False)
    with mounted(tmp_path, vol, "--attribute-timeout=0",
                 "--fuse-flush-handle-interrupt") as m:
        app = start_app(m, sock)
        app.kill()
        assert exits_within(app, 1.0), f"hung: {task_states(app.pid)}"
        app.stdout.close()
        assert_no_data_lost(m)
        assert "answered EINTR by the interrupt handler" in m.read_log()
