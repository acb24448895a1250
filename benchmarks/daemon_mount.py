"""A FUSE daemon run in the foreground for a benchmark, and the sure teardown of its mount.

    m = DaemonMount(name, argv, mountpoint, log, limit, env, cwd)
    m.start(ready_timeout)                 # returns once the mount answers a stat
    ...
    m.stop()                               # always; raises MountLeft if the mount stays

Safety: the daemon runs in its own session (a Ctrl-C in the terminal reaches only the
runner, which then unmounts in order) and gets SIGTERM if the runner dies
(PR_SET_PDEATHSIG), so it unmounts itself.  A watchdog aborts the FUSE connection when a
mount outlives its hard time limit.  Stopping (on any path: exception, Ctrl-C) sends
SIGTERM, waits, then aborts the connection and kills the daemon if it hangs, and finally
detaches the mount lazily; a mount still present after that is an error.
benchmarks.peers says which daemon each peer runs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from fuse_bridge import mount as mnt


class MountLeft(RuntimeError):
    """A mount survived every way of removing it."""


# -- signals -----------------------------------------------------------------------------

_SHIELD = threading.Lock()


@contextmanager
def shielded() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while tearing a mount down (main thread only), so a second
    Ctrl-C cannot cut the cleanup short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _SHIELD:
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _child_setup() -> None:
    """In the daemon before exec: SIGTERM when the runner dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# -- mounts ------------------------------------------------------------------------------

def mounts_under(root: str) -> List[str]:
    """Mountpoints at or below ``root`` (from /proc/self/mountinfo)."""
    root = os.path.abspath(root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if (point + "/").startswith(root):
                found.append(point)
    return found


class DaemonMount:
    """A FUSE daemon in the foreground, its mount, a watchdog, and a sure teardown."""

    def __init__(self, name: str, argv: List[str], mountpoint: Path, log: Path,
                 limit: float, env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        self.name = name
        self.argv = argv
        self.mountpoint = str(mountpoint)
        self.log = log
        self.limit = limit
        self.env = env
        self.cwd = cwd                 # where the daemon runs (None: the runner's directory)
        self.proc: Optional[subprocess.Popen] = None
        self.conn: Optional[int] = None
        self.aborted = False
        self._watchdog: Optional[threading.Timer] = None

    def start(self, ready_timeout: float = 30.0) -> None:
        if mnt.find_mount(self.mountpoint) is not None:
            raise RuntimeError(f"{self.mountpoint} is already a mountpoint")
        out = open(self.log.with_suffix(".out"), "wb")
        try:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_child_setup)
        finally:
            out.close()
        self._watchdog = threading.Timer(self.limit, self.abort)
        self._watchdog.daemon = True
        self._watchdog.start()
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}: "
                                   f"{self.tail()}")
            conn = mnt.connection_id(self.mountpoint)
            if conn is not None:
                self.conn = conn
                if mnt.answers_within(self.mountpoint, 5.0):
                    return
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} did not answer within {timeout:.0f} s: {self.tail()}")

    def abort(self) -> None:
        """Last resort (the watchdog's, or a hung case's): break every wait on the mount."""
        self.aborted = True
        conn = self.conn if self.conn is not None else mnt.connection_id(self.mountpoint)
        if conn is not None:
            mnt.abort_connection(conn)

    def tail(self, lines: int = 5) -> str:
        text = ""
        for path in (self.log.with_suffix(".out"), self.log):
            try:
                text += path.read_text(errors="replace")
            except OSError:
                pass
        last = [ln for ln in text.splitlines() if ln.strip()][-lines:]
        return " | ".join(last) if last else "(no output)"

    def stop(self) -> None:
        """SIGTERM, wait; then abort + SIGKILL; then lazy unmount.  Idempotent."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        with shielded():
            try:
                if self.proc is not None and self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
                    try:
                        self.proc.wait(15)
                    except subprocess.TimeoutExpired:
                        self.abort()
                        self.proc.kill()
                        self.proc.wait(10)
            finally:
                mnt.force_unmount(self.mountpoint, self.conn)
        if mnt.find_mount(self.mountpoint) is not None:
            raise MountLeft(f"{self.mountpoint} is still mounted")
