"""Liveness guard: while requests wait for a long time, the event loop stays responsive.

Three requests wait at once, each for a different reason:

- a page-cache READ delayed 5 s by ``debug/delay-gen`` (a slow backend);
- a FLUSH waiting on an application that never answers (``test/flush-callback``, seed 001);
- a SETLKW blocked behind a lock another process holds (``features/locks``).

Meanwhile a stat of another file (attribute timeout 0, so every stat is a GETATTR) is
timed 100 times.  Nothing in the bridge may wait for those three on the event loop, so
the GETATTRs' 99th percentile must be far below the 5 s delay: the bound, 0.5 s, is a
liveness check, not a performance assertion.
"""
from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import threading
import time

from tests.deadlocks.seedlib import (Call, exits_within, mount_marks, mounted, stat_latency,
                                     statedump, volfile)
from tests.mountlib import wait_until

pytestmark = mount_marks

DELAY = 5.0
BOUND = 0.5

HOLDER = r"""
import fcntl, sys, time
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()            # hold the lock until the test closes our stdin
"""


class MuteApp:
    """A UNIX socket server that accepts and never answers (until closed)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        # shutdown first: a bare close() leaves the socket listening while the accept
        # thread is blocked in it (the kernel holds a reference), and new connections
        # would keep arriving and waiting
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()
        for c in self.conns:
            c.close()


def test_event_loop_stays_responsive_while_requests_wait(tmp_path):
    brick = tmp_path / "brick"
    brick.mkdir()
    for name in ("slow", "flushy", "locked", "probe"):
        (brick / name).write_bytes(name.encode() * 1000)
    sock = tmp_path / "mute.sock"
    vol = volfile(tmp_path / "liveness.vol",
                  ("locks", "features/locks", {}),
                  ("delay", "debug/delay-gen", {"enable": "readv", "delay-percentage": "100",
                                                "delay-duration": int(DELAY * 1e6)}),
                  ("cb", "test/flush-callback", {"socket": sock}))
    app = MuteApp(str(sock))
    holder = None
    waits: list = []
    with mounted(tmp_path, vol, "--attribute-timeout=0") as m:
        try:
            os.stat(m.path("probe"))
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, m.path("locked")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert holder.stdout.readline() == b"locked\n"

            def slow_read():
                with open(m.path("slow"), "rb") as f:
                    return len(f.read())

            def stuck_flush():
                fd = os.open(m.path("flushy"), os.O_WRONLY)
                os.write(fd, b"x")
                os.close(fd)                     # FLUSH: waits for the mute app

            def blocked_lock():
                with open(m.path("locked"), "r+") as f:
                    fcntl.lockf(f, fcntl.LOCK_EX)   # SETLKW: waits for the holder
                    return True

            waits = [Call(slow_read, "read"), Call(stuck_flush, "flush"),
                     Call(blocked_lock, "lock")]
            wait_until(lambda: app.conns, 5, "the flush to ask the app")
            # all three are in the daemon, waiting (the bridge's requests in flight)
            wait_until(lambda: int(statedump(m)["in-flight"]) >= 3, 5, "3 requests in flight")
            t0 = time.monotonic()
            samples = []
            for _ in range(100):
                latency = stat_latency(m.path("probe"), DELAY)
                assert latency is not None, "a GETATTR hung behind the waiting requests"
                samples.append(latency)
            measured_for = time.monotonic() - t0
            # the three were waiting the whole time
            assert not any(w.done(0) for w in waits), \
                [(w.elapsed, w.error) for w in waits]
            samples.sort()
            p99 = samples[98]
            assert p99 < BOUND, f"p99 GETATTR {p99:.3f}s while requests wait " \
                                f"(max {samples[-1]:.3f}s, over {measured_for:.2f}s)"
        finally:
            app.close()                          # the flush gets its answer (EOF)
            if holder is not None:
                holder.stdin.close()             # the lock is released
                exits_within(holder, 5)
                holder.stdout.close()
        for w in waits:
            assert w.done(DELAY + 5), f"{w._t.name} never finished: {m.read_log()[-3000:]}"
            w.value()
        assert waits[0].result == 4000 and waits[2].result is True
